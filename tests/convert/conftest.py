"""Fixtures for the export tests: real records (WordNet text, real all-MiniLM-L6-v2 vectors, written by the real
teacher export), and training workdirs in the loop's layout holding real students.

`write_stage` saves a student exactly where and how `embed_jax.train.loop.run_stage` does (student_config.json, an
Orbax checkpoint through embed_jax.train.checkpoint with the run identity); one test also exports a workdir that the
real training loop wrote, so the two layouts cannot drift apart unnoticed.
"""
import importlib.util
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from embed_jax.models.student import Student
from embed_jax.assets import minilm_path
from embed_jax.train import checkpoint
from embed_jax.train.workdir import PARAMS_ITEM, STUDENT_CONFIG_FILE

REPO = Path(__file__).resolve().parents[2]
MINILM_ASSET = "asset:all-MiniLM-L6-v2"


def load_config_file(name: str, arg: str | None = None):
    spec = importlib.util.spec_from_file_location(f"config_{name}", REPO / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg is not None else module.get_config()


def perturb(student: Student, seed: int, scale: float = 0.01) -> Student:
    """Moves every parameter a little, as training would: an export that wrote the source model's weights instead of
    the student's would then fail the parity tests."""
    rng = np.random.default_rng(seed)
    for _, variable in nnx.to_flat_state(nnx.state(student, nnx.Param)):
        value = np.asarray(variable.get_value())
        variable.set_value(jax.numpy.asarray(value + scale * rng.standard_normal(value.shape).astype(value.dtype)))
    return student


def write_stage(workdir: Path, stage: str, student: Student, *, init_from: str, records_fingerprint: str,
                teachers=("minilm",), step: int = 3) -> Path:
    """A stage folder as the training loop leaves it."""
    stage_dir = workdir / stage
    stage_dir.mkdir(parents=True, exist_ok=True)
    (stage_dir / STUDENT_CONFIG_FILE).write_text(json.dumps(student.config, indent=1, default=str))
    identity = {"stage": stage, "init_from": init_from, "records_fingerprint": records_fingerprint,
                "teachers": list(teachers), "seed": 0}
    manager = checkpoint.CheckpointManager(stage_dir / "checkpoints", save_every=1, keep=1, identity=identity,
                                           shape_config={})
    manager.save(step, {PARAMS_ITEM: nnx.state(student, nnx.Param)}, force=True)
    manager.close()
    (stage_dir / "metrics.jsonl").write_text(json.dumps({"step": step, "loss": 1.25}) + "\n")
    return stage_dir


@pytest.fixture(scope="session")
def records(tmp_path_factory) -> Path:
    """32 WordNet definitions with real all-MiniLM-L6-v2 vectors, written by the real export."""
    from embed_jax.teachers import export

    config = load_config_file("teachers", "smoke")
    config.output_dir = str(tmp_path_factory.mktemp("run") / "records")
    config.corpus.builtin = "wordnet"
    config.corpus.max_texts = 32
    del config.teachers["mpnet"]
    config.teacher_order = "minilm"
    config.storage_dtype = "float32"
    config.shard_size = 32
    config.progress_every_s = 0.0
    export.run_export(config)
    return Path(config.output_dir)


@pytest.fixture(scope="session")
def fingerprint(records) -> str:
    from embed_jax.data.records import read_manifest

    return read_manifest(records).corpus_fingerprint


@pytest.fixture(scope="session")
def minilm_students():
    """The real all-MiniLM-L6-v2 as a student (moved off its pretrained weights) with FC1 + reduction heads, and the
    same encoder in its stage-1 form (FC1 only)."""
    stage3 = perturb(Student.from_pretrained(minilm_path(), heads={"teacher_dim": 1152, "reduction_dims": [256, 128]},
                                             rngs=nnx.Rngs(1)), seed=3)
    stage1 = perturb(Student.from_pretrained(minilm_path(), heads={"teacher_dim": 1152, "reduction_dims": []},
                                             rngs=nnx.Rngs(2)), seed=1)
    return stage1, stage3


@pytest.fixture(scope="session")
def minilm_workdir(records, fingerprint, minilm_students) -> Path:
    """runs/x/train with stage1 and stage3 beside runs/x/records (the layout scripts/run.sh writes)."""
    workdir = records.parent / "train"
    stage1, stage3 = minilm_students
    write_stage(workdir, "stage1", stage1, init_from=MINILM_ASSET, records_fingerprint=fingerprint, step=2)
    write_stage(workdir, "stage3", stage3, init_from=MINILM_ASSET, records_fingerprint=fingerprint, step=5)
    return workdir


@pytest.fixture(scope="session")
def minilm_export(minilm_workdir, tmp_path_factory) -> Path:
    from embed_jax.convert import st_export

    out = tmp_path_factory.mktemp("exports") / "minilm-student"
    st_export.export(minilm_workdir, out)
    return out


@pytest.fixture(scope="session")
def minilm_tokenizer_files(tmp_path_factory) -> Path:
    """Only the tokenizer files of all-MiniLM-L6-v2 (a --tokenizer folder for tiny BERT-vocabulary students)."""
    folder = tmp_path_factory.mktemp("minilm_tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_path() / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def stage_writer():
    """`write_stage` for test modules (conftest is not importable under --import-mode=importlib)."""
    return write_stage


@pytest.fixture(scope="session")
def perturber():
    return perturb


@pytest.fixture(scope="session")
def config_loader():
    return load_config_file
