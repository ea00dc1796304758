"""The training loop: stages run one after another, each resumable, on one CPU, one GPU or a TPU slice alike.

    for each stage in config.stage_order (workdir/<stage>/):
        student  = the init folder's encoder + this stage's heads, with the previous stage's trained weights
        resume   from the stage's latest checkpoint if there is one (same or different mesh)
        for step:  global batch → jit train step (sharded over the mesh) → metrics → checkpoint → preemption check
        the stage's last checkpoint holds the full student: the next stage, export and eval start from it

A stage is one of three kinds, each a module that supplies what differs and runs through the one step driver
(embed_jax/train/driver.py): a text stage (stages/text.py), a heads-only stage from cached pooled vectors
(stages/cached.py, kind='cached_pooled'), an image stage (stages/vision.py, kind='images'), a supervised stage on
WordNet pairs (stages/pairs.py, kind='pairs'): `run_stage` dispatches on
the stage's kind. The run folder's
layout is embed_jax/train/workdir.py's. Every process runs this same code; each reads its own slice of the records,
and the loss sees the global batch.
"""
from __future__ import annotations

from pathlib import Path

import jax
import ml_collections

from embed_jax.train import config as train_config, preflight, run_lock, workdir
from embed_jax.train.console import log
from embed_jax.train.stages import cached, pairs, text, vision
from embed_jax.train.driver import Preempted
from embed_jax.train.preemption import PreemptionGuard
from embed_jax.train.stages.student import StageResult


# A stage's kind (embed_jax/train/config.py, KINDS) → the module that runs it.
RUNNERS = {"records": text.run_text_stage, "cached_pooled": cached.run_cached_stage, "images": vision.run_vision_stage,
           "pairs": pairs.run_pair_stage}


def run_stage(config: ml_collections.ConfigDict, stage_name: str, run_dir: Path,
              previous: StageResult | None) -> StageResult:
    stage = train_config.stage_config(config, stage_name)
    return RUNNERS[stage.kind](config, stage_name, stage, run_dir, previous)


def train_and_evaluate(config: ml_collections.ConfigDict, run_dir: str | Path) -> list[StageResult]:
    """Every stage of config.stage_order in `run_dir`, after every check that needs no training (preflight.py),
    holding the workdir's lock (run_lock.py). A SIGTERM or Ctrl-C stops at the next step or stage boundary with
    what is done saved, raising driver.Preempted."""
    preflight.check_config(config)
    run_dir = workdir.absolute_workdir(run_dir)
    workdir.check_workdir_is_ours(run_dir, config.to_dict())
    workdir.make_workdir(run_dir)
    with run_lock.hold(run_dir, jax.process_index()), PreemptionGuard() as guard:
        if jax.process_index() == 0:  # every process runs this; one writes the run's files
            workdir.write_run_config(config.to_dict(), run_dir)
        results: list[StageResult] = []
        previous = None
        for stage_name in config.stage_order:
            if guard.stop_between_stages():
                raise stopped_between_stages(guard, previous, stage_name)
            previous = run_stage(config, stage_name, run_dir, previous)
            results.append(previous)
        return results


def stopped_between_stages(guard: PreemptionGuard, finished: StageResult | None, next_stage: str) -> Preempted:
    """The stop a signal asks for at a stage boundary: what is kept (the finished stage's last checkpoint)."""
    signum = guard.received_signal
    kept = (f"{finished.name} is finished and saved (step {finished.final_step})" if finished is not None
            else "nothing was trained yet")
    message = (f"stopped before {next_stage} on {signum.name if signum else 'a stop request'}: {kept}; rerun the "
               f"same command to continue with {next_stage}")
    log(f"[{next_stage}] {message}")
    return Preempted(finished.final_step if finished is not None else 0, signum, message=message)
