"""Fixtures for the export tests: real records (WordNet text, real all-MiniLM-L6-v2 vectors, written by the real
teacher export), and training workdirs in the loop's layout holding real students.

`kit.write_stage` saves a student exactly where and how the training loop does (student_config.json, an Orbax
checkpoint through embed_jax.train.checkpoint with the run identity); one test also exports a workdir that the real
training loop wrote, so the two layouts cannot drift apart unnoticed.
"""
from pathlib import Path

import pytest
from flax import nnx

import kit
from embed_jax.assets import minilm_path
from embed_jax.models.student import Student

MINILM_ASSET = "asset:all-MiniLM-L6-v2"


@pytest.fixture(scope="session")
def fingerprint(teacher_records) -> str:
    from embed_jax.data.records import read_manifest

    return read_manifest(teacher_records).corpus_fingerprint


@pytest.fixture(scope="session")
def minilm_students():
    """The real all-MiniLM-L6-v2 as a student (moved off its pretrained weights) with FC1 + reduction heads, and the
    same encoder in its stage-1 form (FC1 only)."""
    stage3 = Student.from_pretrained(minilm_path(), heads={"teacher_dim": 1152, "reduction_dims": [256, 128]},
                                     rngs=nnx.Rngs(1))
    stage1 = Student.from_pretrained(minilm_path(), heads={"teacher_dim": 1152, "reduction_dims": []},
                                     rngs=nnx.Rngs(2))
    return kit.perturb(stage1, seed=1), kit.perturb(stage3, seed=3)


@pytest.fixture(scope="session")
def minilm_workdir(teacher_records, fingerprint, minilm_students) -> Path:
    """runs/x/train with stage1 and stage3 beside runs/x/records (the layout scripts/run.sh writes)."""
    workdir = teacher_records.parent / "train"
    stage1, stage3 = minilm_students
    kit.write_stage(workdir, "stage1", stage1, init_from=MINILM_ASSET, records_fingerprint=fingerprint, step=2)
    kit.write_stage(workdir, "stage3", stage3, init_from=MINILM_ASSET, records_fingerprint=fingerprint, step=5)
    return workdir


@pytest.fixture(scope="session")
def minilm_export(minilm_workdir, tmp_path_factory) -> Path:
    from embed_jax.convert import st_export

    out = tmp_path_factory.mktemp("exports") / "minilm-student"
    st_export.export(minilm_workdir, out)
    return out

