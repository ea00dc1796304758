"""How close are the pairs the in-batch losses see? Random batches against teacher-neighbour batches, on records.

    .venv/bin/python scripts/batch_neighbours.py --records=DIR [--rows=16384] [--batch=32] [--windows=8,64,256]

For each grouping, the median (10th–90th percentile) target cosine of each text's nearest in-batch neighbour, and
for built-in WordNet records the target cosine of a usage example and its own definition (the pair retrieval must
rank). The grouping is embed_jax/data/neighbour_batches.py's, over windows of W batches (docs/training.md).
"""
from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
from absl import flags

from embed_jax import cli
from embed_jax.data import neighbour_batches, pipeline
from embed_jax.data.records import RecordsError

FLAGS = cli.program_flags()
RECORDS = flags.DEFINE_string("records", None, "a records folder (python -m embed_jax.teachers.export)",
                              flag_values=FLAGS)
ROWS = flags.DEFINE_integer("rows", 16384, "records read from the start of the folder", flag_values=FLAGS)
BATCH = flags.DEFINE_integer("batch", 32, "batch size", flag_values=FLAGS)
WINDOWS = flags.DEFINE_list("windows", ["8", "64", "256"], "teacher-grouping windows, in batches", flag_values=FLAGS)


def nearest_in_batch(teacher: np.ndarray, batches: list[np.ndarray]) -> np.ndarray:
    nearest = []
    for rows in batches:
        similarity = teacher[rows] @ teacher[rows].T
        np.fill_diagonal(similarity, -np.inf)
        nearest.append(similarity.max(axis=1))
    return np.concatenate(nearest)


def teacher_batches(teacher: np.ndarray, order: np.ndarray, batch: int, window: int) -> list[np.ndarray]:
    batches = []
    for start in range(0, len(order) - window * batch + 1, window * batch):
        rows = order[start:start + window * batch]
        grouped = rows[neighbour_batches.neighbour_order(teacher[rows], window)]
        batches.extend(grouped.reshape(window, batch))
    return batches


def example_definition_cosines(teacher: np.ndarray, ids: list[str]) -> np.ndarray:
    definitions = {record_id.split(":")[1]: row for row, record_id in enumerate(ids)
                   if record_id.startswith("wordnet:") and record_id.endswith(":definition")}
    return np.array([teacher[row] @ teacher[definitions[record_id.split(":")[1]]] for row, record_id in enumerate(ids)
                     if record_id.startswith("wordnet:") and ":example:" in record_id
                     and record_id.split(":")[1] in definitions])


def row(name: str, values: np.ndarray) -> str:
    return (f"| {name} | {np.median(values):.3f} ({np.percentile(values, 10):.3f}–{np.percentile(values, 90):.3f}) "
            f"| {len(values):,} |")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cli.parse(FLAGS, argv, doc=__doc__)
        cli.require(FLAGS, ["records"])
        source = pipeline.RecordDataSource(RECORDS.value, records_key="--records")
    except (cli.UsageError, RecordsError) as error:
        return cli.fail(error)
    count = min(ROWS.value, len(source))
    records = source.read_many(range(count))
    teacher = np.stack([record["teacher"] for record in records]).astype(np.float32)
    ids = [record["id"] for record in records]
    order = np.random.default_rng(0).permutation(count)
    random_batches = [order[start:start + BATCH.value] for start in range(0, count - BATCH.value + 1, BATCH.value)]
    print(f"{count:,} records of {RECORDS.value}, batches of {BATCH.value}\n")
    print("| grouping | nearest in-batch target cosine, median (p10–p90) | texts |\n|---|---|---|")
    print(row("random", nearest_in_batch(teacher, random_batches)))
    for window in map(int, WINDOWS.value):
        print(row(f"teacher, window {window}",
                  nearest_in_batch(teacher, teacher_batches(teacher, order, BATCH.value, window))))
    pairs = example_definition_cosines(teacher, ids)
    if len(pairs):
        print(row("(a WordNet usage example and its own definition)", pairs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
