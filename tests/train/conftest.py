"""Fixtures for the training tests: a tiny random 4-layer BERT student saved as a real Hugging Face folder (MiniLM's
vocabulary and tokenizer, so real text tokenises), and smoke configs pointed at it and at the shared
`teacher_records` (tests/conftest.py: real all-MiniLM-L6-v2 vectors of real WordNet text).
"""
from pathlib import Path

import pytest

import kit


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory) -> Path:
    return kit.save_tiny_bert(tmp_path_factory.mktemp("tiny_student"), num_layers=4, max_positions=64, pooler=False)


def make_smoke_config(tiny_student: Path, teacher_records: Path):
    """configs/distill.py:smoke pointed at the tiny student and the fixture records, up to its stage 3: the fixture
    records hold neither WordNet pairs nor the tiny student's own vectors, so its pair stage and FC1 from the start
    are left out (tests/train/test_shipped_configs.py trains every stage of it on records that hold them)."""
    config = kit.load_config_file("distill", "smoke")
    config.model.init_from = str(tiny_student)
    config.model.teacher_dim = kit.MINILM_DIM
    config.data.teacher_weights = ""  # the fixture records' own teachers, equally
    config.stage_order = ("stage1", "stage2", "stage3_heads", "stage3")
    config.stage1.fc1_init = ""
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


@pytest.fixture(scope="session")
def overlapping_eval_records(tmp_path_factory) -> Path:
    """Validation records that repeat the training records: the first 16 of `teacher_records`' 64 texts."""
    from embed_jax.teachers import export

    config = kit.minilm_export_config(tmp_path_factory.mktemp("overlapping") / "eval_records", num_texts=16)
    export.run_export(config)
    return Path(config.output_dir)


@pytest.fixture(scope="session")
def held_out_records(tmp_path_factory) -> Path:
    """Validation records disjoint from `teacher_records`: the 32 WordNet definitions that follow its 64 in the
    built-in order (what configs/teachers.py:eval does at scale)."""
    from embed_jax.teachers import export

    config = kit.minilm_export_config(tmp_path_factory.mktemp("held_out") / "eval_records", num_texts=32)
    config.corpus.skip_texts = kit.TEACHER_RECORDS_COUNT
    export.run_export(config)
    return Path(config.output_dir)
