"""A heads-only stage (stage 1: FC1 on a frozen encoder, docs/method.md §4) trained from pooled vectors computed once.

    stage1.kind = 'cached_pooled'     (only with trainable='heads', embed_jax/train/config.py)
    stage1.fc1_init, start_interpolation   FC1 from the start's vectors, WiSE-FT of the encoder (stages/start_anchor.py)

Why it is exact: with the encoder frozen, FC1 only ever sees each text's pooled vector, and the student has no
dropout, so pooling every record once and training the heads on (pooled, teacher) rows gives the same loss and
gradients as running the encoder at every step (the step: embed_jax/train/cached_heads.py). What it buys: one encoder
forward per record instead of a forward per record *per epoch*, and a step that is a (batch × hidden) ·
(hidden × teacher_dim) matmul. Measured on the 2-core CPU (docs/RESULTS.md):
pooling 150,000 texts with the MiniLM student took 21 min 52 s beside another training, then 8,000 cached steps took
1 min 51 s; the same steps through the encoder would have run 256,000 texts through it, 1.7× the pooling pass.

The pooled vectors are computed with the pipeline's own batches (in record order; windows of 64 batches sorted by
length), gathered to every process, and kept on the devices: every process builds the same shuffled index batches from
(seed, epoch), so a resumed stage continues the exact stream. The held-out loss uses the same first
`train.eval_batches` batches of `data.eval_records_dir` as the uncached evaluator, so the two curves compare.
Checkpoints have the uncached stage's layout (all student parameters + optimizer state): the next stage, export
and evaluation read them unchanged.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from embed_jax import losses
from embed_jax.models.student import Student
from embed_jax.train import batches, cache_plan, cached_heads, driver, metrics, sharding
from embed_jax.train.config import StageConfig
from embed_jax.train.console import log
from embed_jax.train.stages import resume, start_anchor, student as stage_student, text
from embed_jax.train.stages.student import StageResult
from embed_jax.train.train_state import TrainState, prepare_training

# Batches per length-sorted window in the pooling pass over the training records. 64 batches of 32 (2,048 texts)
# hold the built-in corpus's few long passages together; bounded so that the window's records fit in host memory.
POOLING_WINDOW_BATCHES = 64


# ---------------------------------------------------------------------------------------------------- pooling pass


def pool_records(student_graphdef: nnx.GraphDef, student_state: nnx.State, state_sharding: Any,
                 local_batches: Iterable, batch_sharding: Any, *, pad_token_id: int, max_batches: int | None = None,
                 log=print, what: str = "records", total: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(pooled (n, hidden) float32, teacher (n, teacher_dim) float32) of every global batch, on every process."""

    @functools.partial(jax.jit, in_shardings=(state_sharding, batch_sharding, batch_sharding))
    def pooled_of(state, input_ids, attention_mask):
        return nnx.merge(student_graphdef, state)(input_ids, attention_mask)["pooled"].astype(jnp.float32)

    pooled, teacher = [], []
    started, count = time.perf_counter(), 0
    for index, local in enumerate(local_batches):
        if max_batches is not None and index == max_batches:
            break
        batch = batches.global_batch(local, batch_sharding, pad_token_id=pad_token_id)
        vectors = pooled_of(student_state, batch["input_ids"], batch["attention_mask"])
        order = one_process_order(len(vectors), jax.process_count())
        pooled.append(np.asarray(multihost_utils.process_allgather(vectors, tiled=True))[order])
        teacher.append(np.asarray(multihost_utils.process_allgather(batch["teacher"], tiled=True), np.float32)[order])
        count += len(pooled[-1])
        if index == 0:
            timed_from = (time.perf_counter(), count)
        elif index == cache_plan.TIMED_BATCHES and total:
            log(cache_plan.pooling_eta(total, count - timed_from[1], time.perf_counter() - timed_from[0]))
        if index % 200 == 199:
            log(f"[cached] pooled {count:,} {what} ({count / (time.perf_counter() - started):.0f}/s)")
    log(f"[cached] pooled {count:,} {what} in {time.perf_counter() - started:.1f} s")
    return np.concatenate(pooled), np.concatenate(teacher)


def one_process_order(rows: int, processes: int) -> np.ndarray:
    """Where each row of one process's global batch sits in the gathered one: process p holds rows p::P of the global
    batch (pipeline.GroupedBatches) and the gather puts the processes one after another, so reading the gathered rows
    at these positions gives the batch as one process sees it, and the cached rows (and every step drawn from them)
    do not depend on the process count."""
    per_process = rows // processes
    return np.array([(row % processes) * per_process + row // processes for row in range(rows)], dtype=np.int64)


# ---------------------------------------------------------------------------------------------------- the stage


@dataclasses.dataclass
class CachedStep:
    """A cached stage's training state, its jitted train and eval steps (cached_heads.make_steps) and shardings."""
    state: TrainState
    train_step: Callable
    eval_step: Callable
    batch_sharding: Any
    replicated: Any


def make_cached_step(student: Student, stage: StageConfig, optimizer_config: Mapping[str, Any] | None,
                     loss_config: losses.LossConfig, mesh: jax.sharding.Mesh, *,
                     stage_name: str = "stage", place: bool = True) -> CachedStep:
    """The split, optimizer, shardings and jitted steps of a cached stage, from typed arguments and a mesh alone
    (place=False: a shapes-only student, train_state.prepare_training)."""
    state = prepare_training(student, stage, optimizer_config, mesh, stage_name=stage_name, place=place)
    batch_sharding = sharding.batch_sharding(mesh)
    replicated = cached_heads.replicated_sharding(mesh)
    train_step, eval_step = cached_heads.make_steps(
        graphdef=state.graphdef, optimizer=state.optimizer, loss_config=loss_config,
        trainable_sharding=state.trainable_sharding, frozen_sharding=state.frozen_sharding,
        opt_state_sharding=state.opt_state_sharding, batch_sharding=batch_sharding, replicated=replicated)
    return CachedStep(state, train_step, eval_step, batch_sharding, replicated)


def run_cached_stage(config: ml_collections.ConfigDict, stage_name: str, stage: StageConfig, workdir: Path,
                     previous: StageResult | None) -> StageResult:
    cadence = driver.Cadence.from_config(config.train, stage.num_steps, evaluates=text.evaluates(config))
    stage_dir = workdir / stage_name
    seed = int(config.seed)
    mesh = stage_student.stage_mesh(config, stage_name, stage, log)
    batch_size = int(config.data.global_batch_size)

    source = batches.open_records(config, config.data.records_dir, "data.records_dir")
    student = stage_student.build_student(config, stage, seed=seed)
    if previous is not None:
        stage_student.restore_previous_stage(previous, student, mesh, log)
    # WiSE-FT before the split: the frozen encoder the rows are pooled with is the interpolated one.
    start_anchor.interpolate_student(config, stage, stage_name, student, seed=seed, log=log)
    cached_step = make_cached_step(student, stage, config.optimizer, text.loss_config_for(config, student), mesh,
                                   stage_name=stage_name)
    state, train_step, eval_step = cached_step.state, cached_step.train_step, cached_step.eval_step
    batch_sharding, replicated = cached_step.batch_sharding, cached_step.replicated

    with resume.stage_checkpoints(config, stage_name, stage_dir, student, source.manifest) as manager:
        # No data iterator: the steps draw their rows from (seed, step) alone (cached_heads.batch_indices).
        start_step = resume.resume_latest(manager, student, state, mesh, stage_name=stage_name)
        stage_student.save_student_config(stage_dir, student)
        if start_step >= cadence.num_steps:
            return StageResult(stage_name, stage_dir, start_step, student.config, {})

        pad_id = batches.pad_token_id(config)
        student_graphdef, student_state = nnx.split(nnx.merge(state.graphdef, state.trainable, state.frozen))
        state_sharding = sharding.state_sharding(student_state, mesh)
        pool = functools.partial(pool_records, student_graphdef, student_state, state_sharding,
                                 batch_sharding=batch_sharding, pad_token_id=pad_id, log=log)
        data_seed = stage.data_seed(config.seed)
        # The training rows' batch composition does not matter (each text is pooled alone; the steps draw their own
        # batches), so the pass sorts wide windows by length: fewer padded tokens than data.length_grouping_window's.
        window = max(int(config.data.length_grouping_window), POOLING_WINDOW_BATCHES)
        log(cache_plan.caching_verdict(len(source), cadence.num_steps - start_step, batch_size, stage_name))
        pooled, teacher = pool(batches.make_batches(config, source, seed=data_seed, shuffle=False, num_epochs=1,
                                                    length_grouping_window=window, group_by="length"),
                               what=f"training records of {config.data.records_dir}", total=len(source))
        eval_rows = None
        if cadence.eval_every:
            eval_source = batches.open_eval_records(config)
            eval_rows = pool(batches.make_batches(config, eval_source, seed=0, shuffle=False, num_epochs=1,
                                                  group_by=batches.EVAL_GROUP_BY),
                             max_batches=int(config.train.eval_batches), what="validation records")
        if start_step == 0 and stage.fc1_init == "start":
            start_anchor.init_fc1(config, stage_name, state.trainable, pooled, teacher, source.manifest, log)
        # Rows on the devices in the dtype they are stored in (the records' teacher dtype: float16 halves the memory).
        pooled_all = jax.device_put(pooled, replicated)
        teacher_all = jax.device_put(teacher.astype(source.manifest.dtype), replicated)

        advance = cached_heads.row_trainer(train_step, state.frozen, pooled_all, teacher_all, np.arange(len(pooled)),
                                           batch_size=batch_size, seed=data_seed, replicated=replicated)

        def step(trainable_and_opt_state, step_index: int) -> driver.Stepped:
            return driver.Stepped(*advance(trainable_and_opt_state, step_index))

        def evaluate(trainable_and_opt_state) -> dict[str, float]:
            trainable = trainable_and_opt_state[0]
            eval_pooled, eval_teacher = eval_rows
            chunks = [slice(start, start + batch_size) for start in range(0, len(eval_pooled), batch_size)]
            results = [jax.device_get(eval_step(trainable, state.frozen,
                                                jax.device_put(eval_pooled[chunk], batch_sharding),
                                                jax.device_put(eval_teacher[chunk], batch_sharding)))
                       for chunk in chunks]
            return {f"eval/{name}": float(np.mean([float(row[name]) for row in results])) for name in results[0]}

        stage_steps = driver.StageSteps(
            step=step,
            checkpoint_items=lambda trainable_and_opt_state: state.checkpoint_items(*trainable_and_opt_state),
            learning_rate=state.schedule,
            rates=metrics.StepRate(),
            evaluate=evaluate if eval_rows is not None else None)
        finished = driver.run_steps(stage_name, cadence, stage_steps, state=(state.trainable, state.opt_state),
                                    start_step=start_step, manager=manager, metrics_dir=stage_dir,
                                    title=f"{stage_name}: {stage.trainable} (cached pooled vectors)")
    return StageResult(stage_name, stage_dir, finished.step, student.config, finished.last_metrics)
