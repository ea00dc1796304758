"""The pair term of a pair stage (embed_jax/contrastive.py) against a float64 loop reference: value, gradient, any row
layout, 8 devices equal one, and its place in the train step's loss."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from embed_jax import contrastive, losses, ranking
from embed_jax.train import config as train_config


def pair_batch(rng, pairs, dim, *, shuffle=True):
    """`pairs` queries and their documents (rows 0..pairs-1 and pairs..2·pairs-1), then the rows shuffled."""
    vectors = rng.normal(size=(2 * pairs, dim)).astype(np.float32)
    pair = np.concatenate([np.arange(pairs), np.arange(pairs)]).astype(np.int32) * 7 + 3  # ids need not be 0..P-1
    is_query = np.repeat(np.array([1, 0], np.int32), pairs)
    order = rng.permutation(2 * pairs) if shuffle else np.arange(2 * pairs)
    return vectors[order], pair[order], is_query[order]


def pair_loss_loops(vectors, pair, is_query, temperature):
    """mean over queries of −log(exp(cos(q, d⁺)/τ) / Σ_documents exp(cos(q, d)/τ)), in float64 loops."""
    v = np.asarray(vectors, np.float64)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    documents = [j for j in range(len(v)) if not is_query[j]]
    total, count = 0.0, 0
    for i in range(len(v)):
        if not is_query[i]:
            continue
        logits = {j: v[i] @ v[j] / temperature for j in documents}
        positive = [j for j in documents if pair[j] == pair[i]]
        assert len(positive) == 1
        total += -(logits[positive[0]] - math.log(sum(math.exp(value) for value in logits.values())))
        count += 1
    return total / count


def pair_loss_bruteforce_jnp(vectors, pair, is_query, temperature):
    """The same in jnp over explicit index lists (no masking), for autodiff gradients to compare against."""
    unit = vectors / jnp.linalg.norm(vectors, axis=1, keepdims=True)
    documents = np.flatnonzero(is_query == 0)
    rows = []
    for i in np.flatnonzero(is_query):
        logits = jnp.matmul(unit[documents], unit[i], precision="highest") / temperature
        positive = int(np.flatnonzero(pair[documents] == pair[i])[0])
        rows.append(-jax.nn.log_softmax(logits)[positive])
    return jnp.mean(jnp.stack(rows))


@pytest.mark.parametrize("pairs", [1, 5, 16])
@pytest.mark.parametrize("temperature", [0.02, 1.0])
def test_pair_loss_matches_loops(pairs, temperature):
    vectors, pair, is_query = pair_batch(np.random.default_rng(pairs), pairs, 12)
    ours = float(jax.jit(contrastive.pair_contrastive_loss, static_argnums=3)(vectors, pair, is_query, temperature))
    np.testing.assert_allclose(ours, pair_loss_loops(vectors, pair, is_query, temperature), rtol=2e-5, atol=1e-6)


def test_pair_loss_does_not_depend_on_the_rows_layout():
    rng = np.random.default_rng(1)
    vectors, pair, is_query = pair_batch(rng, 8, 16, shuffle=False)
    order = rng.permutation(len(vectors))
    first = float(contrastive.pair_contrastive_loss(vectors, pair, is_query, 0.05))
    second = float(contrastive.pair_contrastive_loss(vectors[order], pair[order], is_query[order], 0.05))
    np.testing.assert_allclose(first, second, rtol=1e-6)


def test_pair_loss_falls_when_each_query_meets_its_own_document():
    rng = np.random.default_rng(2)
    vectors, pair, is_query = pair_batch(rng, 8, 16, shuffle=False)
    aligned = vectors.copy()
    aligned[:8] = vectors[8:] + 0.01 * rng.normal(size=(8, 16))  # each query near its own definition
    assert float(contrastive.pair_contrastive_loss(aligned, pair, is_query, 0.05)) < 0.01
    assert float(contrastive.pair_contrastive_loss(vectors, pair, is_query, 0.05)) > 1.0


def test_pair_loss_gradient_matches_bruteforce():
    vectors, pair, is_query = pair_batch(np.random.default_rng(3), 6, 10)
    ours = jax.jit(jax.grad(contrastive.pair_contrastive_loss), static_argnums=3)(vectors, pair, is_query, 0.05)
    expected = jax.grad(pair_loss_bruteforce_jnp)(jnp.asarray(vectors), pair, is_query, 0.05)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(expected), rtol=1e-4, atol=1e-6)


def test_eight_devices_give_the_one_device_value_and_gradient():
    devices = jax.devices()
    assert len(devices) >= 8, "tests/conftest.py simulates 8 CPU devices"
    vectors, pair, is_query = pair_batch(np.random.default_rng(4), 8, 24)
    target = np.random.default_rng(5).normal(size=vectors.shape).astype(np.float32)

    def loss(v, t, p, q):
        return contrastive.pair_terms(v, t, p, q, head="fc1", weight=1.5, kl_weight=2.0, temperature=0.05)[0]

    one = jax.jit(jax.value_and_grad(loss))(vectors, target, pair, is_query)
    rows = NamedSharding(Mesh(np.array(devices[:8]), ("data",)), PartitionSpec("data"))
    placed = [jax.device_put(np.asarray(x), rows) for x in (vectors, target, pair, is_query)]
    eight = jax.jit(jax.value_and_grad(loss), in_shardings=rows)(*placed)
    np.testing.assert_allclose(float(eight[0]), float(one[0]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(eight[1]), np.asarray(one[1]), rtol=1e-5, atol=1e-7)


def test_pair_terms_add_the_listwise_kl_toward_the_target_only_when_weighted():
    rng = np.random.default_rng(6)
    vectors, pair, is_query = pair_batch(rng, 6, 12)
    target = rng.normal(size=vectors.shape).astype(np.float32)
    total, terms = contrastive.pair_terms(vectors, target, pair, is_query, head="fc1", weight=2.0, kl_weight=0.0,
                                          temperature=0.1)
    assert set(terms) == {"fc1/pairs"}
    np.testing.assert_allclose(float(total), 2.0 * pair_loss_loops(vectors, pair, is_query, 0.1), rtol=2e-5)
    total, terms = contrastive.pair_terms(vectors, target, pair, is_query, head="fc1", weight=2.0, kl_weight=3.0,
                                          temperature=0.1)
    kl = ranking.listwise_kl_from_grams(losses.gram(losses.l2_normalize(vectors)),
                                        losses.gram(losses.l2_normalize(target)), 0.1)
    np.testing.assert_allclose(float(terms["fc1/pair_kl"]), float(kl), rtol=1e-5)
    np.testing.assert_allclose(float(total), float(2.0 * terms["fc1/pairs"] + 3.0 * kl), rtol=1e-5)


@pytest.mark.parametrize("temperature", [0.0, -0.05, float("nan"), float("inf")])
def test_bad_temperature_is_refused_naming_the_stage_key(temperature):
    config = train_config.base_config()
    config.stage2 = train_config.stage("heads+last_layers", 1e-4, 10, kind="pairs")
    config.stage2.contrastive_temperature = temperature
    with pytest.raises(train_config.ConfigError, match=r"config key stage2\.contrastive_temperature=.*finite number"):
        train_config.stage_config(config, "stage2")


def test_a_negative_weight_and_pair_keys_on_another_kind_are_refused():
    config = train_config.base_config()
    config.stage2 = train_config.stage("heads+last_layers", 1e-4, 10, kind="pairs", contrastive_weight=-1.0)
    with pytest.raises(train_config.ConfigError, match=r"stage2\.contrastive_weight=-1\.0: a loss weight"):
        train_config.stage_config(config, "stage2")
    config.stage2 = train_config.stage("heads+last_layers", 1e-4, 10, contrastive_kl_weight=1.0)
    with pytest.raises(train_config.ConfigError, match=r"stage2\.contrastive_kl_weight is set, but stage stage2 is "
                                                       r"kind='records'"):
        train_config.stage_config(config, "stage2")


def test_shapes_that_are_not_one_vector_per_label_are_refused():
    with pytest.raises(ValueError, match=r"\(m, d\) vectors with \(m,\) pair ids"):
        contrastive.pair_contrastive_loss(jnp.ones((4, 3)), jnp.zeros(3, jnp.int32), jnp.zeros(4, jnp.int32), 0.05)
