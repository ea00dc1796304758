"""Masks and scaled dot-product attention shared by the text encoders.

Arrays use the (batch, length, heads, head_dim) layout of `jax.nn.dot_product_attention`, which also handles grouped-
query attention (fewer key/value heads than query heads) and computes the softmax in fp32 when the inputs are bf16.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


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


def split_heads(x: jax.Array, num_heads: int, head_dim: int) -> jax.Array:
    """(B, L, num_heads·head_dim) → (B, L, num_heads, head_dim)."""
    return x.reshape(*x.shape[:-1], num_heads, head_dim)


def merge_heads(x: jax.Array) -> jax.Array:
    """(B, L, num_heads, head_dim) → (B, L, num_heads·head_dim)."""
    return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array, mask: jax.Array) -> jax.Array:
    """softmax(q·kᵀ / √head_dim, masked) · v for (B, L, heads, head_dim) inputs; key/value may have fewer heads
    (grouped-query attention: the number of query heads must be a multiple of theirs)."""
    return jax.nn.dot_product_attention(query, key, value, mask=mask)
