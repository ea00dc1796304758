"""GPT-2 text encoder in Flax NNX: learned absolute positions, pre-LayerNorm blocks, causal attention by default
(option `causal=False` makes it bidirectional, the way stella turns a decoder into an encoder: docs/method.md §1).

Names follow Hugging Face's `GPT2Model` (wte, wpe, h.{i}.ln_1, h.{i}.attn.c_attn, …, ln_f). Hugging Face stores the
fused query/key/value projection as one Conv1D of shape (embed, 3·embed); here `c_attn` is a `LinearGeneral` with
kernel (embed, 3, embed) so that the per-head axis carries the 'heads' logical name and can be split over a tensor
mesh axis without mixing query, key and value (the table reshapes).

Positions are 0…L−1 for every row (Hugging Face's default without position_ids): pad on the right. No dropout.
Refused config settings: cross-attention, `scale_attn_by_inverse_layer_idx` (a per-layer scale).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from embed_jax.models import attention, layers
from embed_jax.models.config_utils import build_config


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """Architecture (from config.json, GPT-2's key names in `RENAMED`) and options of a GPT-2 encoder."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    max_position_embeddings: int
    intermediate_size: int | None = None  # None: 4 · hidden_size
    activation_function: str = "gelu_new"
    layer_norm_epsilon: float = 1e-5
    scale_attn_weights: bool = True
    initializer_range: float = 0.02
    # Options (not in config.json).
    causal: bool = True
    scan: bool = False
    remat: bool = False
    truncate_long_inputs: bool = False
    attention: str = "xla"  # embed_jax/models/attention.py IMPLEMENTATIONS

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def inner_size(self) -> int:
        return self.intermediate_size or 4 * self.hidden_size


OPTIONS = ("causal", "scan", "remat", "truncate_long_inputs", "attention")
ARCHITECTURE_KEYS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "max_position_embeddings",
    "intermediate_size", "activation_function", "layer_norm_epsilon", "scale_attn_weights", "initializer_range",
)
RENAMED = {
    "hidden_size": "n_embd", "num_hidden_layers": "n_layer", "num_attention_heads": "n_head",
    "max_position_embeddings": "n_positions", "intermediate_size": "n_inner",
}


def config_from_hf(hf_config: Mapping[str, Any], *, source: str = "config.json", **options: Any) -> GPT2Config:
    """GPT2Config from a config.json dict, refusing settings this encoder does not implement."""
    for key in ("add_cross_attention", "scale_attn_by_inverse_layer_idx"):
        if hf_config.get(key):
            raise ValueError(f"{source}: {key}=true is not supported by the GPT-2 encoder")
    config = build_config(GPT2Config, hf_config, ARCHITECTURE_KEYS, OPTIONS, options, source=source, renamed=RENAMED)
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(f"{source}: n_embd={config.hidden_size} is not a multiple of n_head={config.num_attention_heads}")
    layers.activation(config.activation_function, config_key=f"{source}: activation_function")
    attention.check_implementation(config.attention)
    return config


class GPT2Attention(nnx.Module):
    def __init__(self, config: GPT2Config, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.scale = 1.0 / config.head_dim**0.5 if config.scale_attn_weights else 1.0
        self.implementation, self.causal = config.attention, config.causal
        self.c_attn = nnx.LinearGeneral(
            config.hidden_size, (3, config.hidden_size),
            dtype=dtype, param_dtype=param_dtype,
            kernel_init=jax.nn.initializers.normal(config.initializer_range),
            kernel_metadata=layers.axes("embed", None, "heads"), bias_metadata=layers.axes(None, "heads"),
            rngs=rngs,
        )
        self.c_proj = layers.dense(
            config.hidden_size, config.hidden_size, kernel_axes=("heads", "embed"),
            dtype=dtype, param_dtype=param_dtype, rngs=rngs, init_std=config.initializer_range,
        )

    def __call__(self, hidden: jax.Array, mask: jax.Array) -> jax.Array:
        fused = self.c_attn(hidden)  # (B, L, 3, hidden)
        query, key, value = (
            attention.split_heads(fused[:, :, index], self.num_heads, self.head_dim) for index in range(3)
        )
        attended = attention.dot_product_attention(query, key, value, mask, implementation=self.implementation,
                                                  causal=self.causal, scale=self.scale)
        return self.c_proj(attention.merge_heads(attended))


class GPT2MLP(nnx.Module):
    def __init__(self, config: GPT2Config, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        kwargs = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs, init_std=config.initializer_range)
        self.c_fc = layers.dense(config.hidden_size, config.inner_size, kernel_axes=("embed", "mlp"), **kwargs)
        self.c_proj = layers.dense(config.inner_size, config.hidden_size, kernel_axes=("mlp", "embed"), **kwargs)
        self.activation = layers.activation(config.activation_function, config_key="activation_function")

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return self.c_proj(self.activation(self.c_fc(hidden)))


class GPT2Block(nnx.Module):
    """Pre-norm: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPT2Config, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        norm = dict(epsilon=config.layer_norm_epsilon, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.ln_1 = layers.layer_norm(config.hidden_size, **norm)
        self.attn = GPT2Attention(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.ln_2 = layers.layer_norm(config.hidden_size, **norm)
        self.mlp = GPT2MLP(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, hidden: jax.Array, mask: jax.Array) -> jax.Array:
        hidden = hidden + self.attn(self.ln_1(hidden), mask)
        return hidden + self.mlp(self.ln_2(hidden))


class GPT2Model(nnx.Module):
    """Last hidden states (B, L, hidden) of a GPT-2 encoder (after the final LayerNorm ln_f)."""

    def __init__(self, config: GPT2Config, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.hidden_size = config.hidden_size
        kwargs = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs, init_std=config.initializer_range)
        self.wte = layers.embedding(config.vocab_size, config.hidden_size, table_axes=("vocab", "embed"), **kwargs)
        self.wpe = layers.embedding(config.max_position_embeddings, config.hidden_size, table_axes=(None, "embed"), **kwargs)
        self.h = layers.make_layers(
            lambda layer_rngs: GPT2Block(config, dtype=dtype, param_dtype=param_dtype, rngs=layer_rngs),
            config.num_hidden_layers,
            rngs,
            scan=config.scan,
        )
        self.ln_f = layers.layer_norm(
            config.hidden_size, epsilon=config.layer_norm_epsilon, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def embed_tokens(self, input_ids: jax.Array) -> jax.Array:
        """The word-embedding lookup alone (no positions)."""
        return self.wte(input_ids)

    def __call__(
        self,
        input_ids: jax.Array | None = None,
        attention_mask: jax.Array | None = None,
        *,
        inputs_embeds: jax.Array | None = None,
    ) -> jax.Array:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        batch, length = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        input_ids, inputs_embeds, attention_mask = layers.fit_to_position_table(
            length, self.config.max_position_embeddings, truncate=self.config.truncate_long_inputs,
            arrays=(input_ids, inputs_embeds, attention_mask),
        )
        length = min(length, self.config.max_position_embeddings)
        if attention_mask is None:
            attention_mask = jnp.ones((batch, length), dtype=jnp.int32)
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        hidden = inputs_embeds + self.wpe(jnp.arange(length, dtype=jnp.int32))[None]
        mask = attention.attention_mask_for(attention_mask, causal=self.config.causal,
                                           implementation=self.config.attention)
        hidden = layers.run_layers(self.h, hidden, mask, scan=self.config.scan, remat=self.config.remat)
        return self.ln_f(hidden)


def from_hf_config(
    hf_config: Mapping[str, Any],
    *,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    rngs: nnx.Rngs,
    source: str = "config.json",
    **options: Any,
) -> GPT2Model:
    """A randomly initialised GPT2Model shaped like `hf_config` (weights come from embed_jax.models.hf_import)."""
    return GPT2Model(config_from_hf(hf_config, source=source, **options), dtype=dtype, param_dtype=param_dtype, rngs=rngs)
