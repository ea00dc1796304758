"""The distillation target (docs/method.md §2): t = normalize(concat(normalize(t_A), normalize(t_B), ...)).

Each teacher contributes equally whatever its dimension or scale. A teacher vector that is not finite or is zero
has no direction; it stops the export with the teacher's name and the record id instead of writing NaNs that would
surface later as NaN losses (docs/method.md §6: row misalignment and NaN losses are what users of the public code hit).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

# Below this norm a float32 vector has no usable direction (its square underflows float32's normal range).
MIN_NORM = 1e-18


class TeacherOutputError(ValueError):
    """A teacher returned a vector with no direction; the message names the teacher and the record."""


def check_teacher_vectors(vectors: np.ndarray, *, teacher: str, record_ids: Sequence[str]) -> np.ndarray:
    """The rows' L2 norms, after checking every row is finite and non-zero."""
    not_finite = ~np.isfinite(vectors).all(axis=1)
    if not_finite.any():
        row = int(np.argmax(not_finite))
        raise TeacherOutputError(
            f"teacher {teacher!r} returned a vector with NaN or inf for record {record_ids[row]!r} "
            f"({int(not_finite.sum())} such records in this shard). Check the teacher's weights and dtype.")
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    zero = norms < MIN_NORM
    if zero.any():
        row = int(np.argmax(zero))
        raise TeacherOutputError(
            f"teacher {teacher!r} returned a zero vector for record {record_ids[row]!r} "
            f"({int(zero.sum())} such records in this shard); it cannot be normalised. Check its pooling.")
    return norms


def concatenated_target(per_teacher: Sequence[np.ndarray], teacher_names: Sequence[str],
                        record_ids: Sequence[str]) -> np.ndarray:
    """(n, sum of dims) float32 unit vectors from each teacher's (n, dim_i) raw vectors, in teacher order."""
    parts = []
    for vectors, name in zip(per_teacher, teacher_names):
        vectors = np.asarray(vectors, dtype=np.float64)
        norms = check_teacher_vectors(vectors, teacher=name, record_ids=record_ids)
        parts.append(vectors / norms[:, None])
    joined = np.concatenate(parts, axis=1)
    return (joined / np.linalg.norm(joined, axis=1, keepdims=True)).astype(np.float32)
