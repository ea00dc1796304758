"""FC heads: parity with sentence-transformers' Dense (how stella/Jasper ship them), normalisation, errors."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from sentence_transformers.sentence_transformer.modules import Dense

from embed_jax.models.heads import EmbeddingHeads, head_name, l2_normalize


def test_each_head_equals_a_sentence_transformers_dense_then_normalize():
    pooled = np.random.default_rng(0).standard_normal((5, 24)).astype(np.float32)
    heads = EmbeddingHeads(24, teacher_dim=40, reduction_dims=[16, 8], rngs=nnx.Rngs(0))
    outputs = heads(jnp.asarray(pooled))
    assert sorted(outputs) == [8, 16, 40]
    for dim, vectors in outputs.items():
        linear = heads.dense[head_name(dim)]
        dense = Dense(24, dim, bias=True, activation_function=torch.nn.Identity())
        with torch.no_grad():
            dense.linear.weight.copy_(torch.from_numpy(np.array(linear.kernel[...]).T.copy()))
            dense.linear.bias.copy_(torch.from_numpy(np.array(linear.bias[...])))
            reference = dense({"sentence_embedding": torch.from_numpy(pooled)})["sentence_embedding"]
            reference = torch.nn.functional.normalize(reference, dim=-1).numpy()
        assert vectors.shape == (5, dim) and vectors.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(vectors), reference, atol=1e-6)


def test_heads_are_independent_parameters_named_by_dimension():
    heads = EmbeddingHeads(12, teacher_dim=30, reduction_dims=[6], rngs=nnx.Rngs(0))
    params = nnx.state(heads, nnx.Param)
    assert set(params["dense"]) == {"dense_30", "dense_6"}
    assert heads.dense["dense_30"].kernel.shape == (12, 30)
    assert heads.dense["dense_6"].kernel.shape == (12, 6)
    assert heads.dense["dense_6"].kernel.get_metadata()["out_sharding"] == ("embed", "mlp")


def test_reduction_heads_alone_are_allowed():
    heads = EmbeddingHeads(12, teacher_dim=None, reduction_dims=[4], rngs=nnx.Rngs(0))
    assert list(heads(jnp.ones((2, 12)))) == [4]


def test_bf16_compute_returns_fp32_unit_vectors_close_to_fp32():
    pooled = jnp.asarray(np.random.default_rng(1).standard_normal((4, 32)), jnp.float32)
    fp32 = EmbeddingHeads(32, teacher_dim=64, rngs=nnx.Rngs(3))(pooled)[64]
    bf16 = EmbeddingHeads(32, teacher_dim=64, dtype=jnp.bfloat16, rngs=nnx.Rngs(3))(pooled)[64]
    assert bf16.dtype == jnp.float32
    np.testing.assert_allclose(np.linalg.norm(np.asarray(bf16), axis=-1), 1.0, atol=1e-6)
    # Cosine between the bf16 and fp32 outputs: bf16 inputs and weights round at 2^-8 relative.
    assert np.min(np.sum(np.asarray(bf16) * np.asarray(fp32), axis=-1)) > 0.999


def test_l2_normalize_keeps_zero_vectors_finite():
    out = np.asarray(l2_normalize(jnp.zeros((2, 3), jnp.bfloat16)))
    assert out.dtype == np.float32 and np.all(out == 0)


@pytest.mark.parametrize(
    "teacher_dim,reduction_dims,message",
    [
        (None, [], "at least one"),
        (0, [8], "positive integers"),
        (16, [8.0], "positive integers"),
        (16, [True], "positive integers"),
        (16, [8, 16], r"distinct.*\[16\]"),
    ],
)
def test_bad_dimensions_are_named(teacher_dim, reduction_dims, message):
    with pytest.raises(ValueError, match=message):
        EmbeddingHeads(8, teacher_dim=teacher_dim, reduction_dims=reduction_dims, rngs=nnx.Rngs(0))


def test_wrong_pooled_width_is_named():
    heads = EmbeddingHeads(8, teacher_dim=4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(batch, 8\).*\(2, 5\)"):
        heads(jnp.zeros((2, 5)))
