"""Per-teacher target weights (embed_jax/data/teacher_weights.py): the block scaling against a brute-force numpy
reference (the weighted target's cosine is Σ w_i cos_i), equal weights as no scaling, and every refusal."""
import numpy as np
import pytest

from embed_jax.data import teacher_weights
from embed_jax.data.teacher_weights import TeacherWeightsError
from embed_jax.teachers.targets import concatenated_target

DIMS = (5, 3, 7)
NAMES = ("minilm", "mpnet", "gte")


def unit_rows(vectors):
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_weighted_target_cosine_is_the_weighted_mean_of_the_teachers_cosines():
    rng = np.random.default_rng(0)
    per_teacher = [rng.standard_normal((6, dim)) for dim in DIMS]
    records = concatenated_target(per_teacher, NAMES, [f"r{i}" for i in range(6)])  # what the export stores
    weights = teacher_weights.normalised([1.0, 3.0, 0.5], NAMES, where="test")
    weighted = records * teacher_weights.block_scales(DIMS, weights)
    np.testing.assert_allclose(np.linalg.norm(weighted, axis=1), 1.0, atol=1e-6)
    # Brute force: each teacher's own cosine matrix, weighted and summed.
    expected = sum(weight * unit_rows(vectors) @ unit_rows(vectors).T for weight, vectors in zip(weights, per_teacher))
    np.testing.assert_allclose(weighted @ weighted.T, expected, atol=1e-6)
    # The records alone (no weights) are the equal-weight mean.
    equal = sum(unit_rows(vectors) @ unit_rows(vectors).T for vectors in per_teacher) / len(DIMS)
    np.testing.assert_allclose(records @ records.T, equal, atol=1e-6)


def test_weights_are_normalised_by_their_sum_and_a_zero_weight_drops_a_teacher():
    assert teacher_weights.normalised([1.0, 3.0], ["a", "b"], where="test") == (0.25, 0.75)
    scales = teacher_weights.block_scales((2, 3), (0.0, 1.0))
    np.testing.assert_array_equal(scales, np.array([0, 0, np.sqrt(2), np.sqrt(2), np.sqrt(2)], np.float32))


@pytest.mark.parametrize("text", ["", "minilm=1,mpnet=1", "mpnet=0.5, minilm=0.5"])
def test_no_or_equal_weights_are_no_scaling(text):
    weights = teacher_weights.weights_for_teachers(text, ["minilm", "mpnet"], records_dir="records")
    assert teacher_weights.block_scales((384, 768), weights) is None
    assert teacher_weights.identity_weights(text) is None


def test_weights_follow_the_records_teacher_order_not_the_string_order():
    weights = teacher_weights.weights_for_teachers("mpnet=3,minilm=1", ["minilm", "mpnet"], records_dir="records")
    assert weights == (0.25, 0.75)
    assert teacher_weights.identity_weights("mpnet=3,minilm=1") == {"mpnet": 0.75, "minilm": 0.25}


@pytest.mark.parametrize("text,message", [
    ("minilm=0.25,mpnet", r"data.teacher_weights='minilm=0.25,mpnet': 'mpnet' is not NAME=WEIGHT.*e.g. "
                          r"--config.data.teacher_weights=minilm=0.25,mpnet=0.75"),
    ("minilm=a,mpnet=1", r"'minilm=a' is not NAME=WEIGHT"),
    ("minilm=1,minilm=2", r"teacher 'minilm' is listed twice"),
])
def test_malformed_weights_are_refused_naming_the_key(text, message):
    with pytest.raises(TeacherWeightsError, match=message):
        teacher_weights.weights_for_teachers(text, ["minilm", "mpnet"], records_dir="runs/records")


@pytest.mark.parametrize("text,message", [
    ("minilm=1", r"the records in runs/records hold the teachers minilm, mpnet \(no weight for mpnet\).*"
                 r"--config.data.teacher_weights=minilm=1,mpnet=1"),
    ("minilm=1,mpnet=1,gte=1", r"hold the teachers minilm, mpnet \(no teacher named gte\)"),
    ("MiniLM=1,mpnet=1", r"\(no weight for minilm; no teacher named MiniLM\)"),
    ("minilm=-0.5,mpnet=1", r"data.teacher_weights='minilm=-0.5,mpnet=1' \(teachers of runs/records: minilm, "
                            r"mpnet\): every teacher weight must be a finite number ≥ 0 .*minilm is not"),
    ("minilm=nan,mpnet=1", r"every teacher weight must be a finite number ≥ 0"),
    ("minilm=inf,mpnet=1", r"every teacher weight must be a finite number ≥ 0"),
    ("minilm=0,mpnet=0", r"\(teachers of runs/records: minilm, mpnet\): the teacher weights sum to 0"),
])
def test_weights_that_cannot_weigh_the_records_teachers_are_refused_naming_them(text, message):
    with pytest.raises(TeacherWeightsError, match=message):
        teacher_weights.weights_for_teachers(text, ["minilm", "mpnet"], records_dir="runs/records")
