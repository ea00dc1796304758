"""Batches of teacher neighbours: each batch a text and the texts nearest it in the teacher's space.

    data.group_by = "teacher"   (with data.length_grouping_window = W > 1: the W batches' records are regrouped)

Why: the similarity and relative-similarity losses (docs/method.md §3) only ever compare texts that share a batch.
In a random batch those are strangers: on the built-in mix (16,384 records, 1152-d target) a text's nearest
in-batch neighbour has a median target cosine of 0.25, while the pairs that retrieval has to rank sit higher
(a WordNet usage example and its own definition: median 0.33). Grouping a window of 64 batches by teacher
neighbourhood lifts the nearest in-batch cosine to 0.38 (window 256: 0.45), so the in-batch losses see the close
pairs whose order retrieval depends on (docs/training.md, "Batches of teacher neighbours").

How: greedy, deterministic. Among the window's records not yet placed, the first one seeds a batch and takes the
batch_size − 1 free records most similar to it (teacher dot product; ties by position). The records are the
window's own, so every epoch still covers each record exactly once, and a batch stays a pure function of its
index (the pipeline's resumption needs nothing else).
"""
from __future__ import annotations

import numpy as np


def neighbour_order(teacher: np.ndarray, num_batches: int) -> np.ndarray:
    """A permutation of the rows of `teacher` (N, D) whose consecutive N / num_batches rows are one batch: a seed
    and its nearest free rows (module docstring). N must be a multiple of num_batches."""
    rows = len(teacher)
    if num_batches <= 0 or rows % num_batches:
        raise ValueError(f"{rows} rows do not split into {num_batches} equal batches")
    batch_size = rows // num_batches
    vectors = np.asarray(teacher, dtype=np.float32)
    similarity = vectors @ vectors.T
    free = np.ones(rows, dtype=bool)
    order = []
    for _ in range(num_batches):
        seed = int(np.argmax(free))  # the first free row
        candidates = np.flatnonzero(free)
        closest = candidates[np.argsort(-similarity[seed, candidates], kind="stable")[:batch_size]]
        if seed not in closest:  # a row most similar to itself always comes first unless vectors tie it
            closest = np.concatenate([[seed], closest[closest != seed][:batch_size - 1]])
        free[closest] = False
        order.append(closest)
    return np.concatenate(order)
