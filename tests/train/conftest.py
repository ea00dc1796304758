"""Fixtures for the training tests: a tiny random BERT student saved as a real Hugging Face folder (MiniLM's
vocabulary and tokenizer, so real text tokenises), and real teacher records exported from real WordNet text by
the real all-MiniLM-L6-v2 through `embed_jax.teachers.export`.
"""
import importlib.util
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
TEACHER_DIM = 384  # all-MiniLM-L6-v2 alone


def load_config_file(name: str, arg: str | None = None):
    """A configs/*.py file (not a package) loaded from its path, as --config=configs/NAME.py[:arg] does."""
    spec = importlib.util.spec_from_file_location(f"config_{name}", REPO / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg is not None else module.get_config()


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    from embed_jax.assets import minilm_path

    folder = tmp_path_factory.mktemp("tiny_student")
    torch.manual_seed(0)
    model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
                                 vocab_size=30522, max_position_embeddings=64), add_pooling_layer=False)
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_path() / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def teacher_records(tmp_path_factory) -> Path:
    """64 WordNet definitions with real all-MiniLM-L6-v2 vectors, written by the real export."""
    from embed_jax.teachers import export

    config = load_config_file("teachers", "smoke")
    config.output_dir = str(tmp_path_factory.mktemp("records") / "records")
    config.corpus.builtin = "wordnet"
    config.corpus.max_texts = 64
    del config.teachers["mpnet"]
    config.teacher_order = "minilm"
    config.storage_dtype = "float32"
    config.shard_size = 32
    config.progress_every_s = 0.0
    export.run_export(config)
    return Path(config.output_dir)


def make_smoke_config(tiny_student: Path, teacher_records: Path):
    """configs/distill.py:smoke pointed at the tiny student and the fixture records."""
    config = load_config_file("distill", "smoke")
    config.model.init_from = str(tiny_student)
    config.model.teacher_dim = TEACHER_DIM
    config.model.reduction_dims = (16,)
    config.data.records_dir = str(teacher_records)
    config.stage2.last_layers = 2
    return config


@pytest.fixture(scope="session")
def new_smoke_config(tiny_student, teacher_records):
    """A factory of fresh smoke configs (for fixtures wider than one test)."""
    return lambda: make_smoke_config(tiny_student, teacher_records)


@pytest.fixture
def smoke_config(new_smoke_config):
    return new_smoke_config()


@pytest.fixture
def load_config():
    return load_config_file
