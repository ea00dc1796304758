"""The pure train and eval steps: one global batch in, new trainable parameters, optimizer state and metrics out.

    loss(trainable) = distillation_loss(student(batch; trainable ∪ frozen).heads, batch.teacher)
                      [+ pair terms on FC1, for a pair stage's labelled batches: embed_jax/contrastive.py]

The student is an NNX module split into (graphdef, trainable, frozen); only `trainable` is differentiated and only
it has optimizer state (embed_jax/train/trainable.py decides the split). The loss sees the *global* batch: under
`jax.jit` with the batch sharded along the data axes, XLA gathers the (m, d) head outputs for the Gram matrices, so
the value does not depend on the device count (docs/method.md §3; tests/train/test_step.py checks 1 vs 8 devices).

`make_train_step` returns the step compiled with explicit in/out shardings and the trainable parameters and
optimizer state donated (their buffers are reused for the new values: one copy of the weights, not two).
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from embed_jax import contrastive, losses
from embed_jax.models import layers
from embed_jax.models.heads import head_name
from embed_jax.train import sharding

Batch = Mapping[str, jax.Array]


def student_heads(outputs: Mapping[str, Any]) -> dict[str, jax.Array]:
    """The student's {dim: vectors} as {'dense_{dim}': vectors}, the names the loss config refers to."""
    return {head_name(dim): vectors for dim, vectors in outputs["embeddings"].items()}


# Where the target vectors come from: the records' teacher vectors (docs/method.md §2), or the student's own pooled
# vector (self-distillation for dimension reduction, docs/method.md §4: with the encoder frozen, the heads learn to
# shrink the model's own embedding space using unlabeled text and the model alone), or — for image batches (stage 4) —
# the captions' vectors per head stored in image–caption records (embed_jax/data/image_records.py).
TARGETS = ("records", "pooled", "captions")


def caption_heads(teacher: jax.Array, head_dims: tuple[int, ...]) -> dict[str, jax.Array]:
    """(m, Σ dims) caption vectors → {'dense_{dim}': (m, dim)}, cut in the student's head order (the order image
    records store them in; image_records.check_heads_for_training refuses records of other heads)."""
    starts = [sum(head_dims[:index]) for index in range(len(head_dims))]
    return {head_name(dim): teacher[:, start:start + dim] for dim, start in zip(head_dims, starts)}


def image_caption_terms(student: nnx.Module, batch: Batch, loss_config: losses.LossConfig):
    """Stage 4 (docs/method.md §4): the images' vectors through every head against their captions' vectors."""
    outputs = student(batch["input_ids"], batch["attention_mask"], pixel_values=batch["pixel_values"])
    return losses.image_caption_loss(student_heads(outputs), caption_heads(batch["teacher"], student.heads.dims),
                                     loss_config)


def compute_loss(
    trainable: nnx.State, frozen: nnx.State, batch: Batch, *, graphdef: nnx.GraphDef, loss_config: losses.LossConfig,
    target: str = "records",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The weighted total and every unweighted term, for one global batch."""
    student = nnx.merge(graphdef, trainable, frozen)
    if target == "captions":
        return image_caption_terms(student, batch, loss_config)
    outputs = student(batch["input_ids"], batch["attention_mask"])
    vectors = batch["teacher"] if target == "records" else jax.lax.stop_gradient(outputs["pooled"])
    heads = student_heads(outputs)
    total, terms = losses.distillation_loss(heads, vectors, loss_config)
    if "pair" in batch and loss_config.main_head is not None:  # a pair stage's batch (data/wordnet_pairs.py)
        pair_total, pair_terms = contrastive.pair_terms(
            heads[loss_config.main_head], vectors, batch["pair"], batch["is_query"], head=loss_config.main_head,
            weight=loss_config.contrastive_weight, kl_weight=loss_config.contrastive_kl_weight,
            temperature=loss_config.contrastive_temperature)
        total, terms = total + pair_total, {**terms, **pair_terms}
    return total, terms


def train_step(
    trainable: nnx.State,
    frozen: nnx.State,
    opt_state: optax.OptState,
    batch: Batch,
    *,
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    loss_config: losses.LossConfig,
    target: str = "records",
) -> tuple[nnx.State, optax.OptState, dict[str, jax.Array]]:
    """One optimizer update on one global batch; metrics hold the total loss, each term and the gradient norm."""
    loss_fn = functools.partial(compute_loss, graphdef=graphdef, loss_config=loss_config, target=target)
    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable, frozen, batch)
    updates, opt_state = optimizer.update(grads, opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), **terms}
    return trainable, opt_state, metrics


def eval_step(trainable: nnx.State, frozen: nnx.State, batch: Batch, *, graphdef: nnx.GraphDef,
              loss_config: losses.LossConfig, target: str = "records") -> dict[str, jax.Array]:
    loss, terms = compute_loss(trainable, frozen, batch, graphdef=graphdef, loss_config=loss_config, target=target)
    return {"loss": loss, **terms}


def with_pinned_activations(function: Callable, mesh: jax.sharding.Mesh) -> Callable:
    """`function` whose trace pins the model's activations to the batch sharding of `mesh` (embed_jax/models/layers.py
    `constrain`): FSDP then gathers weights, not activations (docs/launch.md, "The plan")."""
    resolve = sharding.activation_resolver(mesh)

    @functools.wraps(function)
    def pinned(*args):
        with layers.activation_sharding(resolve):
            return function(*args)

    return pinned


def make_train_step(
    *,
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    loss_config: losses.LossConfig,
    trainable_sharding: Any,
    frozen_sharding: Any,
    opt_state_sharding: Any,
    batch_sharding: Any,
    target: str = "records",
    pin_activations: bool = True,
) -> Callable:
    """`train_step` under `jax.jit` with explicit shardings; trainable params and optimizer state are donated.

    pin_activations=False leaves the activations' layout to XLA's propagation (the plan compiles it to show why not).
    """
    step = functools.partial(train_step, graphdef=graphdef, optimizer=optimizer, loss_config=loss_config,
                             target=target)
    return jax.jit(
        with_pinned_activations(step, batch_sharding.mesh) if pin_activations and batch_sharding is not None else step,
        in_shardings=(trainable_sharding, frozen_sharding, opt_state_sharding, batch_sharding),
        out_shardings=(trainable_sharding, opt_state_sharding, None),
        donate_argnums=(0, 2),
    )


def make_eval_step(*, graphdef: nnx.GraphDef, loss_config: losses.LossConfig, trainable_sharding: Any,
                   frozen_sharding: Any, batch_sharding: Any, target: str = "records") -> Callable:
    step = functools.partial(eval_step, graphdef=graphdef, loss_config=loss_config, target=target)
    return jax.jit(with_pinned_activations(step, batch_sharding.mesh),
                   in_shardings=(trainable_sharding, frozen_sharding, batch_sharding))


def first_nonfinite(metrics: Mapping[str, Any]) -> str | None:
    """The name of the first metric that is NaN or ±inf (the loss term to blame), None if all are finite."""
    for name, value in metrics.items():
        if not bool(jnp.all(jnp.isfinite(jnp.asarray(value)))):
            return name
    return None
