"""Records for the data tests: a real export by the real teacher export (all-MiniLM-L6-v2) of real English text,
stored as float16 (the shared float32 `teacher_records` of tests/conftest.py is the folder that disagrees with it).

The corpus mixes short WordNet definitions with long ABC news documents, so that batches fall into different length
buckets.
"""
from pathlib import Path

import pytest

import kit
from embed_jax.data import corpora


def export_config(output_dir: Path, corpus_file: Path, **overrides):
    config = kit.load_config_file("teachers", "smoke")
    config.output_dir = str(output_dir)
    config.corpus.kind = "text"
    config.corpus.paths = str(corpus_file)
    config.teacher_order = "minilm"
    config.shard_size = 16
    config.progress_every_s = 60.0
    config.update(overrides)
    return config


@pytest.fixture
def make_export_config():
    return export_config


@pytest.fixture(scope="session")
def mixed_corpus(tmp_path_factory) -> Path:
    texts = [item.text for item in corpora.builtin_texts("wordnet", 84)]
    texts[::14] = [item.text for item in corpora.builtin_texts("lee_background", len(texts[::14]))]
    path = tmp_path_factory.mktemp("corpus") / "mixed.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def records_folder(tmp_path_factory, mixed_corpus) -> Path:
    """84 records, 384-d float16, 6 shards."""
    from embed_jax.teachers import export

    folder = tmp_path_factory.mktemp("records") / "minilm"
    export.run_export(export_config(folder, mixed_corpus))
    return folder

