"""The one trainer of heads on cached vectors (embed_jax/train/cached_heads.py `row_trainer`), which the cached stage
and the shrink program both run: it draws only the rows it is given, and a run resumed at any step continues the
exact stream of an unbroken one."""
import jax
import pytest
import jax.numpy as jnp
import numpy as np

from embed_jax.train import cached_heads, optimizer as optimizer_lib, shrink_heads

ROWS, DIM, DIMS, BATCH, SEED = 48, 16, (8, 4), 8, 3


def step_and_state(steps: int):
    """The shrink program's jitted step (one compile per test) and fresh heads' (parameters, optimizer state)."""
    graphdef, params, rest = shrink_heads.split_heads(shrink_heads.new_heads(DIM, DIMS, seed=0))
    optimizer, _ = optimizer_lib.make_optimizer(None, learning_rate=1e-2, total_steps=steps)
    return shrink_heads.make_train_step(graphdef, optimizer), rest, (params, optimizer.init(params))


def trainer(train_step, rest, vectors: np.ndarray, train_rows: np.ndarray):
    device_vectors = jnp.asarray(vectors)
    return cached_heads.row_trainer(train_step, rest, device_vectors, device_vectors, train_rows, batch_size=BATCH,
                                    seed=SEED, replicated=shrink_heads.one_device_sharding())


def vectors_with_poisoned_rows(poisoned: np.ndarray) -> np.ndarray:
    vectors = np.random.default_rng(0).normal(size=(ROWS, DIM)).astype(np.float32)
    vectors[poisoned] = np.nan  # a drawn poisoned row makes that step's loss NaN
    return vectors


def test_only_the_given_rows_are_ever_drawn():
    train_rows, heldout = np.arange(0, ROWS, 2), np.arange(1, ROWS, 2)
    steps = 2 * len(train_rows) // BATCH  # two epochs
    train_step, rest, state = step_and_state(steps)
    vectors = vectors_with_poisoned_rows(heldout)
    advance = trainer(train_step, rest, vectors, train_rows)
    losses = []
    for step in range(steps):
        state, metrics = advance(state, step)
        losses.append(float(metrics["loss"]))
    assert np.all(np.isfinite(losses))
    # The check can fail: the same vectors through every row do draw a poisoned one.
    _, _, fresh = step_and_state(steps)
    assert not np.isfinite(float(trainer(train_step, rest, vectors, np.arange(ROWS))(fresh, 0)[1]["loss"]))


@pytest.mark.slow
def test_a_resumed_run_continues_the_unbroken_stream_exactly():
    vectors = vectors_with_poisoned_rows(np.array([], dtype=int))
    train_rows, steps = np.arange(5, ROWS), 12
    train_step, rest, unbroken = step_and_state(steps)
    advance = trainer(train_step, rest, vectors, train_rows)
    for step in range(steps):
        unbroken, _ = advance(unbroken, step)
    _, _, resumed = step_and_state(steps)
    for step in range(5):
        resumed, _ = advance(resumed, step)
    resumed = jax.tree.map(np.asarray, resumed)  # as a checkpoint holds it
    advance = trainer(train_step, rest, vectors, train_rows)  # a new trainer over the same rows
    for step in range(5, steps):
        resumed, _ = advance(resumed, step)
    for got, want in zip(jax.tree.leaves(resumed), jax.tree.leaves(unbroken)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
