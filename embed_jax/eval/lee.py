"""The Lee et al. (2005) tasks: 50 news documents, each pair scored by humans (mean similarity in [0, 1]).

* `lee_similarity`: Spearman and Pearson correlation between the cosine of the two documents' vectors and the human
  mean, over the 1,225 pairs i < j (the upper triangle of gensim's `similarities0-1.txt`).
* `lee_retrieval`: each document queries the other 49; gain = the pair's human similarity; nDCG@10 (linear gains,
  1/log2(rank+1) discount) averaged over the 50 queries.

The documents are `corpora.lee_holdout()` (lee.cor, in file order: row i of the matrix is document i), which no
built-in training corpus contains.
"""
from __future__ import annotations

import functools

import numpy as np

from embed_jax.data import corpora
from embed_jax.eval import metrics
from embed_jax.eval.tasks import Task, TaskResult, TextVectors

SIMILARITY_FILE = "similarities0-1.txt"
NDCG_K = 10


class LeeDataError(ValueError):
    """gensim's Lee files do not have the expected shape; the message names the file."""


@functools.lru_cache(maxsize=1)
def lee_documents() -> tuple[str, ...]:
    return tuple(text for _, text in corpora.lee_holdout())


@functools.lru_cache(maxsize=1)
def human_similarity() -> np.ndarray:
    """The symmetric 50×50 matrix of human mean similarity (the file holds its upper triangle and a unit diagonal)."""
    path = corpora.gensim_file(SIMILARITY_FILE)
    upper = np.loadtxt(path)
    count = len(lee_documents())
    if upper.shape != (count, count):
        raise LeeDataError(f"{path}: a {upper.shape} matrix, but lee.cor holds {count} documents; the gensim test "
                           f"data is not the expected one (reinstall gensim==4.4.0).")
    if np.any(np.tril(upper, -1) != 0):
        raise LeeDataError(f"{path}: expected an upper-triangular matrix (zeros below the diagonal).")
    triangle = np.triu(upper, 1)
    return triangle + triangle.T


class LeeSimilarity(Task):
    metric_names = ("spearman", "pearson")
    description = "Lee document pairs: correlation of cosine with the human mean"

    def texts(self):
        return lee_documents()

    def score(self, vectors: TextVectors) -> TaskResult:
        cosines = metrics.cosine_matrix(vectors.rows(lee_documents()), vectors.rows(lee_documents()))
        human = human_similarity()
        upper = np.triu_indices(len(human), 1)
        return TaskResult(
            metrics={"spearman": metrics.spearman(cosines[upper], human[upper]),
                     "pearson": metrics.pearson(cosines[upper], human[upper])},
            counts={"documents": len(human), "pairs": len(upper[0])})


class LeeRetrieval(Task):
    metric_names = (f"ndcg@{NDCG_K}",)
    description = "Lee graded retrieval: each document queries the other 49, gain = human similarity"
    retrieval = True

    def texts(self):
        return lee_documents()

    def score(self, vectors: TextVectors) -> TaskResult:
        queries, documents = vectors.retrieval(lee_documents(), lee_documents())
        scores = queries @ documents.T
        human = human_similarity()
        per_query = []
        for query in range(len(human)):
            others = np.delete(np.arange(len(human)), query)
            per_query.append(metrics.ndcg_at_k(scores[query, others], human[query, others], NDCG_K))
        return TaskResult(metrics={f"ndcg@{NDCG_K}": float(np.mean(per_query))},
                          counts={"queries": len(human), "candidates_per_query": len(human) - 1})
