"""What every evaluated model offers, and the one way texts get encoded: through the per-model vector cache.

An `EvalModel` has named heads (one report row each) and encodes a list of texts into every head at once
(`encode_uncached`). `encode(model, texts, context)` is what callers use: it returns the cached vectors when the
cache holds this model's vectors of exactly these texts, else encodes and stores them.

Cache: one .npz per (model, text list) under `<out>/cache/`, keyed by the model's fingerprint (its files' paths,
sizes and modification times, plus the settings that change vectors, e.g. max_length) and a hash of the texts.
Retraining or re-exporting a model changes its files, so a stale entry is never read. Deleting the folder is safe.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from embed_jax.eval import overlap
from embed_jax.teachers.progress import Progress

CACHE_FORMAT = "embed_jax.eval.cache/1"
DEFAULT_HEAD = "default"  # the head name of a model with one output
POOLED_HEAD = "pooled"  # the row of the pooled vector before any FC head (students, stella-style folders, graphs)


class ModelSpecError(ValueError):
    """A --model spec is malformed or names nothing loadable; the message says which spec and what to give."""


@dataclasses.dataclass(frozen=True)
class EncodeContext:
    cache_dir: Path | None = None
    progress_every_s: float = 10.0
    max_length: int = 0  # 0: each model's own window
    pca_fit_texts: int = 10_000
    allow_overlap: bool = False


class EvalProgress(Progress):
    """The export's progress line (done/total, texts/s, ETA) with the model's name."""

    def __init__(self, total: int, label: str, every_s: float):
        super().__init__(total, unit="texts", every_s=every_s)
        self.label = label

    def report(self, note: str = "") -> None:
        self.last_line, self.last_reported = self.clock(), self.done
        print(f"[eval] {self.label}: {self.line(note)}", file=self.stream, flush=True)


class EvalModel:
    """Base class. Subclasses set `spec`, `kind`, `heads` ({row name: dim}, report order), `default_head`,
    `holdout` (overlap.HoldoutCheck), `source` (JSON-able description) and implement `encode_uncached`."""

    spec: str
    kind: str
    heads: dict[str, int]
    default_head: str
    holdout: overlap.HoldoutCheck
    source: dict[str, Any]
    cacheable: bool = True
    # An asymmetric model's `encode_uncached` also returns each head's document side under `documents_key(head)`
    # (embed_jax/eval/derived.py: AsymmetricModel); only retrieval tasks score its rows.
    asymmetric: bool = False

    def fingerprint(self) -> str:
        """Changes whenever the vectors could (files, settings)."""
        raise NotImplementedError

    def encode_uncached(self, texts: Sequence[str], context: EncodeContext) -> dict[str, np.ndarray]:
        """{head: (len(texts), dim) float32 unit vectors}, rows in the order of `texts`."""
        raise NotImplementedError

    def encode_images(self, images: Any) -> dict[str, np.ndarray]:
        raise NotImplementedError(f"{self.spec} has no image path")


def documents_key(head: str) -> str:
    """Where an asymmetric model's vectors of the document side of row `head` are."""
    return f"{head}:documents"


def empty_vectors(model: EvalModel) -> dict[str, np.ndarray]:
    """What `encode_uncached` gives for no texts, without running the model (tokenizers refuse an empty batch)."""
    keys = {head: dim for head, dim in model.heads.items()}
    if model.asymmetric:
        keys.update({documents_key(head): dim for head, dim in model.heads.items()})
    return {key: np.zeros((0, dim), dtype=np.float32) for key, dim in keys.items()}


def unit_float32(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def files_fingerprint(*folders: Path, settings: dict[str, Any] | None = None) -> str:
    """sha256 over every file's relative path, size and mtime under `folders`, and `settings` (cheap: no reads)."""
    digest = hashlib.sha256(json.dumps(settings or {}, sort_keys=True, default=str).encode())
    for folder in folders:
        folder = Path(folder).resolve()
        digest.update(str(folder).encode() + b"\0")
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                stat = path.stat()
                digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def texts_fingerprint(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        encoded = text.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little") + encoded)
    return digest.hexdigest()


def cache_path(model: EvalModel, texts: Sequence[str], cache_dir: Path) -> Path:
    key = hashlib.sha256(f"{CACHE_FORMAT}\0{model.fingerprint()}\0{texts_fingerprint(texts)}".encode()).hexdigest()
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model.spec).strip("_")[-60:]
    return cache_dir / f"{slug}-{key[:20]}.npz"


def read_cache(path: Path, model: EvalModel, count: int) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    with np.load(path) as stored:
        vectors = {head: stored[f"head:{head}"] for head in model.heads if f"head:{head}" in stored}
    if set(vectors) != set(model.heads) or any(len(array) != count for array in vectors.values()):
        return None
    return vectors


def write_cache(path: Path, vectors: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp.npz")
    np.savez(temporary, **{f"head:{head}": array for head, array in vectors.items()})
    temporary.replace(path)


@dataclasses.dataclass
class EncodeTiming:
    texts: int
    seconds: float
    cached: bool


def encode(model: EvalModel, texts: Sequence[str], context: EncodeContext,
           timings: list[EncodeTiming] | None = None) -> dict[str, np.ndarray]:
    """Every head's unit vectors of `texts` (float32), from the cache when it holds them."""
    texts = list(texts)
    started = time.perf_counter()
    # A suite of tasks that name their texts while scoring (eval/mteb_task.py) has nothing to embed first.
    vectors, cached = (empty_vectors(model), False) if not texts else cached_or_encoded(model, texts, context)
    if timings is not None:
        timings.append(EncodeTiming(texts=len(texts), seconds=time.perf_counter() - started, cached=cached))
    return vectors


def cached_or_encoded(model: EvalModel, texts: list[str], context: EncodeContext
                      ) -> tuple[dict[str, np.ndarray], bool]:
    """(vectors, whether they came from the cache); freshly encoded vectors are stored there."""
    path = cache_path(model, texts, context.cache_dir) if context.cache_dir and model.cacheable else None
    vectors = read_cache(path, model, len(texts)) if path else None
    if vectors is not None:
        print(f"[eval] {model.spec}: {len(texts):,} texts from the cache ({path.name})", file=sys.stderr, flush=True)
        return vectors, True
    vectors = {head: unit_float32(array) for head, array in model.encode_uncached(texts, context).items()}
    if path:
        write_cache(path, vectors)
    return vectors, False
