"""GPT-2 encoder: parity with Hugging Face PyTorch (fp32), causal and bidirectional, at the position limit,
scan equivalence, LM-head checkpoints, long inputs, unsupported settings."""
import numpy as np
import pytest
import torch
import transformers
import jax.numpy as jnp
from flax import nnx

from embed_jax.models import gpt2, pooling
from embed_jax.models.hf_import import load_text_encoder

TOLERANCE = 1e-4  # issue 3: fp32 parity, absolute


def padded_batch(vocab_size, lengths, total_length, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (len(lengths), total_length), generator=generator)
    mask = torch.zeros(len(lengths), total_length, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    return ids * mask, mask


def tiny_config(**overrides):
    # Odd vocab (101), head_dim 12 (not a power of two), inner size 70 (not 4·hidden), position limit 10.
    settings = dict(vocab_size=101, n_embd=36, n_layer=2, n_head=3, n_inner=70, n_positions=10,
                    bos_token_id=0, eos_token_id=0)
    settings.update(overrides)
    return transformers.GPT2Config(**settings)


def torch_hidden(model, ids, mask, *, causal):
    """Hugging Face reference; bidirectional = a full 4-D boolean mask, used as given by transformers 5."""
    with torch.no_grad():
        if causal:
            return model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
        length = ids.shape[1]
        full = mask[:, None, None, :].bool().expand(-1, 1, length, length)
        return model(input_ids=ids, attention_mask=full).last_hidden_state.numpy()


@nnx.jit
def forward(module, input_ids, attention_mask):
    return module(input_ids, attention_mask)


def assert_parity(flax_hidden, expected, mask):
    real = mask.numpy().astype(bool)
    flax_hidden = np.asarray(flax_hidden)
    np.testing.assert_allclose(flax_hidden[real], expected[real], atol=TOLERANCE, rtol=0)
    torch_mean = (expected * real[..., None]).sum(1) / real.sum(1, keepdims=True)
    flax_mean = np.asarray(pooling.masked_mean(jnp.asarray(flax_hidden), jnp.asarray(mask.numpy())))
    np.testing.assert_allclose(flax_mean, torch_mean, atol=TOLERANCE, rtol=0)


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_gpt2")
    torch.manual_seed(0)
    model = transformers.GPT2Model(tiny_config()).eval()
    model.save_pretrained(folder)
    return model, folder


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("scan", [False, True])
def test_matches_pytorch_at_position_limit(tiny_gpt2, causal, scan):
    torch_model, folder = tiny_gpt2
    ids, mask = padded_batch(101, [10, 6, 1], 10, seed=1)
    module, _ = load_text_encoder(folder, causal=causal, scan=scan)
    assert_parity(forward(module, jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy())),
                  torch_hidden(torch_model, ids, mask, causal=causal), mask)


def test_fused_qkv_is_split_per_head_axis(tiny_gpt2):
    _, folder = tiny_gpt2
    module, _ = load_text_encoder(folder)
    kernel = module.h[0].attn.c_attn.kernel
    assert kernel.shape == (36, 3, 36) and kernel.out_sharding == ("embed", None, "heads")


def test_lm_head_checkpoint_loads_with_prefix(tmp_path):
    torch.manual_seed(2)
    lm = transformers.GPT2LMHeadModel(tiny_config()).eval()
    lm.save_pretrained(tmp_path)
    ids, mask = padded_batch(101, [7, 2], 7, seed=2)
    module, _ = load_text_encoder(tmp_path)
    assert_parity(forward(module, jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy())),
                  torch_hidden(lm.transformer, ids, mask, causal=True), mask)


def test_too_long_input_is_refused_or_truncated(tiny_gpt2):
    _, folder = tiny_gpt2
    ids, mask = padded_batch(101, [11, 4], 11, seed=3)
    ids, mask = jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy())
    strict, _ = load_text_encoder(folder)
    with pytest.raises(ValueError, match="input length 11 exceeds .*10 tokens"):
        strict(ids, mask)
    lenient, _ = load_text_encoder(folder, truncate_long_inputs=True)
    np.testing.assert_allclose(np.asarray(forward(lenient, ids, mask)),
                               np.asarray(forward(strict, ids[:, :10], mask[:, :10])), atol=1e-6)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx=true is not supported"),
        ({"add_cross_attention": True}, "add_cross_attention=true is not supported"),
        ({"activation_function": "mish"}, "activation_function='mish' is not supported"),
        ({"n_head": 5}, "n_embd=36 is not a multiple of n_head=5"),
    ],
)
def test_unsupported_settings_are_refused_by_name(change, message):
    hf_config = tiny_config().to_dict()
    hf_config.update(change)
    with pytest.raises(ValueError, match=message):
        gpt2.config_from_hf(hf_config, source="tiny/config.json")
