"""A stage that reads one global batch of records per step: the text stages (embed_jax/train/text_stage.py) and
the vision stage 4 (embed_jax/train/vision_stage.py).

Each brings its student (built, the previous stage's weights loaded), its records' manifest, its batches, its loss
and, optionally, an evaluator; this module splits the student for training, resumes the stage with the data
iterator, and hands the jitted step to the driver (embed_jax/train/driver.py).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections

from embed_jax import losses
from embed_jax.data import records
from embed_jax.models.student import Student
from embed_jax.train import batches, driver, metrics, sharding, step as steps, train_state
from embed_jax.train.config import StageConfig
from embed_jax.train.train_state import StageResult, TrainState

# (state, batch sharding, loss config, pad id) → evaluate(trainable, frozen) → {'eval/<term>': value}
EvaluatorFactory = Callable[[TrainState, Any, losses.LossConfig, int], Callable[..., dict[str, float]]]


def run_batch_stage(config: ml_collections.ConfigDict, stage_name: str, stage: StageConfig, stage_dir: Path, *, mesh: jax.sharding.Mesh,
                    cadence: driver.Cadence, student: Student, manifest: records.Manifest, data: Any,
                    loss_config: losses.LossConfig, target: str, title: str,
                    make_evaluator: EvaluatorFactory | None = None) -> StageResult:
    """Trains `student` on `data` (a grain dataset of this process's batches) for the stage's steps."""
    state = train_state.prepare_training(config, stage_name, stage, student, mesh)
    batch_sharding = sharding.batch_sharding(mesh)
    iterator = iter(data)
    with train_state.stage_checkpoints(config, stage_name, stage_dir, student, manifest) as manager:
        start_step = train_state.resume_latest(manager, student, state, mesh, iterator, stage_name=stage_name)
        train_state.save_student_config(stage_dir, student)
        train_step = steps.make_train_step(
            graphdef=state.graphdef, optimizer=state.optimizer, loss_config=loss_config,
            trainable_sharding=state.trainable_sharding, frozen_sharding=state.frozen_sharding,
            opt_state_sharding=state.opt_state_sharding, batch_sharding=batch_sharding, target=target)
        pad_id = batches.pad_token_id(config)
        evaluator = None if make_evaluator is None else make_evaluator(state, batch_sharding, loss_config, pad_id)

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
            evaluate=None if evaluator is None else lambda trainable_and_opt_state: evaluator(
                trainable_and_opt_state[0], state.frozen),
            data_iterator=iterator)
        finished = driver.run_steps(stage_name, cadence, stage_steps, state=(state.trainable, state.opt_state),
                                    start_step=start_step, manager=manager, metrics_dir=stage_dir, title=title)
    return StageResult(stage_name, stage_dir, finished.step, student.config, finished.last_metrics)
