"""The supervised pair stage (kind='pairs', embed_jax/train/stages/pairs.py) through the real loop on real WordNet pair
records: it trains on its pairs with the pair term logged, hands over like any stage, resumes exactly, and is refused
before any work where the records cannot give it pairs."""
import numpy as np
import pytest

from embed_jax.train import config as train_config, driver, loop, preflight
from embed_jax.train.preemption import PreemptionGuard
from embed_jax.train.metrics import read_metrics
from embed_jax.train.stages import student as stage_student


def pair_config(smoke_config, pair_records, *, num_steps=8):
    smoke_config.data.records_dir = str(pair_records)
    smoke_config.stage_order = ("stage1", "stage2_pairs")
    smoke_config.stage1.num_steps = 2
    smoke_config.stage2_pairs = train_config.stage("all", 1e-3, num_steps, kind="pairs", contrastive_weight=2.0,
                                                   contrastive_kl_weight=1.0)
    smoke_config.train.checkpoint_every = 4
    # The pair terms alone, so that their fall is what the steps show (the paper's terms are tested elsewhere).
    smoke_config.loss.cosine_weight = smoke_config.loss.similarity_weight = 0.0
    smoke_config.loss.relative_similarity_weight = 0.0
    return smoke_config


@pytest.mark.slow
def test_the_pair_stage_trains_fc1_on_its_pairs_and_resumes_exactly(smoke_config, new_smoke_config, pair_records,
                                                                    tmp_path, monkeypatch):
    config = pair_config(smoke_config, pair_records)
    first, pairs = loop.train_and_evaluate(config, tmp_path / "straight")
    rows = read_metrics(pairs.workdir / "metrics.jsonl")
    assert [row["step"] for row in rows] == list(range(1, 9))
    assert {"dense_384/pairs", "dense_384/pair_kl", "dense_384/cosine"} <= set(rows[0])
    for row in rows:
        np.testing.assert_allclose(row["loss"], row["dense_384/pairs"] * 2.0 + row["dense_384/pair_kl"], rtol=1e-5)
    # 8 steps at 1e-3 over the fixture's 10 pairs (two batches of 4 an epoch): the pair term falls.
    assert np.mean([row["dense_384/pairs"] for row in rows[-2:]]) < np.mean([row["dense_384/pairs"] for row in rows[:2]])
    straight = stage_student.load_stage_params(pairs)
    # Stopped at step 5 (a preemption: step 5's checkpoint is saved), then resumed to step 8: the same parameters,
    # data position included.
    original = PreemptionGuard.should_stop
    monkeypatch.setattr(PreemptionGuard, "should_stop",
                        lambda guard, step_number: step_number == 5 or original(guard, step_number))
    with pytest.raises(driver.Preempted):
        loop.train_and_evaluate(pair_config(new_smoke_config(), pair_records), tmp_path / "resumed")
    monkeypatch.setattr(PreemptionGuard, "should_stop", original)
    resumed_run = loop.train_and_evaluate(pair_config(new_smoke_config(), pair_records), tmp_path / "resumed")[1]
    resumed = stage_student.load_stage_params(resumed_run)
    for path, value in straight.items():
        np.testing.assert_allclose(np.asarray(resumed[path]), np.asarray(value), rtol=1e-6, atol=1e-7,
                                   err_msg=str(path))
