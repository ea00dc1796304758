"""Stage 4's train step: only the vision tower and the pool's projection move; 8 devices equal 1 device."""
import jax
import numpy as np
import pytest
from flax import nnx

from embed_jax import losses
from embed_jax.data import digits, images
from embed_jax.models.param_paths import path_name
from embed_jax.train import sharding
from embed_jax.train.config import StageConfig
from embed_jax.train.stages import batch as batch_stage

# Slow lane only (docs/testing.md, "Fast lane"): compiles, exports or trains whole models.
pytestmark = pytest.mark.slow

# data × fsdp × tensor all split: batch rows, parameters and the wide kernels (text test_step covers more shapes).
MESHES = [{"data": 2, "fsdp": 2, "tensor": 2}]


@pytest.fixture(scope="module")
def host_batch(image_prompt):
    """16 real digits (preprocessed for the 16-px tower), the prompt row, unit caption vectors for both heads."""
    pixels = images.preprocess_batch(list(digits.digit_images()[:16]), images.ImageSettings(16))
    input_ids = np.broadcast_to(image_prompt.input_ids, (16, image_prompt.input_ids.shape[0])).copy()
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(16, dim)) for dim in (24, 8)]
    teacher = np.concatenate([part / np.linalg.norm(part, axis=1, keepdims=True) for part in parts], axis=1)
    return {"pixel_values": pixels, "input_ids": input_ids, "attention_mask": np.ones_like(input_ids),
            "teacher": teacher.astype(np.float32)}


def two_steps(student, host_batch, mesh_config, devices):
    mesh = sharding.make_mesh(mesh_config, devices)
    # The stage's own builder (stages/batch.py): the vision stage's split, AdamW without warm-up, every sharding.
    stepper = batch_stage.make_batch_step(student, StageConfig("vision", 1e-3, 10, kind="images"),
                                          {"warmup_fraction": 0.0}, losses.LossConfig(main_head=None), mesh,
                                          target="captions")
    state, train_step, batch_sharding = stepper.state, stepper.train_step, stepper.batch_sharding
    trainable, frozen, opt_state = state.trainable, state.frozen, state.opt_state
    batch = {name: jax.device_put(value, batch_sharding) for name, value in host_batch.items()}
    for _ in range(2):
        trainable, opt_state, metrics = train_step(trainable, frozen, opt_state, batch)
    params = {path_name(path): np.asarray(jax.device_get(variable.get_value()))
              for path, variable in nnx.to_flat_state(trainable)}
    return jax.device_get(metrics), params


@pytest.fixture(scope="module")
def one_device(new_vision_student, host_batch):
    return two_steps(new_vision_student(), host_batch, {"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])


def test_only_the_tower_and_projection_train(new_vision_student, one_device):
    metrics, params = one_device
    assert {name.split("/")[0] for name in params} == {"vision", "projection_pool"}
    before = {path_name(path): np.asarray(variable.get_value())
              for path, variable in nnx.to_flat_state(nnx.state(new_vision_student(), nnx.Param))}
    assert all(not np.allclose(params[name], before[name]) for name in params if name.endswith("kernel"))
    # Every head gets all three terms (docs/method.md §4), named like the text stages' terms.
    assert {name for name in metrics if "/" in name} == {
        f"dense_{dim}/{term}" for dim in (24, 8) for term in losses.LOSS_TERMS}
    assert np.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0


@pytest.mark.parametrize("mesh_config", MESHES, ids=lambda m: "x".join(str(v) for v in m.values()))
def test_sharded_vision_step_equals_one_device(new_vision_student, host_batch, one_device, mesh_config):
    assert len(jax.devices()) == 8, "tests/conftest.py sets 8 simulated CPU devices"
    metrics, params = two_steps(new_vision_student(), host_batch, mesh_config, jax.devices())
    reference_metrics, reference_params = one_device
    for name, value in reference_metrics.items():
        np.testing.assert_allclose(metrics[name], value, rtol=2e-5, atol=1e-6, err_msg=name)
    for name, value in reference_params.items():
        # Same tolerance as tests/train/test_step.py (Adam's 1/√v amplifies reduction-order noise where grads ≈ 0).
        np.testing.assert_allclose(params[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
