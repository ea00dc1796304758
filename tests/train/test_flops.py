"""The analytic step FLOPs agree with what XLA counts for the compiled step."""
import jax
import numpy as np
import pytest
from flax import nnx

from embed_jax import losses
from embed_jax.models.student import Student
from embed_jax.train import flops, optimizer, step
from embed_jax.train.trainable import split_trainable, trainable_filter

# Slow lane only (docs/testing.md, "Fast lane"): compiles, exports or trains whole models.
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("trainable", ["all", "heads"])
def test_analytic_flops_match_xla_cost_analysis(tiny_student, trainable):
    student = Student.from_pretrained(tiny_student, heads={"teacher_dim": 48, "reduction_dims": [16]})
    paths = [path for path, _ in nnx.to_flat_state(nnx.state(student, nnx.Param))]
    graphdef, params, frozen = split_trainable(student, trainable_filter(trainable, paths))
    tx, _ = optimizer.make_optimizer({}, learning_rate=1e-3, total_steps=10)
    batch, length = 16, 32
    data = {"input_ids": np.ones((batch, length), np.int32), "attention_mask": np.ones((batch, length), np.int32),
            "teacher": np.ones((batch, 48), np.float32) / np.sqrt(48)}
    train_step = step.make_train_step(graphdef=graphdef, optimizer=tx,
                                      loss_config=losses.LossConfig(main_head="dense_48"), trainable_sharding=None,
                                      frozen_sharding=None, opt_state_sharding=None, batch_sharding=None)
    compiled = train_step.lower(params, frozen, tx.init(params), data).compile()
    counted = compiled.cost_analysis()["flops"]
    shape = flops.encoder_shape(student)
    assert shape.num_layers == 4 and shape.attention_width == 32
    # Per layer: q, k, v, o (32×32) + up (32×64) + down (64×32) = 8,192 matmul parameters.
    assert shape.matmul_params_per_layer == 8192
    analytic = flops.train_step_flops(shape, batch, length, (48, 16), trainable_layers=4 if trainable == "all" else 0)
    # XLA also counts element-wise work (softmax, layer norms, Adam): at this tiny width that is a large share, so
    # the bound is loose here; the matmul count is what dominates at real widths.
    assert analytic <= counted <= 2.0 * analytic
