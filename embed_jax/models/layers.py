"""Building blocks shared by the text encoders: parameters with logical axis names, activations, layer stacks.

Logical axis names. Every parameter carries its logical axes as NNX variable metadata, e.g. a query kernel is
('embed', 'heads'). Flax 0.12 spells this metadata `out_sharding` (`sharding_names` is its deprecated alias and is
rewritten to `out_sharding` by `nnx.Variable`); `nnx.get_partition_spec(state)` reads it, and a rules table maps the
logical names to mesh axes (embed_jax/train/sharding.py).

Eager sharding is OFF for these parameters (`eager_sharding=False` in each variable's metadata). Flax 0.12.8 turns
eager sharding on by default, and an eagerly sharded `nnx.Param` needs a mesh at construction time; our modules must
build without one (tests, `nnx.eval_shape` before loading weights, CPU inference). Sharded placement happens later,
under `jax.jit` with out_shardings computed from the logical names. Setting it per variable, instead of wrapping
construction in `nnx.use_eager_sharding(False)`, keeps the result independent of whatever global flag a caller set.

Layer stacks. With `scan=True` the N identical layers are one module whose parameters have a leading 'layers' axis
(built with `nnx.vmap`, run with `nnx.scan`): XLA compiles one layer instead of N, which matters for deep models
(stella has 28). With `scan=False` they are an `nnx.List` named like Hugging Face's (`layer.0`, `layer.1`, …). Both
load the same Hugging Face weights (embed_jax/models/hf_import.py stacks per-layer tensors) and give the same
numbers (tests/models/test_bert.py, test_qwen2.py).

Activation layout. Parameters are placed by their logical axes at the jit boundary; activations are not arguments, so
XLA's sharding propagation decides them, and left alone it carries the weights' `embed` split (FSDP) into the
residual stream: every chip then holds the whole global batch and every layer all-gathers its input (measured on
compiled TPU programs: docs/launch.md, "The plan"). `constrain(x, names)` pins an activation to its logical axes
(the batch over the data-parallel devices) where a training step asks for it: the step sets the resolver of logical
names to shardings (`activation_sharding`, embed_jax/train/sharding.py builds it from the mesh) while it is traced;
everywhere else (eager calls, tests, export) `constrain` returns its input unchanged.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

# Axis name given to the stacked-layer dimension of scanned parameters.
LAYERS_AXIS = "layers"


# (logical names, shape) → a sharding, set while a sharded step is traced (see the module docstring).
ActivationResolver = Callable[[tuple, tuple], Any]
_ACTIVATION_RESOLVER: contextvars.ContextVar[ActivationResolver | None] = contextvars.ContextVar(
    "activation_resolver", default=None)

# The logical axes of the activations pinned: the residual stream (B, L, hidden), pooled vectors and heads (B, dim).
HIDDEN_AXES = ("batch", None, None)
VECTOR_AXES = ("batch", None)


@contextlib.contextmanager
def activation_sharding(resolve: ActivationResolver | None) -> Iterator[None]:
    """Within the block, `constrain` pins activations with `resolve`; None turns pinning off."""
    token = _ACTIVATION_RESOLVER.set(resolve)
    try:
        yield
    finally:
        _ACTIVATION_RESOLVER.reset(token)


def constrain(x: jax.Array, names: tuple) -> jax.Array:
    """`x` pinned to the sharding its logical axes `names` resolve to, or `x` itself when no resolver is set."""
    resolve = _ACTIVATION_RESOLVER.get()
    if resolve is None:
        return x
    return jax.lax.with_sharding_constraint(x, resolve(tuple(names), tuple(x.shape)))


def axes(*names: str | None) -> dict[str, Any]:
    """Variable metadata naming a parameter's logical axes, with eager sharding off (see module docstring)."""
    return {"out_sharding": tuple(names), "eager_sharding": False}


class Dense(nnx.Linear):
    """`nnx.Linear` (same parameters, paths and metadata) whose matmul runs on 2-D rows: the leading axes are
    flattened to one around the dot and restored after.

    Why: on CPU, XLA's weight gradient of a 3-D `(batch, length, in)` input contracts two axes at once, lays one
    operand out transposed and runs at about half the speed of the same matmul on `(batch·length, in)` rows; flat
    rows give gradients identical to the last bit and a 1.12× faster train step (docs/training.md, train-step speed).
    """

    def __call__(self, inputs: jax.Array, out_sharding: Any = None) -> jax.Array:
        if inputs.ndim <= 2 or out_sharding is not None:
            return super().__call__(inputs, out_sharding)
        rows = inputs.reshape(-1, inputs.shape[-1])
        return super().__call__(rows).reshape(*inputs.shape[:-1], self.out_features)


def dense(
    in_features: int,
    out_features: int,
    *,
    kernel_axes: tuple[str | None, str | None],
    use_bias: bool = True,
    dtype: Any,
    param_dtype: Any,
    rngs: nnx.Rngs,
    init_std: float = 0.02,
) -> Dense:
    """A `Dense` (an `nnx.Linear` on 2-D rows) whose kernel (in, out) and bias (out,) carry logical axis names.

    init_std: Hugging Face's `initializer_range` (0.02 for BERT/GPT-2/Qwen2): freshly built students start like theirs.
    """
    return Dense(
        in_features,
        out_features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=jax.nn.initializers.normal(init_std),
        kernel_metadata=axes(*kernel_axes),
        bias_metadata=axes(kernel_axes[1]),
        rngs=rngs,
    )


def embedding(
    num_embeddings: int,
    features: int,
    *,
    table_axes: tuple[str | None, str | None],
    dtype: Any,
    param_dtype: Any,
    rngs: nnx.Rngs,
    init_std: float = 0.02,
) -> nnx.Embed:
    """A `nnx.Embed` (table of shape (num_embeddings, features), as in PyTorch) with logical axis names."""
    return nnx.Embed(
        num_embeddings,
        features,
        dtype=dtype,
        param_dtype=param_dtype,
        embedding_init=jax.nn.initializers.normal(init_std),
        embedding_metadata=axes(*table_axes),
        rngs=rngs,
    )


def layer_norm(features: int, *, epsilon: float, dtype: Any, param_dtype: Any, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """LayerNorm as PyTorch computes it: variance as mean((x - mean)²), not flax's faster E[x²] − E[x]², which
    cancels catastrophically when |mean| ≫ std."""
    return nnx.LayerNorm(
        features,
        epsilon=epsilon,
        dtype=dtype,
        param_dtype=param_dtype,
        use_fast_variance=False,
        scale_metadata=axes("embed"),
        bias_metadata=axes("embed"),
        rngs=rngs,
    )


def rms_norm(features: int, *, epsilon: float, dtype: Any, param_dtype: Any, rngs: nnx.Rngs) -> nnx.RMSNorm:
    """RMSNorm (Qwen2): statistics in fp32 whatever the compute dtype (flax reduces in fp32, as Hugging Face does)."""
    return nnx.RMSNorm(
        features,
        epsilon=epsilon,
        dtype=dtype,
        param_dtype=param_dtype,
        use_fast_variance=False,
        scale_metadata=axes("embed"),
        rngs=rngs,
    )


# Hugging Face `hidden_act` / `activation_function` names → JAX functions with the same numerics.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_fast": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


def activation(name: str, *, config_key: str) -> Callable[[jax.Array], jax.Array]:
    """The activation a config names, or a ValueError naming the key and the supported values."""
    if name not in ACTIVATIONS:
        raise ValueError(f"config.json {config_key}={name!r} is not supported; use one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def stacked(make_layer: Callable[[nnx.Rngs], nnx.Module], num_layers: int, rngs: nnx.Rngs) -> nnx.Module:
    """`num_layers` copies of a layer as ONE module whose parameters have a leading 'layers' axis (for `nnx.scan`)."""

    @nnx.split_rngs(splits=num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: LAYERS_AXIS})
    def build(layer_rngs: nnx.Rngs) -> nnx.Module:
        return make_layer(layer_rngs)

    return build(rngs)


def make_layers(
    make_layer: Callable[[nnx.Rngs], nnx.Module], num_layers: int, rngs: nnx.Rngs, *, scan: bool
) -> nnx.Module | nnx.List:
    """The encoder's layers: stacked for scanning, or a list indexed like Hugging Face's `layer.{i}`."""
    if scan:
        return stacked(make_layer, num_layers, rngs)
    return nnx.List([make_layer(rngs) for _ in range(num_layers)])


def run_layers(
    layers: nnx.Module | Sequence[nnx.Module],
    hidden: jax.Array,
    *layer_args: Any,
    scan: bool,
    remat: bool,
) -> jax.Array:
    """hidden → layer_0 → … → layer_{N-1}; each layer is called as `layer(hidden, *layer_args)`.

    scan:  `layers` is one stacked module (`stacked`), run by `jax.lax.scan` over its leading 'layers' axis.
    remat: recompute each layer's activations in the backward pass instead of storing them (memory for FLOPs).

    Each layer runs as a pure function of its own state: split into (graphdef, state) here and merged again inside
    the traced body, so nothing of the outer module is read or written from an inner trace. Lifted NNX transforms
    (`nnx.remat`, `nnx.scan`) instead take the module across the trace boundary, which fails ("Cannot mutate Param
    from a different trace level") whenever the train step differentiates only part of the parameters: the frozen
    layers then arrive as values of the outer trace (tests/train/test_shipped_configs.py drives every stage).
    """
    if scan:
        run_one = layer_function(nnx.graphdef(layers), remat=remat)
        state = nnx.state(layers)
        hidden, _ = jax.lax.scan(lambda x, layer_state: (run_one(layer_state, x, layer_args), None), hidden, state)
        return hidden
    for layer in layers:
        hidden = layer_function(nnx.graphdef(layer), remat=remat)(nnx.state(layer), hidden, layer_args)
    return hidden


# text_options.remat: False stores every activation for the backward pass; True stores each layer's input only and
# recomputes the rest; a policy name stores what the policy saves. "dots" keeps the matmul outputs (recomputing only
# the cheap elementwise work: norms, activations, softmax), more memory than True for less recompute.
REMAT_POLICIES = {"dots": jax.checkpoint_policies.dots_saveable}


def check_remat(remat: Any) -> None:
    if remat is not True and remat is not False and remat not in REMAT_POLICIES:
        raise ValueError(f"option remat={remat!r}: use True (recompute each layer from its input), False (store "
                         f"every activation), or a policy: {', '.join(repr(name) for name in REMAT_POLICIES)} (store "
                         "the matmul outputs, recompute the rest)")


def layer_function(graphdef: nnx.GraphDef, *, remat: bool | str
                   ) -> Callable[[nnx.State, jax.Array, tuple], jax.Array]:
    """(layer state, hidden, layer args) → the layer's output, as a pure function; under `jax.checkpoint` if remat
    (with the named policy of REMAT_POLICIES, if one is named)."""
    check_remat(remat)

    def run(state: nnx.State, hidden: jax.Array, layer_args: tuple) -> jax.Array:
        # Every layer's input (the first one's is the embedding output) split over the batch: see "Activation layout".
        return nnx.merge(graphdef, state)(constrain(hidden, HIDDEN_AXES), *layer_args)

    if remat is False:
        return run
    return jax.checkpoint(run, policy=REMAT_POLICIES.get(remat) if isinstance(remat, str) else None)


def fit_to_position_table(
    length: int, max_length: int, *, truncate: bool, arrays: tuple[jax.Array | None, ...]
) -> tuple[jax.Array | None, ...]:
    """The inputs unchanged if `length` ≤ `max_length`; cut to `max_length` tokens if `truncate`; else a ValueError.

    Shapes are static under jit, so this check costs nothing at run time.
    """
    if length <= max_length:
        return arrays
    if not truncate:
        raise ValueError(
            f"input length {length} exceeds this model's position table ({max_length} tokens, from config.json "
            f"max_position_embeddings); tokenize with max_length={max_length}, or build the model with "
            "truncate_long_inputs=True to cut longer inputs"
        )
    return tuple(None if array is None else array[:, :max_length] for array in arrays)
