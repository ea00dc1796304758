"""MPNet encoder: parity with Hugging Face's MPNetModel (fp32) on padded batches, the relative position buckets,
scan/remat, masked-LM checkpoints, refused configs, and the real all-mpnet-base-v2 against sentence-transformers
through `Student.from_pretrained` (plus stage 2's last-layers filter on it)."""
import json

import numpy as np
import pytest
import torch
import transformers
import jax.numpy as jnp
from flax import nnx
from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

from embed_jax.models import mpnet, pooling
from embed_jax.models.hf_import import load_text_encoder
from embed_jax.train import sharding
from embed_jax.train.trainable import trainable_filter
from parity import PARITY_ATOL, assert_close, assert_masked_parity, forward, largest_magnitude, padded_batch

PAD = 1  # MPNet's padding index (hard-coded in Hugging Face's MPNetEmbeddings)

# Odd vocab (97), head_dim 12, a table of 20 positions = 18 tokens (positions run from 2), 2 layers sharing the bias.
MPNET_CONFIG = dict(
    vocab_size=97, hidden_size=36, num_hidden_layers=2, num_attention_heads=3, intermediate_size=50,
    max_position_embeddings=20, pad_token_id=PAD, layer_norm_eps=1e-5,
)
MAX_TOKENS = 18


def mpnet_batch(lengths, total_length, seed=0):
    """Random token ids (never the pad id) for rows of the given real lengths, right-padded with the pad id."""
    return padded_batch(MPNET_CONFIG["vocab_size"], lengths, total_length, pad_token_id=PAD, seed=seed)


def save_tiny(model_class, folder, seed=0):
    """A tiny random Hugging Face MPNet saved with save_pretrained. The relative bias table and the LayerNorms are
    redrawn at scale 1 (their initial values are ~0.02 / ones / zeros) so that a wrong bucket, a swapped scale and
    bias, or a bias left out shows in the hidden states."""
    torch.manual_seed(seed)
    model = model_class(transformers.MPNetConfig(**MPNET_CONFIG)).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "relative_attention_bias" in name or "LayerNorm" in name:
                parameter.copy_(torch.randn_like(parameter))
    model.save_pretrained(folder)
    return model


def as_jax(*tensors):
    return tuple(jnp.asarray(tensor.numpy()) for tensor in tensors)


@pytest.fixture(scope="module")
def tiny_mpnet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_mpnet")
    return save_tiny(transformers.MPNetModel, folder), folder


def test_relative_position_buckets_match_hugging_face_for_every_distance():
    length = 1025  # distances −1024…1024: past max_distance (128), where the buckets saturate
    positions = torch.arange(length)
    expected = MPNetEncoder.relative_position_bucket(positions[None, :] - positions[:, None]).numpy()
    actual = mpnet.relative_position_buckets(length)
    np.testing.assert_array_equal(actual, expected)
    assert set(np.unique(actual)) == set(range(32)) - {16}  # 16 would be a negative distance of 0


@pytest.mark.parametrize("scan", [False, True])
def test_mpnet_matches_pytorch_on_padded_batch_at_position_limit(tiny_mpnet, scan):
    torch_model, folder = tiny_mpnet
    ids, mask = mpnet_batch([MAX_TOKENS, 11, 1, 6], MAX_TOKENS)
    with torch.no_grad():
        expected = torch_model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    module, hf_config = load_text_encoder(folder, scan=scan)
    assert hf_config["model_type"] == "mpnet" and module.config.max_sequence_length == MAX_TOKENS
    actual = forward(module, *as_jax(ids, mask))
    assert actual.shape == (4, MAX_TOKENS, 36)
    assert_masked_parity(actual, expected, mask.numpy())


@pytest.mark.slow
def test_the_shared_relative_bias_matters(tiny_mpnet):
    """The parity above would not notice a bias left out if the bias changed little: it changes the hidden states
    by far more than the parity tolerance (measured: 0.017, 167× PARITY_ATOL)."""
    _, folder = tiny_mpnet
    module, _ = load_text_encoder(folder)
    ids, mask = as_jax(*mpnet_batch([9, 4], 9, seed=1))
    with_bias = np.asarray(forward(module, ids, mask))
    module.encoder.relative_attention_bias.embedding[...] = jnp.zeros_like(module.encoder.relative_attention_bias.embedding[...])
    assert np.abs(with_bias - np.asarray(forward(module, ids, mask))).max() > 20 * PARITY_ATOL


@pytest.mark.slow
def test_inputs_embeds_match_pytorch_inputs_embeds(tiny_mpnet):
    # Hugging Face numbers every position (2, 3, …) when given embeddings: pads included, as here.
    torch_model, folder = tiny_mpnet
    ids, mask = mpnet_batch([8, 5], 8, seed=2)
    with torch.no_grad():
        embeds = torch_model.embeddings.word_embeddings(ids)
        expected = torch_model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state.numpy()
    module, _ = load_text_encoder(folder)
    jax_ids, jax_mask = as_jax(ids, mask)
    actual = nnx.jit(lambda m: m(attention_mask=jax_mask, inputs_embeds=m.embed_tokens(jax_ids)))(module)
    assert_masked_parity(actual, expected, mask.numpy())


@pytest.mark.slow
def test_scan_and_remat_give_the_same_loss_and_gradients(tiny_mpnet):
    _, folder = tiny_mpnet
    ids, mask = as_jax(*mpnet_batch([7, 3], 8, seed=3))

    def loss(module):
        return jnp.sum(pooling.masked_mean(module(ids, mask), mask) ** 2)

    loss_and_grads = nnx.jit(nnx.value_and_grad(loss))
    plain_loss, plain_grads = loss_and_grads(load_text_encoder(folder)[0])
    scanned = load_text_encoder(folder, scan=True, remat=True)[0]
    scanned_loss, scanned_grads = loss_and_grads(scanned)
    np.testing.assert_allclose(float(plain_loss), float(scanned_loss), rtol=1e-6)
    plain_flat = dict(nnx.to_flat_state(plain_grads))
    scale = largest_magnitude(*(grad.get_value() for grad in plain_flat.values()))
    for path, grad in nnx.to_flat_state(scanned_grads):
        if path[:2] == ("encoder", "layer"):  # stacked: row i is layer i
            for index in range(MPNET_CONFIG["num_hidden_layers"]):
                expected = plain_flat[path[:2] + (index,) + path[2:]].get_value()
                assert_close(grad.get_value()[index], expected, scale=scale, err_msg=f"{path} layer {index}")
        else:
            assert_close(grad.get_value(), plain_flat[path].get_value(), scale=scale, err_msg=str(path))
    assert np.abs(np.asarray(plain_flat[("encoder", "relative_attention_bias", "embedding")].get_value())).max() > 0


@pytest.mark.slow
def test_too_long_input_is_refused_or_truncated(tiny_mpnet):
    _, folder = tiny_mpnet
    ids, mask = as_jax(*mpnet_batch([MAX_TOKENS + 1, 5], MAX_TOKENS + 1, seed=4))
    strict, _ = load_text_encoder(folder)
    with pytest.raises(ValueError, match=rf"input length 19 exceeds .*{MAX_TOKENS} tokens.*truncate_long_inputs=True"):
        strict(ids, mask)
    lenient, _ = load_text_encoder(folder, truncate_long_inputs=True)
    truncated = forward(lenient, ids, mask)
    assert truncated.shape == (2, MAX_TOKENS, 36)
    assert_close(truncated, forward(strict, ids[:, :MAX_TOKENS], mask[:, :MAX_TOKENS]))


@pytest.mark.slow
def test_masked_lm_checkpoint_loads_with_prefix_and_head_dropped(tmp_path):
    masked_lm = save_tiny(transformers.MPNetForMaskedLM, tmp_path, seed=5)
    ids, mask = mpnet_batch([8, 3], 8, seed=5)
    with torch.no_grad():
        expected = masked_lm.mpnet(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    module, _ = load_text_encoder(tmp_path)
    assert_masked_parity(forward(module, *as_jax(ids, mask)), expected, mask.numpy())


def test_parameters_carry_logical_axes_that_the_sharding_rules_cover(tiny_mpnet):
    _, folder = tiny_mpnet
    module, _ = load_text_encoder(folder)
    params = nnx.state(module, nnx.Param)
    specs = nnx.get_partition_spec(params)
    layer = specs["encoder"]["layer"][0]
    assert tuple(specs["embeddings"]["word_embeddings"]["embedding"].get_value()) == ("vocab", "embed")
    assert tuple(layer["attention"]["attn"]["q"]["kernel"].get_value()) == ("embed", "heads")
    assert tuple(layer["attention"]["attn"]["o"]["kernel"].get_value()) == ("heads", "embed")
    assert tuple(layer["output"]["dense"]["kernel"].get_value()) == ("mlp", "embed")
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    sharding.state_sharding(params, mesh)  # raises on a logical axis without a rule


# ---------------------------------------------------------------------------------------------------------------
# Configs this encoder refuses


def write_config(folder, **changes):
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "mpnet", **MPNET_CONFIG, **changes}))
    return folder


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"relative_attention_num_buckets": 64}, r"relative_attention_num_buckets=64 is not supported .*only 32"),
        ({"hidden_act": "quick_gelu"}, r"hidden_act='quick_gelu' is not supported"),
        ({"hidden_size": 40}, r"hidden_size=40 is not a multiple of num_attention_heads=3"),
        ({"is_decoder": True}, r"is_decoder=True is not supported by the MPNet encoder"),
        ({"max_position_embeddings": 2}, r"max_position_embeddings=2 leaves no position"),
        ({"vocab_size": None}, r"lacks the key 'vocab_size'"),
    ],
)
def test_unsupported_config_is_refused_naming_the_key(tmp_path, changes, message):
    folder = write_config(tmp_path / "model", **changes)
    with pytest.raises(ValueError, match=message) as error:
        load_text_encoder(folder)
    assert str(folder / "config.json") in str(error.value)


def test_unknown_option_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"unknown option\(s\) causal for MPNetConfig; valid options: scan, remat"):
        load_text_encoder(write_config(tmp_path / "model"), causal=False)


# ---------------------------------------------------------------------------------------------------------------
# Real weights: all-mpnet-base-v2 (109.5M parameters, 438 MB of fp32)


def wordnet_definitions(count, seed=0):
    """Real sentences of mixed lengths: WordNet 3.0 noun glosses (Debian wordnet-base), plus a long one (the longest of
    at most 250 characters, ~50 tokens: long enough for the logarithmic relative-position buckets, short enough to
    keep a 110M-parameter forward pass quick on a CPU)."""
    glosses = []
    with open("/usr/share/wordnet/data.noun", encoding="latin-1") as handle:
        for line in handle:
            if not line.startswith("  ") and "|" in line:
                glosses.append(line.split("|", 1)[1].strip())
    rng = np.random.default_rng(seed)
    long_one = max((gloss for gloss in glosses if len(gloss) <= 250), key=len)
    return [glosses[i] for i in rng.choice(len(glosses), size=count, replace=False)] + [long_one]


@pytest.fixture(scope="module")
def mpnet_folder():
    from embed_jax.assets import AssetError, resolve_model_path

    try:
        return str(resolve_model_path("asset:all-mpnet-base-v2"))
    except AssetError as error:  # its wheels come with `scripts/setup.sh --teachers`
        pytest.skip(str(error))


@pytest.mark.slow
def test_real_mpnet_student_matches_sentence_transformers_and_stage2_picks_its_last_3_layers(mpnet_folder):
    from sentence_transformers import SentenceTransformer

    from embed_jax.models.student import Student

    texts = wordnet_definitions(10)
    sentence_transformer = SentenceTransformer(mpnet_folder, device="cpu")
    expected = sentence_transformer.encode(texts, normalize_embeddings=True, batch_size=len(texts))
    features = sentence_transformer.preprocess(texts)
    lengths = features["attention_mask"].sum(1)
    assert lengths.min() < 12 and lengths.max() > 40, "the batch should mix short and long sentences"
    del sentence_transformer

    student = Student.from_pretrained(mpnet_folder, heads={"teacher_dim": None, "reduction_dims": [128, 64]})
    assert student.config["pooling"] == "mean" and student.hidden_size == 768
    outputs = nnx.jit(lambda m, ids, mask: m(ids, mask))(student, *as_jax(features["input_ids"], features["attention_mask"]))
    pooled = np.asarray(outputs["pooled"])
    cosines = np.sum(pooled / np.linalg.norm(pooled, axis=1, keepdims=True) * expected, axis=1)
    assert cosines.min() >= 0.99999, cosines.min()
    for dim in (128, 64):
        vectors = np.asarray(outputs["embeddings"][dim])
        assert vectors.shape == (len(texts), dim)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    paths = [path for path, _ in nnx.to_flat_state(nnx.state(student, nnx.Param))]
    select = trainable_filter("heads+last_layers", paths, last_layers=3)
    chosen = [path for path, variable in nnx.to_flat_state(nnx.state(student, nnx.Param)) if select(path, variable)]
    encoder_chosen = [path for path in chosen if path[0] == "text_encoder"]
    assert {path[3] for path in encoder_chosen} == {9, 10, 11}
    assert all(path[1:3] == ("encoder", "layer") for path in encoder_chosen)
    per_layer = [path for path in paths if path[:4] == ("text_encoder", "encoder", "layer", 11)]
    assert len(encoder_chosen) == 3 * len(per_layer) == 3 * 16
    assert {path[0] for path in chosen} == {"heads", "text_encoder"}
