"""layers.dense: an nnx.Linear on 2-D rows, with the same parameters, values and gradients as nnx.Linear."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from embed_jax.models import layers


def dense_and_linear():
    dense = layers.dense(6, 5, kernel_axes=("embed", "mlp"), dtype=jnp.float32, param_dtype=jnp.float32,
                         rngs=nnx.Rngs(0))
    linear = nnx.Linear(6, 5, rngs=nnx.Rngs(1))
    nnx.update(linear, nnx.state(dense))
    return dense, linear


def test_dense_keeps_nnx_linear_parameter_paths_and_axis_names():
    dense, linear = dense_and_linear()
    assert isinstance(dense, nnx.Linear)
    assert [path for path, _ in nnx.to_flat_state(nnx.state(dense))] == [("bias",), ("kernel",)]
    assert [path for path, _ in nnx.to_flat_state(nnx.state(linear))] == [("bias",), ("kernel",)]
    assert dense.kernel.get_metadata()["out_sharding"] == ("embed", "mlp")
    assert dense.bias.get_metadata()["out_sharding"] == ("mlp",)


def test_dense_on_3d_and_1d_inputs_matches_nnx_linear_values_and_gradients():
    dense, linear = dense_and_linear()
    inputs = jnp.asarray(np.random.default_rng(0).standard_normal((3, 4, 6)).astype(np.float32))
    for x in (inputs, inputs[0], inputs[0, 0]):
        np.testing.assert_allclose(np.asarray(dense(x)), np.asarray(linear(x)), rtol=1e-6, atol=1e-6)
        assert dense(x).shape == x.shape[:-1] + (5,)

    def loss(model, x):
        return jnp.sum(jnp.sin(model(x)))

    dense_grads = jax.tree.leaves(nnx.grad(loss)(dense, inputs))
    linear_grads = jax.tree.leaves(nnx.grad(loss)(linear, inputs))
    for ours, theirs in zip(dense_grads, linear_grads):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-5, atol=1e-6)


def test_dense_keeps_empty_leading_axes():
    dense, _ = dense_and_linear()
    assert dense(jnp.zeros((0, 4, 6))).shape == (0, 4, 5)
