"""A stage's train step as training builds it, from shapes alone, ready to compile for a TPU topology.

Everything comes from train/'s own builders with their seams opened, never a copy of them:

    stage     train.config.stage_config                  (the typed StageConfig; its kind picks the step)
    student   stages.student.abstract_student           (the config's student, shapes only, from a config.json)
    step      stages.batch.make_batch_step (records, pairs) (split, optimizer, shardings, jitted step: place=False)
              stages.cached.make_cached_step (cached_pooled)
    mesh      sharding.make_mesh(config.mesh, devices)   (the config's mesh over the topology's devices)

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
from jax.sharding import NamedSharding

from embed_jax.models.student import Student
from embed_jax.train import checkpoint, flops, sharding
from embed_jax.train import config as train_config
from embed_jax.train.config import StageConfig
from embed_jax.train.stages import batch as batch_stage, cached, pairs, student as stage_student, text, vision
from embed_jax.train.train_state import TrainState

RECORDS, CACHED, IMAGES, PAIRS = "records", "cached_pooled", "images", "pairs"
# Kinds whose step takes text batches of records (an encoder pass per step): their batch scales the activations.
TEXT_BATCH_KINDS = (RECORDS, PAIRS)


class PlanError(ValueError):
    """A plan that cannot be made as asked; the message names the input to change."""


@dataclasses.dataclass
class StageProgram:
    name: str
    kind: str
    student: Student
    state: TrainState
    step: Callable
    lengths: tuple[int, ...]
    batch_size: int
    make_arguments: Callable[[int], tuple]
    trainable_layers: int
    cached_rows: int = 0  # a cached stage: pooled rows kept on every chip

    def arguments(self, length: int) -> tuple:
        return self.make_arguments(length)

    def analytic_flops(self, length: int) -> float | None:
        """train/flops.py's count of one step (the whole slice); None for an image stage (train/flops.py counts the
        text encoder's matmuls, not a vision tower's)."""
        if self.kind == IMAGES:
            return None
        shape = flops.encoder_shape(self.student)
        head_dims = self.student.heads.dims
        if self.kind == CACHED:  # the heads alone on pooled vectors: their forward and twice it backward
            return 3.0 * flops.forward_flops(shape, self.batch_size, 1, head_dims, layers=0)
        return flops.train_step_flops(shape, self.batch_size, length, head_dims, self.trainable_layers)


def trainable_layers(stage: StageConfig, student: Student) -> int:
    """How many encoder layers get gradients (train/trainable.py's choices)."""
    if stage.trainable in ("all", "encoder+heads"):
        return int(student.text_encoder.config.num_hidden_layers)
    if stage.trainable == "heads+last_layers":
        return int(stage.last_layers)
    return 0


def _shaped(tree: Any, shardings: Any) -> Any:
    return checkpoint.abstract_with_shardings(tree, shardings)


def text_batch(config: ml_collections.ConfigDict, batch_sharding: NamedSharding, length: int, *,
               pairs: bool = False) -> dict[str, Any]:
    """One global batch as the pipeline hands it to the step (batches.global_batch): ids, mask, teacher vectors, and
    a pair stage's labels (data/wordnet_pairs.py)."""
    size = int(config.data.global_batch_size)
    batch = {"input_ids": jax.ShapeDtypeStruct((size, length), jnp.int32, sharding=batch_sharding),
             "attention_mask": jax.ShapeDtypeStruct((size, length), jnp.int32, sharding=batch_sharding),
             "teacher": jax.ShapeDtypeStruct((size, int(config.model.teacher_dim)), jnp.float32,
                                             sharding=batch_sharding)}
    if pairs:
        batch.update({name: jax.ShapeDtypeStruct((size,), jnp.int32, sharding=batch_sharding)
                      for name in ("pair", "is_query")})
    return batch


def stage_lengths(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    """Every padded length a text batch can have: the length buckets up to data.max_length."""
    buckets = sorted(int(length) for length in config.data.length_buckets if int(length) <= int(config.data.max_length))
    return tuple(buckets) or (int(config.data.max_length),)


def build_stage_program(config: ml_collections.ConfigDict, stage_name: str, hf_config: dict[str, Any],
                        mesh: jax.sharding.Mesh, *, pin_activations: bool = True,
                        cached_rows: int = 0) -> StageProgram:
    """The stage's step and its arguments' shapes; an image stage is refused (PlanError: its student needs the
    tokenizer's image placeholder ids, which a shapes-only plan does not have)."""
    try:
        stage = train_config.stage_config(config, stage_name)
    except ValueError as error:
        raise PlanError(str(error)) from None
    size = int(config.data.global_batch_size)
    if stage.kind == IMAGES:
        return image_stage_program(config, stage_name, stage, hf_config, mesh, pin_activations=pin_activations)
    student = stage_student.abstract_student(config, stage, hf_config)
    loss_config = (pairs.pair_loss_config(config, stage, student) if stage.kind == PAIRS
                   else text.loss_config_for(config, student))
    layers = trainable_layers(stage, student)
    if stage.kind == CACHED:
        step = cached.make_cached_step(student, stage, config.optimizer, loss_config, mesh, stage_name=stage_name,
                                       place=False)
        state, replicated = step.state, step.replicated
        rows = max(int(cached_rows), size)
        pooled = jax.ShapeDtypeStruct((rows, int(student.hidden_size)), jnp.float32, sharding=replicated)
        teacher = jax.ShapeDtypeStruct((rows, int(config.model.teacher_dim)), jnp.float32, sharding=replicated)
        indices = jax.ShapeDtypeStruct((size,), jnp.int32, sharding=replicated)
        arguments = (_shaped(state.trainable, state.trainable_sharding), _shaped(state.frozen, state.frozen_sharding),
                     _shaped(state.opt_state, state.opt_state_sharding), pooled, teacher, indices)
        return StageProgram(stage_name, stage.kind, student, state, step.train_step, (0,), size,
                            lambda length: arguments, layers, rows)
    step = batch_stage.make_batch_step(student, stage, config.optimizer, loss_config, mesh,
                                       target=text.loss_target(config), stage_name=stage_name, place=False,
                                       pin_activations=pin_activations)
    state = step.state
    states = (_shaped(state.trainable, state.trainable_sharding), _shaped(state.frozen, state.frozen_sharding),
              _shaped(state.opt_state, state.opt_state_sharding))
    return StageProgram(stage_name, stage.kind, student, state, step.train_step, stage_lengths(config), size,
                        lambda length: (*states, text_batch(config, step.batch_sharding, length,
                                                            pairs=stage.kind == PAIRS)), layers)


def image_stage_program(config: ml_collections.ConfigDict, stage_name: str, stage: StageConfig,
                        hf_config: dict[str, Any], mesh: jax.sharding.Mesh, *, pin_activations: bool) -> StageProgram:
    """Stage 4: the vision student (shapes only) on batches of the image prompt, pixels and caption vectors."""
    try:
        student, prompt = vision.abstract_vision_student(config, stage, hf_config)
    except (OSError, ValueError) as error:
        raise PlanError(f"{stage_name}: {error}") from None
    step = batch_stage.make_batch_step(student, stage, config.optimizer, vision.image_loss_config(config), mesh,
                                       target="captions", stage_name=stage_name, place=False,
                                       pin_activations=pin_activations)
    state, batch_sharding = step.state, step.batch_sharding
    size, length = int(config.data.global_batch_size), int(prompt.input_ids.shape[0])
    image_size = int(student.vision.config.image_size)
    batch = {"input_ids": jax.ShapeDtypeStruct((size, length), jnp.int32, sharding=batch_sharding),
             "attention_mask": jax.ShapeDtypeStruct((size, length), jnp.int32, sharding=batch_sharding),
             "pixel_values": jax.ShapeDtypeStruct((size, image_size, image_size, 3), jnp.float32,
                                                  sharding=batch_sharding),
             "teacher": jax.ShapeDtypeStruct((size, sum(student.heads.dims)), jnp.float32, sharding=batch_sharding)}
    arguments = (_shaped(state.trainable, state.trainable_sharding), _shaped(state.frozen, state.frozen_sharding),
                 _shaped(state.opt_state, state.opt_state_sharding), batch)
    return StageProgram(stage_name, stage.kind, student, state, step.train_step, (length,), size,
                        lambda _: arguments, 0)


def stage_kind(config: ml_collections.ConfigDict, stage_name: str) -> str:
    return train_config.stage_config(config, stage_name).kind


def make_mesh(config: ml_collections.ConfigDict, devices, stage_name: str | None = None) -> jax.sharding.Mesh:
    """The config's mesh over the topology's devices, or the stage's own (`<stage>.mesh`) where it sets one, as
    training builds it; the global batch checked against its data-parallel size (both refusals name the key)."""
    stage = train_config.stage_config(config, stage_name) if stage_name else None
    sizes, key = (stage.mesh_config(config.mesh), stage.mesh_key(stage_name)) if stage else (config.mesh, "mesh")
    try:
        mesh = sharding.make_mesh(sizes, devices, key=key)
        sharding.check_batch_divisible(int(config.data.global_batch_size), mesh, key="data.global_batch_size")
    except ValueError as error:
        raise PlanError(str(error)) from None
    return mesh


def per_chip_bytes(tree: Any) -> int:
    """Bytes one chip holds of a tree of sharded ShapeDtypeStructs."""
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
