"""The step driver's own rules, on a step that needs no model: when it logs, evaluates and saves, and what stops it.
The real stages run through it in test_loop.py, test_cached_stage.py and tests/vision/test_stage4.py; real SIGTERMs
reach it in test_checkpoint.py."""
import dataclasses
import struct

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from embed_jax.train import checkpoint, driver, metrics, preflight
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
    with pytest.raises(preflight.ConfigError, match="train.eval_every=3 must be a multiple of train.log_every=2"):
        preflight.check_train_cadence(train_config(eval_every=3, keep_checkpoints=2, eval_batches=8))


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


def stepped_until(values, fail_at: int):
    """counting_steps whose step `fail_at` (0-based) dies, as a kill -9 would: after the steps before it were logged."""
    steps = counting_steps(values)
    inner = steps.step

    def step(count, index):
        if index == fail_at:
            raise SystemExit("killed")
        return inner(count, index)

    return dataclasses.replace(steps, step=step)


def tensorboard_events(folder):
    """Every Event of every event file in `folder`, file by file in name (= creation) order (TFRecord framing)."""
    from tensorboardX.proto import event_pb2

    files = []
    for path in sorted(folder.iterdir()):
        data, events, offset = path.read_bytes(), [], 0
        while offset < len(data):
            length = struct.unpack("<Q", data[offset:offset + 8])[0]
            events.append(event_pb2.Event.FromString(data[offset + 12:offset + 12 + length]))
            offset += 12 + length + 4
        files.append(events)
    return files


def test_a_resumed_stage_logs_each_step_once(tmp_path):
    """Steps 3 was logged, then the run died before its next checkpoint (step 4): the resumed run replays step 3,
    and metrics.jsonl, TensorBoard and the plot hold it once."""
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    cadence = driver.Cadence(num_steps=5, log_every=1, checkpoint_every=2)
    with checkpoint.CheckpointManager(tmp_path / "checkpoints", save_every=2, keep=5, identity={},
                                      shape_config={}) as manager:
        with pytest.raises(SystemExit):
            driver.run_steps("stage1", cadence, stepped_until(values, fail_at=3), state=0, start_step=0,
                             manager=manager, metrics_dir=tmp_path, title="test")
        assert [row["step"] for row in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3]
        resumed_from = manager.latest_step()
        assert resumed_from == 2
        driver.run_steps("stage1", cadence, counting_steps(values), state=2, start_step=resumed_from,
                         manager=manager, metrics_dir=tmp_path, title="test")
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5] and [row["loss"] for row in rows] == values
    first, second = tensorboard_events(tmp_path / "tensorboard")
    assert sorted({event.step for event in first if event.summary.value}) == [1, 2, 3]
    # TensorBoard hides the first file's events from the purge step on: step 3 is drawn once, from the second file.
    purges = [event.step for event in second if event.HasField("session_log")
              and event.session_log.status == event.session_log.START]
    assert purges == [3]
    assert sorted({event.step for event in second if event.summary.value}) == [3, 4, 5]


def test_loss_curves_never_run_backwards():
    rows = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}, {"step": 2, "loss": 9.0}, {"step": 3, "loss": 1.0}]
    assert metrics.one_row_per_step(rows) == [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 9.0},
                                              {"step": 3, "loss": 1.0}]


def test_non_finite_loss_names_the_records_of_its_batch_and_says_no_checkpoint_yet(tmp_path):
    values = [1.0, np.inf, 1.0]
    steps = counting_steps(values)
    inner = steps.step
    steps = dataclasses.replace(steps, step=lambda count, index: inner(count, index)._replace(
        record_ids=[f"wordnet:{index}:{row}" for row in range(10)]))
    cadence = driver.Cadence(num_steps=3, log_every=3, checkpoint_every=3)
    with checkpoint.CheckpointManager(tmp_path / "checkpoints", save_every=3, keep=5, identity={},
                                      shape_config={}) as manager:
        with pytest.raises(driver.NonFiniteLossError, match=r"step 2: loss term 'dense_8/cosine' is inf .*its batch "
                                                            r"\(this process's rows\) held records wordnet:1:0, "
                                                            r".*wordnet:1:7 and 2 more.*last good checkpoint is "
                                                            r"none yet"):
            driver.run_steps("stage1", cadence, steps, state=0, start_step=0, manager=manager, metrics_dir=tmp_path,
                             title="test")
    assert "batch 1 (0-based) of the stage's data stream" in driver.describe_batch(2, ())
