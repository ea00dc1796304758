"""Teachers for the export tests: the real all-MiniLM-L6-v2 and tiny random BERTs saved as real HF folders.

The tiny BERTs use MiniLM's vocabulary (its tokenizer files are copied in), so any text tokenises for both. Broken
variants are real folders too: one whose weights hold a NaN (every output is NaN), one whose last LayerNorm has zero
weight and bias (every hidden state, so the CLS vector, is exactly zero).
"""
import importlib.util
import shutil
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

from embed_jax.assets import minilm_path

# Other test processes share this machine's two cores; OpenMP threads spin-waiting for busy cores made each MiniLM
# forward ~5× slower than one thread does (measured here), so the teachers run single-threaded in tests.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[2]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def save_tiny_bert(folder: Path, *, seed: int = 0, breakage: str = "") -> Path:
    torch.manual_seed(seed)
    model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                 vocab_size=30522, max_position_embeddings=128)).eval()
    with torch.no_grad():
        if breakage == "nan":
            model.embeddings.word_embeddings.weight[:] = float("nan")
        elif breakage == "zero":
            last_norm = model.encoder.layer[-1].output.LayerNorm
            last_norm.weight.zero_()
            last_norm.bias.zero_()
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_path() / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def nan_bert(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("nan_bert"), breakage="nan")


@pytest.fixture(scope="session")
def zero_bert(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("zero_bert"), breakage="zero")


def teachers_config(arg: str = "smoke"):
    """configs/teachers.py (not a package, so loaded from its file) — the config users run."""
    spec = importlib.util.spec_from_file_location("teachers_config", REPO / "configs" / "teachers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.fixture(scope="session")
def shipped_config():
    return teachers_config


@pytest.fixture
def make_config(tiny_bert):
    """The shipped config with a small corpus, MiniLM + tiny BERT (mean pooling) and small shards."""
    def make(output_dir: Path, corpus_file: Path, **overrides):
        config = teachers_config()
        config.output_dir = str(output_dir)
        config.corpus.kind = "text"
        config.corpus.paths = str(corpus_file)
        config.teachers.tiny = dict(path=str(tiny_bert), pooling="mean", prompt="", max_seq_length=0)
        config.teacher_order = "minilm,tiny"
        config.storage_dtype = "float32"
        config.shard_size = 4
        config.progress_every_s = 0.0
        for key, value in overrides.items():
            target = config
            *parents, leaf = key.split(".")
            for parent in parents:
                target = target[parent]
            target[leaf] = value
        return config
    return make


@pytest.fixture
def corpus_file(tmp_path) -> Path:
    """Real English lines (WordNet definitions and ABC news sentences), with empty and blank lines among them."""
    from embed_jax.data import corpora

    lines = [item.text for item in corpora.builtin_texts("wordnet", 14)]
    lines[3:3] = ["", "   \t "]
    lines.append(corpora.builtin_texts("lee_background", 1)[0].text.split(". ")[0])
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
