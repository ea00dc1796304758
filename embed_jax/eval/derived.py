"""Models built from other models' vectors: the concatenated teacher and the PCA baseline.

* `concat:A+B+...`: each part's default head, L2-normalised, concatenated in the given order, renormalised: the
  distillation target of docs/method.md §2, computed by the same function as the teacher export
  (`embed_jax.teachers.targets.concatenated_target`). `concat:A+B@W_A,W_B` weighs the parts as
  data.teacher_weights weighs a training run's teachers (embed_jax/data/teacher_weights.py): block i scaled by
  √(N·w_i), so the target's cosine is Σ w_i cos_i.
* `asym:QUERY_SPEC|DOC_SPEC`: queries encoded by one model, documents by another (LEAF's use: documents indexed
  by the teacher, queries by the small student). The document side is DOC_SPEC's default head; the query side is
  QUERY_SPEC's first head of that dimension (a student's FC1 against its teacher target). `asym:STUDENT` takes the
  documents' model from the student's training records (embed_jax/eval/specs.py). Only retrieval tasks score it.
* `pca:SPEC@DIM`: SPEC's default head projected on its DIM leading principal directions, then renormalised. The
  directions are fitted on SPEC's unit vectors of the first N built-in training texts (`corpora.builtin_texts("all",
  N)`, N = --pca_fit_texts, default 10,000): unlabeled text that excludes the hold-out, in the fixed pseudo-random
  order that mixes Wikipedia, ABC news and WordNet. The vectors are centred on the fit texts' mean before projecting
  (the standard PCA; the mean is part of the fitted map). It is the baseline a trained reduction head has to beat:
  a 768-d model reduced to 128-d without training (docs/shrink.md: on all-mpnet-base-v2 the learnt 128-d head keeps
  100.2% of the suite mean, PCA 99.3%).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from embed_jax.data import corpora, teacher_weights
from embed_jax.eval import overlap
from embed_jax.eval.encoding import EncodeContext, EvalModel, ModelSpecError, documents_key, encode
from embed_jax.teachers.targets import concatenated_target

CONCAT_HEAD = "concat"
ASYMMETRIC_SEPARATOR = "|"
PCA_FIT_CORPUS = "all"


class ConcatenatedModel(EvalModel):
    kind = "concat"
    cacheable = False  # its parts are cached; concatenating is instant

    def __init__(self, spec: str, parts: Sequence[EvalModel], weights: Sequence[float] | None = None):
        """`weights`: one per part, normalised (teacher_weights.normalised); None for the equal-weight target."""
        self.spec, self.parts = spec, list(parts)
        dims = [part.heads[part.default_head] for part in self.parts]
        self.heads = {CONCAT_HEAD: sum(dims)}
        self.default_head = CONCAT_HEAD
        self.weights = None if weights is None else tuple(weights)
        self.scales = teacher_weights.block_scales(dims, self.weights)
        self.holdout = overlap.combine([part.holdout for part in self.parts], "concatenation of its parts")
        self.source = {"parts": [{"spec": part.spec, "head": part.default_head, "dim": dim}
                                 for part, dim in zip(self.parts, dims)],
                       "normalisation": "per part L2, concatenated in order, L2 again (docs/method.md §2)"}
        if self.weights is not None:
            self.source["weights"] = list(self.weights)

    def fingerprint(self) -> str:
        weights = "" if self.weights is None else "@" + ",".join(f"{weight!r}" for weight in self.weights)
        return "+".join(part.fingerprint() for part in self.parts) + weights

    def encode_uncached(self, texts: Sequence[str], context: EncodeContext) -> dict[str, np.ndarray]:
        per_part = [encode(part, texts, context)[part.default_head] for part in self.parts]
        ids = [f"text {index}" for index in range(len(texts))]
        target = concatenated_target(per_part, [part.spec for part in self.parts], ids)
        return {CONCAT_HEAD: target if self.scales is None else target * self.scales}


def head_list(model: EvalModel) -> str:
    return ", ".join(f"{dim}-d" if head == str(dim) else f"{head} {dim}-d" for head, dim in model.heads.items())


def query_head(spec: str, queries: EvalModel, documents: EvalModel) -> str:
    """The query model's first head of the documents' dimension, or an error naming both specs and dims."""
    dim = documents.heads[documents.default_head]
    head = next((head for head, head_dim in queries.heads.items() if head_dim == dim), None)
    if head is None:
        raise ModelSpecError(f"model spec {spec!r}: the documents ({documents.spec}, head {documents.default_head}) "
                             f"are {dim}-d but no head of the queries' model {queries.spec} is (its heads: "
                             f"{head_list(queries)}); pair a student with the teacher target its FC1 learned.")
    return head


class AsymmetricModel(EvalModel):
    """One row: queries by `queries`' head of the documents' dimension, documents by `documents`' default head."""

    kind = "asymmetric"
    cacheable = False  # both sides are cached as their own models
    asymmetric = True

    def __init__(self, spec: str, queries: EvalModel, documents: EvalModel, *, resolved_from: str = ""):
        self.spec, self.queries, self.documents = spec, queries, documents
        self.query_head = query_head(spec, queries, documents)
        self.head = f"{self.query_head}→{documents.default_head}"
        self.heads = {self.head: queries.heads[self.query_head]}
        self.default_head = self.head
        self.holdout = overlap.combine([queries.holdout, documents.holdout], "queries and documents by two models")
        self.source = {"queries": {"spec": queries.spec, "head": self.query_head},
                       "documents": {"spec": documents.spec, "head": documents.default_head}}
        if resolved_from:
            self.source["documents"]["from"] = resolved_from

    def fingerprint(self) -> str:
        return f"{self.queries.fingerprint()}|{self.documents.fingerprint()}"

    def encode_uncached(self, texts: Sequence[str], context: EncodeContext) -> dict[str, np.ndarray]:
        return {self.head: encode(self.queries, texts, context)[self.query_head],
                documents_key(self.head): encode(self.documents, texts, context)[self.documents.default_head]}


def fit_pca(vectors: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean (d,), components (dim, d), share of the variance they keep) of the rows of `vectors`."""
    vectors = np.asarray(vectors, dtype=np.float64)
    mean = vectors.mean(axis=0)
    _, singular_values, components = np.linalg.svd(vectors - mean, full_matrices=False)
    variance = singular_values ** 2
    return mean, components[:dim], float(variance[:dim].sum() / variance.sum())


class PcaModel(EvalModel):
    kind = "pca"
    cacheable = False  # the base model's vectors are cached; projecting is instant

    def __init__(self, spec: str, base: EvalModel, dim: int, fit_texts: int):
        base_dim = base.heads[base.default_head]
        if not 0 < dim < base_dim:
            raise ModelSpecError(f"model spec {spec!r}: DIM={dim} must be between 1 and the base model's "
                                 f"{base_dim} (its head {base.default_head!r}).")
        if fit_texts < dim:
            raise ModelSpecError(f"model spec {spec!r}: --pca_fit_texts={fit_texts} is fewer than DIM={dim}; "
                                 f"PCA needs at least as many texts as directions (use thousands).")
        self.spec, self.base, self.dim, self.fit_texts = spec, base, dim, fit_texts
        self.head = f"pca{dim}"
        self.heads = {self.head: dim}
        self.default_head = self.head
        self.holdout = overlap.combine([base.holdout], "PCA of its base model (fitted on built-in training texts)")
        self.source = {"base": base.spec, "base_head": base.default_head, "base_dim": base_dim,
                       "fit_corpus": f"builtin:{PCA_FIT_CORPUS}", "fit_texts": fit_texts, "centred": True}
        self._fitted = None

    def fingerprint(self) -> str:
        return f"{self.base.fingerprint()}:pca{self.dim}:{self.fit_texts}"

    def fitted(self, context: EncodeContext) -> tuple[np.ndarray, np.ndarray]:
        if self._fitted is None:
            texts = [item.text for item in corpora.builtin_texts(PCA_FIT_CORPUS, self.fit_texts)]
            if len(texts) < self.fit_texts:
                raise ValueError(f"{self.spec}: the built-in corpus holds {len(texts)} texts, fewer than "
                                 f"--pca_fit_texts={self.fit_texts}")
            base_vectors = encode(self.base, texts, context)[self.base.default_head]
            mean, components, kept = fit_pca(base_vectors, self.dim)
            self.source["explained_variance"] = kept
            self._fitted = (mean, components)
        return self._fitted

    def encode_uncached(self, texts: Sequence[str], context: EncodeContext) -> dict[str, np.ndarray]:
        mean, components = self.fitted(context)
        base_vectors = encode(self.base, texts, context)[self.base.default_head].astype(np.float64)
        return {self.head: (base_vectors - mean) @ components.T}
