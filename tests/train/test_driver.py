"""The step driver's own rules, on a step that needs no model: when it logs, evaluates and saves, and what stops it.
The real stages run through it in test_loop.py, test_cached_stage.py and tests/vision/test_stage4.py; real SIGTERMs
reach it in test_checkpoint.py."""
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from embed_jax.train import checkpoint, driver, metrics
from embed_jax.train.metrics import read_metrics


def train_config(**values):
    return ml_collections.ConfigDict({"log_every": 2, "eval_every": 4, "checkpoint_every": 3, **values})


def test_cadence_logs_evaluates_and_saves_on_its_steps():
    cadence = driver.Cadence.from_config(train_config(), 7, evaluates=True)
    assert [step for step in range(1, 8) if cadence.logs(step, start_step=0)] == [1, 2, 4, 6, 7]
    assert [step for step in range(1, 8) if cadence.logs(step, start_step=4)] == [2, 4, 5, 6, 7]
    assert [step for step in range(1, 8) if cadence.evaluates(step)] == [4, 7]
    assert [step for step in range(1, 8) if cadence.saves(step)] == [3, 6, 7]
    assert driver.Cadence.from_config(train_config(eval_every=3), 7, evaluates=False).eval_every == 0


def test_evaluation_off_the_logged_steps_is_refused_before_any_work():
    with pytest.raises(ValueError, match="train.eval_every=3 must be a multiple of train.log_every=2"):
        driver.Cadence.from_config(train_config(eval_every=3), 7, evaluates=True)


def counting_steps(values, **options):
    """A step that adds 1 to a counter and reports `values[step]` as its loss terms."""
    return driver.StageSteps(
        step=lambda count, index: driver.Stepped(count + 1, {"loss": jnp.float32(values[index]),
                                                             "dense_8/cosine": jnp.float32(values[index])}),
        checkpoint_items=lambda count: {"params": {"count": np.asarray(count)}},
        learning_rate=lambda index: 0.1 * index, rates=metrics.StepRate(), **options)


def test_logged_rows_are_means_since_the_last_log_with_evaluations_and_saves(tmp_path):
    cadence = driver.Cadence(num_steps=5, log_every=2, checkpoint_every=2, eval_every=4)
    stage_steps = counting_steps([1.0, 2.0, 3.0, 4.0, 5.0], evaluate=lambda count: {"eval/loss": float(count)})
    with checkpoint.CheckpointManager(tmp_path / "checkpoints", save_every=2, keep=5, identity={},
                                      shape_config={}) as manager:
        finished = driver.run_steps("stage1", cadence, stage_steps, state=0, start_step=0, manager=manager,
                                    metrics_dir=tmp_path, title="test")
        assert manager.all_steps() == [2, 4, 5]
    assert finished.step == finished.state == 5
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [row["step"] for row in rows] == [1, 2, 4, 5]
    assert [row["loss"] for row in rows] == [1.0, 2.0, 3.5, 5.0]
    assert [row.get("eval/loss") for row in rows] == [None, None, 4.0, 5.0]
    assert rows[2]["learning_rate"] == pytest.approx(0.3) and "steps_per_s" in rows[2]
    assert {"step": 5, **finished.last_metrics} == rows[-1]


def test_non_finite_term_stops_naming_step_and_term_and_saves_nothing_after_it(tmp_path):
    cadence = driver.Cadence(num_steps=6, log_every=3, checkpoint_every=2)
    with checkpoint.CheckpointManager(tmp_path / "checkpoints", save_every=2, keep=5, identity={},
                                      shape_config={}) as manager:
        with pytest.raises(driver.NonFiniteLossError, match=r"\[stage1\] step 3: loss term 'dense_8/cosine' is nan.*"
                                                            r"last good checkpoint is step 2"):
            driver.run_steps("stage1", cadence, counting_steps([1.0, 1.0, np.nan, 1.0, 1.0, 1.0]), state=0,
                             start_step=0, manager=manager, metrics_dir=tmp_path, title="test")
        assert manager.all_steps() == [2]
