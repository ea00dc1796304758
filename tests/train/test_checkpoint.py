"""Checkpoints (embed_jax.train.checkpoint) and preemption (embed_jax.train.preemption) through the real step driver
(embed_jax.train.driver) at toy scale.

The step is a real one: an NNX MLP whose params carry logical axis names, sharded over 8 simulated CPU devices,
optax AdamW, and a grain iterator over an in-memory MapDataset; `run_loop` hands it to the driver that every
training stage runs. The SIGTERM and several-host tests run it in subprocesses (this file is also a script:
`python tests/train/test_checkpoint.py WORKDIR TOTAL_STEPS SLEEP_S`), send a real SIGTERM, resume, and check that the
interrupted run equals an uninterrupted one bit for bit: same batches, same final parameters.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import xla_env
from embed_jax.train import checkpoint, driver, metrics, preemption
from embed_jax.train.preemption import PreemptionGuard

IN_DIM, HIDDEN = 16, 32
# Logical axis -> mesh axis, as the real rules table does for the student.
RULES = {"embed": "fsdp", "mlp": "tensor"}
IDENTITY = {"student": "mlp-test", "teachers": ["a", "b"], "stage": 1}


class TinyStudent(nnx.Module):
    """Two Linear layers whose kernels carry logical axis names, like the student's encoder and heads."""

    def __init__(self, out_dim: int, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(IN_DIM, HIDDEN, rngs=rngs, kernel_metadata={"out_sharding": ("embed", "mlp")})
        self.head = nnx.Linear(HIDDEN, out_dim, rngs=rngs, kernel_metadata={"out_sharding": ("mlp", "embed")})

    def __call__(self, x):
        return self.head(jax.nn.gelu(self.hidden(x)))


def build_student(out_dim: int = 8, seed: int = 0) -> TinyStudent:
    with nnx.use_eager_sharding(False):
        return TinyStudent(out_dim, nnx.Rngs(seed))


def make_mesh(shape: tuple[int, int]) -> jax.sharding.Mesh:
    devices = np.asarray(jax.devices()[: shape[0] * shape[1]]).reshape(shape)
    return jax.sharding.Mesh(devices, ("fsdp", "tensor"), axis_types=(AxisType.Auto,) * 2)


def named_shardings(tree, mesh):
    """Same structure as `tree`: each Variable's logical names mapped through RULES; other leaves replicated."""

    def for_variable(variable):
        names = variable.get_metadata().get("out_sharding") or ()
        return variable.replace(NamedSharding(mesh, P(*(RULES.get(name) for name in names))))

    def for_leaf(leaf):
        if isinstance(leaf, nnx.Variable):
            return for_variable(leaf)
        return NamedSharding(mesh, P())

    return jax.tree.map(for_leaf, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def optimizer() -> optax.GradientTransformation:
    return optax.adamw(1e-2)


def example(index: int) -> dict:
    """A deterministic (x, y) pair per record id."""
    x = np.sin(np.arange(IN_DIM, dtype=np.float32) * (index + 1) / 7.0)
    y = np.cos(np.arange(8, dtype=np.float32) * (index + 1) / 5.0)
    return {"id": np.int32(index), "x": x, "y": y}


def data_iterator(num_records: int = 48, batch_size: int = 8, seed: int = 7, process_index=0, process_count=1):
    """This process's share of a shuffled, repeated stream; `batch_size` is the global batch."""
    shard = grain.MapDataset.range(num_records).shuffle(seed=seed)[process_index::process_count]
    return iter(shard.map(example).repeat().batch(batch_size // process_count))


def global_batch(local_batch: dict, mesh) -> dict:
    """Assembles the processes' local batches into arrays sharded along the batch over every device."""
    sharding = NamedSharding(mesh, P(("fsdp", "tensor")))
    return {
        name: jax.make_array_from_process_local_data(sharding, local_batch[name]) for name in ("x", "y")
    }


def initial_state(mesh, out_dim: int = 8):
    params = nnx.state(build_student(out_dim), nnx.Param)
    params = jax.device_put(params, named_shardings(params, mesh))
    opt_state = optimizer().init(params)
    return {"params": params, "opt_state": opt_state}


def abstract_targets(state, mesh):
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)
    return {
        name: checkpoint.abstract_with_shardings(tree, named_shardings(tree, mesh)) for name, tree in abstract.items()
    }


@jax.jit
def train_step(state, batch):
    graphdef = nnx.graphdef(build_student())

    def loss_fn(params):
        student = nnx.merge(graphdef, params)
        return jnp.mean((student(batch["x"]) - batch["y"]) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(state["params"])
    updates, opt_state = optimizer().update(grads, state["opt_state"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state}, loss


def manager(directory, *, save_every=5, keep=2, identity=IDENTITY, shape_config=None, async_save=True):
    return checkpoint.CheckpointManager(
        directory,
        save_every=save_every,
        keep=keep,
        identity=identity,
        shape_config=shape_config or {"teacher_dim": 8},
        async_save=async_save,
    )


def run_loop(workdir: Path, total_steps: int, sleep_s: float = 0.0) -> None:
    """The real step driver (embed_jax.train.driver) around the toy step: resume if possible, train, save every 5
    steps and at the end, stop cleanly on SIGTERM.

    Appends the record ids of each step's local batch to workdir/seen_<process>.jsonl and, on one process, writes
    workdir/final.npz at the end. Runs as one process or as several (`jax.distributed` initialised by the caller).
    """
    process_index, process_count = jax.process_index(), jax.process_count()
    mesh = make_mesh((jax.device_count(), 1))
    state = initial_state(mesh)
    batches = data_iterator(process_index=process_index, process_count=process_count)

    def step(state, step_index: int) -> driver.Stepped:
        batch = next(batches)
        state, loss = train_step(state, global_batch(batch, mesh))
        with open(workdir / f"seen_{process_index}.jsonl", "a") as seen:
            seen.write(json.dumps({"step": step_index + 1, "ids": batch["id"].tolist()}) + "\n")
        print(f"step {step_index + 1}", flush=True)
        time.sleep(sleep_s)
        return driver.Stepped(state, {"loss": loss}, examples=len(batch["id"]))

    stage_steps = driver.StageSteps(step=step, checkpoint_items=lambda state: state, learning_rate=lambda _: 1e-2,
                                    rates=metrics.Throughput(), data_iterator=batches)
    cadence = driver.Cadence(num_steps=total_steps, log_every=5, checkpoint_every=5)
    with manager(workdir / "checkpoints") as checkpoints:
        restored = checkpoints.restore(None, abstract_targets(state, mesh), batches)
        start_step = 0
        if restored is not None:
            state, start_step = restored.state, restored.step
            print(f"resumed from step {restored.step}", flush=True)
        try:
            state = driver.run_steps("toy", cadence, stage_steps, state=state, start_step=start_step,
                                     manager=checkpoints, metrics_dir=workdir, title="toy").state
        except driver.Preempted as stopped:
            print(f"preempted: saved step {stopped.step}", flush=True)
            return
    if process_count == 1:
        leaves = jax.tree_util.tree_flatten_with_path(state["params"])[0]
        np.savez(workdir / "final.npz", **{checkpoint.path_name(path): np.asarray(leaf) for path, leaf in leaves})


def read_seen(workdir: Path, process_index: int = 0) -> dict[int, list[int]]:
    lines = (workdir / f"seen_{process_index}.jsonl").read_text().splitlines()
    return {record["step"]: record["ids"] for record in map(json.loads, lines)}


def assert_trees_equal(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def trained_state(mesh, steps: int = 3):
    """A state that has taken a few steps (so AdamW's moments are not zeros) and the iterator after them."""
    state, batches = initial_state(mesh), data_iterator()
    for _ in range(steps):
        state, _ = train_step(state, global_batch(next(batches), mesh))
    return state, batches


# --- save / restore ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_restore_gives_back_state_and_data_position(tmp_path):
    mesh = make_mesh((8, 1))
    state, batches = trained_state(mesh)
    with manager(tmp_path) as checkpoints:
        assert checkpoints.restore(None, abstract_targets(state, mesh)) is None  # empty folder: fresh start
        assert checkpoints.save(3, state, batches, force=True)
        checkpoints.wait_until_finished()
    expected_next = [next(batches)["id"].tolist() for _ in range(3)]

    fresh_batches = data_iterator()
    with manager(tmp_path) as checkpoints:
        restored = checkpoints.restore(None, abstract_targets(state, mesh), fresh_batches)
    assert restored.step == 3
    assert_trees_equal(restored.state, state)
    assert [next(fresh_batches)["id"].tolist() for _ in range(3)] == expected_next
    assert restored.metadata["identity"] == IDENTITY


@pytest.mark.slow
@pytest.mark.parametrize("target_mesh_shape", [(2, 4), (1, 1)], ids=["2x4", "1-device"])
def test_restore_onto_a_different_mesh(tmp_path, target_mesh_shape):
    source_mesh = make_mesh((8, 1))
    state, batches = trained_state(source_mesh)
    with manager(tmp_path) as checkpoints:
        checkpoints.save(3, state, batches, force=True)

    target_mesh = make_mesh(target_mesh_shape)
    targets = abstract_targets(state, target_mesh)
    with manager(tmp_path) as checkpoints:
        restored = checkpoints.restore(3, targets)
    assert_trees_equal(restored.state, state)
    for leaf, target in zip(jax.tree.leaves(restored.state), jax.tree.leaves(targets)):
        assert leaf.sharding == target.sharding
    kernel = restored.state["params"]["hidden"]["kernel"][...]
    assert kernel.sharding.spec == P("fsdp", "tensor") and kernel.sharding.mesh.shape == dict(
        zip(("fsdp", "tensor"), target_mesh_shape)
    )


@pytest.mark.slow
def test_saves_on_the_interval_and_keeps_the_last_n(tmp_path):
    mesh = make_mesh((8, 1))
    state, batches = trained_state(mesh, steps=1)
    with manager(tmp_path, save_every=2, keep=2) as checkpoints:
        started = [checkpoints.save(step, state, batches) for step in range(1, 8)]
        assert started == [False, True, False, True, False, True, False]
        assert checkpoints.save(7, state, batches, force=True)  # preemption / end of training: off the interval
        assert not checkpoints.save(7, state, batches, force=True)  # already saved: not twice
        checkpoints.wait_until_finished()
        assert checkpoints.all_steps() == [6, 7]


@pytest.mark.slow
def test_async_save_does_not_need_the_arrays_after_it_returns(tmp_path):
    """The train step donates its state: Orbax must have copied the arrays before `save` returns."""
    mesh = make_mesh((8, 1))
    state, batches = trained_state(mesh)
    expected = jax.tree.map(np.asarray, state)
    with manager(tmp_path) as checkpoints:
        checkpoints.save(3, state, batches, force=True)
        for leaf in jax.tree.leaves(state):
            leaf.delete()
        checkpoints.wait_until_finished()
        restored = checkpoints.restore(3, abstract_targets(expected, mesh))
    assert_trees_equal(jax.tree.map(np.asarray, restored.state), expected)


@pytest.mark.slow
def test_last_good_checkpoint_is_committed_for_the_next_run(tmp_path):
    """After a NaN the loop stops saving; what it leaves must be complete on disk for a fresh manager."""
    mesh = make_mesh((8, 1))
    state, batches = trained_state(mesh)
    with manager(tmp_path, save_every=2) as checkpoints:
        for step in range(1, 5):
            checkpoints.save(step, state, batches)
        checkpoints.wait_until_finished()
        last_good = checkpoints.latest_step()
    assert last_good == 4
    assert not [path.name for path in tmp_path.iterdir() if "tmp" in path.name]
    with manager(tmp_path) as checkpoints:
        assert checkpoints.latest_step() == 4
        assert checkpoints.restore(None, abstract_targets(state, mesh)).step == 4


def test_params_alone_can_start_the_next_stage(tmp_path):
    """A stage starts from the previous stage's params: other identity, no optimizer state, no data position."""
    mesh = make_mesh((8, 1))
    state, batches = trained_state(mesh)
    with manager(tmp_path) as checkpoints:
        checkpoints.save(3, state, batches, force=True)
    # The reader knows nothing of the previous stage's config (empty identity and shape config), as in the loop.
    targets = {"params": abstract_targets(state, mesh)["params"]}
    wider = {"params": abstract_targets(initial_state(mesh, out_dim=16), mesh)["params"]}
    with checkpoint.CheckpointManager(tmp_path, save_every=1, keep=1, identity={}, shape_config={}) as previous_stage:
        restored = previous_stage.restore(3, targets, check_identity=False)
        with pytest.raises(checkpoint.ShapeMismatchError, match=r"params/head/kernel: checkpoint shape"):
            previous_stage.restore(3, wider, check_identity=False)
    assert list(restored.state) == ["params"]
    assert_trees_equal(restored.state["params"], state["params"])


# --- refusals ---------------------------------------------------------------------------------------------------------


def saved_run(tmp_path, mesh, **manager_options):
    state, batches = trained_state(mesh)
    with manager(tmp_path, **manager_options) as checkpoints:
        checkpoints.save(3, state, batches, force=True)
    return state


@pytest.mark.slow
def test_resume_that_changes_shapes_names_the_difference(tmp_path):
    mesh = make_mesh((8, 1))
    saved_run(tmp_path, mesh, shape_config={"teacher_dim": 8, "hidden_size": HIDDEN})
    wider = initial_state(mesh, out_dim=16)
    with manager(tmp_path, shape_config={"teacher_dim": 16, "hidden_size": HIDDEN}) as checkpoints:
        with pytest.raises(checkpoint.ShapeMismatchError) as error:
            checkpoints.restore(None, abstract_targets(wider, mesh))
    message = str(error.value)
    assert "teacher_dim: checkpoint 8, this run 16" in message
    assert "params/head/kernel: checkpoint shape (32, 8), this run (32, 16)" in message
    assert "hidden_size" not in message  # unchanged keys are not listed
    assert str(tmp_path) in message and "step 3" in message


@pytest.mark.slow
def test_folder_of_another_run_is_refused(tmp_path):
    mesh = make_mesh((8, 1))
    state = saved_run(tmp_path, mesh)
    other = {**IDENTITY, "teachers": ["a", "c"]}
    with manager(tmp_path, identity=other) as checkpoints:
        with pytest.raises(checkpoint.ForeignCheckpointError, match=r"teachers: checkpoint \['a', 'b'\], this run"):
            checkpoints.restore(None, abstract_targets(state, mesh))


@pytest.mark.slow
def test_saving_into_another_runs_folder_is_refused_and_its_checkpoints_stay(tmp_path):
    """Without a restore first, the first save checks the folder: keeping the last N must not delete another run's."""
    mesh = make_mesh((8, 1))
    state = saved_run(tmp_path, mesh)
    with manager(tmp_path, identity={**IDENTITY, "student": "another"}, keep=1) as checkpoints:
        with pytest.raises(checkpoint.ForeignCheckpointError, match="student: checkpoint 'mlp-test', this run"):
            checkpoints.save(10, state, force=True)
    with manager(tmp_path) as checkpoints:
        assert checkpoints.all_steps() == [3]
        assert checkpoints.save(10, state, force=True)  # the run that wrote it may go on


@pytest.mark.slow
def test_folder_not_written_by_this_module_is_refused(tmp_path):
    mesh = make_mesh((8, 1))
    state, _ = trained_state(mesh)
    with ocp.CheckpointManager(tmp_path) as plain:
        plain.save(1, args=ocp.args.Composite(params=ocp.args.StandardSave(state["params"])))
    with manager(tmp_path) as checkpoints:
        with pytest.raises(checkpoint.ForeignCheckpointError, match="has no run_metadata item"):
            checkpoints.restore(None, abstract_targets(state, mesh))
        with pytest.raises(checkpoint.ForeignCheckpointError, match="has no run_metadata item"):
            checkpoints.save(2, state, force=True)


@pytest.mark.slow
def test_data_position_saved_by_another_process_count_is_refused(tmp_path):
    mesh = make_mesh((8, 1))
    state = saved_run(tmp_path, mesh)
    iterator_folder = tmp_path / "3" / checkpoint.DATA_ITERATOR_ITEM
    (iterator_folder / "process_0-of-1.json").rename(iterator_folder / "process_0-of-2.json")
    with manager(tmp_path) as checkpoints:
        with pytest.raises(checkpoint.DataIteratorMismatchError, match="process_0-of-2.json.*this run has 1"):
            checkpoints.restore(None, abstract_targets(state, mesh), data_iterator())
        # The documented way out: restart the data stream.
        assert checkpoints.restore(None, abstract_targets(state, mesh)).step == 3


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed here")
def test_cloud_storage_folder_without_gcsfs_says_what_to_install():
    with pytest.raises(ImportError, match="gs://bucket/run/checkpoints is on Google Cloud Storage.*pip install gcsfs"):
        manager("gs://bucket/run/checkpoints")


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="save_every must be >= 1"):
        manager(tmp_path, save_every=0)
    with pytest.raises(ValueError, match="keep must be >= 1"):
        manager(tmp_path, keep=0)
    mesh = make_mesh((1, 1))
    state = initial_state(mesh)
    with manager(tmp_path) as checkpoints:
        with pytest.raises(ValueError, match=r"reserved item name\(s\) \['run_metadata'\]"):
            checkpoints.save(1, {**state, "run_metadata": {}}, force=True)
        with pytest.raises(TypeError, match="data_iterator must be a grain DatasetIterator"):
            checkpoints.save(1, state, iter(range(3)), force=True)
        with pytest.raises(TypeError, match="non-empty dict"):
            checkpoints.save(1, {}, force=True)
        with pytest.raises(FileNotFoundError, match="no checkpoint for step 9"):
            checkpoints.restore(9, abstract_targets(state, mesh))


# --- preemption -------------------------------------------------------------------------------------------------------


def test_guard_turns_sigterm_into_a_stop_and_restores_the_previous_handler():
    previous = signal.getsignal(signal.SIGTERM)
    with PreemptionGuard() as guard:
        assert not guard.should_stop(1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.should_stop(2) and guard.received_signal is signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is previous


def test_guard_outside_the_main_thread_says_where_to_create_it():
    errors = []

    def create():
        try:
            PreemptionGuard()
        except RuntimeError as error:
            errors.append(str(error))

    thread = threading.Thread(target=create)
    thread.start()
    thread.join()
    assert errors and "must be created in the main thread" in errors[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def run_children(
    workdir: Path,
    total_steps: int,
    *,
    sleep_s: float,
    num_processes: int = 1,
    stop_after_step: int | None = None,
    signalled_process: int = 0,
    preemption_service: bool = True,
) -> list[str]:
    """Runs `run_loop` in `num_processes` subprocesses (one jax.distributed job on loopback when more than one).

    With `stop_after_step`, sends SIGTERM to `signalled_process` only, once it printed that step. Returns each
    process's output; fails if any process exits with an error.
    """
    port = free_port()
    # The children run this file as a script: tests/ on their path for its `import xla_env`.
    tests_folder = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, XLA_FLAGS=xla_env.xla_flags(8 // num_processes),
               PYTHONPATH=os.pathsep.join(filter(None, [tests_folder, os.environ.get("PYTHONPATH")])))
    logs = [workdir / f"output_{index}.log" for index in range(num_processes)]
    children = []
    for index, log in enumerate(logs):
        arguments = [workdir, total_steps, sleep_s, index, num_processes, port, int(preemption_service)]
        with open(log, "w") as output:
            command = [sys.executable, __file__, *map(str, arguments)]
            children.append(subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env))
    if stop_after_step is not None:
        target, deadline = children[signalled_process], time.monotonic() + 240
        while f"step {stop_after_step}\n" not in logs[signalled_process].read_text() and target.poll() is None:
            assert time.monotonic() < deadline, "the loop did not reach the step to stop after"
            time.sleep(0.05)
        target.send_signal(signal.SIGTERM)
    for child in children:
        child.wait(timeout=240)
    outputs = [log.read_text() for log in logs]
    for child, output in zip(children, outputs):
        assert child.returncode == 0, output
    return outputs


def saved_step(output: str) -> int:
    return int(output.split("preempted: saved step ")[1].split()[0])


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_sigterm_saves_at_a_step_boundary_and_the_resumed_run_equals_an_uninterrupted_one(tmp_path):
    total_steps = 30
    reference = tmp_path / "reference"
    reference.mkdir()
    run_loop(reference, total_steps)

    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    [output] = run_children(interrupted, total_steps, sleep_s=0.1, stop_after_step=4)
    stopped_at = saved_step(output)
    assert 4 <= stopped_at < total_steps
    assert f"[toy] stop requested (SIGTERM): saved step {stopped_at}; rerun" in output  # the driver's own message
    with manager(interrupted / "checkpoints") as checkpoints:
        assert checkpoints.latest_step() == stopped_at
    assert max(read_seen(interrupted)) == stopped_at

    [output] = run_children(interrupted, total_steps, sleep_s=0.0)
    assert f"resumed from step {stopped_at}" in output
    assert read_seen(interrupted) == read_seen(reference)
    with np.load(reference / "final.npz") as expected, np.load(interrupted / "final.npz") as actual:
        assert sorted(actual.files) == sorted(expected.files)
        for name in expected.files:
            np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("preemption_service", [True, False], ids=["jax-sync-point", "agreed-flag"])
def test_sigterm_to_one_host_stops_every_host_at_the_same_step(tmp_path, preemption_service):
    """Two processes on loopback; only the second gets SIGTERM; both must save the same step and resume from it."""
    total_steps = 40
    outputs = run_children(
        tmp_path,
        total_steps,
        sleep_s=0.1,
        num_processes=2,
        stop_after_step=3,
        signalled_process=1,
        preemption_service=preemption_service,
    )
    stopped_at = {saved_step(output) for output in outputs}
    assert len(stopped_at) == 1, outputs
    [stopped_at] = stopped_at
    assert stopped_at < total_steps
    iterator_folder = tmp_path / "checkpoints" / str(stopped_at) / "data_iterator"
    assert sorted(path.name for path in iterator_folder.glob("process_*")) == [
        "process_0-of-2.json",
        "process_1-of-2.json",
    ]
    if not preemption_service:
        return  # resuming does not depend on how the processes agreed; checked once (below) to keep the suite short

    outputs = run_children(tmp_path, total_steps, sleep_s=0.0, num_processes=2)
    for process_index, output in enumerate(outputs):
        assert f"resumed from step {stopped_at}" in output
        # The resumed stream is the uninterrupted one: this process's shard, batch after batch, no gap, no repeat.
        stream = data_iterator(process_index=process_index, process_count=2)
        expected = {step: next(stream)["id"].tolist() for step in range(1, total_steps + 1)}
        assert read_seen(tmp_path, process_index) == expected


def main(arguments: list[str]) -> None:
    """Child process entry: WORKDIR TOTAL_STEPS SLEEP_S [PROCESS_ID NUM_PROCESSES PORT PREEMPTION_SERVICE]."""
    workdir, total_steps, sleep_s = Path(arguments[0]), int(arguments[1]), float(arguments[2])
    if len(arguments) > 3:
        process_id, num_processes, port, preemption_service = map(int, arguments[3:7])
        if num_processes > 1:
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
            jax.config.update("jax_enable_preemption_service", bool(preemption_service))
            jax.distributed.initialize(f"localhost:{port}", num_processes=num_processes, process_id=process_id)
    run_loop(workdir, total_steps, sleep_s)


if __name__ == "__main__":
    main(sys.argv[1:])


def test_nested_guards_share_a_stop_and_ctrl_c_is_a_stop_too():
    """The loop's guard (across stages) and the driver's (per stage): a signal either one receives is both's."""
    with PreemptionGuard() as outer:
        os.kill(os.getpid(), signal.SIGINT)  # during a stage's set-up: the outer guard holds it
        with PreemptionGuard() as inner:
            assert inner.should_stop(1) and inner.received_signal is signal.SIGINT
    with PreemptionGuard() as outer:
        with PreemptionGuard() as inner:
            os.kill(os.getpid(), signal.SIGTERM)  # after the stage's last check: the outer guard sees it next
            assert inner.requested
        assert outer.stop_between_stages() and outer.received_signal is signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):  # a Ctrl-C after a stop was asked for: stop at once
            os.kill(os.getpid(), signal.SIGINT)
    assert preemption.exit_status(signal.SIGTERM) == 143 and preemption.exit_status(signal.SIGINT) == 130
