"""The image placeholders of the student's prompts: `<img_start>` + N × `<img_token>` + `<img_end>` (docs/method.md §1).

An image enters the text encoder as N image tokens written over the N `<img_token>` placeholders of its prompt
(embed_jax/models/student.py). This module is the tokenizer's side of that contract, shared by the student, the
image batches and the exported folder (docs/vision_student.md): the three tokens, the prompt text, adding the tokens
to a Hugging Face tokenizer, and the host-side check that a batch of ids holds one whole prompt per row. It imports
numpy only.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

IMAGE_START = "<img_start>"
IMAGE_TOKEN = "<img_token>"
IMAGE_END = "<img_end>"


@dataclasses.dataclass(frozen=True)
class ImagePlaceholders:
    """Token ids of `<img_start>`, `<img_token>` and `<img_end>` in the student's tokenizer."""

    start_id: int
    token_id: int
    end_id: int


def image_prompt(num_tokens: int) -> str:
    """The text that stands for one image: `<img_start>` + num_tokens × `<img_token>` + `<img_end>`."""
    return IMAGE_START + IMAGE_TOKEN * num_tokens + IMAGE_END


def add_image_placeholders(tokenizer: Any) -> ImagePlaceholders:
    """Add the three placeholder tokens to a Hugging Face tokenizer (as special tokens, never split) if missing."""
    names = [IMAGE_START, IMAGE_TOKEN, IMAGE_END]
    missing = [name for name in names if name not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    start_id, token_id, end_id = tokenizer.convert_tokens_to_ids(names)
    return ImagePlaceholders(start_id=start_id, token_id=token_id, end_id=end_id)


def check_image_placeholders(input_ids: Any, *, num_tokens: int, placeholders: ImagePlaceholders) -> None:
    """Host-side check of an image batch: every row holds exactly one `<img_start>`, `num_tokens` × `<img_token>`
    and one `<img_end>`, in that order and contiguous. Raises a ValueError naming the rows that do not."""
    ids = np.asarray(input_ids)
    problems = []
    for row, row_ids in enumerate(ids):
        starts = np.flatnonzero(row_ids == placeholders.start_id)
        count = int(np.sum(row_ids == placeholders.token_id))
        ends = np.flatnonzero(row_ids == placeholders.end_id)
        if count != num_tokens:
            problems.append(f"row {row}: {count} × {IMAGE_TOKEN}, the projection pool gives {num_tokens}")
        elif len(starts) != 1 or len(ends) != 1 or ends[0] != starts[0] + num_tokens + 1:
            problems.append(f"row {row}: not one contiguous {IMAGE_START} + {num_tokens} × {IMAGE_TOKEN} + {IMAGE_END}")
    if problems:
        raise ValueError(
            "image batch does not match the student's projection pool:\n  " + "\n  ".join(problems) + "\n"
            f"Tokenize each image as image_prompt({num_tokens}) (embed_jax.models.image_tokens) with a max_length long "
            f"enough to keep all {num_tokens + 2} placeholder tokens."
        )
