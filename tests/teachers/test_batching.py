"""Length-bucketed batch plans: every text once, within the token budget, longest first, deterministic."""
import numpy as np
import pytest

from embed_jax.teachers.batching import plan_length_batches


def test_plan_covers_every_text_once_within_budget():
    lengths = np.random.default_rng(0).integers(1, 300, size=1000)
    batches = plan_length_batches(lengths, max_tokens_per_batch=2048, max_batch_size=64)
    covered = np.concatenate(batches)
    assert sorted(covered.tolist()) == list(range(1000))
    for batch in batches:
        assert len(batch) <= 64
        assert len(batch) * lengths[batch].max() <= 2048
    # Longest first: the batches' longest texts never increase.
    longest = [lengths[batch].max() for batch in batches]
    assert longest == sorted(longest, reverse=True)


def test_short_texts_share_big_batches_and_a_too_long_text_stands_alone():
    lengths = np.array([5000, 10, 10, 10, 10, 12])
    batches = plan_length_batches(lengths, max_tokens_per_batch=40, max_batch_size=256)
    # 40 tokens // 12 = 3 rows next to the 12-token text; the last two 10-token texts share the remainder.
    assert [batch.tolist() for batch in batches] == [[0], [5, 1, 2], [3, 4]]


def test_ties_keep_corpus_order():
    batches = plan_length_batches(np.array([3, 7, 3, 7, 3]), max_tokens_per_batch=100, max_batch_size=2)
    assert [batch.tolist() for batch in batches] == [[1, 3], [0, 2], [4]]


@pytest.mark.parametrize("tokens, rows", [(0, 4), (16, 0)])
def test_bad_budgets_are_refused(tokens, rows):
    with pytest.raises(ValueError, match="must be positive"):
        plan_length_batches(np.array([1, 2]), tokens, rows)
