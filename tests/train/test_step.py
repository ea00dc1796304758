"""Sharded equals unsharded: one train step on 8 simulated devices, for several mesh shapes, against 1 device; and
two processes on loopback against one process, through the real entry point."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

import xla_env
from embed_jax import losses
from embed_jax.data import corpora, pipeline
from embed_jax.models.student import Student
from embed_jax.models.param_paths import flat_variables, path_name
from embed_jax.train import sharding, trained_student, workdir
from embed_jax.train.config import StageConfig
from embed_jax.train.stages import batch as batch_stage
from embed_jax.train.stages.student import flat_params
from embed_jax.train.metrics import read_metrics

TEACHER_DIM = 24
# 2×2×2 splits every axis at once and stays in the fast lane; the other two take ~25–40 s each (docs/testing.md).
MESHES = [
    pytest.param({"data": 8, "fsdp": 1, "tensor": 1}, marks=pytest.mark.slow),
    {"data": 2, "fsdp": 2, "tensor": 2},
    pytest.param({"data": 1, "fsdp": 4, "tensor": 2}, marks=pytest.mark.slow),
]


@pytest.fixture(scope="module")
def host_batch(tiny_student):
    """16 real WordNet definitions, tokenised by the student's tokenizer, with fixed unit teacher vectors."""
    tokenizer, pad_id = pipeline.load_tokenizer(str(tiny_student), 24)
    texts = [item.text for item in corpora.builtin_texts("wordnet", 16)]
    encoded = [encoding.ids for encoding in tokenizer.encode_batch(texts)]
    input_ids = np.full((16, 24), pad_id, np.int32)
    mask = np.zeros((16, 24), np.int32)
    for row, ids in enumerate(encoded):
        input_ids[row, : len(ids)] = ids
        mask[row, : len(ids)] = 1
    teacher = np.random.default_rng(0).normal(size=(16, TEACHER_DIM)).astype(np.float32)
    teacher /= np.linalg.norm(teacher, axis=1, keepdims=True)
    return {"input_ids": input_ids, "attention_mask": mask, "teacher": teacher}


def one_step(folder, host_batch, mesh_config, devices, stage=StageConfig("all", 1e-3, 10), *, check_state=None):
    """Two optimizer steps of `stage` (default: the whole student trains) on `mesh_config`; returns (metrics of step
    2, trainable params after). `check_state(state)` inspects the placed TrainState first."""
    student = Student.from_pretrained(folder, heads={"teacher_dim": TEACHER_DIM, "reduction_dims": [8]},
                                      rngs=nnx.Rngs(0))
    mesh = sharding.make_mesh(mesh_config, devices)
    stepper = batch_stage.make_batch_step(student, stage, {"warmup_fraction": 0.0},
                                          losses.LossConfig(main_head=f"dense_{TEACHER_DIM}"), mesh, target="records")
    state = stepper.state
    if check_state is not None:
        check_state(state)
    batch = {name: jax.device_put(value, stepper.batch_sharding) for name, value in host_batch.items()}
    trainable, opt_state = state.trainable, state.opt_state
    for _ in range(2):
        trainable, opt_state, metrics = stepper.train_step(trainable, state.frozen, opt_state, batch)
    params = {path_name(path): np.asarray(jax.device_get(variable.get_value()))
              for path, variable in nnx.to_flat_state(trainable)}
    return jax.device_get(metrics), params


@pytest.fixture(scope="module")
def one_device_result(tiny_student, host_batch):
    return one_step(tiny_student, host_batch, {"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])


@pytest.mark.slow
@pytest.mark.parametrize("mesh_config", MESHES, ids=lambda m: "x".join(str(v) for v in m.values()))
def test_sharded_step_equals_one_device(tiny_student, host_batch, one_device_result, mesh_config):
    assert len(jax.devices()) == 8, "tests/conftest.py sets 8 simulated CPU devices"
    metrics, params = one_step(tiny_student, host_batch, mesh_config, jax.devices())
    reference_metrics, reference_params = one_device_result
    for name, value in reference_metrics.items():
        np.testing.assert_allclose(metrics[name], value, rtol=2e-5, atol=1e-6, err_msg=name)
    for name, value in reference_params.items():
        # Adam divides by √v: where a gradient is ~0, reduction-order noise (~1e-7) moves the update by up to
        # ~lr·1e-3; measured max |Δ| 2.6e-6 after two steps at lr 1e-3.
        np.testing.assert_allclose(params[name], value, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.slow  # ~45 s: two students compiled, one on eight devices (docs/testing.md)
def test_frozen_parameters_replicated_over_fsdp_train_as_on_one_device(tiny_student, host_batch):
    """Stage 2's split (heads + the last layer train) with replicate_frozen on data=2 × fsdp=2 × tensor=2: the frozen
    kernels are whole over fsdp and still split over tensor, and two steps give the one-device step's numbers."""
    assert len(jax.devices()) == 8, "tests/conftest.py sets 8 simulated CPU devices"
    last_layer = dict(trainable="heads+last_layers", learning_rate=1e-3, num_steps=10, last_layers=1)

    def frozen_kernels_whole_over_fsdp(state):
        def shard_shapes(params, layer):
            kernel = flat_variables(params)[f"text_encoder/encoder/layer/{layer}/intermediate/dense/kernel"]
            return {shard.data.shape for shard in kernel.get_value().addressable_shards}

        # (embed 32, mlp 64): the frozen layer's embed is whole over fsdp, mlp split over tensor=2 → (32, 32) a
        # device; the trained layer's embed stays split over fsdp=2 → (16, 32).
        assert shard_shapes(state.frozen, 0) == {(32, 32)} and shard_shapes(state.trainable, 3) == {(16, 32)}

    metrics, params = one_step(tiny_student, host_batch, {"data": 2, "fsdp": 2, "tensor": 2}, jax.devices(),
                               StageConfig(**last_layer, replicate_frozen=True),
                               check_state=frozen_kernels_whole_over_fsdp)
    reference_metrics, reference_params = one_step(tiny_student, host_batch, {"data": 1, "fsdp": 1, "tensor": 1},
                                                   jax.devices()[:1], StageConfig(**last_layer))
    assert set(params) == set(reference_params) and not any("layer/2/" in name for name in params)
    for name, value in reference_metrics.items():
        np.testing.assert_allclose(metrics[name], value, rtol=2e-5, atol=1e-6, err_msg=name)
    for name, value in reference_params.items():
        np.testing.assert_allclose(params[name], value, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.slow
def test_parameters_are_really_split_over_the_mesh(tiny_student):
    student = Student.from_pretrained(tiny_student, heads={"teacher_dim": TEACHER_DIM, "reduction_dims": []})
    mesh = sharding.make_mesh({"data": 1, "fsdp": 4, "tensor": 2})
    state = jax.device_put(nnx.state(student, nnx.Param), sharding.state_sharding(nnx.state(student, nnx.Param), mesh))
    kernel = state["text_encoder"]["encoder"]["layer"][0]["intermediate"]["dense"]["kernel"].get_value()
    # (embed 32, mlp 64): embed over fsdp=4, mlp over tensor=2 → each device holds an (8, 32) block.
    assert {shard.data.shape for shard in kernel.addressable_shards} == {(8, 32)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_main(workdir, overrides, *, processes: int, devices_per_process: int, timeout: int = 600):
    """`python -m embed_jax.main` as `processes` local processes joined through jax.distributed on loopback."""
    env = {**os.environ, "XLA_FLAGS": xla_env.xla_flags(devices_per_process),
           "JAX_PLATFORMS": "cpu"}
    port = free_port()
    command = [sys.executable, "-m", "embed_jax.main", "--config=configs/distill.py:smoke", f"--workdir={workdir}",
               *overrides]
    if processes > 1:
        command += [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={processes}"]
    workers = [subprocess.Popen(command + ([f"--process_id={index}"] if processes > 1 else []), env=env,
                                cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
               for index in range(processes)]
    outputs = [worker.communicate(timeout=timeout)[0] for worker in workers]
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-3000:]
    return outputs


@pytest.mark.slow
@pytest.mark.parametrize("cached", [False, True])
def test_two_processes_equal_one_process(tiny_student, teacher_records, tmp_path, cached):
    """Through the encoder's step, and from cached pooled vectors (their rows gathered in one process's order)."""
    overrides = [f"--config.model.init_from={tiny_student}", "--config.model.teacher_dim=384",
                 "--config.data.teacher_weights=",
                 f"--config.data.records_dir={teacher_records}", "--config.stage_order=('stage1',)",
                 f"--config.stage1.kind={'cached_pooled' if cached else 'records'}", "--config.stage1.fc1_init=",
                 "--config.stage1.num_steps=2", "--config.train.checkpoint_every=2"]
    run_main(tmp_path / "one", overrides, processes=1, devices_per_process=4)
    run_main(tmp_path / "two", overrides, processes=2, devices_per_process=2)
    one = read_metrics(tmp_path / "one" / "stage1" / "metrics.jsonl")
    two = read_metrics(tmp_path / "two" / "stage1" / "metrics.jsonl")
    assert [row["step"] for row in one] == [row["step"] for row in two] == [1, 2]
    for row_one, row_two in zip(one, two):
        for name in ("loss", "dense_384/cosine", "dense_384/similarity", "dense_384/relative_similarity"):
            np.testing.assert_allclose(row_two[name], row_one[name], rtol=2e-5, err_msg=name)
    params_one = flat_params(trained_student.load_student(tmp_path / "one" / "stage1"))
    params_two = flat_params(trained_student.load_student(tmp_path / "two" / "stage1"))
    for name, value in params_one.items():
        np.testing.assert_allclose(params_two[name], value, rtol=1e-4, atol=1e-5, err_msg=name)


def test_the_kits_training_state_is_the_loops_and_trains(tiny_training_state, host_batch):
    """tests/kit.py's tiny training state comes from the stage's own builder (stages/batch.py): its jitted step
    lowers the loss on a repeated batch."""
    state, train_step = tiny_training_state.state, tiny_training_state.train_step
    batch = {name: jax.device_put(value, tiny_training_state.batch_sharding) for name, value in host_batch.items()}
    trainable, opt_state, seen = state.trainable, state.opt_state, []
    for _ in range(5):
        trainable, opt_state, metrics = train_step(trainable, state.frozen, opt_state, batch)
        seen.append(float(metrics["loss"]))
    assert seen[-1] < seen[0]
