"""A stage that reads one global batch of records per step: the text stages (stages/text.py) and the vision stage 4
(stages/vision.py).

    step  = make_batch_step(student, stage, optimizer config, loss config, mesh)   typed arguments and a mesh only:
            the student split, its optimizer, every sharding and the jitted train step, before any record, workdir
            or checkpoint is opened (what a planner compiles to size a stage)
    run_batch_stage: resumes the stage (and its data iterator) from its checkpoints, then hands the step to the
            driver (embed_jax/train/driver.py)
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import ml_collections

from embed_jax import losses
from embed_jax.data import records
from embed_jax.models.student import Student
from embed_jax.train import batches, driver, metrics, sharding, step as steps
from embed_jax.train.config import StageConfig
from embed_jax.train.stages import resume
from embed_jax.train.stages.student import StageResult, save_student_config
from embed_jax.train.train_state import TrainState, prepare_training


@dataclasses.dataclass
class BatchStep:
    """A stage's training state and its jitted step (trainable, frozen, opt_state, batch) → (trainable, opt_state,
    metrics), with the batch's sharding."""
    state: TrainState
    train_step: Callable
    batch_sharding: Any


def make_batch_step(student: Student, stage: StageConfig, optimizer_config: Mapping[str, Any] | None,
                    loss_config: losses.LossConfig, mesh: jax.sharding.Mesh, *, target: str,
                    stage_name: str = "stage", place: bool = True, pin_activations: bool = True) -> BatchStep:
    """The split, optimizer, shardings and jitted step of a stage that steps on global batches (step.TARGETS).
    place=False for a shapes-only student (train_state.prepare_training); pin_activations: step.make_train_step's."""
    state = prepare_training(student, stage, optimizer_config, mesh, stage_name=stage_name, place=place)
    batch_sharding = sharding.batch_sharding(mesh)
    train_step = steps.make_train_step(
        graphdef=state.graphdef, optimizer=state.optimizer, loss_config=loss_config,
        trainable_sharding=state.trainable_sharding, frozen_sharding=state.frozen_sharding,
        opt_state_sharding=state.opt_state_sharding, batch_sharding=batch_sharding, target=target,
        pin_activations=pin_activations)
    return BatchStep(state, train_step, batch_sharding)


# (training state, batch sharding) → evaluate(trainable) → {'eval/<term>': value}, made after the resume.
EvaluatorFactory = Callable[[TrainState, Any], Callable[[Any], dict[str, float]]]


def run_batch_stage(config: ml_collections.ConfigDict, stage_name: str, stage_dir: Path, *, batch_step: BatchStep,
                    cadence: driver.Cadence, student: Student, manifest: records.Manifest, data: Any, title: str,
                    make_evaluator: EvaluatorFactory | None = None) -> StageResult:
    """Trains `student` (split in `batch_step.state`) on `data` (a grain dataset of this process's batches) for the
    stage's steps."""
    state, train_step, batch_sharding = batch_step.state, batch_step.train_step, batch_step.batch_sharding
    mesh = batch_sharding.mesh
    iterator = iter(data)
    with resume.stage_checkpoints(config, stage_name, stage_dir, student, manifest) as manager:
        start_step = resume.resume_latest(manager, student, state, mesh, iterator, stage_name=stage_name)
        save_student_config(stage_dir, student)
        pad_id = batches.pad_token_id(config)
        evaluate = None if make_evaluator is None else make_evaluator(state, batch_sharding)

        def step(trainable_and_opt_state, _):
            trainable, opt_state = trainable_and_opt_state
            local = next(iterator)
            batch = batches.global_batch(local, batch_sharding, pad_token_id=pad_id)
            trainable, opt_state, step_metrics = train_step(trainable, state.frozen, opt_state, batch)
            return driver.Stepped((trainable, opt_state), step_metrics, examples=int(batch["input_ids"].shape[0]),
                                  tokens=int(local["attention_mask"].sum()) * jax.process_count(),
                                  record_ids=local.get("id", ()))

        stage_steps = driver.StageSteps(
            step=step,
            checkpoint_items=lambda trainable_and_opt_state: state.checkpoint_items(*trainable_and_opt_state),
            learning_rate=state.schedule,
            rates=metrics.Throughput(),
            evaluate=None if evaluate is None else lambda trainable_and_opt_state: evaluate(trainable_and_opt_state[0]),
            data_iterator=iterator)
        finished = driver.run_steps(stage_name, cadence, stage_steps, state=(state.trainable, state.opt_state),
                                    start_step=start_step, manager=manager, metrics_dir=stage_dir, title=title)
    return StageResult(stage_name, stage_dir, finished.step, student.config, finished.last_metrics)
