"""The cached stage's two lines before its pooling pass: whether caching pays at this step count, and how long the
pass will take at the rate its first batches measured."""
from embed_jax.train import cache_plan


def test_caching_pays_when_the_steps_encode_more_rows_than_the_pass():
    # docs/RESULTS.md's run: 150,000 texts pooled once against 8,000 steps × 32 rows.
    line = cache_plan.caching_verdict(150_000, 8_000, 32, "stage1")
    assert line == ("[cached] stage1: caching pays: the pooling pass encodes 150,000 texts once; the uncached stage "
                    "would encode 8,000 steps × 32 = 256,000 rows (1.7× the pass)")


def test_caching_that_does_not_pay_says_what_to_set():
    # The paper's scale with a short stage: 8M texts against 1,000 steps × 128 rows.
    line = cache_plan.caching_verdict(8_000_000, 1_000, 128, "stage1")
    assert "caching does not pay at this step count" in line and "128,000 rows (0.02× the pass)" in line
    assert "--config.stage1.kind=records" in line


def test_the_pass_duration_is_texts_over_the_measured_rate():
    assert cache_plan.pooling_eta(8_000_000, 512, 2.0).endswith("at the measured 256 texts/s (batches 1–4): ~8.7 h "
                                                                 "for the pass")
    assert cache_plan.pooling_eta(3_000, 100, 1.0).endswith("~0.5 min for the pass")
