"""Masks and scaled dot-product attention shared by the text encoders.

Arrays use the (batch, length, heads, head_dim) layout of `jax.nn.dot_product_attention`, which also handles grouped-
query attention (fewer key/value heads than query heads) and computes the softmax in fp32 when the inputs are bf16.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

# How attention runs. "xla": any mask pattern, one (B, 1, L, L) boolean mask, XLA's unfused softmax(QKᵀ)V — the
# reference, and the only choice on CPU/TPU and in fp32. "cudnn": cuDNN's fused flash attention on NVIDIA GPUs from
# per-row lengths (bf16/fp16 only); it assumes right padding, which is what embed_jax's pipeline produces
# (data/pipeline.py pads on the right). Measured on an H200: docs/training.md "GPU".
IMPLEMENTATIONS = ("xla", "cudnn")


def check_implementation(implementation: str, *, config_key: str = "attention") -> str:
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"option {config_key}={implementation!r}: use one of {list(IMPLEMENTATIONS)} ('cudnn' needs "
                         "an NVIDIA GPU and bf16/fp16 compute)")
    return implementation


def padding_mask(attention_mask: jax.Array) -> jax.Array:
    """(B, L) int/bool, 1 = real token → boolean (B, 1, 1, L): which keys each query may attend to."""
    return attention_mask.astype(bool)[:, None, None, :]


def attention_bias_mask(attention_mask: jax.Array, *, causal: bool) -> jax.Array:
    """Boolean (B, 1, L, L) mask: key j is visible to query i if j is a real token (and j ≤ i when causal).

    Padded query rows still see the real keys, so they stay finite (Hugging Face does the same); pooling ignores them.
    """
    keys = padding_mask(attention_mask)
    if not causal:
        return keys
    length = attention_mask.shape[1]
    lower_triangle = jnp.tril(jnp.ones((length, length), dtype=bool))
    return keys & lower_triangle[None, None, :, :]


def attention_mask_for(attention_mask: jax.Array, *, causal: bool, implementation: str = "xla") -> jax.Array:
    """What `dot_product_attention` takes as `mask`: the boolean (B, 1, L|1, L) mask for "xla", the (B,) int32 count
    of real tokens for "cudnn" (right padding: the real tokens of a row are its first `length` positions)."""
    if implementation == "cudnn":
        return jnp.sum(attention_mask.astype(jnp.int32), axis=1, dtype=jnp.int32)
    return attention_bias_mask(attention_mask, causal=causal)


def split_heads(x: jax.Array, num_heads: int, head_dim: int) -> jax.Array:
    """(B, L, num_heads·head_dim) → (B, L, num_heads, head_dim)."""
    return x.reshape(*x.shape[:-1], num_heads, head_dim)


def merge_heads(x: jax.Array) -> jax.Array:
    """(B, L, num_heads, head_dim) → (B, L, num_heads·head_dim)."""
    return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array, mask: jax.Array, *,
                          implementation: str = "xla", causal: bool = False, scale: Any = None) -> jax.Array:
    """softmax(q·kᵀ / √head_dim, masked) · v for (B, L, heads, head_dim) inputs; key/value may have fewer heads
    (grouped-query attention: the number of query heads must be a multiple of theirs).

    `mask` comes from `attention_mask_for` with the same implementation (for "xla" it already holds the causal part).
    """
    if implementation == "cudnn":
        return jax.nn.dot_product_attention(query, key, value, key_value_seq_lengths=mask, is_causal=causal,
                                            scale=scale, implementation="cudnn")
    return jax.nn.dot_product_attention(query, key, value, mask=mask, scale=scale)
