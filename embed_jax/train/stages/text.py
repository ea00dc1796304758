"""A text stage (stages 1–3, docs/method.md §4): the student's encoder and heads trained on teacher records, one batch
per step, with a periodic held-out loss.

    student   = init folder's encoder + the stage's heads, the previous stage's weights loaded (stages/student.py)
    target    'records' (the teacher vectors, docs/method.md §2) or 'pooled' (the student's own: self-distillation)
    evaluator mean loss terms over the first train.eval_batches batches of data.eval_records_dir

A heads-only stage 1 may instead train from pooled vectors computed once (embed_jax/train/stages/cached.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import ml_collections
from flax import nnx

from embed_jax import losses
from embed_jax.models.heads import head_name
from embed_jax.models.student import Student
from embed_jax.train import batches, driver, step as steps
from embed_jax.train.config import StageConfig
from embed_jax.train.console import log
from embed_jax.train.stages import batch as batch_stage, student as stage_student
from embed_jax.train.stages.student import StageResult
from embed_jax.train.train_state import TrainState


def run_text_stage(config: ml_collections.ConfigDict, stage_name: str, stage: StageConfig, workdir: Path,
                   previous: StageResult | None) -> StageResult:
    cadence = driver.Cadence.from_config(config.train, stage.num_steps, evaluates=evaluates(config))
    target = loss_target(config)
    mesh = stage_student.stage_mesh(config, stage_name, stage, log)
    source = batches.open_records(config, config.data.records_dir, "data.records_dir")
    student = stage_student.build_student(config, stage, seed=int(config.seed))
    if previous is not None:
        stage_student.restore_previous_stage(previous, student, mesh, log)
    loss_config = loss_config_for(config, student)
    batch_step = batch_stage.make_batch_step(student, stage, config.optimizer, loss_config, mesh, target=target,
                                             stage_name=stage_name)
    return batch_stage.run_batch_stage(
        config, stage_name, workdir / stage_name, batch_step=batch_step, cadence=cadence, student=student,
        manifest=source.manifest, data=batches.make_batches(config, source, seed=stage.data_seed(config.seed)),
        title=f"{stage_name}: {stage.trainable}",
        make_evaluator=(lambda state, batch_sharding: make_evaluator(config, state, loss_config, batch_sharding))
        if cadence.eval_every else None)


# ---------------------------------------------------------------------------------------------------- the loss


def loss_target(config: ml_collections.ConfigDict) -> str:
    """'records' (teacher vectors, docs/method.md §2) or 'pooled' (the student's own vectors:
    loss.reduction_target='pooled')."""
    if config.loss.reduction_target != "pooled":
        return "records"
    if config.model.teacher_dim:
        raise ValueError(f"config key loss.reduction_target='pooled' shrinks a model with its own vectors: it has no "
                         f"FC1, so set model.teacher_dim=0 (got {config.model.teacher_dim})")
    if not tuple(config.model.reduction_dims):
        raise ValueError("config key loss.reduction_target='pooled' needs model.reduction_dims, e.g. (128, 64)")
    return "pooled"


def loss_config_for(config: ml_collections.ConfigDict, student: Student) -> losses.LossConfig:
    values = dict(config.loss)
    main_dim = config.model.teacher_dim
    if loss_target(config) == "pooled":
        values["main_head"], values["reduction_target"] = None, "teacher"
        return losses.LossConfig.from_mapping(values)
    values["main_head"] = head_name(main_dim)
    if main_dim not in student.heads.dims:
        raise ValueError(f"model.teacher_dim={main_dim} names no head of the student (heads {student.heads.dims})")
    return losses.LossConfig.from_mapping(values)


# ---------------------------------------------------------------------------------------------------- evaluation


def evaluates(config: ml_collections.ConfigDict) -> bool:
    """Whether a text stage evaluates: train.eval_every > 0 and held-out records (data.eval_records_dir) given."""
    return bool(int(config.train.eval_every)) and bool(config.data.eval_records_dir)


def make_evaluator(config: ml_collections.ConfigDict, state: TrainState, loss_config: losses.LossConfig,
                   batch_sharding: Any):
    """The periodic evaluation: mean loss terms over the first `train.eval_batches` batches of held-out records
    (data.eval_records_dir, exported like the training records from texts training never sees), for `state`'s
    frozen parameters and the trainable ones it is given."""
    source = batches.open_eval_records(config)
    pad_token_id = batches.pad_token_id(config)
    eval_step = steps.make_eval_step(graphdef=state.graphdef, loss_config=loss_config,
                                     trainable_sharding=state.trainable_sharding,
                                     frozen_sharding=state.frozen_sharding, batch_sharding=batch_sharding,
                                     target=loss_target(config))

    def evaluate(trainable: nnx.State) -> dict[str, float]:
        frozen = state.frozen
        totals: dict[str, float] = {}
        count = 0
        for local in batches.make_batches(config, source, seed=0, shuffle=False, num_epochs=1,
                                             group_by=batches.EVAL_GROUP_BY):
            batch = batches.global_batch(local, batch_sharding, pad_token_id=pad_token_id)
            for name, value in jax.device_get(eval_step(trainable, frozen, batch)).items():
                totals[name] = totals.get(name, 0.0) + float(value)
            count += 1
            if count == int(config.train.eval_batches):
                break
        return {f"eval/{name}": total / count for name, total in totals.items()}

    return evaluate
