"""The metrics against brute-force references: scipy for correlations, hand computations for nDCG, recall, MRR."""
import math

import numpy as np
import pytest

from embed_jax.eval import metrics


def test_spearman_and_pearson_match_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, size=200).astype(float)  # many ties
    y = x + rng.normal(size=200)
    assert metrics.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).correlation, abs=1e-12)
    assert metrics.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)


def test_spearman_by_hand():
    # ranks of x: 1, 2.5, 2.5, 4; ranks of y: 2, 1, 3, 4 → Pearson of the ranks
    x, y = [1.0, 3.0, 3.0, 7.0], [0.2, 0.1, 0.5, 0.9]
    assert list(metrics.average_ranks(x)) == [1.0, 2.5, 2.5, 4.0]
    rx, ry = np.array([1, 2.5, 2.5, 4]) - 2.5, np.array([2, 1, 3, 4]) - 2.5
    expected = float(rx @ ry / math.sqrt((rx @ rx) * (ry @ ry)))
    assert metrics.spearman(x, y) == pytest.approx(expected)


def test_constant_input_is_an_error_not_a_nan():
    with pytest.raises(ValueError, match="constant"):
        metrics.pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])


def test_ndcg_by_hand():
    # Candidates a..e; the model ranks c, a, e, b, d; gains a=0.5, b=1.0, c=0.0, d=0.25, e=0.75.
    scores = np.array([0.8, 0.3, 0.9, 0.1, 0.5])
    gains = np.array([0.5, 1.0, 0.0, 0.25, 0.75])
    dcg3 = 0.0 / math.log2(2) + 0.5 / math.log2(3) + 0.75 / math.log2(4)
    ideal3 = 1.0 / math.log2(2) + 0.75 / math.log2(3) + 0.5 / math.log2(4)
    assert metrics.ndcg_at_k(scores, gains, 3) == pytest.approx(dcg3 / ideal3)
    assert metrics.ndcg_at_k(gains, gains, 3) == pytest.approx(1.0)
    # k beyond the candidate count: every candidate counts
    dcg5 = dcg3 + 1.0 / math.log2(5) + 0.25 / math.log2(6)
    ideal5 = ideal3 + 0.25 / math.log2(5) + 0.0
    assert metrics.ndcg_at_k(scores, gains, 10) == pytest.approx(dcg5 / ideal5)


def test_ndcg_of_all_zero_gains_is_an_error():
    with pytest.raises(ValueError, match="zero gain"):
        metrics.ndcg_at_k(np.array([0.1, 0.2]), np.zeros(2), 10)


def test_ranks_recall_and_mrr_by_hand():
    scores = np.array([
        [0.9, 0.1, 0.3, 0.2],  # relevant 0 → rank 1
        [0.5, 0.4, 0.6, 0.1],  # relevant 1 → two score higher → rank 3
        [0.2, 0.7, 0.7, 0.0],  # relevant 2 ties with item 1, which comes first → rank 2
        [0.7, 0.7, 0.1, 0.0],  # relevant 0 ties with item 1, which comes later → rank 1
    ])
    ranks = metrics.rank_of_relevant(scores, np.array([0, 1, 2, 0]))
    assert ranks.tolist() == [1, 3, 2, 1]
    assert metrics.recall_at_k(ranks, 1) == 0.5
    assert metrics.recall_at_k(ranks, 2) == 0.75
    assert metrics.mrr_at_k(ranks, 10) == pytest.approx((1 + 1 / 3 + 1 / 2 + 1) / 4)
    assert metrics.mrr_at_k(ranks, 2) == pytest.approx((1 + 0 + 1 / 2 + 1) / 4)


def test_rank_of_relevant_matches_a_brute_force_sort():
    rng = np.random.default_rng(1)
    scores = np.round(rng.normal(size=(30, 40)), 1)  # rounding makes ties
    relevant = rng.integers(0, 40, size=30)
    brute = [1 + list(np.argsort(-row, kind="stable")).index(target) for row, target in zip(scores, relevant)]
    assert metrics.rank_of_relevant(scores, relevant).tolist() == brute


def test_cosine_matrix_ignores_length():
    a = np.array([[3.0, 4.0], [1.0, 0.0]])
    assert metrics.cosine_matrix(a, 10 * a) == pytest.approx(np.array([[1.0, 0.6], [0.6, 1.0]]))
