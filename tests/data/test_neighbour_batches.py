"""Teacher-neighbour batches (embed_jax/data/neighbour_batches.py): the greedy grouping against a brute-force
reference, and the pipeline's grouped stream over real records."""
import numpy as np
import pytest

from embed_jax.data import neighbour_batches, pipeline
from embed_jax.data.pipeline import PipelineConfigError

TOKENIZER = "asset:all-MiniLM-L6-v2"


def unit_rows(count, dim, seed):
    vectors = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def reference_order(vectors, num_batches):
    """The rule written out directly: the first unplaced row, then the unplaced rows by falling similarity."""
    placed, order = set(), []
    size = len(vectors) // num_batches
    for _ in range(num_batches):
        seed = min(set(range(len(vectors))) - placed)
        rest = sorted(set(range(len(vectors))) - placed - {seed},
                      key=lambda row: (-float(vectors[seed] @ vectors[row]), row))
        batch = [seed] + rest[:size - 1]
        placed.update(batch)
        order.extend(batch)
    return np.array(order)


@pytest.mark.parametrize("count,num_batches", [(24, 3), (64, 8), (30, 1)])
def test_order_matches_the_brute_force_rule(count, num_batches):
    vectors = unit_rows(count, 16, seed=count)
    order = neighbour_batches.neighbour_order(vectors, num_batches)
    assert sorted(order.tolist()) == list(range(count))  # a permutation: every row placed once
    np.testing.assert_array_equal(order, reference_order(vectors, num_batches))


def test_batches_hold_closer_pairs_than_random_batches():
    """Three planted clusters, shuffled: each neighbour batch is one cluster, a random batch mixes them."""
    centres = unit_rows(3, 32, seed=1)
    noise = np.random.default_rng(2).normal(scale=0.05, size=(48, 32))
    vectors = centres[np.arange(48) % 3] + noise
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    order = neighbour_batches.neighbour_order(vectors, 3)
    for batch in order.reshape(3, 16):
        assert len({int(row) % 3 for row in batch}) == 1


def test_rows_must_split_evenly():
    with pytest.raises(ValueError, match="10 rows do not split into 3 equal batches"):
        neighbour_batches.neighbour_order(unit_rows(10, 4, seed=0), 3)


@pytest.fixture(scope="module")
def source(records_folder):
    return pipeline.RecordDataSource(records_folder)


def take(source, count, **options):
    settings = dict(tokenizer=TOKENIZER, global_batch_size=8, max_length=128, length_buckets=(16, 32, 64, 128),
                    seed=3, include_ids=True, length_grouping_window=4)
    settings.update(options)
    iterator = iter(pipeline.make_dataset(source, **settings))
    return [next(iterator) for _ in range(count)]


def nearest_in_batch(batches):
    nearest = []
    for batch in batches:
        similarity = batch["teacher"] @ batch["teacher"].T
        np.fill_diagonal(similarity, -np.inf)
        nearest.append(similarity.max(axis=1))
    return float(np.median(np.concatenate(nearest)))


def test_teacher_grouping_keeps_the_epoch_and_brings_neighbours_together(source):
    by_length = take(source, 8)
    by_teacher = take(source, 8, group_by="teacher")
    ids = lambda batches: sorted(str(record_id) for batch in batches for record_id in batch["id"])  # noqa: E731
    assert ids(by_teacher) == ids(by_length)  # the same records each window, only grouped differently
    by_id = {source[index]["id"]: source[index]["teacher"] for index in range(len(source))}
    for batch in by_teacher:  # each row keeps its own teacher vector
        for row, record_id in enumerate(batch["id"]):
            np.testing.assert_array_equal(batch["teacher"][row], by_id[str(record_id)])
    assert nearest_in_batch(by_teacher) > nearest_in_batch(by_length)


def test_teacher_grouping_splits_over_processes_like_one(source):
    single = take(source, 8, group_by="teacher")
    halves = [take(source, 8, group_by="teacher", process_index=index, process_count=2) for index in (0, 1)]
    for step in range(8):
        first, second = ({str(record_id) for record_id in half[step]["id"]} for half in halves)
        assert not first & second and first | second == {str(record_id) for record_id in single[step]["id"]}


def test_unknown_grouping_is_refused(source):
    with pytest.raises(PipelineConfigError, match=r"data.group_by='topic': use one of \['length', 'teacher'\]"):
        take(source, 1, group_by="topic")
