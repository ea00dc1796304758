"""loss.matryoshka_dims: FC1's prefixes get the reduction heads' terms. Checked against a brute-force float64
reference of docs/method.md §3.2–3.3 on each prefix, its gradient against the P × P formulation, sharded rows
against one device, and the config's refusals."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from embed_jax import losses
from parity import assert_trees_close
from test_losses import normalized, resim_bruteforce_jnp, resim_reference_loops, tied_teacher

distillation_loss = jax.jit(losses.distillation_loss, static_argnums=2)


def prefix_reference(main, target, dims, similarity_weight, relative_weight):
    """Per prefix, in float64 loops: MSE of the Gram matrices and the relative-similarity loss word by word."""
    total, terms = 0.0, {}
    main, target = np.asarray(main, np.float64), np.asarray(target, np.float64)
    for dim in dims:
        prefix = main[:, :dim] / np.linalg.norm(main[:, :dim], axis=1, keepdims=True)
        similarity = np.mean((prefix @ prefix.T - target @ target.T) ** 2)
        relative = resim_reference_loops(prefix, target)
        terms[dim] = (similarity, relative)
        total += similarity_weight * similarity + relative_weight * relative
    return total, terms


@pytest.mark.parametrize("teacher_kind", ["random", "tied"])
def test_prefix_terms_match_the_bruteforce_reference(teacher_kind):
    rng = np.random.default_rng(3)
    teacher = normalized(rng, 9, 16) if teacher_kind == "random" else tied_teacher(rng, 9, 16)
    heads = {"fc1": normalized(rng, 9, 16), "fc2": normalized(rng, 9, 4)}
    plain = losses.LossConfig(cosine_weight=2.0, similarity_weight=3.0, relative_similarity_weight=5.0)
    config = losses.LossConfig(cosine_weight=2.0, similarity_weight=3.0, relative_similarity_weight=5.0,
                               matryoshka_dims=(4, 8))
    total, terms = distillation_loss(heads, teacher, config)
    plain_total, plain_terms = distillation_loss(heads, teacher, plain)
    expected_total, expected = prefix_reference(heads["fc1"], teacher, (4, 8), 3.0, 5.0)
    for dim, (similarity, relative) in expected.items():
        np.testing.assert_allclose(float(terms[f"fc1[:{dim}]/similarity"]), similarity, rtol=2e-5, atol=1e-7)
        np.testing.assert_allclose(float(terms[f"fc1[:{dim}]/relative_similarity"]), relative, rtol=2e-5)
    for name, value in plain_terms.items():
        np.testing.assert_allclose(float(terms[name]), float(value), rtol=1e-6)
    np.testing.assert_allclose(float(total) - float(plain_total), expected_total, rtol=1e-5)


@pytest.mark.slow
def test_prefix_gradient_matches_the_pair_of_pairs_formulation():
    rng = np.random.default_rng(5)
    teacher = tied_teacher(rng, 8, 12)
    heads = {"fc1": normalized(rng, 8, 12)}
    config = losses.LossConfig(cosine_weight=0.0, similarity_weight=0.0, relative_similarity_weight=1.0,
                               matryoshka_dims=(3, 6))
    ours = jax.jit(jax.grad(lambda heads: losses.distillation_loss(heads, teacher, config)[0]))(heads)

    def reference(heads):
        fc1 = losses.l2_normalize(heads["fc1"])
        return sum(resim_bruteforce_jnp(losses.l2_normalize(fc1[:, :dim]) if dim else fc1, jnp.asarray(teacher))
                   for dim in (0, 3, 6))

    assert_trees_close(ours, jax.grad(reference)(heads), rtol=1e-5)


def test_prefixes_follow_the_reduction_target():
    """reduction_target=main_head: the prefixes learn FC1's own Gram matrix (no gradient into the target)."""
    rng = np.random.default_rng(6)
    teacher, fc1 = normalized(rng, 7, 10), normalized(rng, 7, 10)
    config = losses.LossConfig(reduction_target="main_head", matryoshka_dims=(5,))
    _, terms = distillation_loss({"fc1": fc1}, teacher, config)
    _, expected = prefix_reference(fc1, fc1, (5,), 1.0, 1.0)
    np.testing.assert_allclose(float(terms["fc1[:5]/similarity"]), expected[5][0], rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("dims, message", [
    ((256, 128), "strictly increasing"),
    ((128, 128), "strictly increasing"),
    ((0, 64), "whole number"),
    ((64.5,), "whole number"),
])
def test_bad_matryoshka_dims_are_refused_by_name(dims, message):
    with pytest.raises(ValueError, match=rf"loss\.matryoshka_dims.*{message}"):
        losses.LossConfig(matryoshka_dims=dims)


def test_a_prefix_as_wide_as_fc1_is_refused():
    rng = np.random.default_rng(1)
    heads = {"fc1": normalized(rng, 5, 8)}
    with pytest.raises(ValueError, match=r"loss\.matryoshka_dims.*narrower than FC1"):
        losses.distillation_loss(heads, normalized(rng, 5, 8), losses.LossConfig(matryoshka_dims=(4, 8)))


def test_prefixes_need_a_main_head():
    rng = np.random.default_rng(2)
    config = losses.LossConfig(main_head=None, matryoshka_dims=(2,))
    with pytest.raises(ValueError, match=r"loss\.matryoshka_dims.*main head"):
        losses.distillation_loss({"fc2": normalized(rng, 5, 4)}, normalized(rng, 5, 8), config)


@pytest.mark.parametrize("dims, teacher_dim, message", [
    ((256, 128), 1152, r"loss\.matryoshka_dims=\(256, 128\): the prefix widths must be strictly increasing"),
    ((128, 1152), 1152, r"loss\.matryoshka_dims=\(128, 1152\): every prefix must be narrower than FC1"),
    ((128,), 0, r"loss\.matryoshka_dims=\(128,\): prefixes are taken of FC1"),
])
def test_preflight_refuses_bad_matryoshka_dims_in_one_line(dims, teacher_dim, message):
    from embed_jax.train import preflight
    from kit import load_config_file

    config = load_config_file("distill", "smoke")
    config.loss.matryoshka_dims, config.model.teacher_dim = dims, teacher_dim
    with pytest.raises(preflight.ConfigError, match=message) as error:
        preflight.check_matryoshka(config)
    assert "\n" not in str(error.value)
