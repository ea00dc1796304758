"""Projection pool: SigLIP's patch tokens → a fixed number of image tokens at the
text encoder's width (docs/method.md §1).

Two modes:

- ``"adaptive_average"`` (Jasper's, no parameters): ``AdaptiveAvgPool2d((num_tokens, out_features))`` applied to the
  (B, N_patches, D_vision) hidden state as if it were a one-channel image, i.e. window averages along the token axis
  and along the channel axis. Each axis' averaging is a fixed (n_out, n_in) matrix built once from PyTorch's window
  rule, so the pool is two small matmuls (no Python loop, no gather) and is exactly PyTorch's result in fp32.
- ``"linear"``: the same token-axis average, then a learned ``Linear`` (with bias) from D_vision to D_text:
  the other reading of "projection pool" (docs/method.md §1).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from embed_jax.models import layers

MODES = ("adaptive_average", "linear")


def adaptive_average_matrix(input_size: int, output_size: int) -> np.ndarray:
    """(output_size, input_size) matrix whose row i averages PyTorch's adaptive-pool window i.

    PyTorch's window i is [floor(i·n_in / n_out), ceil((i+1)·n_in / n_out)); windows overlap when the sizes do not
    divide, and repeat rows when output_size > input_size (upsampling), both of which this reproduces.
    """
    if input_size < 1 or output_size < 1:
        raise ValueError(f"adaptive average pool sizes must be ≥ 1, got input {input_size}, output {output_size}")
    matrix = np.zeros((output_size, input_size), np.float64)
    for i in range(output_size):
        start = (i * input_size) // output_size
        end = -((-(i + 1) * input_size) // output_size)  # ceil without floats
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def _pool_tokens(hidden: jax.Array, matrix: jax.Array) -> jax.Array:
    return jnp.einsum("on,bnd->bod", matrix, hidden)


def _pool_channels(hidden: jax.Array, matrix: jax.Array) -> jax.Array:
    return jnp.einsum("bnd,cd->bnc", hidden, matrix)


def adaptive_average_pool(hidden: jax.Array, num_tokens: int, out_features: int) -> jax.Array:
    """(B, N, D) → (B, num_tokens, out_features), equal to ``torch.nn.AdaptiveAvgPool2d((num_tokens, out_features))``.

    The two averages commute; the cheaper order is taken (shapes are static, so this is decided at trace time):
    at Jasper's sizes (729×1152 → 300×1536) pooling tokens first costs 48% of the other order's FLOPs.
    """
    _, n_in, d_in = hidden.shape
    token_matrix = jnp.asarray(adaptive_average_matrix(n_in, num_tokens), hidden.dtype)
    channel_matrix = jnp.asarray(adaptive_average_matrix(d_in, out_features), hidden.dtype)
    tokens_first_cost = num_tokens * n_in * d_in + num_tokens * d_in * out_features
    channels_first_cost = n_in * d_in * out_features + num_tokens * n_in * out_features
    if tokens_first_cost <= channels_first_cost:
        return _pool_channels(_pool_tokens(hidden, token_matrix), channel_matrix)
    return _pool_tokens(_pool_channels(hidden, channel_matrix), token_matrix)


def _check_input(hidden: jax.Array, in_features: int) -> None:
    if hidden.ndim != 3 or hidden.shape[-1] != in_features:
        raise ValueError(
            f"projection pool expects vision hidden states of shape (batch, patches, {in_features}), got "
            f"{tuple(hidden.shape)}: the vision tower's hidden_size must equal the pool's in_features"
        )


class ProjectionPool(nnx.Module):
    """Vision tokens (B, N_patches, in_features) → image tokens (B, num_tokens, out_features)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_tokens: int,
        *,
        mode: str = "adaptive_average",
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"projection pool mode {mode!r} is not one of {MODES}")
        for name, value in (("in_features", in_features), ("out_features", out_features), ("num_tokens", num_tokens)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"projection pool {name} must be a positive integer, got {value!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.num_tokens = num_tokens
        self.mode = mode
        self.dtype = dtype
        if mode == "linear":
            if rngs is None:
                raise ValueError("projection pool mode 'linear' has parameters: pass rngs=nnx.Rngs(seed)")
            # ('embed', 'mlp'): input at a model width, output sharded like a wide projection (as the FC heads).
            self.projection = layers.dense(
                in_features, out_features, kernel_axes=("embed", "mlp"), dtype=dtype, param_dtype=param_dtype,
                rngs=rngs,
            )

    def __call__(self, hidden: jax.Array) -> jax.Array:
        _check_input(hidden, self.in_features)
        hidden = hidden.astype(self.dtype)
        if self.mode == "adaptive_average":
            return adaptive_average_pool(hidden, self.num_tokens, self.out_features)
        token_matrix = jnp.asarray(adaptive_average_matrix(hidden.shape[1], self.num_tokens), hidden.dtype)
        return self.projection(_pool_tokens(hidden, token_matrix))

