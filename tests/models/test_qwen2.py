"""Qwen2 encoder: parity with Hugging Face PyTorch (fp32), causal and bidirectional, GQA with one or several KV heads,
head_dim not a power of two, scan equivalence, sharded checkpoints, prefixed checkpoints, unsupported settings."""
import json

import numpy as np
import pytest
import torch
import transformers
import jax.numpy as jnp
from flax import nnx

from embed_jax.models import qwen2
from embed_jax.models.hf_import import load_text_encoder
from parity import assert_close, assert_masked_parity, forward, padded_batch


def tiny_config(**overrides):
    # Odd vocab (97), head_dim 10 (not a power of two), RoPE θ = 1e6 as stella's, position limit 12.
    settings = dict(
        vocab_size=97, hidden_size=40, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
        head_dim=10, intermediate_size=56, max_position_embeddings=12, rope_theta=1e6,
    )
    settings.update(overrides)
    return transformers.Qwen2Config(**{key: value for key, value in settings.items() if value is not None})


def save_tiny(model_class, config, folder, seed=0, **save_options):
    torch.manual_seed(seed)
    model = model_class(config).eval()
    model.save_pretrained(folder, **save_options)
    return model


def torch_hidden(model, ids, mask, *, causal):
    """Hugging Face reference; bidirectional = a full (non-causal) 4-D boolean mask, which transformers 5 uses
    as given (masking_utils: a 4-D mask is returned as-is; SDPA then runs with is_causal=False)."""
    with torch.no_grad():
        if causal:
            return model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
        length = ids.shape[1]
        full = mask[:, None, None, :].bool().expand(-1, 1, length, length)
        return model(input_ids=ids, attention_mask={"full_attention": full}).last_hidden_state.numpy()


@pytest.fixture(scope="module")
def tiny_qwen2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_qwen2")
    return save_tiny(transformers.Qwen2Model, tiny_config(), folder), folder


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("scan", [False, True])
def test_one_kv_head_matches_pytorch_at_position_limit(tiny_qwen2, causal, scan):
    torch_model, folder = tiny_qwen2
    ids, mask = padded_batch(97, [12, 7, 1], 12, seed=1)
    module, _ = load_text_encoder(folder, causal=causal, scan=scan)
    assert_masked_parity(forward(module, ids.numpy(), mask.numpy()),
                         torch_hidden(torch_model, ids, mask, causal=causal), mask.numpy())


def test_bidirectional_differs_from_causal(tiny_qwen2):
    # Guards the test above: if both references were computed the same way, parity would not tell them apart.
    torch_model, folder = tiny_qwen2
    ids, mask = padded_batch(97, [9], 9, seed=2)
    causal = torch_hidden(torch_model, ids, mask, causal=True)
    bidirectional = torch_hidden(torch_model, ids, mask, causal=False)
    assert np.abs(causal[0, 0] - bidirectional[0, 0]).max() > 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("causal", [True, False])
def test_grouped_query_attention_from_a_sharded_causal_lm_checkpoint(tmp_path, causal):
    # 6 query heads sharing 2 KV heads; hidden 36 with head_dim 6 (from hidden_size / heads, no head_dim key);
    # saved as Qwen2ForCausalLM (prefix "model.", lm_head dropped) in several safetensors shards.
    config = tiny_config(hidden_size=36, num_attention_heads=6, num_key_value_heads=2, head_dim=None, vocab_size=89)
    torch_model = save_tiny(transformers.Qwen2ForCausalLM, config, tmp_path, seed=3, max_shard_size="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    ids, mask = padded_batch(89, [10, 4], 10, seed=3)
    assert "head_dim" not in json.loads((tmp_path / "config.json").read_text())
    module, _ = load_text_encoder(tmp_path, causal=causal)
    assert module.config.head_dim == 6
    assert_masked_parity(forward(module, ids.numpy(), mask.numpy()),
                         torch_hidden(torch_model.model, ids, mask, causal=causal), mask.numpy())


@pytest.mark.slow
def test_scan_and_loop_agree_and_carry_layer_axis(tiny_qwen2):
    _, folder = tiny_qwen2
    looped, _ = load_text_encoder(folder, causal=False)
    scanned, _ = load_text_encoder(folder, causal=False, scan=True)
    np.testing.assert_array_equal(
        np.asarray(looped.layers[1].mlp.down_proj.kernel[...]), np.asarray(scanned.layers.mlp.down_proj.kernel[...][1])
    )
    assert scanned.layers.self_attn.k_proj.kernel.out_sharding == ("layers", "embed", "kv")
    ids, mask = padded_batch(97, [8, 5], 8, seed=4)
    args = (jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy()))
    assert_close(forward(looped, *args), forward(scanned, *args))


def test_inputs_embeds_and_truncation(tiny_qwen2):
    _, folder = tiny_qwen2
    module, _ = load_text_encoder(folder, truncate_long_inputs=True)
    ids, mask = padded_batch(97, [14, 3], 14, seed=5)
    ids, mask = jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy())
    truncated = forward(module, ids, mask)
    assert truncated.shape == (2, 12, 40)
    from_embeds = nnx.jit(lambda m: m(attention_mask=mask[:, :12], inputs_embeds=m.embed_tokens(ids[:, :12])))(module)
    assert_close(truncated, from_embeds)
    strict, _ = load_text_encoder(folder)
    with pytest.raises(ValueError, match="input length 14 exceeds .*12 tokens"):
        strict(ids, mask)


def test_rope_theta_from_older_config_files():
    older = {"rope_theta": 10000.0, "rope_scaling": None}
    assert qwen2.rope_theta_from_hf(older, source="c.json") == 10000.0
    newer = {"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}
    assert qwen2.rope_theta_from_hf(newer, source="c.json") == 1e6


@pytest.mark.parametrize(
    "change, message",
    [
        ({"use_sliding_window": True}, "sliding-window attention is not supported"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0}}, "RoPE type 'yarn'"),
        ({"num_key_value_heads": 3}, "num_attention_heads=4 is not a multiple of num_key_value_heads=3"),
        ({"hidden_act": "mish"}, "hidden_act='mish' is not supported"),
    ],
)
def test_unsupported_settings_are_refused_by_name(change, message):
    hf_config = tiny_config().to_dict()
    hf_config.update(change)
    with pytest.raises(ValueError, match=message):
        qwen2.config_from_hf(hf_config, source="tiny/config.json")
