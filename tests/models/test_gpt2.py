"""GPT-2 encoder: parity with Hugging Face PyTorch (fp32), causal and bidirectional, at the position limit,
scan equivalence, LM-head checkpoints, long inputs, unsupported settings."""
import pytest
import torch
import transformers
import jax.numpy as jnp

from embed_jax.models import gpt2
from embed_jax.models.hf_import import load_text_encoder
from parity import assert_close, assert_masked_parity, forward, padded_batch


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
    assert_masked_parity(forward(module, ids.numpy(), mask.numpy()),
                         torch_hidden(torch_model, ids, mask, causal=causal), mask.numpy())


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
    assert_masked_parity(forward(module, ids.numpy(), mask.numpy()),
                         torch_hidden(lm.transformer, ids, mask, causal=True), mask.numpy())


@pytest.mark.slow
def test_too_long_input_is_refused_or_truncated(tiny_gpt2):
    _, folder = tiny_gpt2
    ids, mask = padded_batch(101, [11, 4], 11, seed=3)
    ids, mask = jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy())
    strict, _ = load_text_encoder(folder)
    with pytest.raises(ValueError, match="input length 11 exceeds .*10 tokens"):
        strict(ids, mask)
    lenient, _ = load_text_encoder(folder, truncate_long_inputs=True)
    assert_close(forward(lenient, ids, mask), forward(strict, ids[:, :10], mask[:, :10]))


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
