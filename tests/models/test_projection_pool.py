"""Projection pool: parity with torch.nn.AdaptiveAvgPool2d, the learned mode, and its errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from embed_jax.models.projection_pool import ProjectionPool, adaptive_average_matrix, adaptive_average_pool

# (batch, tokens in, width in, tokens out, width out): divisible, non-divisible both ways, upsampling on either axis,
# identity, collapse to one, and Jasper's own sizes (docs/method.md §1: 729×1152 → 300×1536).
SHAPES = [
    (2, 16, 8, 4, 2),
    (3, 10, 7, 3, 4),
    (1, 7, 5, 9, 11),
    (2, 5, 6, 5, 6),
    (2, 9, 13, 1, 1),
    (1, 729, 1152, 300, 1536),
]


def torch_adaptive_average(x: np.ndarray, num_tokens: int, out_features: int) -> np.ndarray:
    # A 3-D input is (C, H, W) to AdaptiveAvgPool2d: batch plays channels, tokens × width is the image.
    return torch.nn.AdaptiveAvgPool2d((num_tokens, out_features))(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("batch,n_in,d_in,n_out,d_out", SHAPES)
def test_adaptive_average_equals_torch(batch, n_in, d_in, n_out, d_out):
    x = np.random.default_rng(n_in * d_in).standard_normal((batch, n_in, d_in)).astype(np.float32)
    pool = ProjectionPool(d_in, d_out, n_out)
    got = np.asarray(pool(jnp.asarray(x)))
    assert got.shape == (batch, n_out, d_out)
    np.testing.assert_allclose(got, torch_adaptive_average(x, n_out, d_out), atol=1e-5, rtol=1e-5)


def test_pool_is_parameter_free_in_jasper_mode():
    assert nnx.state(ProjectionPool(12, 8, 3), nnx.Param) == nnx.State({})


@pytest.mark.parametrize("n_in,n_out", [(10, 3), (3, 10), (729, 300), (4, 4)])
def test_averaging_rows_sum_to_one_and_cover_every_input(n_in, n_out):
    matrix = adaptive_average_matrix(n_in, n_out)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
    assert (matrix.sum(axis=0) > 0).all()


def test_adaptive_average_matrix_rejects_empty_sizes():
    with pytest.raises(ValueError, match="≥ 1"):
        adaptive_average_matrix(0, 3)


def test_linear_mode_is_token_average_then_affine():
    x = np.random.default_rng(0).standard_normal((2, 10, 6)).astype(np.float32)
    pool = ProjectionPool(6, 5, 4, mode="linear", rngs=nnx.Rngs(0))
    kernel, bias = np.asarray(pool.projection.kernel[...]), np.asarray(pool.projection.bias[...])
    token_average = torch_adaptive_average(x, 4, 6)
    np.testing.assert_allclose(np.asarray(pool(jnp.asarray(x))), token_average @ kernel + bias, atol=1e-5)
    assert pool.projection.kernel.get_metadata()["out_sharding"] == ("embed", "mlp")


def test_bf16_compute_close_to_fp32():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 27, 20)), jnp.float32)
    fp32 = adaptive_average_pool(x, 9, 12)
    bf16 = ProjectionPool(20, 12, 9, dtype=jnp.bfloat16)(x)
    assert bf16.dtype == jnp.bfloat16
    # bf16 has 8 mantissa bits: a relative 2^-8 per rounding, a few roundings per output.
    np.testing.assert_allclose(np.asarray(bf16, np.float32), np.asarray(fp32), atol=2e-2, rtol=2e-2)


def test_works_under_jit():
    x = jnp.ones((2, 10, 6))
    pool = ProjectionPool(6, 4, 3)
    np.testing.assert_allclose(np.asarray(nnx.jit(lambda p, h: p(h))(pool, x)), 1.0, rtol=1e-6)


def test_wrong_vision_width_is_named():
    with pytest.raises(ValueError, match=r"\(batch, patches, 8\).*\(2, 5, 7\)"):
        ProjectionPool(8, 4, 2)(jnp.zeros((2, 5, 7)))


def test_unknown_mode_lists_the_modes():
    with pytest.raises(ValueError, match="adaptive_average.*linear"):
        ProjectionPool(8, 4, 2, mode="max")


def test_linear_mode_needs_rngs():
    with pytest.raises(ValueError, match="rngs"):
        ProjectionPool(8, 4, 2, mode="linear")


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_sizes_must_be_positive_integers(bad):
    with pytest.raises(ValueError, match="num_tokens"):
        ProjectionPool(8, 4, bad)
