"""Real images offline: scikit-learn's 1,797 handwritten digits (8×8, 16 grey levels), captioned from templates.

The digits ship inside scikit-learn (UCI "optdigits" test set), so stage 4 (docs/method.md §4) trains and is evaluated
on real images with no download. Each image becomes uint8 (8, 8, 1); `embed_jax.data.images` upsamples it to the tower's
resolution as SigLIP's processor would.

Split: an image is held out when the SHA-256 of its id falls in one fifth of the hash space (~20%: 350 of 1,797),
fixed forever and independent of any seed or ordering. Captions: every image gets one record per template of its
split; the first TRAIN_TEMPLATES templates caption the training images, and the last ones are never seen in training,
so zero-shot evaluation can also be run on wordings the vision tower never met.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Iterator

import numpy as np

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# {word}: "seven"; {digit}: "7". Short captions that name the digit twice: in the text student's space a long
# template dominates the vector (measured with configs/distill.py's stage 3, FC1: two digits under "a blurry photo of a
# handwritten {digit}" have cosine 0.95, under "{word} ({digit})" 0.60), leaving an image little to tell digits by.
TEMPLATES = (
    "{word} ({digit})",
    "the digit {digit}: {word}",
    "a handwritten {word}, {digit}",
    "number {word}",
    "{digit}, the number {word}",
    "the handwritten digit {word} ({digit})",
    "a picture of a {word}",  # held out: never a training caption
    "{digit} {word}",  # held out: never a training caption
)
TRAIN_TEMPLATES = 6
HELD_OUT_FRACTION = 5  # one in five
SPLITS = ("train", "held_out")
NUM_IMAGES = 1797


@dataclasses.dataclass(frozen=True)
class CaptionedImage:
    id: str  # "digits-0042/t3": image 42, template 3
    image: np.ndarray  # uint8 (8, 8, 1)
    caption: str
    label: int


def caption(label: int, template: str) -> str:
    return template.format(word=NUMBER_WORDS[label], digit=label)


def templates_for(split: str) -> tuple[str, ...]:
    check_split(split)
    return TEMPLATES[:TRAIN_TEMPLATES] if split == "train" else TEMPLATES


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"digits split {split!r}: use one of {SPLITS}")


@functools.cache
def _digits():
    from sklearn.datasets import load_digits

    return load_digits()


def digit_images() -> np.ndarray:
    """All 1,797 digits as uint8 (N, 8, 8, 1): scikit-learn's 0–16 grey levels scaled to 0–255."""
    images = np.rint(_digits().images * (255 / 16))
    return np.clip(images, 0, 255).astype(np.uint8)[..., None]


def digit_labels() -> np.ndarray:
    return _digits().target.astype(np.int64)


def image_id(index: int) -> str:
    return f"digits-{index:04d}"


def is_held_out(index: int) -> bool:
    digest = hashlib.sha256(image_id(index).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % HELD_OUT_FRACTION == 0


def split_indices(split: str) -> list[int]:
    check_split(split)
    return [index for index in range(NUM_IMAGES) if is_held_out(index) == (split == "held_out")]


def captioned_images(split: str) -> Iterator[CaptionedImage]:
    """One record per (image of the split, template of the split), in index order then template order."""
    images, labels = digit_images(), digit_labels()
    templates = templates_for(split)
    for index in split_indices(split):
        label = int(labels[index])
        for number, template in enumerate(templates):
            yield CaptionedImage(id=f"{image_id(index)}/t{number}", image=images[index],
                                 caption=caption(label, template), label=label)


def class_captions(templates: tuple[str, ...] = TEMPLATES) -> list[list[str]]:
    """[label][template] captions: the zero-shot classifier's class descriptions."""
    return [[caption(label, template) for template in templates] for label in range(len(NUMBER_WORDS))]


def describe(split: str) -> dict:
    """The corpus description stored in the records' manifest (what defines the export)."""
    return {"kind": "image_caption", "dataset": "sklearn.datasets.load_digits", "split": split,
            "templates": list(templates_for(split)), "held_out_rule": f"sha256(image id) % {HELD_OUT_FRACTION} == 0"}
