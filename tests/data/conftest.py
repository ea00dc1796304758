"""Records for the data tests: real exports by the real teacher export (all-MiniLM-L6-v2) of real English text.

The corpus mixes short WordNet definitions with long ABC news documents, so that batches fall into different length
buckets.
"""
import importlib.util
from pathlib import Path

import pytest
import torch

# Other test processes share this machine's two cores; OpenMP threads spin-waiting for busy cores made each MiniLM
# forward ~5× slower than one thread does (measured here), so the teachers run single-threaded in tests.
torch.set_num_threads(1)

from embed_jax.data import corpora

REPO = Path(__file__).resolve().parents[2]


def export_config(output_dir: Path, corpus_file: Path, **overrides):
    spec = importlib.util.spec_from_file_location("teachers_config", REPO / "configs" / "teachers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("smoke")
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


@pytest.fixture(scope="session")
def float32_records_folder(tmp_path_factory, mixed_corpus) -> Path:
    """The same texts and teacher, stored as float32: a folder whose manifest disagrees on dtype."""
    from embed_jax.teachers import export

    folder = tmp_path_factory.mktemp("records") / "minilm_fp32"
    export.run_export(export_config(folder, mixed_corpus, storage_dtype="float32", shard_size=84))
    return folder
