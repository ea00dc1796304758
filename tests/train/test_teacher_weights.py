"""data.teacher_weights at training time (embed_jax/data/teacher_weights.py): each teacher's block of the records'
vectors scaled by √(N·w_i) alike in the training batches, the held-out batches and the cached stage's rows; the
default leaves batches bit-identical; bad weights are refused before any work, naming the key, the records folder
and its teachers; the run's identity carries the weights."""
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

import kit
from embed_jax.data import pipeline
from embed_jax.data.teacher_weights import TeacherWeightsError
from embed_jax.train import batches, preflight, sharding, workdir
from embed_jax.train.config import stage_config
from embed_jax.train.stages import cached, student as stage_student

TINY_DIM = kit.TINY_BERT_HIDDEN
TWO_TEACHER_DIM = kit.MINILM_DIM + TINY_DIM


@pytest.fixture(scope="module")
def two_teacher_records(tmp_path_factory, tiny_bert) -> Path:
    """The first 64 WordNet definitions with all-MiniLM-L6-v2 (384-d) and tiny BERT (32-d) vectors: 416-d."""
    from embed_jax.teachers import export

    config = kit.minilm_and_tiny_export_config(tmp_path_factory.mktemp("two_teachers") / "records", tiny_bert)
    export.run_export(config)
    return Path(config.output_dir)


@pytest.fixture
def config(new_smoke_config, two_teacher_records):
    config = new_smoke_config()
    config.data.records_dir = str(two_teacher_records)
    config.model.teacher_dim = TWO_TEACHER_DIM
    return config


def expected_scales(minilm_weight: float) -> np.ndarray:
    return np.concatenate([np.full(kit.MINILM_DIM, np.sqrt(2 * minilm_weight), np.float32),
                           np.full(TINY_DIM, np.sqrt(2 * (1 - minilm_weight)), np.float32)])


def teacher_rows_by_id(config, source, *, shuffle=True) -> dict[str, np.ndarray]:
    """Every batch of one epoch: {record id: its batch's teacher row}."""
    rows = {}
    for batch in batches.make_batches(config, source, seed=0, shuffle=shuffle, num_epochs=1):
        rows.update(zip(batch["id"], batch["teacher"]))
    return rows


def stored_vectors(source) -> dict[str, np.ndarray]:
    return {record["id"]: record["teacher"] for record in source.read_many(range(len(source)))}


@pytest.mark.slow
def test_default_and_equal_weights_leave_batches_bit_identical(config, two_teacher_records):
    source = pipeline.RecordDataSource(two_teacher_records)
    stored = stored_vectors(source)
    for text in ("", "minilm=1,tiny=1"):
        config.data.teacher_weights = text
        rows = teacher_rows_by_id(config, source)
        assert rows and all(np.array_equal(row, stored[record_id]) for record_id, row in rows.items())


@pytest.mark.slow
def test_weights_scale_training_and_held_out_batches_alike(config, two_teacher_records):
    config.data.teacher_weights = "minilm=1,tiny=3"
    config.data.eval_records_dir, config.train.eval_every = str(two_teacher_records), 1
    train = batches.open_records(config, config.data.records_dir, "data.records_dir")
    held_out = batches.open_eval_records(config)
    stored = stored_vectors(train)
    for rows in (teacher_rows_by_id(config, train), teacher_rows_by_id(config, held_out, shuffle=False)):
        for record_id, row in rows.items():
            np.testing.assert_array_equal(row, stored[record_id] * expected_scales(0.25))
            np.testing.assert_allclose(np.linalg.norm(row), 1.0, atol=1e-5)


@pytest.mark.slow
def test_cached_stage_rows_are_weighted_like_the_batches(config, two_teacher_records):
    config.data.teacher_weights = "minilm=0.25,tiny=0.75"
    source = batches.open_records(config, config.data.records_dir, "data.records_dir")
    student = stage_student.build_student(config, stage_config(config, "stage1"), seed=0)
    mesh = sharding.make_mesh(config.mesh)
    graphdef, state = nnx.split(student)
    local_batches = batches.make_batches(config, source, seed=0, shuffle=False, num_epochs=1)
    _, teacher = cached.pool_records(graphdef, state, sharding.state_sharding(state, mesh), local_batches,
                                           sharding.batch_sharding(mesh), pad_token_id=0, log=lambda line: None)
    stored = stored_vectors(source)
    expected = [stored[record_id] * expected_scales(0.25)
                for batch in batches.make_batches(config, source, seed=0, shuffle=False, num_epochs=1)
                for record_id in batch["id"]]
    np.testing.assert_array_equal(teacher, np.stack(expected))


@pytest.mark.slow
@pytest.mark.parametrize("text,message", [
    ("minilm=0.25,mpnet=0.75", r"data.teacher_weights='minilm=0.25,mpnet=0.75': the records in .*records hold the "
                               r"teachers minilm, tiny \(no weight for tiny; no teacher named mpnet\)"),
    ("minilm=-1,tiny=1", r"data.teacher_weights='minilm=-1,tiny=1' \(teachers of .*records: minilm, tiny\): every "
                         r"teacher weight must be a finite number ≥ 0"),
    ("minilm=0,tiny=0", r"\(teachers of .*records: minilm, tiny\): the teacher weights sum to 0"),
    ("minilm:1,tiny:1", r"'minilm:1' is not NAME=WEIGHT"),
])
def test_bad_weights_are_refused_before_any_work(config, text, message):
    config.data.teacher_weights = text
    with pytest.raises(TeacherWeightsError, match=message):
        preflight.check_config(config)


@pytest.mark.slow
def test_the_run_identity_and_config_carry_unequal_weights_only(config, two_teacher_records):
    manifest = pipeline.RecordDataSource(two_teacher_records).manifest
    assert "teacher_weights" not in workdir.run_identity(config, "stage1", manifest)
    config.data.teacher_weights = "minilm=1,tiny=1"
    assert "teacher_weights" not in workdir.run_identity(config, "stage1", manifest)
    config.data.teacher_weights = "tiny=3,minilm=1"
    assert workdir.run_identity(config, "stage1", manifest)["teacher_weights"] == {"tiny": 0.75, "minilm": 0.25}
    assert workdir.run_config_values(config.to_dict())["data"]["teacher_weights"] == "tiny=3,minilm=1"
