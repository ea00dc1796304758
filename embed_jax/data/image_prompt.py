"""The token row every image stands on in stage 4: the image prompt tokenised with the student's own tokenizer.

`image_prompt_tokens(tokenizer_path, num_tokens)` adds the three placeholders (embed_jax/models/image_tokens.py) to
the student's tokenizer and tokenises `image_prompt(num_tokens)` once; every image batch repeats that row
(embed_jax/data/image_records.py). Rust `tokenizers` only, as the text pipeline (embed_jax/data/pipeline.py): no torch.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tokenizers

from embed_jax.data import pipeline
from embed_jax.models.image_tokens import (IMAGE_END, IMAGE_START, IMAGE_TOKEN, ImagePlaceholders,
                                           check_image_placeholders, image_prompt)


@dataclasses.dataclass(frozen=True)
class ImagePrompt:
    """The token row every image stands on: [CLS] <img_start> N × <img_token> <img_end> [SEP] (the tokenizer's own
    special tokens around it), and the three placeholder ids (`Student`'s vision.placeholders)."""

    input_ids: np.ndarray  # int32 (L,)
    start_id: int
    token_id: int
    end_id: int

    @property
    def placeholders(self) -> dict[str, int]:
        return {"start_id": self.start_id, "token_id": self.token_id, "end_id": self.end_id}


def image_prompt_tokens(tokenizer_path: str, num_tokens: int) -> ImagePrompt:
    """Tokenise `image_prompt(num_tokens)` with the student's tokenizer (Rust `tokenizers`, no torch), after adding
    the three placeholders as special tokens when missing — the same ids Hugging Face's `add_special_tokens` gives
    (new tokens are numbered from the vocabulary's end, in order)."""
    tokenizer, _ = pipeline.load_tokenizer(tokenizer_path, num_tokens + 64)
    names = [IMAGE_START, IMAGE_TOKEN, IMAGE_END]
    missing = [name for name in names if tokenizer.token_to_id(name) is None]
    tokenizer.add_special_tokens([tokenizers.AddedToken(name, special=True, normalized=False) for name in missing])
    start_id, token_id, end_id = (tokenizer.token_to_id(name) for name in names)
    input_ids = np.asarray(tokenizer.encode(image_prompt(num_tokens)).ids, np.int32)
    placeholders = ImagePlaceholders(start_id=start_id, token_id=token_id, end_id=end_id)
    check_image_placeholders(input_ids[None], num_tokens=num_tokens, placeholders=placeholders)
    return ImagePrompt(input_ids=input_ids, start_id=start_id, token_id=token_id, end_id=end_id)
