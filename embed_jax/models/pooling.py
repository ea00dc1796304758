"""Poolings of last hidden states (B, L, D) into one vector per input (B, D), given the (B, L) attention mask.

All return fp32 whatever the compute dtype: the pooled vector feeds the heads and the fp32 losses (SPEC §3), and the
mean over up to 512 bf16 tokens would otherwise round twice.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_mean(hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """Mean of the real tokens' states (the paper's pooling, SPEC §1; sentence-transformers' 'mean' pooling).

    An all-padding row gives zeros rather than NaN (the divisor is clamped at 1 token, as sentence-transformers
    clamps it at 1e-9).
    """
    weights = attention_mask.astype(jnp.float32)[..., None]
    summed = jnp.sum(hidden.astype(jnp.float32) * weights, axis=1)
    return summed / jnp.maximum(jnp.sum(weights, axis=1), 1.0)


def first_token(hidden: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
    """State of position 0 ([CLS] for BERT-style right-padded batches)."""
    return hidden[:, 0].astype(jnp.float32)


def last_token(hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """State of each row's last real token (decoder-style pooling); right or left padding both work, because the
    position is the last index whose mask is 1. An all-padding row gives position 0."""
    length = attention_mask.shape[1]
    positions = jnp.arange(length)[None, :]
    last_index = jnp.max(jnp.where(attention_mask.astype(bool), positions, 0), axis=1)
    return jnp.take_along_axis(hidden, last_index[:, None, None], axis=1)[:, 0].astype(jnp.float32)


POOLINGS = {"mean": masked_mean, "first": first_token, "cls": first_token, "last": last_token}


def pool(hidden: jax.Array, attention_mask: jax.Array, method: str = "mean") -> jax.Array:
    """Dispatch on a pooling name from a config ('mean', 'first'/'cls', 'last')."""
    if method not in POOLINGS:
        raise ValueError(f"pooling {method!r} is not supported; use one of {sorted(POOLINGS)}")
    return POOLINGS[method](hidden, attention_mask)
