"""Image preprocessing as SigLIP's processor does it: any uint8 image → (H, W, 3) float32 in [-1, 1], channels-last.

    uint8 (h, w) or (h, w, 1) grey, or (h, w, 3) RGB
      → RGB (grey replicated into three channels, PIL's convert("RGB"), as the processor's do_convert_rgb)
      → resized to image_size × image_size, PIL bicubic (SiglipImageProcessor: resample=3, size {height, width})
      → × 1/255, then (x − 0.5) / 0.5 (SigLIP's image_mean = image_std = 0.5): values in [-1, 1]
      → (image_size, image_size, 3) float32, channels-last: the layout of JAX's convolutions and of the Flax tower

tests/vision/test_images.py checks equality with transformers' SiglipImageProcessor on real images (scikit-learn's
digits and scikit-image's photographs). No torch here: this module is on the training path (PIL and numpy only).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from PIL import Image

# SigLIP's released processors (preprocessor_config.json): bicubic resize, mean = std = 0.5 per channel.
SIGLIP_MEAN = 0.5
SIGLIP_STD = 0.5
RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


class ImageError(ValueError):
    """An image cannot be preprocessed; the message names the image (record id) and what to do."""


@dataclasses.dataclass(frozen=True)
class ImageSettings:
    """What the tower expects: a square image_size (its config.json's image_size) and SigLIP's normalisation."""

    image_size: int
    resample: str = "bicubic"
    mean: float = SIGLIP_MEAN
    std: float = SIGLIP_STD

    def __post_init__(self):
        if not isinstance(self.image_size, int) or self.image_size < 1:
            raise ImageError(f"image_size must be a positive integer, got {self.image_size!r}")
        if self.resample not in RESAMPLE:
            raise ImageError(f"resample={self.resample!r}: use one of {sorted(RESAMPLE)}")


def check_uint8_image(image: np.ndarray, *, name: str) -> np.ndarray:
    """The image as (h, w, channels) uint8 with 1 or 3 channels, or an ImageError naming `name`."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ImageError(f"{name}: image dtype is {image.dtype}, expected uint8 (0–255). Convert it first, e.g. "
                         "np.clip(np.rint(x * 255), 0, 255).astype(np.uint8) for floats in [0, 1].")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageError(f"{name}: image shape {image.shape} is not (height, width) or (height, width, channels).")
    if image.shape[2] not in (1, 3):
        hint = " (RGBA: drop or composite the alpha channel first)" if image.shape[2] == 4 else ""
        raise ImageError(f"{name}: image has {image.shape[2]} channels, expected 1 (grey) or 3 (RGB), channels-last "
                         f"(height, width, channels){hint}.")
    return image


def to_rgb(image: np.ndarray) -> Image.Image:
    """A checked (h, w, 1|3) uint8 array as an RGB PIL image (grey replicated to three channels)."""
    if image.shape[2] == 1:
        return Image.fromarray(image[..., 0], mode="L").convert("RGB")
    return Image.fromarray(image, mode="RGB")


def preprocess(image: np.ndarray, settings: ImageSettings, *, name: str = "image") -> np.ndarray:
    """One uint8 image → (image_size, image_size, 3) float32 in [-1, 1] (module docstring)."""
    rgb = to_rgb(check_uint8_image(image, name=name))
    size = settings.image_size
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), resample=RESAMPLE[settings.resample])
    pixels = np.asarray(rgb, dtype=np.float32) * np.float32(1 / 255)
    return (pixels - np.float32(settings.mean)) / np.float32(settings.std)


def preprocess_batch(images: Sequence[np.ndarray], settings: ImageSettings,
                     names: Sequence[str] | None = None) -> np.ndarray:
    """(B, image_size, image_size, 3) float32: `pixel_values` for `Student(..., pixel_values=...)`."""
    names = names if names is not None else [f"image {index}" for index in range(len(images))]
    return np.stack([preprocess(image, settings, name=name) for image, name in zip(images, names)])
