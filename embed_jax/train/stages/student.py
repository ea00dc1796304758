"""A stage's student: the init folder's encoder with this stage's heads, handed the previous stage's trained weights.

    student = build_student (model.init_from + the stage's heads: FC1 always, model.reduction_dims where the stage
              has reduction_heads=True), then restore_previous_stage (every tensor whose path and shape match)
    StageResult: what a finished stage hands to the next one, and the weights it saved (load_stage_params)

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

from embed_jax.assets import resolve_model_path
from embed_jax.models import hf_import
from embed_jax.models.param_paths import path_name
from embed_jax.models.student import Student
from embed_jax.train import config as train_config, sharding, trained_student, workdir
from embed_jax.train.config import StageConfig
from embed_jax.train.train_state import param_state


@dataclasses.dataclass
class StageResult:
    """What a finished stage hands to the next one (and to train_and_evaluate's caller)."""
    name: str
    workdir: Path
    final_step: int
    student_config: dict[str, Any]
    last_metrics: dict[str, float]


def stage_heads(config: ml_collections.ConfigDict, stage: StageConfig) -> dict[str, Any]:
    """FC1 (teacher dim) always; the reduction heads only in stages that ask for them (docs/method.md §4: they join in
    stage 3)."""
    reduction = tuple(config.model.reduction_dims) if stage.reduction_heads else ()
    teacher_dim = config.model.teacher_dim or None
    return {"teacher_dim": teacher_dim, "reduction_dims": list(reduction)}


def build_student(config: ml_collections.ConfigDict, stage: StageConfig, *, seed: int) -> Student:
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


def student_config(config: ml_collections.ConfigDict, stage: StageConfig, hf_config: dict[str, Any]) -> dict[str, Any]:
    """The Student config `build_student` makes from an encoder with this config.json (num_layers applied)."""
    options = dict(config.model.text_options)
    num_layers = options.pop("num_layers", None)
    if num_layers is not None:
        hf_config = hf_import.keep_first_layers(hf_config, num_layers, source="model.text_options.num_layers")
    return {"text_encoder": hf_config, "text_options": options, "pooling": config.model.pooling or "mean",
            "heads": stage_heads(config, stage), "dtype": config.model.dtype, "param_dtype": config.model.param_dtype}


def abstract_student(config: ml_collections.ConfigDict, stage: StageConfig, hf_config: dict[str, Any]) -> Student:
    """`build_student`'s student as shapes only (`nnx.eval_shape`: no weights read, nothing allocated), from the
    encoder's config.json (the init folder's, or a shipped shape: embed_jax/models/shapes/): what the TPU plan
    compiles (embed_jax/plan/)."""
    return nnx.eval_shape(lambda: Student.from_config(student_config(config, stage, hf_config), rngs=nnx.Rngs(0)))


def copy_matching_params(student: Student, source: nnx.State) -> tuple[list[str], list[str]]:
    """Copies every parameter of `source` whose path and shape the student has; returns (copied, new in student)."""
    target = dict(nnx.to_flat_state(param_state(student)))
    copied = []
    for path, variable in nnx.to_flat_state(source):
        if path in target and target[path].get_value().shape == variable.get_value().shape:
            target[path].set_value(variable.get_value())
            copied.append(path_name(path))
    new = sorted(path_name(path) for path in target if path_name(path) not in set(copied))
    return copied, new


def stage_mesh(config: ml_collections.ConfigDict, stage_name: str, stage: StageConfig, log) -> jax.sharding.Mesh:
    """The mesh a stage trains on: its own `mesh` where it sets one (said in the log), else config.mesh. The log also
    says where the stage keeps its frozen parameters whole (replicate_frozen)."""
    mesh = sharding.make_mesh(stage.mesh_config(config.mesh), key=stage.mesh_key(stage_name))
    if stage.mesh:
        log(f"[{stage_name}] on its own mesh ({stage_name}.mesh={stage.mesh!r}): "
            + " × ".join(f"{axis}={size}" for axis, size in mesh.shape.items()))
    if stage.replicate_frozen and mesh.shape["fsdp"] > 1:
        log(f"[{stage_name}] frozen parameters whole on each of the fsdp={mesh.shape['fsdp']} devices "
            f"({stage_name}.replicate_frozen=True); trainable ones split")
    return mesh


def restore_previous_stage(previous: StageResult, student: Student, mesh: jax.sharding.Mesh, log) -> None:
    """Loads the previous stage's final weights (read with this mesh's shardings) into the new stage's student."""
    trained = trained_student.restore_stage_params(previous.workdir, previous.student_config, mesh, previous.final_step)
    copied, new = copy_matching_params(student, trained)
    log(f"[{previous.name} → next] {len(copied)} tensors from {previous.name}; new: {', '.join(new) or 'none'}")


def flat_params(student: Student) -> dict[str, np.ndarray]:
    """{'text_encoder/encoder/layer/0/...': array} of every parameter, on the host."""
    return {path_name(path): np.asarray(variable.get_value())
            for path, variable in nnx.to_flat_state(param_state(student))}


def load_stage_params(result: StageResult) -> dict[str, np.ndarray]:
    return flat_params(trained_student.load_student(result.workdir, result.final_step))


def load_init_params(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """The parameters a first stage starts from (the init folder's encoder; heads at their seeded init)."""
    return flat_params(build_student(config, train_config.stage_config(config, config.stage_order[0]),
                                     seed=int(config.seed)))




def save_student_config(stage_dir: Path, student: Student) -> None:
    """The stage's student_config.json, which export, evaluation and the next run read. Only process 0 writes."""
    if jax.process_index() == 0:
        workdir.write_student_config(stage_dir, student.config)
