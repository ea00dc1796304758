"""Poolings of last hidden states (B, L, D) into one vector per input (B, D), given the (B, L) attention mask.

All return fp32 whatever the compute dtype: the pooled vector feeds the heads and the fp32 losses (docs/method.md §3),
and the mean over up to 512 bf16 tokens would otherwise round twice.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_mean(hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """Mean of the real tokens' states (the paper's pooling, docs/method.md §1; sentence-transformers' 'mean' pooling).

    An all-padding row gives zeros rather than NaN (the divisor is clamped at 1 token, as sentence-transformers
    clamps it at 1e-9).
    """
    weights = attention_mask.astype(jnp.float32)[..., None]
    summed = jnp.sum(hidden.astype(jnp.float32) * weights, axis=1)
    return summed / jnp.maximum(jnp.sum(weights, axis=1), 1.0)


def first_token(hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """State of each row's first real token: [CLS] for BERT-style batches, right- or left-padded (as
    sentence-transformers' 'cls' pooling picks it)."""
    first_index = jnp.argmax(attention_mask.astype(jnp.int32), axis=1)
    return _gather_positions(hidden, first_index)


def last_token(hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """State of each row's last real token (decoder-style pooling), right- or left-padded: the last index whose mask
    is 1. An all-padding row gives zeros (as sentence-transformers' 'lasttoken' pooling)."""
    mask = attention_mask.astype(jnp.int32)
    length = mask.shape[1]
    last_index = length - 1 - jnp.argmax(mask[:, ::-1], axis=1)
    has_tokens = jnp.any(mask > 0, axis=1, keepdims=True)
    return jnp.where(has_tokens, _gather_positions(hidden, last_index), 0.0)


def _gather_positions(hidden: jax.Array, positions: jax.Array) -> jax.Array:
    """hidden[b, positions[b]] for each row b, in fp32."""
    return jnp.take_along_axis(hidden, positions[:, None, None], axis=1)[:, 0].astype(jnp.float32)


POOLINGS = {"mean": masked_mean, "first": first_token, "cls": first_token, "last": last_token}


def pool(hidden: jax.Array, attention_mask: jax.Array, method: str = "mean") -> jax.Array:
    """Dispatch on a pooling name from a config ('mean', 'first'/'cls', 'last')."""
    if method not in POOLINGS:
        raise ValueError(f"pooling {method!r} is not supported; use one of {sorted(POOLINGS)}")
    return POOLINGS[method](hidden, attention_mask)
