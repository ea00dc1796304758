"""The step driver: the loop around a jitted train step that every stage runs (text, cached heads-only, vision).

    for step in start_step .. num_steps:
        state = stage's step(state)                         (how a batch is made and stepped: the stage's)
        at log steps:   mean of the metrics since the last log → finiteness check → learning rate, throughput
                        → held-out evaluation at eval steps → MetricsWriter
        SIGTERM/SIGINT: save at this step boundary, say so, raise Preempted   (embed_jax/train/preemption.py)
        every train.checkpoint_every steps and at the last:  save (the data iterator too, where the stage has one)

A stage supplies a `StageSteps`; the driver decides when to log, evaluate, save and stop, so that every stage logs
the same rows, saves the same checkpoints and stops the same way on preemption (docs/launch.md).
"""
from __future__ import annotations

import dataclasses
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np

from embed_jax.train import checkpoint, metrics, preemption
from embed_jax.train import step as steps
from embed_jax.train.preemption import PreemptionGuard


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or inf; the message names the step, the term, the batch and the last good checkpoint,
    which stays."""


class Preempted(Exception):
    """Raised after the preemption save, so that later stages do not start. `exit_status`: 128 + the signal."""

    def __init__(self, step: int, signum: signal.Signals | None = None, *, message: str | None = None):
        name = signum.name if signum is not None else "a stop request"
        super().__init__(message or f"stopped at step {step} on {name}")
        self.step, self.signum = step, signum
        self.exit_status = preemption.exit_status(signum)


@dataclasses.dataclass(frozen=True)
class Cadence:
    """When the driver logs, evaluates and saves. `eval_every=0`: no evaluation."""
    num_steps: int
    log_every: int
    checkpoint_every: int
    eval_every: int = 0

    @classmethod
    def from_config(cls, train: ml_collections.ConfigDict, num_steps: int, *, evaluates: bool) -> Cadence:
        """The config's train.* cadence (checked by preflight.check_train_cadence before any work); `evaluates`:
        whether the stage has an evaluator."""
        return cls(num_steps=int(num_steps), log_every=int(train.log_every),
                   checkpoint_every=int(train.checkpoint_every), eval_every=int(train.eval_every) if evaluates else 0)

    def logs(self, step: int, start_step: int) -> bool:
        """Every log_every steps, the last step, and the first step of a (resumed) run."""
        return step % self.log_every == 0 or step == self.num_steps or step == start_step + 1

    def evaluates(self, step: int) -> bool:
        return bool(self.eval_every) and (step % self.eval_every == 0 or step == self.num_steps)

    def saves(self, step: int) -> bool:
        return step % self.checkpoint_every == 0 or step == self.num_steps


class Stepped(NamedTuple):
    """One step's outcome: the new state, its metrics (device arrays), the examples and tokens it consumed, and the
    ids of this process's records in its batch (where the stage's batches carry them: named if its loss is NaN)."""
    state: Any
    metrics: Mapping[str, jax.Array]
    examples: int = 0
    tokens: int = 0
    record_ids: Sequence[str] = ()


@dataclasses.dataclass
class StageSteps:
    """What a stage supplies to the driver; when to log, evaluate, save and stop is the driver's."""
    step: Callable[[Any, int], Stepped]  # (state, 0-based step index) → the state after one jitted step
    checkpoint_items: Callable[[Any], Mapping[str, Any]]  # state → the checkpoint's items (params, opt_state)
    learning_rate: Callable[[int], float]  # the schedule, at a 0-based step index
    rates: Any  # metrics.Throughput or metrics.StepRate: add(examples, tokens) per step, read() at log steps
    evaluate: Callable[[Any], Mapping[str, float]] | None = None  # state → {'eval/<term>': value}
    data_iterator: Any = None  # saved with every checkpoint when the stage's data stream resumes from it


class Finished(NamedTuple):
    step: int
    state: Any
    last_metrics: dict[str, float]


def run_steps(stage_name: str, cadence: Cadence, stage_steps: StageSteps, *, state: Any, start_step: int,
              manager: checkpoint.CheckpointManager, metrics_dir: Path, title: str) -> Finished:
    """Steps from `start_step` to `cadence.num_steps`; raises Preempted after a SIGTERM save, NonFiniteLossError."""
    writer = metrics.MetricsWriter(metrics_dir, total_steps=cadence.num_steps, start_step=start_step, title=title)
    step_number, since_last_log, last_metrics = start_step, [], {}
    try:
        with PreemptionGuard() as guard:
            while step_number < cadence.num_steps:
                stepped = stage_steps.step(state, step_number)
                state = stepped.state
                step_number += 1
                since_last_log.append((step_number, stepped))
                stage_steps.rates.add(stepped.examples, stepped.tokens)
                writer.advance()
                if cadence.logs(step_number, start_step):
                    # The mean over the steps since the last log: one batch's loss is too noisy to read a trend from.
                    rows = jax.device_get([logged.metrics for _, logged in since_last_log])
                    window = [(number, row, logged.record_ids) for (number, logged), row in zip(since_last_log, rows)]
                    since_last_log = []
                    check_finite(window, stage_name, manager)
                    host = mean_metrics([row for _, row, _ in window])
                    host["learning_rate"] = float(stage_steps.learning_rate(step_number - 1))
                    host.update(stage_steps.rates.read())
                    if stage_steps.evaluate is not None and cadence.evaluates(step_number):
                        host.update(stage_steps.evaluate(state))
                    writer.write(step_number, host)
                    last_metrics = host
                stop = guard.should_stop(step_number)
                if stop or cadence.saves(step_number):
                    check_finite([(step_number, jax.device_get(stepped.metrics), stepped.record_ids)], stage_name,
                                 manager)
                    manager.save(step_number, stage_steps.checkpoint_items(state), stage_steps.data_iterator,
                                 force=stop or step_number == cadence.num_steps)
                if stop:
                    signum = guard.received_signal
                    writer.message(f"[{stage_name}] stop requested ({signum.name if signum else 'SIGTERM'}): saved "
                                   f"step {step_number}; rerun the same command to resume")
                    raise Preempted(step_number, signum)
    finally:
        try:
            manager.wait_until_finished()  # raises what a save in flight met (a full disk)
        finally:
            writer.close()  # the progress bar ends before the run's last line, not after it at exit
    return Finished(step_number, state, last_metrics)


def mean_metrics(rows: list[Mapping[str, Any]]) -> dict[str, float]:
    """Per-name mean of several steps' metrics (NaN/inf propagate, so `check_finite` still sees them)."""
    return {name: float(np.mean([float(row[name]) for row in rows])) for name in rows[0]}


def check_finite(window: Sequence[tuple[int, Mapping[str, Any], Sequence[str]]], stage_name: str,
                 manager: checkpoint.CheckpointManager) -> None:
    """NaN/inf in any term of the steps in `window` ((step number, host metrics, record ids) each): stop, naming the
    first such step, the term, that step's batch and the last good checkpoint; no checkpoint is written after it."""
    for step_number, host_metrics, record_ids in window:
        host_metrics = {name: float(value) for name, value in host_metrics.items()}
        terms = {name: value for name, value in host_metrics.items() if name not in ("loss", "grad_norm")}
        bad = steps.first_nonfinite(terms) or steps.first_nonfinite(host_metrics)
        if bad is None:
            continue
        manager.wait_until_finished()
        last_good = manager.latest_step()
        last_good = "none yet" if last_good is None else f"step {last_good}"
        raise NonFiniteLossError(
            f"[{stage_name}] step {step_number}: loss term {bad!r} is {host_metrics[bad]} (non-finite); "
            f"{describe_batch(step_number, record_ids)}. Training stopped; the last good checkpoint is {last_good} in "
            f"{manager.directory}. Lower the learning rate (optimizer / stage learning_rate) or check those records "
            "for bad teacher vectors or texts, then rerun to resume.")


def describe_batch(step_number: int, record_ids: Sequence[str], shown: int = 8) -> str:
    """The batch a step trained on: its records' ids where the stage carries them, else its place in the stream."""
    if len(record_ids):
        listed = ", ".join(map(str, list(record_ids)[:shown]))
        more = f" and {len(record_ids) - shown} more" if len(record_ids) > shown else ""
        return f"its batch (this process's rows) held records {listed}{more}"
    return (f"its batch is batch {step_number - 1} (0-based) of the stage's data stream, which a resume replays "
            "exactly; this stage's batches carry no record ids")
