"""docs/method.md §2's target, and the refusal of teacher vectors without a direction."""
import numpy as np
import pytest

from embed_jax.teachers.targets import TeacherOutputError, concatenated_target


def test_each_teacher_contributes_equally_whatever_its_scale():
    rng = np.random.default_rng(0)
    big, small = rng.normal(size=(5, 8)) * 1000, rng.normal(size=(5, 3)) * 1e-3
    target = concatenated_target([big, small], ["big", "small"], [f"r{i}" for i in range(5)])
    assert target.shape == (5, 11) and target.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(target, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(target[:, :8], axis=1), np.sqrt(0.5), rtol=1e-6)
    expected_small = small / np.linalg.norm(small, axis=1, keepdims=True) / np.sqrt(2)
    np.testing.assert_allclose(target[:, 8:], expected_small, rtol=1e-5)


@pytest.mark.parametrize("bad, message", [(np.nan, "NaN or inf"), (np.inf, "NaN or inf"), (0.0, "zero vector")])
def test_vector_without_direction_names_teacher_and_record(bad, message):
    good = np.ones((3, 4))
    broken = np.ones((3, 2))
    broken[1] = bad
    with pytest.raises(TeacherOutputError, match=rf"teacher 'second' returned .*{message} .*record 'b'"):
        concatenated_target([good, broken], ["first", "second"], ["a", "b", "c"])
