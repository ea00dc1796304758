"""SigLIP preprocessing equals transformers' SiglipImageProcessor on real images; bad images are named."""
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits, load_sample_images

from embed_jax.data import images
from embed_jax.data.digits import digit_images


def hugging_face_pixels(pil_images, size):
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    processor = SiglipImageProcessorPil(size={"height": size, "width": size})
    pixels = processor(images=pil_images, return_tensors="np")["pixel_values"]
    return np.transpose(pixels, (0, 2, 3, 1))  # the processor's (B, C, H, W) → channels-last


@pytest.mark.parametrize("size", [32, 224])
def test_photographs_equal_the_siglip_processor(size):
    photographs = [np.asarray(image) for image in load_sample_images().images]  # china.jpg, flower.jpg (427×640×3)
    ours = images.preprocess_batch(photographs, images.ImageSettings(size))
    theirs = hugging_face_pixels([Image.fromarray(image) for image in photographs], size)
    assert ours.shape == (2, size, size, 3) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    assert ours.min() >= -1.0 and ours.max() <= 1.0


def test_grey_digits_become_three_equal_channels_equal_to_the_processor():
    digits = digit_images()[:16]
    ours = images.preprocess_batch(list(digits), images.ImageSettings(32))
    theirs = hugging_face_pixels([Image.fromarray(image[..., 0], mode="L") for image in digits], 32)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    np.testing.assert_array_equal(ours[..., 0], ours[..., 2])
    # Upsampled, not blank: the stroke pixels reach near white (+1) and the background stays black (−1).
    assert ours.max() > 0.9 and ours.min() < -0.9


def test_digit_conversion_keeps_the_sixteen_grey_levels():
    raw = load_digits().images
    digits = digit_images()
    assert digits.shape == (1797, 8, 8, 1) and digits.dtype == np.uint8
    np.testing.assert_allclose(digits[..., 0] / 255 * 16, raw, atol=16 / 255)


@pytest.mark.parametrize("image, message", [
    (np.zeros((8, 8), np.float32), "dtype is float32, expected uint8"),
    (np.zeros((8, 8, 4), np.uint8), "4 channels, expected 1 (grey) or 3 (RGB)"),
    (np.zeros((8, 8, 2), np.uint8), "2 channels"),
    (np.zeros((2, 8, 8, 3), np.uint8), "is not (height, width)"),
])
def test_bad_images_are_named(image, message):
    with pytest.raises(images.ImageError, match="digits-0042") as error:
        images.preprocess(image, images.ImageSettings(32), name="record 'digits-0042'")
    assert message in str(error.value)
