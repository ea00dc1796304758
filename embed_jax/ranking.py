"""A ranking term on the target's similarities, beside the paper's three losses (docs/losses.md, "The ranking term").

    loss.ranking_weight = W > 0,  loss.ranking_temperature = τ > 0      (the main head, FC1, only)

Listwise KL: for every text i of the *global* batch, the target's in-batch neighbours j ≠ i form a distribution
p_i(j) = softmax_j(T_ij / τ) over the target's cosines T, the student's q_i(j) = softmax_j(S_ij / τ) over its own;
the term is the mean over texts of KL(p_i ‖ q_i). Where the cosine loss asks each vector to land on its target, this
asks each text's list of candidates to be *ordered* like the target's, with the most weight on the target's nearest
candidates (the top of a retrieval list): the quantity definition retrieval scores (docs/training.md, "Why retrieval
falls below the start"). Every other text of the batch is a candidate, so the candidates span the whole range of
target scores (random and length-grouped batches are mostly strangers: docs/training.md, "Batches of teacher
neighbours"), not only near neighbours.

Inputs are the two (m, m) Gram matrices of L2-normalised vectors (`losses.gram`), computed on the global batch, so the
value does not depend on how many devices share the rows. fp32 throughout; the teacher side gets no gradient.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# The target's in-batch cosines on the study records sit around 0.1–0.4 (nearest neighbour median 0.25,
# docs/training.md, "Batches of teacher neighbours"): at τ = 0.05 a gap of 0.15 is a factor e³ ≈ 20 in p_i, so each
# list concentrates on its few nearest candidates without becoming one-hot.
DEFAULT_TEMPERATURE = 0.05


def check_temperature(temperature: float, key: str = "loss.ranking_temperature") -> float:
    """The temperature as a float, or a one-line ValueError naming the key: it divides every score."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(
            temperature) or temperature <= 0:
        raise ValueError(f"config key {key}={temperature!r}: the ranking term divides every cosine by it, so it must "
                         f"be a finite number > 0; e.g. --config.{key}={DEFAULT_TEMPERATURE}")
    return float(temperature)


def listwise_kl_from_grams(student_gram: jax.Array, teacher_gram: jax.Array, temperature: float) -> jax.Array:
    """mean_i KL(softmax_{j≠i}(T_ij/τ) ‖ softmax_{j≠i}(S_ij/τ)) of two (m, m) cosine matrices of the same texts."""
    temperature = check_temperature(temperature)
    if student_gram.shape != teacher_gram.shape or student_gram.ndim != 2 or student_gram.shape[0] != \
            student_gram.shape[1]:
        raise ValueError(f"the ranking term compares two (m, m) similarity matrices of the same texts, got "
                         f"{tuple(student_gram.shape)} and {tuple(teacher_gram.shape)}")
    m = student_gram.shape[0]
    if m < 2:
        raise ValueError(f"the ranking term ranks each text's in-batch candidates: it needs at least 2 texts in the "
                         f"global batch (got {m})")
    itself = jnp.eye(m, dtype=bool)
    # A text is never its own candidate: its logit is -inf, its probability 0, its KL contribution 0 (masked, as
    # 0 · (−inf − −inf) would be NaN).
    student_logp = jax.nn.log_softmax(jnp.where(itself, -jnp.inf, jnp.asarray(student_gram, jnp.float32) / temperature),
                                      axis=-1)
    teacher_logits = jnp.where(itself, -jnp.inf, jax.lax.stop_gradient(jnp.asarray(teacher_gram, jnp.float32))
                               / temperature)
    teacher_logp = jax.nn.log_softmax(teacher_logits, axis=-1)
    per_pair = jnp.where(itself, 0.0, jnp.exp(teacher_logp) * (teacher_logp - jnp.where(itself, 0.0, student_logp)))
    return jnp.mean(jnp.sum(per_pair, axis=-1))
