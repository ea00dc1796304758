"""The exported image path: a real Hugging Face SiglipVisionModel folder, and images encoded from the exported folder
with torch + transformers only land where the Flax student puts them (cosine ≥ 0.9999)."""
import json

import numpy as np
import pytest

import kit
from embed_jax.convert import hf_export, hf_vision
from embed_jax.data import digits, images
from embed_jax.train import trained_student

# Slow lane only (docs/testing.md, "Fast lane"): compiles, exports or trains whole models.
pytestmark = pytest.mark.slow



def export_text_path(student, text_folder, folder):
    """The text half as embed_jax.convert.hf writes it (backbone at the root, one 2_Dense_{dim} per head)."""
    encoder, heads, _ = hf_export.split_params(hf_export.flat_params(student))
    tensors, _ = hf_export.backbone_tensors(encoder, student.config["text_encoder"])
    hf_export.write_backbone(folder, tensors, student.config["text_encoder"])
    hf_export.write_heads(folder, hf_export.head_tensors(heads, tuple(student.heads.dims)))
    kit.copy_tokenizer_files(text_folder, folder)


@pytest.mark.parametrize("mode", ["linear", "adaptive_average"])
def test_images_from_the_exported_folder_equal_flax(tmp_path, tiny_text_folder, new_vision_student, image_prompt, mode):
    student = new_vision_student(seed=3, mode=mode)
    export_text_path(student, tiny_text_folder, tmp_path)
    description = hf_vision.export_vision(student, tmp_path)
    assert json.loads((tmp_path / "vision.json").read_text()) == description
    assert description["pool"]["mode"] == mode and description["placeholders"]["ids"] == image_prompt.placeholders

    pictures = digits.digit_images()[:12]
    pixels = images.preprocess_batch(list(pictures), trained_student.image_settings(student))
    flax_vectors = trained_student.encode_images(student, image_prompt, pixels, batch_size=12)
    encoder = hf_vision.ImageEncoder(tmp_path)
    for dim in student.heads.dims:
        torch_vectors = encoder.encode(list(pictures), head=dim)
        cosines = np.sum(torch_vectors * flax_vectors[dim], axis=1)
        assert cosines.min() >= 0.9999, (dim, cosines.min())
        # Not a degenerate pass: different digits get different vectors.
        assert np.abs(torch_vectors[0] - torch_vectors[1]).max() > 1e-3


def test_the_tower_folder_is_a_standard_siglip_vision_model(tmp_path, new_vision_student):
    import torch
    from transformers import SiglipVisionModel

    from embed_jax.models import siglip

    student = new_vision_student(seed=1)
    hf_vision.export_vision(student, tmp_path)
    model = SiglipVisionModel.from_pretrained(tmp_path / "vision_tower").eval()
    pixels = images.preprocess_batch(list(digits.digit_images()[:4]), trained_student.image_settings(student))
    with torch.no_grad():
        theirs = model(pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2))).last_hidden_state.numpy()
    ours = np.asarray(student.vision(pixels)["last_hidden_state"])
    np.testing.assert_allclose(theirs, ours, atol=1e-4)
    # And the embed_jax importer reads the folder back to the same weights (the round trip of the name table).
    reloaded, _ = siglip.load(tmp_path / "vision_tower")
    np.testing.assert_allclose(np.asarray(reloaded(pixels)["last_hidden_state"]), ours, atol=1e-5)


def test_a_folder_without_an_image_path_is_named(tmp_path):
    with pytest.raises(hf_vision.VisionExportError, match="vision.json is missing"):
        hf_vision.ImageEncoder(tmp_path)
