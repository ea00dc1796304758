"""Heads trained on cached vectors: the one step that both the cached stage (embed_jax/train/stages/cached.py: FC1 and
the reduction heads of a student on its frozen encoder's pooled vectors) and the shrink program
(embed_jax/train/shrink_heads.py: reduction heads of any model's own vectors) train with.

    loss(trainable) = distillation_loss(heads(rows[batch]; trainable ∪ frozen), targets[batch])

Why it is exact: with the encoder frozen, the heads only ever see each text's pooled vector, and the student has no
dropout, so training the heads on (pooled, target) rows gives the same loss and gradients as running the encoder at
every step (tests/train/test_cached_stage.py checks one step against `step.compute_loss`).

`row_trainer` is the loop's step over those rows for both: the stage runs it under the driver (checkpoints,
evaluation), the shrink program in a plain loop with its held-out report.

The module is split (graphdef, trainable, frozen) as any stage's student is (embed_jax/train/trainable.py);
`heads_of` picks its heads (a Student's `.heads`, or the EmbeddingHeads module itself). The rows stay on the devices,
replicated; a step gathers its batch by index and shards it over the data axes.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from embed_jax import losses
from embed_jax.train.step import student_heads

HeadsOf = Callable[[nnx.Module], nnx.Module]


def student_heads_of(student: nnx.Module) -> nnx.Module:
    """A Student's heads (the cached stage's module is the whole student: its checkpoint layout is a stage's)."""
    return student.heads


def heads_itself(heads: nnx.Module) -> nnx.Module:
    """An EmbeddingHeads module trained alone (the shrink program)."""
    return heads


def heads_loss(trainable: nnx.State, frozen: nnx.State, pooled: jax.Array, teacher: jax.Array, *,
               graphdef: nnx.GraphDef, loss_config: losses.LossConfig,
               heads_of: HeadsOf = student_heads_of) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`step.compute_loss` with the encoder's output given: the heads of `pooled` against the target rows."""
    module = nnx.merge(graphdef, trainable, frozen)
    outputs = {"embeddings": heads_of(module)(pooled)}  # the heads cast to their compute dtype, as in the student
    return losses.distillation_loss(student_heads(outputs), teacher, loss_config)


def make_steps(*, graphdef, optimizer, loss_config, trainable_sharding, frozen_sharding, opt_state_sharding,
               batch_sharding, replicated, heads_of: HeadsOf = student_heads_of):
    """(train_step(trainable, frozen, opt_state, pooled_all, teacher_all, indices), eval_step(trainable, frozen,
    pooled, teacher)). The training rows stay on the devices; a step gathers its batch and shards it."""
    loss_fn = functools.partial(heads_loss, graphdef=graphdef, loss_config=loss_config, heads_of=heads_of)

    def train_step(trainable, frozen, opt_state, pooled_all, teacher_all, indices):
        pooled = jax.lax.with_sharding_constraint(pooled_all[indices], batch_sharding)
        teacher = jax.lax.with_sharding_constraint(teacher_all[indices].astype(jnp.float32), batch_sharding)
        (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable, frozen, pooled, teacher)
        updates, opt_state = optimizer.update(grads, opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        return trainable, opt_state, {"loss": loss, "grad_norm": optax.global_norm(grads), **terms}

    def eval_step(trainable, frozen, pooled, teacher):
        loss, terms = loss_fn(trainable, frozen, pooled, teacher)
        return {"loss": loss, **terms}

    train = jax.jit(train_step, donate_argnums=(0, 2),
                    in_shardings=(trainable_sharding, frozen_sharding, opt_state_sharding, replicated, replicated,
                                  replicated),
                    out_shardings=(trainable_sharding, opt_state_sharding, None))
    evaluate = jax.jit(eval_step, in_shardings=(trainable_sharding, frozen_sharding, batch_sharding, batch_sharding))
    return train, evaluate


State = tuple[nnx.State, Any]  # (trainable parameters, optimizer state)


def row_trainer(train_step: Callable, frozen: nnx.State, pooled_all: jax.Array, teacher_all: jax.Array,
                train_rows: np.ndarray, *, batch_size: int, seed: int,
                replicated: Any) -> Callable[[State, int], tuple[State, dict[str, jax.Array]]]:
    """The one trainer of heads on cached vectors, for the cached stage and the shrink program alike:
    `advance((trainable, opt_state), step) -> ((trainable, opt_state), metrics)` trains step `step` (0-based) on the
    rows `train_rows[batch_indices(len(train_rows), batch_size, step, seed)]`. The batch is a function of (seed, step)
    alone, so a resumed run continues the exact stream."""
    train_rows = np.asarray(train_rows, dtype=np.int32)

    def advance(state: State, step: int) -> tuple[State, dict[str, jax.Array]]:
        trainable, opt_state = state
        indices = jax.device_put(train_rows[batch_indices(len(train_rows), batch_size, step, seed)], replicated)
        trainable, opt_state, metrics = train_step(trainable, frozen, opt_state, pooled_all, teacher_all, indices)
        return (trainable, opt_state), metrics

    return advance


def batch_indices(num_rows: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """The rows of step `step` (0-based): epoch e is a permutation seeded by (seed, e), cut into whole batches."""
    per_epoch = num_rows // batch_size
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_rows)
    return order[position * batch_size:(position + 1) * batch_size].astype(np.int32)


def replicated_sharding(mesh: jax.sharding.Mesh) -> Any:
    """Every device holds the whole array: the cached rows, and a step's indices."""
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
