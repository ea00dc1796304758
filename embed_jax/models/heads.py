"""FC heads: independent ``Linear`` layers (with bias) on the same pooled vector, one
per output dimension (docs/method.md §1).

FC1 maps to the teacher dimension (the teachers' concatenated width); any number of reduction heads (e.g.
1024/512/256) sit beside it, not on top of it: the paper's heads are independent. Each head's output is
L2-normalised in fp32, because the losses compare cosines at a 0.015 margin that
bf16 cannot resolve (docs/method.md §3).

A head is named by its output dimension, ``dense_{dim}``: stella/Jasper ship each as a sentence-transformers
``Dense`` module in a ``2_Dense_{dim}`` folder, so export maps one name to one folder (see ``head_name``).
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from embed_jax.models import layers

# torch.nn.functional.normalize's default: keeps an all-zero vector at zero instead of NaN.
NORMALIZE_EPSILON = 1e-12


def head_name(dim: int) -> str:
    """The module name of the head with output dimension ``dim`` (exported as sentence-transformers ``2_Dense_{dim}``)."""
    return f"dense_{dim}"


def l2_normalize(vectors: jax.Array) -> jax.Array:
    """Unit vectors along the last axis, in fp32 whatever the input dtype."""
    vectors = vectors.astype(jnp.float32)
    norm = jnp.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / jnp.maximum(norm, NORMALIZE_EPSILON)


def head_dims(teacher_dim: int | None, reduction_dims: Sequence[int]) -> tuple[int, ...]:
    """All output dimensions, FC1's first; raises on an empty, non-positive or repeated dimension."""
    dims = ([] if teacher_dim is None else [teacher_dim]) + list(reduction_dims)
    if not dims:
        raise ValueError("FC heads need at least one output dimension: set teacher_dim or reduction_dims")
    for dim in dims:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"FC head dimensions must be positive integers, got {dim!r} in {dims}")
    repeated = sorted({dim for dim in dims if dims.count(dim) > 1})
    if repeated:
        raise ValueError(
            f"FC head dimensions must be distinct (each is exported as its own 2_Dense_{{dim}} folder); "
            f"{repeated} appears more than once in teacher_dim={teacher_dim}, reduction_dims={list(reduction_dims)}"
        )
    return tuple(dims)


class EmbeddingHeads(nnx.Module):
    """Pooled vector (B, in_features) → {dim: L2-normalised (B, dim) fp32} for FC1 and every reduction head."""

    def __init__(
        self,
        in_features: int,
        *,
        teacher_dim: int | None,
        reduction_dims: Sequence[int] = (),
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.dims = head_dims(teacher_dim, reduction_dims)
        self.teacher_dim = teacher_dim
        self.reduction_dims = tuple(reduction_dims)
        self.in_features = in_features
        # ('embed', 'mlp'): FC1 is 1536 × 12288 in the paper, the widest matrix outside the encoder.
        self.dense = nnx.Dict(
            {
                head_name(dim): layers.dense(
                    in_features, dim, kernel_axes=("embed", "mlp"), dtype=dtype, param_dtype=param_dtype, rngs=rngs
                )
                for dim in self.dims
            }
        )

    def __call__(self, pooled: jax.Array) -> dict[int, jax.Array]:
        if pooled.ndim != 2 or pooled.shape[-1] != self.in_features:
            raise ValueError(
                f"FC heads expect pooled vectors of shape (batch, {self.in_features}), got {tuple(pooled.shape)}"
            )
        return {dim: l2_normalize(self.dense[head_name(dim)](pooled)) for dim in self.dims}
