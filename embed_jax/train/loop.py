"""The training loop: stages run one after another, each resumable, on one CPU, one GPU or a TPU slice alike.

    for each stage in config.stage_order (workdir/<stage>/):
        student  = the init folder's encoder + this stage's heads, with the previous stage's trained weights
        resume   from the stage's latest checkpoint if there is one (same or different mesh)
        for step:  global batch → jit train step (sharded over the mesh) → metrics → checkpoint → preemption check
        the stage's last checkpoint holds the full student: the next stage, export and eval start from it

Every process runs this same code; each reads its own slice of the records, and the loss sees the global batch.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from embed_jax import losses
from embed_jax.data import pipeline, records
from embed_jax.models.heads import head_name
from embed_jax.models.student import Student
from embed_jax.assets import resolve_model_path
from embed_jax.train import checkpoint, metrics, optimizer as optimizers, sharding, stages, step as steps
from embed_jax.train import vision_stage
from embed_jax.train.metrics import read_metrics
from embed_jax.train.preemption import PreemptionGuard

STUDENT_CONFIG_FILE = "student_config.json"
PARAMS_ITEM, OPT_STATE_ITEM = "params", "opt_state"


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or inf; the message names the step and the term. The last good checkpoint stays."""


@dataclasses.dataclass
class StageResult:
    name: str
    workdir: Path
    final_step: int
    student_config: dict[str, Any]
    last_metrics: dict[str, float]


# ---------------------------------------------------------------------------------------------------- students


def stage_heads(config: ml_collections.ConfigDict, stage: ml_collections.ConfigDict) -> dict[str, Any]:
    """FC1 (teacher dim) always; the reduction heads only in stages that ask for them (SPEC §4: they join in stage 3)."""
    reduction = tuple(config.model.reduction_dims) if stage.get("reduction_heads", False) else ()
    teacher_dim = config.model.teacher_dim if config.model.get("teacher_dim") else None
    return {"teacher_dim": teacher_dim, "reduction_dims": list(reduction)}


def build_student(config: ml_collections.ConfigDict, stage: ml_collections.ConfigDict, *, seed: int) -> Student:
    """The init folder's encoder with fresh heads for this stage (weights of earlier stages are loaded afterwards)."""
    return Student.from_pretrained(
        resolve_model_path(config.model.init_from),
        heads=stage_heads(config, stage),
        pooling_method=config.model.pooling or None,
        dtype=jnp.dtype(config.model.dtype),
        param_dtype=jnp.dtype(config.model.param_dtype),
        text_options=dict(config.model.text_options),
        rngs=nnx.Rngs(seed),
    )


def param_state(student: Student) -> nnx.State:
    return nnx.state(student, nnx.Param)


def copy_matching_params(student: Student, source: nnx.State) -> tuple[list[str], list[str]]:
    """Copies every parameter of `source` whose path and shape the student has; returns (copied, new in student)."""
    target = dict(nnx.to_flat_state(param_state(student)))
    copied = []
    for path, variable in nnx.to_flat_state(source):
        if path in target and target[path].get_value().shape == variable.get_value().shape:
            target[path].set_value(variable.get_value())
            copied.append(stages.path_name(path))
    new = sorted(stages.path_name(path) for path in target if stages.path_name(path) not in set(copied))
    return copied, new


# ---------------------------------------------------------------------------------------------------- batches


def global_batch(local: Mapping[str, np.ndarray], batch_sharding: Any, *, pad_token_id: int) -> dict[str, jax.Array]:
    """This process's rows → one global jax.Array per field; processes first agree on the padded length."""
    local = dict(local)
    if jax.process_count() > 1:
        lengths = multihost_utils.process_allgather(np.asarray(local["input_ids"].shape[1]))
        local = pipeline.pad_batch_to_length(local, int(np.max(lengths)), pad_token_id=pad_token_id)
    fields = ("input_ids", "attention_mask", "teacher") + (("pixel_values",) if "pixel_values" in local else ())
    return {name: jax.make_array_from_process_local_data(batch_sharding, np.asarray(local[name])) for name in fields}


def open_records(config: ml_collections.ConfigDict, folder: str, key: str) -> pipeline.RecordDataSource:
    source = pipeline.RecordDataSource(folder)
    teacher_dim = config.model.teacher_dim
    if teacher_dim:
        pipeline.check_manifest_for_training(source.manifest, teacher_dim=teacher_dim,
                                             teacher_dim_key="model.teacher_dim", records_key=key)
    return source


def make_batches(config: ml_collections.ConfigDict, source: pipeline.RecordDataSource, *, seed: int,
                 shuffle: bool = True, num_epochs: int | None = None, length_grouping_window: int | None = None):
    """The pipeline as the config sets it; `length_grouping_window` overrides data.length_grouping_window."""
    if length_grouping_window is None:
        length_grouping_window = int(config.data.get("length_grouping_window", 1))
    return pipeline.make_dataset(
        source,
        tokenizer=config.data.tokenizer or config.model.init_from,
        global_batch_size=config.data.global_batch_size,
        max_length=config.data.max_length,
        length_buckets=tuple(config.data.length_buckets),
        length_grouping_window=length_grouping_window,
        seed=seed,
        shuffle=shuffle,
        num_epochs=num_epochs,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )


# ---------------------------------------------------------------------------------------------------- evaluation


def make_evaluator(config: ml_collections.ConfigDict, *, graphdef, loss_config, trainable_sharding, frozen_sharding,
                   batch_sharding, pad_token_id: int):
    """The periodic evaluation hook: mean loss terms over the first `train.eval_batches` batches of held-out records
    (data.eval_records_dir, exported like the training records from texts training never sees). None when off."""
    if not int(config.train.eval_every) or not config.data.eval_records_dir:
        return None
    if int(config.train.eval_every) % int(config.train.log_every):
        raise ValueError(f"config key train.eval_every={config.train.eval_every} must be a multiple of "
                         f"train.log_every={config.train.log_every}: evaluations are written with the logged metrics")
    source = open_records(config, config.data.eval_records_dir, "data.eval_records_dir")
    eval_step = steps.make_eval_step(graphdef=graphdef, loss_config=loss_config,
                                     trainable_sharding=trainable_sharding, frozen_sharding=frozen_sharding,
                                     batch_sharding=batch_sharding, target=loss_target(config))

    def evaluate(trainable: nnx.State, frozen: nnx.State) -> dict[str, float]:
        totals: dict[str, float] = {}
        count = 0
        for local in make_batches(config, source, seed=0, shuffle=False, num_epochs=1):
            batch = global_batch(local, batch_sharding, pad_token_id=pad_token_id)
            for name, value in jax.device_get(eval_step(trainable, frozen, batch)).items():
                totals[name] = totals.get(name, 0.0) + float(value)
            count += 1
            if count == int(config.train.eval_batches):
                break
        return {f"eval/{name}": total / count for name, total in totals.items()}

    return evaluate


# ---------------------------------------------------------------------------------------------------- one stage


def loss_target(config: ml_collections.ConfigDict) -> str:
    """'records' (teacher vectors, SPEC §2) or 'pooled' (the student's own vectors: loss.reduction_target='pooled')."""
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


def image_loss_config(config: ml_collections.ConfigDict) -> losses.LossConfig:
    """Stage 4: every head gets all three terms against its captions' vectors (losses.image_caption_loss)."""
    return losses.LossConfig.from_mapping({**dict(config.loss), "main_head": None, "reduction_target": "teacher"})


def run_identity(config: ml_collections.ConfigDict, stage_name: str, manifest: records.Manifest) -> dict[str, Any]:
    """What defines a run's checkpoints: a folder holding another identity is refused (checkpoint.py)."""
    return {
        "stage": stage_name,
        "init_from": str(config.model.init_from),
        "records_fingerprint": manifest.corpus_fingerprint,
        "teachers": [teacher.name for teacher in manifest.teachers],
        "seed": int(config.seed),
    }


def shape_config(config: ml_collections.ConfigDict, student: Student, manifest: records.Manifest) -> dict[str, Any]:
    return {
        "hidden_size": int(student.hidden_size),
        "head_dims": [int(dim) for dim in student.heads.dims],
        "teacher_dim": int(manifest.teacher_dim),
        "text_encoder": student.config["text_encoder"].get("model_type"),
        "num_layers": stages.count_encoder_layers([path for path, _ in nnx.to_flat_state(param_state(student))]),
    }


def restore_stage_params(stage_dir: Path, student_config: Mapping[str, Any], mesh: jax.sharding.Mesh,
                         step: int | None = None) -> nnx.State:
    """A stage's trained parameters (its latest checkpoint, or `step`), read straight into `mesh`'s shardings."""
    abstract_student = nnx.eval_shape(lambda: Student.from_config(student_config, rngs=nnx.Rngs(0)))
    abstract = param_state(abstract_student)
    targets = checkpoint.abstract_with_shardings(abstract, sharding.state_sharding(abstract, mesh))
    manager = checkpoint.CheckpointManager(stage_dir / "checkpoints", save_every=1, keep=1, identity={},
                                           shape_config={})
    try:
        restored = manager.restore(step, {PARAMS_ITEM: targets}, check_identity=False)
    finally:
        manager.close()
    if restored is None:
        raise FileNotFoundError(f"{stage_dir / 'checkpoints'} holds no checkpoint; train this stage first")
    return restored.state[PARAMS_ITEM]


def load_trained_student(stage_dir: str | Path, step: int | None = None) -> Student:
    """The student a stage trained, on one device: the start of export and evaluation."""
    stage_dir = absolute_workdir(stage_dir)
    config_file = stage_dir / STUDENT_CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} is missing: {stage_dir} is not a stage folder written by "
                                "embed_jax.main (pass --workdir/<stage>, e.g. runs/default/train/stage3)")
    student_config = json.loads(config_file.read_text())
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    student = Student.from_config(student_config, rngs=nnx.Rngs(0))
    nnx.update(student, restore_stage_params(stage_dir, student_config, mesh, step))
    return student


def flat_params(student: Student) -> dict[str, np.ndarray]:
    """{'text_encoder/encoder/layer/0/...': array} of every parameter, on the host."""
    return {stages.path_name(path): np.asarray(variable.get_value())
            for path, variable in nnx.to_flat_state(param_state(student))}


def load_stage_params(result: StageResult) -> dict[str, np.ndarray]:
    return flat_params(load_trained_student(result.workdir, result.final_step))


def load_init_params(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """The parameters a first stage starts from (the init folder's encoder; heads at their seeded init)."""
    return flat_params(build_student(config, config[config.stage_order[0]], seed=int(config.seed)))


def restore_previous_stage(previous: StageResult, student: Student, mesh: jax.sharding.Mesh, log) -> None:
    """Loads the previous stage's final weights (read with this mesh's shardings) into the new stage's student."""
    trained = restore_stage_params(previous.workdir, previous.student_config, mesh, previous.final_step)
    copied, new = copy_matching_params(student, trained)
    log(f"[{previous.name} → next] {len(copied)} tensors from {previous.name}; new: {', '.join(new) or 'none'}")


@dataclasses.dataclass
class TrainState:
    """A stage's student split into trainable and frozen parameters, its optimizer, and their shardings."""
    select: stages.PathFilter
    graphdef: nnx.GraphDef
    trainable: nnx.State
    frozen: nnx.State
    optimizer: Any
    schedule: Any
    opt_state: Any
    trainable_sharding: Any
    frozen_sharding: Any
    opt_state_sharding: Any


def prepare_training(config: ml_collections.ConfigDict, stage_name: str, student: Student,
                     mesh: jax.sharding.Mesh) -> TrainState:
    """Splits the student as the stage's `trainable` says, builds the optimizer, places everything on `mesh`."""
    stage = config[stage_name]
    paths = [path for path, _ in nnx.to_flat_state(param_state(student))]
    select = stages.trainable_filter(stage.trainable, paths, last_layers=stage.get("last_layers", 3),
                                     config_key=f"{stage_name}.trainable")
    graphdef, trainable, frozen = stages.split_trainable(student, select)
    tx, schedule = optimizers.make_optimizer(config.optimizer, learning_rate=stage.learning_rate,
                                             total_steps=int(stage.num_steps), params=trainable,
                                             head_learning_rate=stage.get("head_learning_rate"))
    trainable_sharding = sharding.state_sharding(trainable, mesh)
    frozen_sharding = sharding.state_sharding(frozen, mesh)
    trainable = jax.device_put(trainable, trainable_sharding)
    frozen = jax.device_put(frozen, frozen_sharding)
    # The optimizer state mirrors the trainable parameters (same logical axes); its step counters are replicated.
    opt_state_sharding = sharding.state_sharding(jax.eval_shape(tx.init, trainable), mesh)
    opt_state = jax.jit(tx.init, in_shardings=(trainable_sharding,), out_shardings=opt_state_sharding)(trainable)
    return TrainState(select, graphdef, trainable, frozen, tx, schedule, opt_state, trainable_sharding,
                      frozen_sharding, opt_state_sharding)


def resume_latest(manager: checkpoint.CheckpointManager, student: Student, state: TrainState,
                  mesh: jax.sharding.Mesh, data_iterator: Any = None) -> int:
    """The stage's latest checkpoint loaded into `student` and `state` (and the iterator moved); its step, 0 if none."""
    if manager.latest_step() is None:
        return 0
    full_sharding = sharding.state_sharding(param_state(student), mesh)
    targets = {
        PARAMS_ITEM: checkpoint.abstract_with_shardings(param_state(student), full_sharding),
        OPT_STATE_ITEM: checkpoint.abstract_with_shardings(state.opt_state, state.opt_state_sharding),
    }
    restored = manager.restore(None, targets, data_iterator)
    nnx.update(student, restored.state[PARAMS_ITEM])
    state.graphdef, trainable, frozen = stages.split_trainable(student, state.select)
    state.trainable = jax.device_put(trainable, state.trainable_sharding)
    state.frozen = jax.device_put(frozen, state.frozen_sharding)
    state.opt_state = restored.state[OPT_STATE_ITEM]
    return restored.step


def run_stage(config: ml_collections.ConfigDict, stage_name: str, workdir: Path,
              previous: StageResult | None) -> StageResult:
    stage = config[stage_name]
    if stage.get("cached_pooled", False):
        from embed_jax.train import cached_stage  # it builds on this module's helpers

        return cached_stage.run_cached_stage(config, stage_name, workdir, previous)
    stage_dir = workdir / stage_name
    seed = int(config.seed)
    mesh = sharding.make_mesh(config.mesh)
    sharding.check_batch_divisible(config.data.global_batch_size, mesh, key="data.global_batch_size")

    # An image stage (stage 4: trainable="vision") builds a student with a vision tower and reads image–caption
    # records (embed_jax/train/vision_stage.py); everything else below is shared with the text stages.
    image_stage = vision_stage.is_image_stage(stage)
    if image_stage:
        student = vision_stage.build_student(config, stage_heads(config, stage), seed=seed, mesh=mesh,
                                             restore_params=restore_stage_params)
    else:
        source = open_records(config, config.data.records_dir, "data.records_dir")
        student = build_student(config, stage, seed=seed)
    is_main = jax.process_index() == 0
    log = print if is_main else (lambda *_: None)
    if previous is not None:
        restore_previous_stage(previous, student, mesh, log)
    if image_stage:
        source = vision_stage.open_records(config.data.image_records_dir, student,
                                           records_key="data.image_records_dir")

    train_state = prepare_training(config, stage_name, student, mesh)
    graphdef, trainable, frozen, opt_state = (train_state.graphdef, train_state.trainable, train_state.frozen,
                                              train_state.opt_state)
    tx, schedule, num_steps = train_state.optimizer, train_state.schedule, int(stage.num_steps)
    trainable_sharding, frozen_sharding, opt_state_sharding = (
        train_state.trainable_sharding, train_state.frozen_sharding, train_state.opt_state_sharding)
    batch_sharding = sharding.batch_sharding(mesh)

    data_seed = seed + int(stage.get("data_seed_offset", 0))
    batches = (vision_stage.make_batches(config, source, student, seed=data_seed) if image_stage
               else make_batches(config, source, seed=data_seed))
    iterator = iter(batches)
    manager = checkpoint.CheckpointManager(
        stage_dir / "checkpoints",
        save_every=int(config.train.checkpoint_every),
        keep=int(config.train.keep_checkpoints),
        identity=run_identity(config, stage_name, source.manifest),
        shape_config=shape_config(config, student, source.manifest),
    )
    start_step = resume_latest(manager, student, train_state, mesh, iterator)
    if start_step:
        graphdef, trainable, frozen, opt_state = (train_state.graphdef, train_state.trainable, train_state.frozen,
                                                  train_state.opt_state)
        log(f"[{stage_name}] resumed from step {start_step} in {stage_dir / 'checkpoints'}")

    stage_dir.mkdir(parents=True, exist_ok=True)
    if is_main:
        (stage_dir / STUDENT_CONFIG_FILE).write_text(json.dumps(student.config, indent=1, default=str))
    loss_config = image_loss_config(config) if image_stage else loss_config_for(config, student)
    train_step = steps.make_train_step(
        graphdef=graphdef, optimizer=tx, loss_config=loss_config, trainable_sharding=trainable_sharding,
        frozen_sharding=frozen_sharding, opt_state_sharding=opt_state_sharding, batch_sharding=batch_sharding,
        target="captions" if image_stage else loss_target(config))

    writer = metrics.MetricsWriter(stage_dir, total_steps=num_steps, start_step=start_step,
                                   title=f"{stage_name}: {stage.trainable}")
    throughput = metrics.Throughput()
    log_every = int(config.train.log_every)
    eval_every = int(config.train.eval_every)
    last_metrics: dict[str, float] = {}
    _, pad_id = pipeline.load_tokenizer(config.data.tokenizer or config.model.init_from, config.data.max_length)
    # The periodic held-out loss reads text records; image stages are evaluated by embed_jax.eval.zero_shot.
    evaluate = None if image_stage else make_evaluator(
        config, graphdef=graphdef, loss_config=loss_config, trainable_sharding=trainable_sharding,
        frozen_sharding=frozen_sharding, batch_sharding=batch_sharding, pad_token_id=pad_id)
    step_number = start_step
    since_last_log: list[dict[str, jax.Array]] = []
    try:
        with PreemptionGuard() as guard:
            while step_number < num_steps:
                local = next(iterator)
                batch = global_batch(local, batch_sharding, pad_token_id=pad_id)
                trainable, opt_state, step_metrics = train_step(trainable, frozen, opt_state, batch)
                since_last_log.append(step_metrics)
                step_number += 1
                throughput.add(int(batch["input_ids"].shape[0]), int(local["attention_mask"].sum()) * jax.process_count())
                writer.advance()
                if step_number % log_every == 0 or step_number == num_steps or step_number == start_step + 1:
                    # The mean over the steps since the last log: one batch's loss is too noisy to read a trend from.
                    host = mean_metrics(jax.device_get(since_last_log))
                    since_last_log = []
                    check_finite(host, step_number, stage_name, manager)
                    host["learning_rate"] = float(schedule(step_number - 1))
                    host.update(throughput.read_and_reset())
                    if evaluate is not None and (step_number % eval_every == 0 or step_number == num_steps):
                        host.update(evaluate(trainable, frozen))
                    writer.write(step_number, host)
                    last_metrics = host
                if guard.should_stop(step_number):
                    check_finite_now(step_metrics, step_number, stage_name, manager)
                    state = {PARAMS_ITEM: merged_params(graphdef, trainable, frozen), OPT_STATE_ITEM: opt_state}
                    manager.save(step_number, state, iterator, force=True)
                    writer.message(f"[{stage_name}] stop requested (SIGTERM): saved step {step_number}; rerun the "
                                   "same command to resume")
                    raise Preempted(step_number)
                if step_number % int(config.train.checkpoint_every) == 0 or step_number == num_steps:
                    check_finite_now(step_metrics, step_number, stage_name, manager)
                    state = {PARAMS_ITEM: merged_params(graphdef, trainable, frozen), OPT_STATE_ITEM: opt_state}
                    manager.save(step_number, state, iterator, force=step_number == num_steps)
    finally:
        manager.wait_until_finished()
        manager.close()
        writer.close()
    return StageResult(stage_name, stage_dir, step_number, student.config, last_metrics)


class Preempted(Exception):
    """Raised out of `run_stage` after the preemption save, so that later stages do not start."""

    def __init__(self, step: int):
        super().__init__(f"stopped at step {step} on request")
        self.step = step


def mean_metrics(rows: list[Mapping[str, Any]]) -> dict[str, float]:
    """Per-name mean of several steps' metrics (NaN/inf propagate, so `check_finite` still sees them)."""
    return {name: float(np.mean([float(row[name]) for row in rows])) for name in rows[0]}


def merged_params(graphdef: nnx.GraphDef, trainable: nnx.State, frozen: nnx.State) -> nnx.State:
    """All parameters of the student (trainable and frozen) as one State, the checkpoint's `params` item."""
    return nnx.state(nnx.merge(graphdef, trainable, frozen), nnx.Param)


def check_finite(host_metrics: Mapping[str, float], step_number: int, stage_name: str,
                 manager: checkpoint.CheckpointManager) -> None:
    """NaN/inf in any term: stop, naming the step and the term; no checkpoint is written after it."""
    terms = {name: value for name, value in host_metrics.items() if name not in ("loss", "grad_norm")}
    bad = steps.first_nonfinite(terms) or steps.first_nonfinite(host_metrics)
    if bad is None:
        return
    manager.wait_until_finished()
    last_good = manager.latest_step()
    raise NonFiniteLossError(
        f"[{stage_name}] step {step_number}: loss term {bad!r} is {host_metrics[bad]} (non-finite). Training "
        f"stopped; the last good checkpoint is step {last_good} in {manager.directory}. Lower the learning rate "
        "(optimizer / stage learning_rate) or check the records for bad teacher vectors, then rerun to resume.")


def check_finite_now(step_metrics: Mapping[str, jax.Array], step_number: int, stage_name: str,
                     manager: checkpoint.CheckpointManager) -> None:
    check_finite({name: float(value) for name, value in jax.device_get(step_metrics).items()}, step_number,
                 stage_name, manager)


# ---------------------------------------------------------------------------------------------------- all stages


def absolute_workdir(workdir: str | Path) -> Path:
    """Orbax needs absolute checkpoint paths; a relative local workdir is taken from the current folder. (Cloud
    Storage workdirs, gs://..., are already absolute and are passed through untouched.)"""
    return Path(workdir) if str(workdir).startswith("gs://") else Path(workdir).resolve()


RUN_CONFIG_FILE = "config.json"


def write_run_config(config: ml_collections.ConfigDict, workdir: Path) -> None:
    """The full config of the latest run, with absolute records folders: what export and evaluation read to find
    the records and tokenizer a checkpoint was trained on (embed_jax/convert/hf.py, embed_jax/eval/overlap.py)."""
    if jax.process_index() != 0:
        return
    values = config.to_dict()
    for key in ("records_dir", "eval_records_dir", "image_records_dir"):
        if key not in values["data"]:
            continue
        folders = str(values["data"][key] or "")
        values["data"][key] = ",".join(str(Path(folder.strip()).resolve()) for folder in folders.split(",")
                                       if folder.strip())
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / RUN_CONFIG_FILE).write_text(json.dumps(values, indent=1, default=str) + "\n")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> list[StageResult]:
    workdir = absolute_workdir(workdir)
    write_run_config(config, workdir)
    results: list[StageResult] = []
    previous = None
    for stage_name in config.stage_order:
        if stage_name not in config:
            raise ValueError(f"config key stage_order names {stage_name!r}, but the config has no such section; "
                             f"sections: {sorted(key for key in config.keys() if key.startswith('stage'))}")
        previous = run_stage(config, stage_name, workdir, previous)
        results.append(previous)
    return results
