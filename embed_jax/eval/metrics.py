"""Scores on unit vectors, in numpy (float64): correlations, graded nDCG, and single-answer retrieval.

Rankings break ties by corpus position (stable sort), so the same vectors always give the same scores.
"""
from __future__ import annotations

import numpy as np


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (float64); a zero row stays zero (its cosine with anything is then 0)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def cosine_matrix(queries: np.ndarray, corpus: np.ndarray) -> np.ndarray:
    return unit_rows(queries) @ unit_rows(corpus).T


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of their positions (what Spearman's rho needs)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    y = np.asarray(y, dtype=np.float64) - np.mean(y)
    denominator = np.sqrt(np.sum(x * x) * np.sum(y * y))
    if denominator == 0:
        raise ValueError("Pearson correlation is undefined when one side is constant")
    return float(np.sum(x * y) / denominator)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of the average ranks (scipy.stats.spearmanr's definition)."""
    return pearson(average_ranks(x), average_ranks(y))


def ndcg_at_k(scores: np.ndarray, gains: np.ndarray, k: int) -> float:
    """nDCG@k of one query: candidates ranked by `scores`, linear gains, discount 1/log2(rank + 1).

    Linear gains (not 2^g - 1): with them all-MiniLM-L6-v2 gives ASSETS.md's 0.869 on the Lee task.
    """
    scores, gains = np.asarray(scores, dtype=np.float64), np.asarray(gains, dtype=np.float64)
    discounts = 1.0 / np.log2(np.arange(2, min(k, len(scores)) + 2))
    ranked = gains[np.argsort(-scores, kind="stable")][:k]
    ideal = np.sort(gains)[::-1][:k]
    ideal_dcg = float(np.sum(ideal * discounts[:len(ideal)]))
    if ideal_dcg == 0:
        raise ValueError("nDCG is undefined for a query whose candidates all have zero gain")
    return float(np.sum(ranked * discounts[:len(ranked)])) / ideal_dcg


def rank_of_relevant(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """1-based rank of each query's one relevant item in its row of `scores` (queries × corpus).

    Ties count against the relevant item only when the rival comes earlier in the corpus (stable order): the rank
    is 1 + #items scoring higher + #items scoring equal at a smaller index.
    """
    scores = np.asarray(scores)
    rows = np.arange(scores.shape[0])
    relevant_scores = scores[rows, relevant][:, None]
    higher = np.sum(scores > relevant_scores, axis=1)
    earlier_ties = np.sum((scores == relevant_scores) & (np.arange(scores.shape[1])[None, :] < relevant[:, None]),
                          axis=1)
    return 1 + higher + earlier_ties


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Share of queries whose one relevant item ranks within the top k."""
    return float(np.mean(np.asarray(ranks) <= k))


def mrr_at_k(ranks: np.ndarray, k: int) -> float:
    """Mean reciprocal rank, counting 0 for a relevant item below rank k."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return float(np.mean(np.where(ranks <= k, 1.0 / ranks, 0.0)))
