"""A stage's train step as training builds it, from shapes alone, ready to compile for a TPU topology.

Everything comes from train/'s own builders with their seams opened, never a copy of them:

    student   train_state.abstract_student      (the config's student, shapes only, from a config.json)
    state     train_state.prepare_training(place=False)   (the stage's trainable/frozen split, optimizer, shardings)
    mesh      train_state.stage_mesh(config, devices)     (the config's mesh over the topology's devices)
    step      step.make_train_step (text stages), cached_stage.make_steps (stage1.cached_pooled)

`StageProgram.arguments(length)` gives the step's arguments as ShapeDtypeStructs carrying their shardings, one set
per length bucket (a step compiles once per padded length, so every bucket is a program of its own).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import NamedSharding, PartitionSpec

from embed_jax.models.student import Student
from embed_jax.train import cached_stage, checkpoint, flops, sharding, stages, text_stage, train_state, vision_stage
from embed_jax.train import step as steps

TEXT, CACHED, VISION = "text", "cached", "vision"


class PlanError(ValueError):
    """A plan that cannot be made as asked; the message names the input to change."""


def stage_kind(stage: ml_collections.ConfigDict) -> str:
    """Which runner trains the stage (the same dispatch as train/loop.py's run_stage)."""
    if stage.get(cached_stage.CONFIG_KEY, False):
        return CACHED
    if vision_stage.is_image_stage(stage):
        return VISION
    return TEXT


@dataclasses.dataclass
class StageProgram:
    name: str
    kind: str
    student: Student
    state: train_state.TrainState
    mesh: jax.sharding.Mesh
    step: Callable
    lengths: tuple[int, ...]
    batch_size: int
    make_arguments: Callable[[int], tuple]
    trainable_layers: int
    cached_rows: int = 0  # a cached stage: pooled rows kept on every chip

    def arguments(self, length: int) -> tuple:
        return self.make_arguments(length)

    def analytic_flops(self, length: int) -> float:
        """train/flops.py's count of one step (the whole slice)."""
        shape = flops.encoder_shape(self.student)
        head_dims = self.student.heads.dims
        if self.kind == CACHED:  # heads only, on pooled vectors: forward + backward of the heads
            return 3.0 * (flops.forward_flops(shape, self.batch_size, 1, head_dims, layers=0))
        return flops.train_step_flops(shape, self.batch_size, length, head_dims, self.trainable_layers)


def trainable_layers(stage: ml_collections.ConfigDict, student: Student) -> int:
    """How many encoder layers get gradients (train/stages.py's choices)."""
    if stage.trainable in ("all", "encoder+heads"):
        return int(student.text_encoder.config.num_hidden_layers)
    if stage.trainable == "heads+last_layers":
        return int(stage.get("last_layers", 3))
    return 0


def _shaped(tree: Any, shardings: Any) -> Any:
    return checkpoint.abstract_with_shardings(tree, shardings)


def text_batch(config: ml_collections.ConfigDict, batch_sharding: NamedSharding, length: int) -> dict[str, Any]:
    """One global batch as the pipeline hands it to the step (batches.global_batch): ids, mask, teacher vectors."""
    size = int(config.data.global_batch_size)
    return {"input_ids": jax.ShapeDtypeStruct((size, length), jnp.int32, sharding=batch_sharding),
            "attention_mask": jax.ShapeDtypeStruct((size, length), jnp.int32, sharding=batch_sharding),
            "teacher": jax.ShapeDtypeStruct((size, int(config.model.teacher_dim)), jnp.float32,
                                            sharding=batch_sharding)}


def build_stage_program(config: ml_collections.ConfigDict, stage_name: str, hf_config: dict[str, Any],
                        mesh: jax.sharding.Mesh, *, pin_activations: bool = True,
                        cached_rows: int = 0) -> StageProgram:
    """The stage's step and its arguments' shapes; a vision stage is refused (PlanError: its student needs the
    tokenizer's image placeholders, which a shapes-only plan does not have)."""
    stage = config[stage_name]
    kind = stage_kind(stage)
    if kind == VISION:
        raise PlanError(f"{stage_name}: an image stage's student needs the tokenizer's image placeholder ids "
                        "(data.tokenizer); the plan compiles text and cached stages only")
    student = train_state.abstract_student(config, stage, hf_config)
    state = train_state.prepare_training(config, stage_name, student, mesh, place=False)
    batch_sharding = sharding.batch_sharding(mesh)
    loss_config = text_stage.loss_config_for(config, student)
    trainable = _shaped(state.trainable, state.trainable_sharding)
    frozen = _shaped(state.frozen, state.frozen_sharding)
    opt_state = _shaped(state.opt_state, state.opt_state_sharding)
    size = int(config.data.global_batch_size)
    layers = trainable_layers(stage, student)
    if kind == CACHED:
        cached_stage.check_stage(stage, stage_name)
        replicated = NamedSharding(mesh, PartitionSpec())
        step, _ = cached_stage.make_steps(graphdef=state.graphdef, optimizer=state.optimizer, loss_config=loss_config,
                                          trainable_sharding=state.trainable_sharding,
                                          frozen_sharding=state.frozen_sharding,
                                          opt_state_sharding=state.opt_state_sharding,
                                          batch_sharding=batch_sharding, replicated=replicated)
        rows = max(int(cached_rows), size)
        pooled = jax.ShapeDtypeStruct((rows, int(student.hidden_size)), jnp.float32, sharding=replicated)
        teacher = jax.ShapeDtypeStruct((rows, int(config.model.teacher_dim)), jnp.float32, sharding=replicated)
        indices = jax.ShapeDtypeStruct((size,), jnp.int32, sharding=replicated)
        return StageProgram(stage_name, kind, student, state, mesh, step, (0,), size,
                            lambda length: (trainable, frozen, opt_state, pooled, teacher, indices), layers, rows)
    step = steps.make_train_step(graphdef=state.graphdef, optimizer=state.optimizer, loss_config=loss_config,
                                 trainable_sharding=state.trainable_sharding, frozen_sharding=state.frozen_sharding,
                                 opt_state_sharding=state.opt_state_sharding, batch_sharding=batch_sharding,
                                 target=text_stage.loss_target(config), pin_activations=pin_activations)
    lengths = tuple(sorted(int(length) for length in config.data.length_buckets
                           if int(length) <= int(config.data.max_length))) or (int(config.data.max_length),)
    return StageProgram(stage_name, kind, student, state, mesh, step, lengths, size,
                        lambda length: (trainable, frozen, opt_state, text_batch(config, batch_sharding, length)),
                        layers)


def per_chip_bytes(tree: Any) -> int:
    """Bytes one chip holds of a tree of sharded ShapeDtypeStructs (the largest shard: shards are equal or padded)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shard = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        count = 1
        for dim in shard:
            count *= int(dim)
        total += count * jnp.dtype(leaf.dtype).itemsize
    return total


def parameter_count(tree: Any) -> int:
    return sum(int(leaf.size) for leaf in jax.tree.leaves(tree))


__all__ = ["PlanError", "StageProgram", "build_stage_program", "per_chip_bytes", "parameter_count", "stage_kind",
           "stages"]
