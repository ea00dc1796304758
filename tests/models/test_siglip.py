"""SigLIP vision tower: parity with Hugging Face's SiglipVisionModel (fp32), bf16 tolerance, and bad input."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.numpy import load_file, save_file
from transformers import SiglipConfig, SiglipModel
from transformers import SiglipVisionConfig as HFSiglipVisionConfig
from transformers import SiglipVisionModel as HFSiglipVisionModel

from embed_jax.models import siglip
from embed_jax.models.hf_import import WeightMismatchError

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, image_size=30,
            patch_size=6)


def perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Hugging Face initialises LayerNorms to (1, 0) and biases near 0; noise on every tensor makes each one count."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def save_tiny_vision_model(folder, seed=0, **overrides):
    torch.manual_seed(seed)
    model = perturbed(HFSiglipVisionModel(HFSiglipVisionConfig(**{**TINY, **overrides})), seed)
    model.save_pretrained(folder)
    return model


def images_for(config: dict, batch: int = 3, seed: int = 0) -> np.ndarray:
    size, channels = config.get("image_size", 224), config.get("num_channels", 3)
    return np.random.default_rng(seed).standard_normal((batch, channels, size, size)).astype(np.float32)


def torch_outputs(model, pixels_nchw):
    with torch.no_grad():
        out = model(pixel_values=torch.from_numpy(pixels_nchw))
    pooled = None if out.pooler_output is None else out.pooler_output.numpy()
    return out.last_hidden_state.numpy(), pooled


def channels_last(pixels_nchw: np.ndarray) -> jax.Array:
    return jnp.asarray(pixels_nchw.transpose(0, 2, 3, 1))


# One compiled forward per tower: op-by-op (eager) execution compiles every small op separately and is ~3× slower.
run = nnx.jit(lambda model, pixels: model(pixels))


@pytest.mark.parametrize(
    "overrides,options",
    [
        ({}, {}),
        # head_dim 12 (not a power of two), 30 px at patch 7: the conv drops a 2-px remainder, as PyTorch's does.
        (dict(hidden_size=36, num_attention_heads=3, patch_size=7, hidden_act="gelu"), {}),
        # one head, no MAP head, a single-channel tower, scanned layers with rematerialisation
        (dict(num_attention_heads=1, vision_use_head=False, num_channels=1, num_hidden_layers=3),
         dict(scan=True, remat=True)),
    ],
)
def test_matches_hugging_face_in_fp32(tmp_path, overrides, options):
    reference = save_tiny_vision_model(tmp_path, **overrides)
    model, vision_config = siglip.load(tmp_path, **options)
    pixels = images_for(vision_config)
    want_hidden, want_pooled = torch_outputs(reference, pixels)
    got = run(model, channels_last(pixels))
    np.testing.assert_allclose(np.asarray(got["last_hidden_state"]), want_hidden, atol=1e-4, rtol=0)
    if want_pooled is None:
        assert "pooler_output" not in got
    else:
        np.testing.assert_allclose(np.asarray(got["pooler_output"]), want_pooled, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_full_siglip_folder_loads_its_vision_half(tmp_path):
    config = SiglipConfig(
        vision_config=TINY,
        text_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20,
                         vocab_size=50, bos_token_id=None, eos_token_id=None, pad_token_id=1),
    )
    torch.manual_seed(1)
    full = perturbed(SiglipModel(config), 1)
    full.save_pretrained(tmp_path)
    model, _ = siglip.load(tmp_path)
    pixels = images_for(TINY, batch=2)
    with torch.no_grad():
        out = full.vision_model(pixel_values=torch.from_numpy(pixels))
    got = run(model, channels_last(pixels))
    np.testing.assert_allclose(np.asarray(got["last_hidden_state"]), out.last_hidden_state.numpy(), atol=1e-4)
    np.testing.assert_allclose(np.asarray(got["pooler_output"]), out.pooler_output.numpy(), atol=1e-4)


@pytest.mark.slow
def test_bf16_compute_within_stated_tolerance_of_fp32(tmp_path):
    save_tiny_vision_model(tmp_path)
    fp32, config = siglip.load(tmp_path)
    bf16, _ = siglip.load(tmp_path, dtype=jnp.bfloat16)
    pixels = channels_last(images_for(config))
    want, got = run(fp32, pixels), run(bf16, pixels)
    assert got["last_hidden_state"].dtype == jnp.bfloat16
    assert bf16.embeddings.patch_embedding.kernel[...].dtype == jnp.float32  # fp32 parameters, bf16 compute
    for key in ("last_hidden_state", "pooler_output"):
        a, b = np.asarray(want[key]), np.asarray(got[key], np.float32)
        cosine = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
        # Stated tolerance: per-token cosine ≥ 0.999 to fp32. Measured on 16 random images through this 2-layer
        # tower: ≥ 0.99989 (last_hidden_state), ≥ 0.99997 (pooler_output); bf16 rounds at 2^-8 relative.
        assert cosine.min() >= 0.999, (key, cosine.min())


def test_parameters_carry_logical_axes(tmp_path):
    save_tiny_vision_model(tmp_path)
    model, _ = siglip.load(tmp_path)
    assert model.encoder.layers[0].self_attn.q_proj.kernel.get_metadata()["out_sharding"] == ("embed", "heads")
    assert model.embeddings.patch_embedding.kernel.get_metadata()["out_sharding"] == (None, None, None, "embed")
    assert model.head.probe.get_metadata()["out_sharding"] == (None, None, "embed")


@pytest.mark.slow
def test_builds_from_config_without_a_checkpoint():
    config = {"model_type": "siglip_vision_model", **TINY, "num_hidden_layers": 1, "vision_use_head": False}
    model = siglip.from_hf_config(config, rngs=nnx.Rngs(0))
    out = run(model, jnp.zeros((2, 30, 30, 3)))
    assert out["last_hidden_state"].shape == (2, 25, 32)
    assert np.isfinite(np.asarray(out["last_hidden_state"])).all()


# ---------------------------------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def tiny_tower():
    # Shapes only: the checks run before any computation.
    return nnx.eval_shape(lambda: siglip.from_hf_config({"model_type": "siglip_vision_model", **TINY}, rngs=nnx.Rngs(0)))


def test_channels_first_images_get_the_transpose_to_apply(tiny_tower):
    with pytest.raises(ValueError, match=r"channels-first.*transpose\(0, 2, 3, 1\)"):
        tiny_tower(jnp.zeros((2, 3, 30, 30)))


def test_wrong_channel_count_is_named(tiny_tower):
    with pytest.raises(ValueError, match=r"4 channels.*\(batch, 30, 30, 3\)"):
        tiny_tower(jnp.zeros((2, 30, 30, 4)))


@pytest.mark.parametrize("shape", [(2, 32, 32, 3), (2, 30, 24, 3), (30, 30, 3)])
def test_wrong_image_size_is_named(tiny_tower, shape):
    with pytest.raises(ValueError, match=r"resize images to 30×30"):
        tiny_tower(jnp.zeros(shape))


def test_unsupported_model_type_lists_the_supported_ones():
    with pytest.raises(ValueError, match=r"'clip_vision_model'.*siglip, siglip_vision_model"):
        siglip.config_from_hf({"model_type": "clip_vision_model", **TINY})


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(hidden_size=30, num_attention_heads=4), "not a multiple of num_attention_heads"),
        (dict(patch_size=40), "larger than image_size"),
        (dict(hidden_act="mish"), "hidden_act='mish'"),
        (dict(image_size=0), "image_size=0"),
    ],
)
def test_bad_config_values_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        siglip.config_from_hf({"model_type": "siglip_vision_model", **TINY, **overrides})


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match="interpolate"):
        siglip.config_from_hf({"model_type": "siglip_vision_model", **TINY}, interpolate=True)


def test_every_weight_problem_is_reported_at_once(tmp_path):
    save_tiny_vision_model(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    del tensors["post_layernorm.weight"]
    tensors["encoder.layers.1.mlp.fc1.weight"] = np.zeros((7, 32), np.float32)
    tensors["head.extra_scale"] = np.ones(3, np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(WeightMismatchError) as raised:
        siglip.load(tmp_path)
    error = raised.value
    assert error.missing == ["post_layernorm.scale"]
    assert any("head.extra_scale" in entry for entry in error.unexpected)
    assert any("encoder.layers.1.mlp.fc1.weight (7, 32)" in entry for entry in error.misshaped)


def test_config_for_another_tower_size_is_reported(tmp_path):
    save_tiny_vision_model(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightMismatchError, match=r"encoder\.layers\.2\."):
        siglip.load(tmp_path)
