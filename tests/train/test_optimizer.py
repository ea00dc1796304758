"""The optimizer against what the public code runs (torch AdamW + HF cosine schedule + clip_grad_norm_), the
weight-decay mask, and "frozen parameters get no optimizer state"."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import torch
from flax import nnx
from transformers import get_cosine_schedule_with_warmup

from embed_jax.train import optimizer
from parity import assert_close


def axes(*names):
    return {"out_sharding": names, "eager_sharding": False}


class TinyStudent(nnx.Module):
    """Encoder-like parameters of every kind the decay mask must tell apart, plus a head."""

    def __init__(self, rngs: nnx.Rngs):
        self.embed = nnx.Embed(11, 8, rngs=rngs, embedding_metadata=axes("vocab", "embed"))
        self.layers = nnx.List(
            [nnx.Linear(8, 8, rngs=rngs, kernel_metadata=axes("embed", "mlp"), bias_metadata=axes("mlp"))
             for _ in range(2)]
        )
        self.final_layernorm = nnx.LayerNorm(8, rngs=rngs, scale_metadata=axes("embed"), bias_metadata=axes("embed"))
        self.heads = nnx.Linear(8, 6, rngs=rngs, kernel_metadata=axes("embed", "mlp"), bias_metadata=axes("mlp"))


def flat(tree):
    return {optimizer.path_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.parametrize("total_steps, warmup_fraction", [(100, 0.05), (37, 0.1), (10, 0.0), (4, 0.05)])
def test_schedule_matches_hugging_face(total_steps, warmup_fraction):
    schedule = optimizer.learning_rate_schedule(3e-4, total_steps, warmup_fraction=warmup_fraction)
    param = torch.nn.Parameter(torch.zeros(1))
    torch_optimizer = torch.optim.AdamW([param], lr=3e-4)
    hf = get_cosine_schedule_with_warmup(
        torch_optimizer, math.ceil(total_steps * warmup_fraction), total_steps  # HF Trainer's warm-up rounding
    )
    expected = [3e-4 * hf.lr_lambdas[0](step) for step in range(total_steps + 1)]
    got = [float(schedule(step)) for step in range(total_steps + 1)]
    assert_close(got, expected, rtol=1e-5)


def test_updates_match_torch_adamw_with_clipping_and_decay_groups():
    """Ten steps on the same gradients: torch with the public code's param groups (no decay on bias/LayerNorm)."""
    model = TinyStudent(nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    mask = flat(optimizer.decay_mask(params))
    config = {"weight_decay": 0.1, "warmup_fraction": 0.2, "clip_norm": 1.0}  # large decay: its effect is visible
    tx, _ = optimizer.make_optimizer(config, learning_rate=1e-2, total_steps=10)
    opt_state = tx.init(params)

    torch_params = {name: torch.nn.Parameter(torch.tensor(np.asarray(v))) for name, v in flat(params).items()}
    groups = [
        {"params": [p for n, p in torch_params.items() if mask[n]], "weight_decay": 0.1},
        {"params": [p for n, p in torch_params.items() if not mask[n]], "weight_decay": 0.0},
    ]
    torch_optimizer = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
    scheduler = get_cosine_schedule_with_warmup(torch_optimizer, 2, 10)

    update = jax.jit(tx.update)
    rng = np.random.default_rng(0)
    clipped_steps = 0
    for _ in range(10):
        # Gradients of random size: some steps exceed norm 1 and get clipped, others do not.
        scale = rng.choice([0.05, 3.0])
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape) * scale, jnp.float32), params)
        for name, grad in flat(grads).items():
            torch_params[name].grad = torch.tensor(np.asarray(grad))
        norm = torch.nn.utils.clip_grad_norm_(list(torch_params.values()), 1.0)
        clipped_steps += float(norm) > 1.0
        torch_optimizer.step()
        scheduler.step()
        updates, opt_state = update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
    assert 0 < clipped_steps < 10
    for name, value in flat(params).items():
        # torch divides by (norm + 1e-6) when clipping, optax by norm: a 1e-6 relative difference per clipped step.
        np.testing.assert_allclose(np.asarray(value), torch_params[name].detach().numpy(), rtol=2e-5, atol=2e-6,
                                   err_msg=name)


def test_decay_mask_spares_biases_norms_and_vectors():
    params = nnx.state(TinyStudent(nnx.Rngs(0)), nnx.Param)
    mask = flat(optimizer.decay_mask(params))
    assert mask == {
        "embed/embedding": True,
        "final_layernorm/bias": False,
        "final_layernorm/scale": False,
        "heads/bias": False,
        "heads/kernel": True,
        "layers/0/bias": False,
        "layers/0/kernel": True,
        "layers/1/bias": False,
        "layers/1/kernel": True,
    }
    # The same answer on a plain dict of arrays (what nnx.Optimizer hands optax), and a 2-D norm stays undecayed.
    plain = {"encoder": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}, "rms_norm": {"weight": jnp.ones((2, 2))}}
    assert flat(optimizer.decay_mask(plain)) == {"encoder/kernel": True, "encoder/bias": False, "rms_norm/weight": False}


def test_frozen_parameters_get_no_optimizer_state():
    model = TinyStudent(nnx.Rngs(0))
    _, trainable, frozen = nnx.split(model, lambda path, v: isinstance(v, nnx.Param) and path[0] == "heads", ...)
    tx, _ = optimizer.make_optimizer({}, learning_rate=1e-3, total_steps=10)
    opt_state = tx.init(trainable)
    arrays = [leaf for leaf in jax.tree.leaves(opt_state) if leaf.ndim > 0]
    assert sum(leaf.size for leaf in arrays) == 2 * optimizer.count_parameters(trainable)  # Adam's mu and nu
    assert optimizer.count_parameters(trainable) == 8 * 6 + 6
    assert optimizer.count_parameters(frozen) > 4 * optimizer.count_parameters(trainable)  # none of it has state


@pytest.mark.slow
def test_nnx_optimizer_with_a_trainable_filter_holds_state_for_that_part_only():
    """The same guarantee through `nnx.Optimizer(wrt=filter)` (plain arrays reach optax there)."""
    model = TinyStudent(nnx.Rngs(0))
    heads_only = nnx.All(nnx.Param, nnx.PathContains("heads"))
    tx, _ = optimizer.make_optimizer({}, learning_rate=1e-3, total_steps=10)
    opt = nnx.Optimizer(model, tx, wrt=heads_only)
    heads_before = np.asarray(model.heads.kernel[...])
    encoder_before = np.asarray(model.layers[0].kernel[...])

    def loss(model):
        return jnp.sum(model.heads(model.layers[0](jnp.ones((2, 8)))) ** 2)

    for _ in range(3):
        grads = nnx.grad(loss, argnums=nnx.DiffState(0, heads_only))(model)
        opt.update(model, grads)
    state_sizes = [leaf.size for leaf in jax.tree.leaves(nnx.state(opt.opt_state)) if leaf.ndim > 0]
    assert sum(state_sizes) == 2 * (8 * 6 + 6)
    assert not np.allclose(model.heads.kernel[...], heads_before)
    np.testing.assert_array_equal(model.layers[0].kernel[...], encoder_before)


def test_accepts_the_config_section_of_the_training_config():
    section = ml_collections.ConfigDict({"weight_decay": 0.01, "warmup_fraction": 0.05, "clip_norm": 1.0,
                                         "b1": 0.9, "b2": 0.999})
    _, schedule = optimizer.make_optimizer(section, learning_rate=1e-4, total_steps=4000)
    assert float(schedule(200)) == pytest.approx(1e-4)  # end of the 5% warm-up
    assert float(schedule(4000)) == pytest.approx(0.0, abs=1e-12)


def test_clip_norm_zero_turns_clipping_off():
    """Two steps, the first gradient far above norm 1: only the clipped optimizer departs from plain AdamW."""
    settings = {"warmup_fraction": 0.0, "weight_decay": 0.0}
    params = {"w": jnp.zeros((2, 2))}
    gradients = [{"w": jnp.full((2, 2), 100.0)}, {"w": jnp.full((2, 2), 0.1)}]

    def run(tx):
        state = tx.init(params)
        for grads in gradients:
            updates, state = tx.update(grads, state, params)
        return np.asarray(updates["w"])

    plain = run(optax.adamw(optax.cosine_decay_schedule(1.0, 100), weight_decay=0.0))
    unclipped, _ = optimizer.make_optimizer({**settings, "clip_norm": 0.0}, learning_rate=1.0, total_steps=100)
    clipped, _ = optimizer.make_optimizer({**settings, "clip_norm": 1.0}, learning_rate=1.0, total_steps=100)
    np.testing.assert_allclose(run(unclipped), plain, rtol=1e-6)
    assert np.abs(run(clipped) - plain).max() > 0.1


@pytest.mark.parametrize(
    "config, kwargs, message",
    [
        ({"weight_decey": 0.1}, {}, r"unknown optimizer config key\(s\) \['weight_decey'\]"),
        ({"weight_decay": -0.1}, {}, "'weight_decay' = -0.1 is out of range"),
        ({"warmup_fraction": 1.5}, {}, "'warmup_fraction' = 1.5 is out of range"),
        ({"b2": 1.0}, {}, "'b2' = 1.0 is out of range"),
        ({"clip_norm": float("inf")}, {}, "'clip_norm' = inf is out of range"),
        ({"no_decay_pattern": "bias|("}, {}, "'no_decay_pattern' is not a valid regex"),
    ],
)
def test_bad_config(config, kwargs, message):
    arguments = {"learning_rate": 1e-4, "total_steps": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        optimizer.make_optimizer(config, **arguments)


def test_head_learning_rate_is_adamw_at_that_rate_for_heads_only():
    rng = np.random.default_rng(0)
    params = {"heads": {"dense_8": {"kernel": jnp.asarray(rng.normal(size=(4, 8)), jnp.float32)}},
              "text_encoder": {"layer": {"kernel": jnp.asarray(rng.normal(size=(4, 4)), jnp.float32)}}}
    grads = [jax.tree.map(lambda leaf: jnp.asarray(rng.normal(size=leaf.shape), jnp.float32), params)
             for _ in range(3)]
    settings = {"clip_norm": 0.0, "warmup_fraction": 0.0}  # clipping couples the parts: off for this comparison

    def run(tx, tree, grad_trees):
        state = tx.init(tree)
        for grad in grad_trees:
            updates, state = tx.update(grad, state, tree)
            tree = optax.apply_updates(tree, updates)
        return tree

    both, _ = optimizer.make_optimizer(settings, learning_rate=1e-3, total_steps=10, head_learning_rate=2e-2)
    trained = run(both, params, grads)
    heads_alone, _ = optimizer.make_optimizer(settings, learning_rate=2e-2, total_steps=10)
    encoder_alone, _ = optimizer.make_optimizer(settings, learning_rate=1e-3, total_steps=10)
    expected_heads = run(heads_alone, params["heads"], [grad["heads"] for grad in grads])
    expected_encoder = run(encoder_alone, params["text_encoder"], [grad["text_encoder"] for grad in grads])
    np.testing.assert_allclose(trained["heads"]["dense_8"]["kernel"], expected_heads["dense_8"]["kernel"], rtol=1e-6)
    np.testing.assert_allclose(trained["text_encoder"]["layer"]["kernel"], expected_encoder["layer"]["kernel"],
                               rtol=1e-6)


def test_a_one_step_stage_runs_at_the_peak_rate():
    schedule = optimizer.learning_rate_schedule(3e-4, 1, warmup_fraction=0.05)
    assert float(schedule(0)) == pytest.approx(3e-4)
