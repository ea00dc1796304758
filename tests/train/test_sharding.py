"""Mesh, logical-axis rules and batch sharding on 8 simulated CPU devices: the sharded train step and a real tiny BERT
give the numbers of one device."""
import logging

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import torch
import transformers
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from embed_jax import losses
from embed_jax.models.hf_import import load_text_encoder
from embed_jax.train import optimizer, sharding

MESH_SHAPES = [(8, 1, 1), (2, 2, 2), (1, 4, 2), (1, 1, 8)]


def axes(*names):
    return {"out_sharding": names, "eager_sharding": False}


class TinyEncoder(nnx.Module):
    """Embedding → MLP → LayerNorm → head, each parameter named with the logical axes the real encoders use."""

    def __init__(self, rngs: nnx.Rngs, vocab: int = 32, width: int = 16, hidden: int = 32, out: int = 8):
        self.embed = nnx.Embed(vocab, width, rngs=rngs, embedding_metadata=axes("vocab", "embed"))
        self.up = nnx.Linear(width, hidden, rngs=rngs, kernel_metadata=axes("embed", "mlp"), bias_metadata=axes("mlp"))
        self.down = nnx.Linear(hidden, width, rngs=rngs, kernel_metadata=axes("mlp", "embed"),
                               bias_metadata=axes("embed"))
        self.norm = nnx.LayerNorm(width, rngs=rngs, scale_metadata=axes("embed"), bias_metadata=axes("embed"))
        self.head = nnx.Linear(width, out, rngs=rngs, kernel_metadata=axes("embed", "mlp"))

    def __call__(self, ids, mask):
        hidden = self.embed(ids)
        hidden = self.norm(hidden + self.down(jax.nn.gelu(self.up(hidden))))
        pooled = jnp.sum(hidden * mask[..., None], 1) / jnp.sum(mask, 1, keepdims=True)
        return self.head(pooled)


def mesh_of(shape):
    return sharding.make_mesh(dict(zip(sharding.MESH_AXES, shape)))


def batch(global_size=16, length=6, seed=0):
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(global_size, 8)).astype(np.float32)
    mask = (np.arange(length)[None] < rng.integers(2, length + 1, size=(global_size, 1))).astype(np.int32)
    return {"ids": rng.integers(0, 32, size=(global_size, length)).astype(np.int32), "mask": mask, "teacher": teacher}


def make_step(graphdef, tx):
    def step(params, opt_state, batch):
        def loss_fn(params):
            vectors = nnx.merge(graphdef, params)(batch["ids"], batch["mask"])
            return losses.distillation_loss({"fc1": vectors}, batch["teacher"])[0]

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


# ---------------------------------------------------------------------------------------------------------------
# Mesh


@pytest.mark.parametrize(
    "config, expected",
    [({"data": -1}, (8, 1, 1)), ({"data": 2, "fsdp": 2, "tensor": 2}, (2, 2, 2)),
     ({"data": 1, "fsdp": -1, "tensor": 2}, (1, 4, 2)), ({"data": -1, "fsdp": 1, "tensor": 8}, (1, 1, 8))],
)
def test_make_mesh_sizes_and_axis_types(config, expected):
    mesh = sharding.make_mesh(ml_collections.ConfigDict(config))
    assert tuple(mesh.shape[axis] for axis in sharding.MESH_AXES) == expected
    assert mesh.axis_types == (AxisType.Auto,) * 3
    assert sorted(device.id for device in mesh.devices.flat) == list(range(8))


@pytest.mark.parametrize(
    "config, message",
    [
        ({"data": -1, "fsdp": -1}, "at most one"),
        ({"data": 0}, "positive integer"),
        ({"data": 3, "fsdp": 1, "tensor": 1}, "needs 3 devices but 8 are available"),
        ({"data": -1, "tensor": 3}, "cannot fill 8 devices"),
        ({"data": -1, "model": 2}, r"unknown config key\(s\) \['mesh.model'\]"),
    ],
)
def test_make_mesh_bad_config(config, message):
    with pytest.raises(ValueError, match=message):
        sharding.make_mesh(config)


def test_make_mesh_on_a_subset_of_devices():
    mesh = sharding.make_mesh({"data": -1, "tensor": 2}, devices=jax.devices()[:4])
    assert dict(mesh.shape) == {"data": 2, "fsdp": 1, "tensor": 2}


# ---------------------------------------------------------------------------------------------------------------
# Rules


def test_logical_rules_give_expected_specs():
    mesh = mesh_of((2, 2, 2))
    spec = lambda names, shape: sharding.logical_to_partition_spec(names, shape, mesh)  # noqa: E731
    assert spec(("embed", "mlp"), (16, 32)) == (PartitionSpec("fsdp", "tensor"), [])
    assert spec(("mlp", "embed"), (32, 16)) == (PartitionSpec("tensor", "fsdp"), [])
    assert spec(("layers", "embed", "heads"), (3, 16, 32)) == (PartitionSpec(None, "fsdp", "tensor"), [])
    assert spec(("batch", "length"), (8, 5)) == (PartitionSpec(("data", "fsdp"), None), [])
    assert spec((None, "embed"), (7, 16)) == (PartitionSpec(None, "fsdp"), [])
    # A mesh axis splits one dimension at most: the second 'mlp' stays whole.
    assert spec(("mlp", "mlp"), (8, 8)) == (PartitionSpec("tensor", None), [])
    # Not divisible: BERT-like vocab 99 over tensor = 2 stays whole, with a note saying so.
    got, notes = spec(("vocab", "embed"), (99, 16))
    assert got == PartitionSpec(None, "fsdp") and "'vocab' (99) not split over 'tensor' (2)" in notes[0]
    # batch 6 over data=2 × fsdp=2: data divides it, fsdp then does not.
    assert spec(("batch",), (6,))[0] == PartitionSpec("data")


@pytest.mark.parametrize(
    "names, shape, message",
    [(("embed", "hidden"), (4, 4), "logical axis 'hidden' has no sharding rule"),
     (("embed",), (4, 4), r"logical axes \('embed',\) do not match its shape \(4, 4\)")],
)
def test_logical_rules_bad_names(names, shape, message):
    with pytest.raises(ValueError, match=message):
        sharding.logical_to_partition_spec(names, shape, mesh_of((2, 2, 2)), where="encoder/kernel")


def test_state_sharding_names_the_parameter_with_an_unknown_axis():
    class Odd(nnx.Module):
        def __init__(self, rngs):
            self.proj = nnx.Linear(4, 4, rngs=rngs, kernel_metadata=axes("embed", "experts"))

    with pytest.raises(ValueError, match="proj/kernel: logical axis 'experts' has no sharding rule"):
        sharding.state_sharding(nnx.state(Odd(nnx.Rngs(0)), nnx.Param), mesh_of((2, 2, 2)))


# ---------------------------------------------------------------------------------------------------------------
# Batches


def test_check_batch_divisible():
    mesh = mesh_of((2, 2, 2))  # data-parallel size 4
    assert sharding.data_parallel_size(mesh) == 4
    assert sharding.check_batch_divisible(16, mesh) == 16  # one process loads it all
    with pytest.raises(ValueError, match=r"data.global_batch_size=10 is not divisible by the data-parallel size 4 "
                                         r"\(mesh data=2 x fsdp=2\); use a multiple of 4, e.g. 8 or 12"):
        sharding.check_batch_divisible(10, mesh)
    with pytest.raises(ValueError, match="stage1.batch=3 is not divisible"):
        sharding.check_batch_divisible(3, mesh, key="stage1.batch")


@pytest.mark.parametrize("shape", MESH_SHAPES)
def test_batch_sharding_splits_rows_over_data_axes(shape):
    mesh = mesh_of(shape)
    placed = jax.device_put(batch()["ids"], sharding.batch_sharding(mesh))
    parallel = shape[0] * shape[1]
    assert placed.sharding.shard_shape(placed.shape) == (16 // parallel, 6)
    assert len(placed.sharding.device_set) == 8  # tensor devices hold replicas


# ---------------------------------------------------------------------------------------------------------------
# The sharded train step equals the unsharded one


@pytest.fixture(scope="module")
def reference_step():
    """Two optimizer steps on one device: (params after, losses)."""
    model = TinyEncoder(nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    tx, _ = optimizer.make_optimizer({"warmup_fraction": 0.0}, learning_rate=1e-2, total_steps=10)
    step = jax.jit(make_step(graphdef, tx))
    opt_state = tx.init(params)
    step_losses = []
    for seed in range(2):
        params, opt_state, loss = step(params, opt_state, batch(seed=seed))
        step_losses.append(float(loss))
    return params, step_losses


# The fast lane keeps 2×2×2, which splits every axis; the other meshes run in the whole suite (docs/testing.md).
@pytest.mark.parametrize("shape", [pytest.param(shape, marks=[] if shape == (2, 2, 2) else pytest.mark.slow)
                                   for shape in MESH_SHAPES])
def test_sharded_train_step_equals_one_device(shape, reference_step):
    mesh = mesh_of(shape)
    model = TinyEncoder(nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    tx, _ = optimizer.make_optimizer({"warmup_fraction": 0.0}, learning_rate=1e-2, total_steps=10)
    param_sharding = sharding.state_sharding(params, mesh)
    params = jax.device_put(params, param_sharding)
    opt_state = tx.init(params)
    opt_sharding = sharding.state_sharding(opt_state, mesh)
    opt_state = jax.device_put(opt_state, opt_sharding)
    batch_sharding = sharding.batch_sharding(mesh)
    step = jax.jit(
        make_step(graphdef, tx),
        in_shardings=(param_sharding, opt_sharding, batch_sharding),
        out_shardings=(param_sharding, opt_sharding, None),
        donate_argnums=(0, 1),
    )
    step_losses = []
    for seed in range(2):
        params, opt_state, loss = step(params, opt_state, jax.device_put(batch(seed=seed), batch_sharding))
        step_losses.append(float(loss))

    expected_params, expected_losses = reference_step
    np.testing.assert_allclose(step_losses, expected_losses, rtol=2e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6), params, expected_params)
    # The parameters really are split as the rules say, and Adam's moments follow them.
    data, fsdp, tensor = shape
    pieces = sharding.shard_shapes(params, param_sharding)
    assert pieces["up/kernel"] == (16 // fsdp, 32 // tensor)
    assert pieces["embed/embedding"] == (32 // tensor, 16 // fsdp)
    mu = opt_state[1][0].mu
    assert mu["up"]["kernel"].sharding.spec == params["up"]["kernel"].sharding.spec


def test_optimizer_state_initialised_under_jit_is_split_like_the_parameters():
    """The recipe for a sharded optimizer state: out_shardings from `state_sharding` of its abstract shape. Without
    them, jax 0.10.2's jit leaves Adam's zero moments (which depend on no input) on a single device."""
    mesh = mesh_of((1, 4, 2))
    _, params = nnx.split(TinyEncoder(nnx.Rngs(0)), nnx.Param)
    tx, _ = optimizer.make_optimizer({}, learning_rate=1e-3, total_steps=10)
    param_sharding = sharding.state_sharding(params, mesh)
    params = jax.device_put(params, param_sharding)
    opt_sharding = sharding.state_sharding(jax.eval_shape(tx.init, params), mesh)
    opt_state = jax.jit(tx.init, in_shardings=(param_sharding,), out_shardings=opt_sharding)(params)
    adam = opt_state[1][0]
    assert adam.mu["up"]["kernel"].sharding.spec == PartitionSpec("fsdp", "tensor")
    assert adam.nu["embed"]["embedding"].sharding.shard_shape((32, 16)) == (32 // 2, 16 // 4)
    assert adam.count.sharding.spec == PartitionSpec() and len(adam.count.sharding.device_set) == 8


# ---------------------------------------------------------------------------------------------------------------
# A real (tiny, random) BERT from a Hugging Face folder


@pytest.fixture(scope="module")
def tiny_bert_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64)
    transformers.BertModel(config).eval().save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_real_tiny_bert_sharded_on_2x2x2_equals_one_device(tiny_bert_folder, caplog):
    module, _ = load_text_encoder(tiny_bert_folder)
    graphdef, params = nnx.split(module, nnx.Param)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 99, size=(8, 12)).astype(np.int32)
    mask = (np.arange(12)[None] < rng.integers(3, 13, size=(8, 1))).astype(np.int32)

    def encode(params, ids, mask):
        return nnx.merge(graphdef, params)(ids, mask)

    expected = jax.jit(encode)(params, ids, mask)
    mesh = mesh_of((2, 2, 2))
    with caplog.at_level(logging.WARNING, logger=sharding.__name__):
        param_sharding = sharding.state_sharding(params, mesh)
    assert "'vocab' (99) not split over 'tensor' (2)" in caplog.text  # 99 is odd: the table stays whole
    placed = jax.device_put(params, param_sharding)
    batch_sharding = sharding.batch_sharding(mesh)
    got = jax.jit(encode, in_shardings=(param_sharding, batch_sharding, batch_sharding))(placed, ids, mask)
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=0)

    pieces = sharding.shard_shapes(placed, param_sharding)
    split = {path: shape for path, shape in pieces.items() if shape != np.shape(_leaf(placed, path))}
    assert len(split) > len(pieces) // 2  # most parameters really are split
    intermediate = next(path for path in pieces if path.endswith("intermediate/dense/kernel"))
    assert pieces[intermediate] == (32 // 2, 64 // 2)  # ('embed', 'mlp') over fsdp × tensor


def _leaf(state, path):
    flat = {optimizer.path_name(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(state)[0]}
    return flat[path]
