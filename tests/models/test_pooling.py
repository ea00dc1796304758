"""Poolings against sentence-transformers' Pooling module (PyTorch), on right-, left- and all-padded rows."""
import numpy as np
import pytest
import torch
import jax.numpy as jnp
from sentence_transformers.sentence_transformer.modules import Pooling

from embed_jax.models import pooling
from parity import assert_close

SENTENCE_TRANSFORMERS_MODE = {"mean": "mean", "first": "cls", "last": "lasttoken"}


def batch():
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(5, 7, 6)).astype(np.float32) + 3.0  # offset: a wrong divisor shows
    mask = np.array(
        [
            [1, 1, 1, 1, 1, 1, 1],  # full
            [1, 1, 1, 0, 0, 0, 0],  # right-padded
            [0, 0, 0, 0, 1, 1, 1],  # left-padded
            [1, 0, 0, 0, 0, 0, 0],  # one token
            [0, 0, 0, 0, 0, 0, 0],  # all padding (a filler row of a global batch)
        ],
        dtype=np.int32,
    )
    return hidden, mask


@pytest.mark.parametrize("method", ["mean", "first", "last"])
def test_pooling_matches_sentence_transformers(method):
    hidden, mask = batch()
    reference = Pooling(6, pooling_mode=SENTENCE_TRANSFORMERS_MODE[method])
    features = {"token_embeddings": torch.from_numpy(hidden), "attention_mask": torch.from_numpy(mask).long()}
    expected = reference(features)["sentence_embedding"].numpy()
    actual = np.asarray(pooling.pool(jnp.asarray(hidden), jnp.asarray(mask), method))
    assert actual.dtype == np.float32
    assert_close(actual, expected)


def test_masked_mean_of_all_padding_row_is_zero_not_nan():
    hidden, mask = batch()
    pooled = np.asarray(pooling.masked_mean(jnp.asarray(hidden), jnp.asarray(mask)))
    assert np.all(np.isfinite(pooled))
    np.testing.assert_array_equal(pooled[4], 0.0)
    assert_close(pooled[1], hidden[1, :3].mean(0))


def test_bf16_hidden_states_pool_in_fp32():
    hidden, mask = batch()
    pooled = pooling.masked_mean(jnp.asarray(hidden, dtype=jnp.bfloat16), jnp.asarray(mask))
    assert pooled.dtype == jnp.float32


def test_unknown_pooling_is_refused_with_the_choices():
    hidden, mask = batch()
    with pytest.raises(ValueError, match=r"pooling 'max' is not supported; use one of \['cls', 'first', 'last', 'mean'\]"):
        pooling.pool(jnp.asarray(hidden), jnp.asarray(mask), "max")
