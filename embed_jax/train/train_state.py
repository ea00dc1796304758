"""A stage's student and its training state: built, handed the previous stage's weights, split into trainable and
frozen parameters with an optimizer, placed on the mesh, resumed from the stage's latest checkpoint.

    student     = the init folder's encoder + this stage's heads (build_student), then the previous stage's
                  trained weights wherever path and shape match (restore_previous_stage)
    TrainState  = the split (stages.trainable_filter), the optimizer and every sharding (prepare_training)
    resume      = the stage's latest checkpoint into both, and the data iterator moved (resume_latest)

The checkpoint layout (items, folders) is embed_jax/train/workdir.py's.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from embed_jax.data import records
from embed_jax.models import hf_import
from embed_jax.models.student import Student
from embed_jax.assets import resolve_model_path
from embed_jax.train import checkpoint, optimizer as optimizers, sharding, stages, workdir


@dataclasses.dataclass
class StageResult:
    """What a finished stage hands to the next one (and to train_and_evaluate's caller)."""
    name: str
    workdir: Path
    final_step: int
    student_config: dict[str, Any]
    last_metrics: dict[str, float]


# ---------------------------------------------------------------------------------------------------- students


def stage_heads(config: ml_collections.ConfigDict, stage: ml_collections.ConfigDict) -> dict[str, Any]:
    """FC1 (teacher dim) always; the reduction heads only in stages that ask for them (docs/method.md §4: they join in
    stage 3)."""
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


def student_config(config: ml_collections.ConfigDict, stage: ml_collections.ConfigDict,
                   hf_config: dict[str, Any]) -> dict[str, Any]:
    """The Student config `build_student` would produce for an encoder of this config.json (num_layers applied)."""
    options = dict(config.model.text_options)
    num_layers = options.pop("num_layers", None)
    if num_layers is not None:
        hf_config = hf_import.keep_first_layers(hf_config, num_layers, source="model.text_options.num_layers")
    return {"text_encoder": hf_config, "text_options": options, "pooling": config.model.pooling or "mean",
            "heads": stage_heads(config, stage), "dtype": config.model.dtype, "param_dtype": config.model.param_dtype}


def abstract_student(config: ml_collections.ConfigDict, stage: ml_collections.ConfigDict,
                     hf_config: dict[str, Any]) -> Student:
    """`build_student`'s student as shapes only (`nnx.eval_shape`: no weights read, no memory): what the TPU plan
    compiles. `hf_config` is the encoder's config.json (the init folder's, or a named shape: embed_jax/models/shapes)."""
    return nnx.eval_shape(lambda: Student.from_config(student_config(config, stage, hf_config), rngs=nnx.Rngs(0)))


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


def restore_previous_stage(previous: StageResult, student: Student, mesh: jax.sharding.Mesh, log) -> None:
    """Loads the previous stage's final weights (read with this mesh's shardings) into the new stage's student."""
    trained = workdir.restore_stage_params(previous.workdir, previous.student_config, mesh, previous.final_step)
    copied, new = copy_matching_params(student, trained)
    log(f"[{previous.name} → next] {len(copied)} tensors from {previous.name}; new: {', '.join(new) or 'none'}")


def flat_params(student: Student) -> dict[str, np.ndarray]:
    """{'text_encoder/encoder/layer/0/...': array} of every parameter, on the host."""
    return {stages.path_name(path): np.asarray(variable.get_value())
            for path, variable in nnx.to_flat_state(param_state(student))}


def load_stage_params(result: StageResult) -> dict[str, np.ndarray]:
    return flat_params(workdir.load_trained_student(result.workdir, result.final_step))


def load_init_params(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """The parameters a first stage starts from (the init folder's encoder; heads at their seeded init)."""
    return flat_params(build_student(config, config[config.stage_order[0]], seed=int(config.seed)))


def save_student_config(stage_dir: Path, student: Student) -> None:
    """The stage's student_config.json, which export, evaluation and the next run read. Only process 0 writes."""
    if jax.process_index() == 0:
        workdir.write_student_config(stage_dir, student.config)


# ---------------------------------------------------------------------------------------------------- the stage's mesh


def stage_mesh(config: ml_collections.ConfigDict, devices=None) -> jax.sharding.Mesh:
    """The config's mesh over `devices` (default: every device of the run; the plan passes a TPU topology's), with
    the global batch checked to split over its data-parallel devices."""
    mesh = sharding.make_mesh(config.mesh, devices)
    sharding.check_batch_divisible(config.data.global_batch_size, mesh, key="data.global_batch_size")
    return mesh


def data_seed(config: ml_collections.ConfigDict, stage: ml_collections.ConfigDict) -> int:
    """The seed of the stage's data stream: config.seed, shifted by the stage's data_seed_offset (a new order)."""
    return int(config.seed) + int(stage.get("data_seed_offset", 0))


def log(message: str) -> None:
    """A line on process 0's console: every process runs the same code, one of them speaks."""
    if jax.process_index() == 0:
        print(message)


# ---------------------------------------------------------------------------------------------------- training state


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

    def checkpoint_items(self, trainable: nnx.State, opt_state: Any) -> dict[str, Any]:
        """The checkpoint's items: every parameter of the student (trainable and frozen) and the optimizer state."""
        return {workdir.PARAMS_ITEM: merged_params(self.graphdef, trainable, self.frozen),
                workdir.OPT_STATE_ITEM: opt_state}


def prepare_training(config: ml_collections.ConfigDict, stage_name: str, student: Student,
                     mesh: jax.sharding.Mesh, *, place: bool = True) -> TrainState:
    """Splits the student as the stage's `trainable` says, builds the optimizer, places everything on `mesh`.

    place=False (a shapes-only student, `abstract_student`): the states stay shapes with their shardings computed
    and the optimizer state is `jax.eval_shape`'s, for compiling the step ahead of time (embed_jax/plan/)."""
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
    # The optimizer state mirrors the trainable parameters (same logical axes); its step counters are replicated.
    opt_state_sharding = sharding.state_sharding(jax.eval_shape(tx.init, trainable), mesh)
    if not place:
        return TrainState(select, graphdef, trainable, frozen, tx, schedule, jax.eval_shape(tx.init, trainable),
                          trainable_sharding, frozen_sharding, opt_state_sharding)
    trainable = jax.device_put(trainable, trainable_sharding)
    frozen = jax.device_put(frozen, frozen_sharding)
    opt_state = jax.jit(tx.init, in_shardings=(trainable_sharding,), out_shardings=opt_state_sharding)(trainable)
    return TrainState(select, graphdef, trainable, frozen, tx, schedule, opt_state, trainable_sharding,
                      frozen_sharding, opt_state_sharding)


def merged_params(graphdef: nnx.GraphDef, trainable: nnx.State, frozen: nnx.State) -> nnx.State:
    """All parameters of the student (trainable and frozen) as one State, the checkpoint's `params` item."""
    return nnx.state(nnx.merge(graphdef, trainable, frozen), nnx.Param)


def shape_config(student: Student, manifest: records.Manifest) -> dict[str, Any]:
    """The values that fix the checkpoint's array shapes: a resume that changes one is refused, naming it."""
    return {
        "hidden_size": int(student.hidden_size),
        "head_dims": [int(dim) for dim in student.heads.dims],
        "teacher_dim": int(manifest.teacher_dim),
        "text_encoder": student.config["text_encoder"].get("model_type"),
        "num_layers": stages.count_encoder_layers([path for path, _ in nnx.to_flat_state(param_state(student))]),
    }


def stage_checkpoints(config: ml_collections.ConfigDict, stage_name: str, stage_dir: Path, student: Student,
                      manifest: records.Manifest) -> checkpoint.CheckpointManager:
    """The stage's checkpoint folder, refusing another run's (identity) or other shapes (shape config)."""
    return checkpoint.CheckpointManager(
        stage_dir / workdir.CHECKPOINTS_DIR,
        save_every=int(config.train.checkpoint_every),
        keep=int(config.train.keep_checkpoints),
        identity=workdir.run_identity(config, stage_name, manifest),
        shape_config=shape_config(student, manifest),
    )


def resume_latest(manager: checkpoint.CheckpointManager, student: Student, state: TrainState,
                  mesh: jax.sharding.Mesh, data_iterator: Any = None, *, stage_name: str) -> int:
    """The stage's latest checkpoint loaded into `student` and `state` (and the iterator moved); its step, 0 if none."""
    if manager.latest_step() is None:
        return 0
    full_sharding = sharding.state_sharding(param_state(student), mesh)
    targets = {
        workdir.PARAMS_ITEM: checkpoint.abstract_with_shardings(param_state(student), full_sharding),
        workdir.OPT_STATE_ITEM: checkpoint.abstract_with_shardings(state.opt_state, state.opt_state_sharding),
    }
    restored = manager.restore(None, targets, data_iterator)
    nnx.update(student, restored.state[workdir.PARAMS_ITEM])
    state.graphdef, trainable, frozen = stages.split_trainable(student, state.select)
    state.trainable = jax.device_put(trainable, state.trainable_sharding)
    state.frozen = jax.device_put(frozen, state.frozen_sharding)
    state.opt_state = restored.state[workdir.OPT_STATE_ITEM]
    log(f"[{stage_name}] resumed from step {restored.step} in {manager.directory}")
    return restored.step
