"""The listwise ranking term (embed_jax/ranking.py) against a word-by-word float64 reference, on the global batch."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from embed_jax import losses, ranking
from embed_jax.train import config as train_config
from embed_jax.train import preflight


def normalized(rng, m, d):
    x = rng.normal(size=(m, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def listwise_kl_loops(student, teacher, temperature):
    """mean_i Σ_{j≠i} p_ij log(p_ij / q_ij), p and q the softmaxes over j ≠ i of the cosines / τ, in float64 loops."""
    s, t = np.asarray(student, np.float64), np.asarray(teacher, np.float64)
    m = len(s)
    total = 0.0
    for i in range(m):
        others = [j for j in range(m) if j != i]
        t_logits = [t[i] @ t[j] / temperature for j in others]
        s_logits = [s[i] @ s[j] / temperature for j in others]
        t_norm = math.log(sum(math.exp(v) for v in t_logits))
        s_norm = math.log(sum(math.exp(v) for v in s_logits))
        for t_logit, s_logit in zip(t_logits, s_logits):
            p = math.exp(t_logit - t_norm)
            total += p * ((t_logit - t_norm) - (s_logit - s_norm))
    return total / m


def listwise_kl_bruteforce_jnp(student, teacher, temperature):
    """The same in jnp over explicit index lists (no masking), for autodiff gradients to compare against."""
    m = student.shape[0]
    rows = []
    for i in range(m):
        others = np.array([j for j in range(m) if j != i])
        s_logits = jnp.matmul(student[others], student[i], precision="highest") / temperature
        t_logits = jnp.matmul(teacher[others], teacher[i], precision="highest") / temperature
        t_logp = jax.nn.log_softmax(t_logits)
        rows.append(jnp.sum(jnp.exp(t_logp) * (t_logp - jax.nn.log_softmax(s_logits))))
    return jnp.mean(jnp.stack(rows))


def ranking_loss(student, teacher, temperature):
    return ranking.listwise_kl_from_grams(losses.gram(losses.l2_normalize(student)),
                                          losses.gram(losses.l2_normalize(teacher)), temperature)


@pytest.mark.parametrize("m", [2, 3, 9, 32])
@pytest.mark.parametrize("temperature", [0.02, 0.05, 1.0])
def test_listwise_kl_matches_loops(m, temperature):
    rng = np.random.default_rng(m)
    student, teacher = normalized(rng, m, 16), normalized(rng, m, 24)
    ours = float(jax.jit(ranking_loss, static_argnums=2)(student, teacher, temperature))
    np.testing.assert_allclose(ours, listwise_kl_loops(student, teacher, temperature), rtol=2e-5, atol=1e-6)


def test_listwise_kl_is_zero_exactly_when_the_lists_agree():
    rng = np.random.default_rng(1)
    teacher = normalized(rng, 12, 8)
    assert float(ranking_loss(teacher, teacher, 0.05)) == pytest.approx(0.0, abs=1e-6)
    assert float(ranking_loss(normalized(rng, 12, 8), teacher, 0.05)) > 1e-3


def test_listwise_kl_gradient_matches_bruteforce_and_spares_the_teacher():
    rng = np.random.default_rng(2)
    student, teacher = jnp.asarray(normalized(rng, 10, 12)), jnp.asarray(normalized(rng, 10, 12))
    ours = jax.jit(jax.grad(ranking_loss, argnums=(0, 1)), static_argnums=2)(student, teacher, 0.05)
    expected = jax.grad(lambda s: listwise_kl_bruteforce_jnp(losses.l2_normalize(s), teacher, 0.05))(student)
    np.testing.assert_allclose(np.asarray(ours[0]), np.asarray(expected), rtol=1e-4, atol=1e-6)
    assert float(jnp.abs(ours[1]).max()) == 0.0


def test_distillation_loss_adds_the_ranking_term_on_the_main_head_only():
    rng = np.random.default_rng(3)
    teacher = normalized(rng, 10, 24)
    heads = {"fc1": normalized(rng, 10, 24), "fc2": normalized(rng, 10, 8)}
    plain = losses.LossConfig()
    ranked = losses.LossConfig(ranking_weight=4.0, ranking_temperature=0.1)
    plain_total, plain_terms = losses.distillation_loss(heads, teacher, plain)
    total, terms = losses.distillation_loss(heads, teacher, ranked)
    assert "fc1/ranking" not in plain_terms and set(terms) - set(plain_terms) == {"fc1/ranking"}
    np.testing.assert_allclose(float(terms["fc1/ranking"]), listwise_kl_loops(heads["fc1"], teacher, 0.1), rtol=2e-5)
    np.testing.assert_allclose(float(total), float(plain_total + 4.0 * terms["fc1/ranking"]), rtol=1e-6)


@pytest.mark.parametrize("temperature", [0.0, -0.05, float("nan"), float("inf"), True, "0.05"])
def test_bad_temperature_is_refused_naming_the_key(temperature):
    with pytest.raises(ValueError, match=r"config key loss\.ranking_temperature=.*finite number > 0"):
        losses.LossConfig(ranking_weight=1.0, ranking_temperature=temperature)


def test_bad_temperature_is_refused_by_preflight_before_any_work():
    config = train_config.base_config()
    config.loss.ranking_temperature = 0.0
    with pytest.raises(preflight.ConfigError, match=r"loss\.ranking_temperature=0\.0"):
        preflight.check_config(config)
    config.loss.ranking_temperature, config.loss.ranking_weight = 0.05, -1.0
    with pytest.raises(preflight.ConfigError, match="'ranking_weight' must be a finite number >= 0"):
        preflight.check_config(config)


def test_ranking_term_needs_two_texts():
    with pytest.raises(ValueError, match="at least 2 texts"):
        ranking.listwise_kl_from_grams(jnp.ones((1, 1)), jnp.ones((1, 1)), 0.05)
