"""Teachers for the export tests: the real all-MiniLM-L6-v2 and tiny random BERTs saved as real HF folders
(`tiny_bert` from tests/conftest.py; broken variants of it here).

The tiny BERTs use MiniLM's vocabulary (its tokenizer files are copied in), so any text tokenises for both. Broken
variants are real folders too: one whose weights hold a NaN (every output is NaN), one whose last LayerNorm has zero
weight and bias (every hidden state, so the CLS vector, is exactly zero).
"""
from pathlib import Path

import pytest

import kit


def poison_embeddings(model) -> None:
    model.embeddings.word_embeddings.weight[:] = float("nan")


def zero_last_norm(model) -> None:
    last_norm = model.encoder.layer[-1].output.LayerNorm
    last_norm.weight.zero_()
    last_norm.bias.zero_()


@pytest.fixture(scope="session")
def nan_bert(tmp_path_factory) -> Path:
    return kit.save_tiny_bert(tmp_path_factory.mktemp("nan_bert"), edit=poison_embeddings)


@pytest.fixture(scope="session")
def zero_bert(tmp_path_factory) -> Path:
    return kit.save_tiny_bert(tmp_path_factory.mktemp("zero_bert"), edit=zero_last_norm)


def teachers_config(arg: str = "smoke"):
    """configs/teachers.py — the config users run."""
    return kit.load_config_file("teachers", arg)


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
