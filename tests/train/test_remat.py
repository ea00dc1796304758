"""Remat and scan inside the train step with part of the parameters frozen (stages 1 and 2): the step traces, and
recomputing activations changes neither the loss nor the gradients (embed_jax/models/layers.py, run_layers)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from embed_jax import losses
from embed_jax.models.student import Student
from embed_jax.train import step, trainable as trainables

TEACHER_DIM = 24


@pytest.fixture(scope="module")
def tiny_qwen2_folder(tmp_path_factory):
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.Qwen2Config(vocab_size=97, hidden_size=40, num_hidden_layers=3, num_attention_heads=4,
                                      num_key_value_heads=1, head_dim=10, intermediate_size=56,
                                      max_position_embeddings=32)
    folder = tmp_path_factory.mktemp("tiny_qwen2")
    transformers.Qwen2Model(config).save_pretrained(folder)
    return folder


def loss_and_grads(folder, *, remat: bool | str, scan: bool, trainable: str):
    student = Student.from_pretrained(folder, heads={"teacher_dim": TEACHER_DIM, "reduction_dims": []},
                                      pooling_method="mean", dtype=jnp.float32, param_dtype=jnp.float32,
                                      text_options={"causal": False, "remat": remat, "scan": scan},
                                      rngs=nnx.Rngs(0))
    paths = [path for path, _ in nnx.to_flat_state(nnx.state(student, nnx.Param))]
    graphdef, trainable_state, frozen = trainables.split_trainable(
        student, trainables.trainable_filter(trainable, paths, last_layers=1, config_key="stage.trainable"))
    ids = jax.random.randint(jax.random.key(1), (4, 9), 0, 97)
    mask = jnp.array([[1] * 9, [1] * 5 + [0] * 4, [1] * 9, [1] * 2 + [0] * 7])
    batch = {"input_ids": ids, "attention_mask": mask,
             "teacher": jax.random.normal(jax.random.key(2), (4, TEACHER_DIM))}
    loss_config = losses.LossConfig(main_head=f"dense_{TEACHER_DIM}")
    loss_fn = lambda params: step.compute_loss(params, frozen, batch, graphdef=graphdef, loss_config=loss_config)[0]
    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(trainable_state)
    # One whole optimizer step too: the jitted train step is what crashed.
    tx = optax.adam(1e-3)
    jax.jit(lambda t, f, o, b: step.train_step(t, f, o, b, graphdef=graphdef, optimizer=tx,
                                               loss_config=loss_config))(trainable_state, frozen,
                                                                         tx.init(trainable_state), batch)
    return float(loss), {path: np.asarray(value) for path, value in nnx.to_flat_state(grads)}


# The fast lane keeps one case (frozen encoder layers under remat: what failed to trace); the rest take 10–25 s each.
@pytest.mark.parametrize("scan, trainable, remat", [
    (False, "heads", True),
    pytest.param(False, "heads+last_layers", True, marks=pytest.mark.slow),
    pytest.param(False, "all", True, marks=pytest.mark.slow),
    pytest.param(True, "heads", True, marks=pytest.mark.slow),
    pytest.param(True, "all", True, marks=pytest.mark.slow),
    # a policy: the matmul outputs stored, the rest recomputed
    pytest.param(False, "heads+last_layers", "dots", marks=pytest.mark.slow),
])
def test_remat_with_frozen_parameters_traces_and_keeps_loss_and_gradients(tiny_qwen2_folder, scan, trainable, remat):
    plain_loss, plain_grads = loss_and_grads(tiny_qwen2_folder, remat=False, scan=scan, trainable=trainable)
    remat_loss, remat_grads = loss_and_grads(tiny_qwen2_folder, remat=remat, scan=scan, trainable=trainable)
    assert remat_loss == pytest.approx(plain_loss, rel=1e-6)
    assert remat_grads.keys() == plain_grads.keys()
    # Recomputed activations fuse differently: fp32 rounding, scaled to each gradient's size.
    for path, grad in plain_grads.items():
        np.testing.assert_allclose(remat_grads[path], grad, rtol=1e-4, atol=1e-5 * np.abs(grad).max(),
                                   err_msg=str(path))


@pytest.mark.parametrize("remat", ["everything", "Dots", 1, None])
def test_an_unknown_remat_is_refused_naming_the_choices(tiny_qwen2_folder, remat):
    with pytest.raises(ValueError, match=r"option remat=.*use True .*False .*'dots'"):
        Student.from_pretrained(tiny_qwen2_folder, heads={"teacher_dim": TEACHER_DIM, "reduction_dims": []},
                                text_options={"remat": remat}, rngs=nnx.Rngs(0))
