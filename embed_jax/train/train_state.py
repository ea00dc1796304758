"""A stage's training state: the student split into trainable and frozen parameters, its optimizer, and every
sharding, placed on the mesh (flax examples' TrainState, for a split NNX module).

    state = prepare_training(student, stage, optimizer_config, mesh)     (typed arguments: no records, no workdir)

The stages (embed_jax/train/stages/) build the student and resume the state from its checkpoint; tests, benchmarks
and a planner build the same state from a student and a StageConfig alone.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
from flax import nnx

from embed_jax.models.student import Student
from embed_jax.train import optimizer as optimizers, sharding, workdir
from embed_jax.train.config import StageConfig
from embed_jax.train.trainable import PathFilter, split_trainable, trainable_filter


def param_state(student: Student) -> nnx.State:
    return nnx.state(student, nnx.Param)


@dataclasses.dataclass
class TrainState:
    """A stage's student split into trainable and frozen parameters, its optimizer, and their shardings."""
    select: PathFilter
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


def prepare_training(student: Student, stage: StageConfig, optimizer_config: Mapping[str, Any] | None,
                     mesh: jax.sharding.Mesh, *, stage_name: str = "stage", place: bool = True) -> TrainState:
    """Splits the student as the stage's `trainable` says, builds the optimizer (`optimizer_config`: config.optimizer,
    None for optimizer.py's defaults), places everything on `mesh`. `stage_name` names the stage in errors.

    place=False, for a shapes-only student (stages/student.py `abstract_student`): the states stay shapes, their
    shardings computed, the optimizer state `jax.eval_shape`'s: what the TPU plan compiles (embed_jax/plan/)."""
    paths = [path for path, _ in nnx.to_flat_state(param_state(student))]
    select = trainable_filter(stage.trainable, paths, last_layers=stage.last_layers,
                              config_key=f"{stage_name}.trainable")
    graphdef, trainable, frozen = split_trainable(student, select)
    tx, schedule = optimizers.make_optimizer(optimizer_config, learning_rate=stage.learning_rate,
                                             total_steps=stage.num_steps,
                                             head_learning_rate=stage.head_learning_rate)
    trainable_sharding = sharding.state_sharding(trainable, mesh)
    frozen_rules = (sharding.without_axis(sharding.LOGICAL_AXIS_RULES, "fsdp") if stage.replicate_frozen
                    else sharding.LOGICAL_AXIS_RULES)
    frozen_sharding = sharding.state_sharding(frozen, mesh, frozen_rules)
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
