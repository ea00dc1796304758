"""Fixtures for the vision tests: a tiny random BERT text student saved as a real Hugging Face folder (MiniLM's
tokenizer, so real captions tokenise), a tiny SigLIP-shaped tower config, and a stage-4 student built from both."""
from pathlib import Path

import pytest
from flax import nnx

import kit
TINY_TOWER = {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 16, "patch_size": 8,
              "vision_use_head": False}
NUM_IMAGE_TOKENS = 4
HEADS = {"teacher_dim": 24, "reduction_dims": [8]}


@pytest.fixture(scope="session")
def tiny_text_folder(tmp_path_factory) -> Path:
    return kit.save_tiny_bert(tmp_path_factory.mktemp("tiny_text"), max_positions=64, pooler=False)


@pytest.fixture(scope="session")
def image_prompt(tiny_text_folder):
    from embed_jax.data.image_prompt import image_prompt_tokens

    return image_prompt_tokens(str(tiny_text_folder), NUM_IMAGE_TOKENS)


@pytest.fixture(scope="session")
def new_vision_student(tiny_text_folder, image_prompt):
    """A factory: the tiny text student with FC heads and a tiny tower + linear projection pool (seeded)."""
    from embed_jax.models.student import Student

    def build(seed: int = 0, mode: str = "linear"):
        vision = {"tower": dict(TINY_TOWER), "pool": {"mode": mode, "num_tokens": NUM_IMAGE_TOKENS},
                  "placeholders": image_prompt.placeholders}
        return Student.from_pretrained(tiny_text_folder, heads=HEADS, vision=vision, rngs=nnx.Rngs(seed))

    return build


def save_text_stage(folder: Path, tiny_text_folder: Path, seed: int) -> Path:
    """A text stage folder as embed_jax.main leaves one (kit.write_stage): the tiny student with seeded FC heads, no
    vision."""
    from embed_jax.models.student import Student

    student = Student.from_pretrained(tiny_text_folder, heads=HEADS, rngs=nnx.Rngs(seed))
    return kit.write_stage(folder.parent, folder.name, student, init_from=str(tiny_text_folder),
                           records_fingerprint=None, step=1)


@pytest.fixture(scope="session")
def text_stage(tmp_path_factory, tiny_text_folder) -> Path:
    return save_text_stage(tmp_path_factory.mktemp("text_run") / "stage1", tiny_text_folder, seed=0)


@pytest.fixture(scope="session")
def caption_records(tmp_path_factory, text_stage) -> Path:
    """Held-out digits (2,800 image–caption records) with their captions' vectors from the tiny text stage."""
    from embed_jax.teachers import caption_targets

    folder = tmp_path_factory.mktemp("captions") / "held_out"
    caption_targets.export_digits(str(folder), "held_out", text_student=str(text_stage))
    return folder


@pytest.fixture(scope="session")
def tiny_vision_settings():
    """(tower config, image tokens, save_text_stage) for tests that assemble their own configs."""
    return dict(TINY_TOWER), NUM_IMAGE_TOKENS, save_text_stage
