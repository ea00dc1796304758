"""The two ways to hand padding to attention agree: a boolean mask (XLA) and per-row lengths (what cuDNN takes).

cuDNN itself needs an NVIDIA GPU (benchmarks/gpu_session.sh compares it with XLA there); on CPU the lengths path runs
through jax.nn.dot_product_attention's XLA implementation, which checks the lengths we derive from the mask.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from embed_jax.models import attention, bert
from parity import assert_close


def _right_padded_mask(lengths, length):
    return (np.arange(length)[None, :] < np.asarray(lengths)[:, None]).astype(np.int32)


@pytest.mark.parametrize("causal", [False, True])
def test_lengths_equal_boolean_mask_for_right_padding(causal):
    rng = np.random.default_rng(0)
    query, key, value = (jnp.asarray(rng.normal(size=(3, 7, 4, 8)), jnp.float32) for _ in range(3))
    attention_mask = _right_padded_mask([7, 3, 1], 7)
    masked = attention.dot_product_attention(
        query, key, value, attention.attention_mask_for(attention_mask, causal=causal))
    lengths = attention.attention_mask_for(attention_mask, causal=causal, implementation="cudnn")
    assert lengths.dtype == jnp.int32 and lengths.tolist() == [7, 3, 1]
    from_lengths = jax.nn.dot_product_attention(query, key, value, key_value_seq_lengths=lengths, is_causal=causal,
                                                implementation="xla")
    assert_close(from_lengths, masked)


def test_unknown_implementation_is_refused_by_name():
    hf_config = {"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4,
                 "intermediate_size": 64, "max_position_embeddings": 64}
    with pytest.raises(ValueError, match="attention='flash'.*xla.*cudnn"):
        bert.config_from_hf(hf_config, attention="flash")
