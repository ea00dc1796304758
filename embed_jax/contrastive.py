"""The supervised pair term of a pair stage (kind='pairs', docs/training.md "The supervised pair stage").

    <stage>.contrastive_weight = W > 0,  <stage>.contrastive_temperature = τ > 0      (the main head, FC1, only)

A pair batch holds queries (WordNet usage examples) and documents (their synsets' definitions), each row labelled
with its pair's id and whether it is a query (embed_jax/data/wordnet_pairs.py). For every query q, its own document
d⁺ against every document of the *global* batch, at temperature τ (InfoNCE with in-batch negatives):

    term = mean_q  −log( exp(cos(q, d⁺)/τ) / Σ_d exp(cos(q, d)/τ) )

The rows' pair ids and query flags name the positives, not their positions, so the value does not depend on how the
rows are laid out or how many devices or processes share them. fp32 throughout.

Beside it, optionally, the ranking term's listwise KL (embed_jax/ranking.py) toward the target's in-batch scores at the
same temperature: the labels say which document is right, the target says how the others rank.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from embed_jax import ranking

# The ranking term's temperature (embed_jax/ranking.py): target cosines of a usage example and its definition sit
# around 0.33 against 0.25 for a random in-batch neighbour (docs/training.md, "Batches of teacher neighbours"), so a
# gap of that size is a factor e^1.6 ≈ 5 at τ = 0.05.
DEFAULT_TEMPERATURE = 0.05


def check_temperature(temperature: float, key: str) -> float:
    """The temperature as a float, or a one-line ValueError naming the key: it divides every cosine."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(
            temperature) or temperature <= 0:
        raise ValueError(f"config key {key}={temperature!r}: the pair term divides every cosine by it, so it must be "
                         f"a finite number > 0; e.g. --config.{key}={DEFAULT_TEMPERATURE}")
    return float(temperature)


def pair_contrastive_loss(vectors: jax.Array, pair: jax.Array, is_query: jax.Array, temperature: float) -> jax.Array:
    """mean over query rows of −log softmax over the document rows at the query's own document (module docstring).

    vectors (m, d), any scale (normalised here); pair (m,) int: rows with the same id are one pair; is_query (m,):
    nonzero for a query row. Every query needs exactly one document of its pair in the batch."""
    if vectors.ndim != 2 or pair.shape != (vectors.shape[0],) or is_query.shape != (vectors.shape[0],):
        raise ValueError(f"the pair term takes (m, d) vectors with (m,) pair ids and query flags, got "
                         f"{tuple(vectors.shape)}, {tuple(pair.shape)} and {tuple(is_query.shape)}")
    unit = unit_rows(vectors)
    query, document = is_query != 0, is_query == 0
    logits = jnp.where(document[None, :], unit @ unit.T / temperature, -jnp.inf)
    log_probability = jax.nn.log_softmax(logits, axis=-1)
    positive = (pair[:, None] == pair[None, :]) & document[None, :]
    per_query = -jnp.max(jnp.where(positive, log_probability, -jnp.inf), axis=-1)
    return jnp.sum(jnp.where(query, per_query, 0.0)) / jnp.maximum(jnp.sum(query), 1)


def unit_rows(vectors: jax.Array) -> jax.Array:
    vectors = jnp.asarray(vectors, jnp.float32)
    return vectors / jnp.maximum(jnp.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def pair_terms(main_vectors: jax.Array, target: jax.Array, pair: jax.Array, is_query: jax.Array, *, head: str,
               weight: float, kl_weight: float, temperature: float) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The weighted pair terms of one global batch and each unweighted: '<head>/pairs' and, with kl_weight > 0,
    '<head>/pair_kl' (the listwise KL toward the target's in-batch scores)."""
    terms = {f"{head}/pairs": pair_contrastive_loss(main_vectors, pair, is_query, temperature)}
    total = weight * terms[f"{head}/pairs"]
    if kl_weight:
        student, teacher = unit_rows(main_vectors), jax.lax.stop_gradient(unit_rows(target))
        terms[f"{head}/pair_kl"] = ranking.listwise_kl_from_grams(student @ student.T, teacher @ teacher.T,
                                                                  temperature)
        total = total + kl_weight * terms[f"{head}/pair_kl"]
    return total, terms
