"""Qwen2 text encoder in Flax NNX, causal or bidirectional (stella_en_1.5B_v5, the paper's student, runs Qwen2
bidirectionally: docs/method.md §1).

Names follow Hugging Face's `Qwen2Model` (embed_tokens, layers.{i}.self_attn.q_proj, …, norm). Pre-RMSNorm decoder
layers; rotary position embeddings (RoPE, "rotate half" layout) with θ from config.json; grouped-query attention with
any number of key/value heads dividing the query heads; biases on q/k/v only; SwiGLU feed-forward.

Positions are 0, 1, …, L−1 for every row, as Hugging Face numbers them when no position_ids are passed: batches are
expected right-padded (the padded tail then never influences the real tokens, causal or not, because masked keys are
never attended). Inputs longer than config.json's max_position_embeddings raise a ValueError (or are cut with
`truncate_long_inputs=True`), although RoPE itself has no table: the model was not trained beyond that length.
Only the "default" RoPE type and full attention in every layer are implemented; other settings are refused.
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
class Qwen2Config:
    """Architecture (from config.json) and options (from the caller) of a Qwen2 encoder."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    max_position_embeddings: int
    rope_theta: float
    head_dim: int
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    # Options (not in config.json).
    causal: bool = True
    scan: bool = False
    remat: bool = False
    truncate_long_inputs: bool = False
    attention: str = "xla"  # embed_jax/models/attention.py IMPLEMENTATIONS


OPTIONS = ("causal", "scan", "remat", "truncate_long_inputs", "attention")
ARCHITECTURE_KEYS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "max_position_embeddings", "hidden_act", "rms_norm_eps", "initializer_range",
)


def rope_theta_from_hf(hf_config: Mapping[str, Any], *, source: str) -> float:
    """RoPE base θ: transformers 5 writes `rope_parameters: {rope_type, rope_theta}`, older files `rope_theta` (and
    `rope_scaling`) at the top level. Only the unscaled ("default") RoPE is implemented."""
    parameters = hf_config.get("rope_parameters") or {}
    scaling = hf_config.get("rope_scaling") or {}
    rope_type = parameters.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if rope_type != "default":
        raise ValueError(f"{source}: RoPE type {rope_type!r} is not supported by the Qwen2 encoder (only 'default')")
    theta = parameters.get("rope_theta", hf_config.get("rope_theta"))
    if theta is None:
        raise ValueError(f"{source} gives no rope_theta (neither rope_parameters.rope_theta nor rope_theta)")
    return float(theta)


def config_from_hf(hf_config: Mapping[str, Any], *, source: str = "config.json", **options: Any) -> Qwen2Config:
    """Qwen2Config from a config.json dict, refusing settings this encoder does not implement."""
    layer_types = hf_config.get("layer_types") or []
    if hf_config.get("use_sliding_window") or any(kind != "full_attention" for kind in layer_types):
        raise ValueError(f"{source}: sliding-window attention is not supported by the Qwen2 encoder; set use_sliding_window=false")
    heads = hf_config.get("num_attention_heads")
    hidden = hf_config.get("hidden_size")
    head_dim = hf_config.get("head_dim") or (hidden // heads if hidden and heads else None)
    config = build_config(
        Qwen2Config, hf_config, ARCHITECTURE_KEYS, OPTIONS, options, source=source,
        extra={
            "num_key_value_heads": hf_config.get("num_key_value_heads") or heads,
            "rope_theta": rope_theta_from_hf(hf_config, source=source),
            "head_dim": head_dim,
        },
    )
    if config.num_attention_heads % config.num_key_value_heads:
        raise ValueError(
            f"{source}: num_attention_heads={config.num_attention_heads} is not a multiple of "
            f"num_key_value_heads={config.num_key_value_heads}"
        )
    if config.head_dim % 2:
        raise ValueError(f"{source}: head_dim={config.head_dim} is odd; rotary embeddings rotate pairs of dimensions")
    layers.activation(config.hidden_act, config_key=f"{source}: hidden_act")
    attention.check_implementation(config.attention)
    return config


def rotary_cos_sin(length: int, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos and sin tables (L, head_dim) for positions 0…L−1, in fp32, in Hugging Face's rotate-half layout
    (frequencies repeated twice, not interleaved)."""
    inverse_frequency = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles = jnp.arange(length, dtype=jnp.float32)[:, None] * inverse_frequency[None, :]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate (B, L, heads, head_dim) by position: x·cos + rotate_half(x)·sin (tables cast to x's dtype, as HF)."""
    half = x.shape[-1] // 2
    rotated_half = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos, sin = cos.astype(x.dtype)[None, :, None, :], sin.astype(x.dtype)[None, :, None, :]
    return x * cos + rotated_half * sin


class Qwen2Attention(nnx.Module):
    def __init__(self, config: Qwen2Config, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        kwargs = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs, init_std=config.initializer_range)
        self.num_heads, self.num_kv_heads, self.head_dim = (
            config.num_attention_heads, config.num_key_value_heads, config.head_dim,
        )
        query_width, kv_width = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.q_proj = layers.dense(config.hidden_size, query_width, kernel_axes=("embed", "heads"), **kwargs)
        self.k_proj = layers.dense(config.hidden_size, kv_width, kernel_axes=("embed", "kv"), **kwargs)
        self.v_proj = layers.dense(config.hidden_size, kv_width, kernel_axes=("embed", "kv"), **kwargs)
        self.implementation, self.causal = config.attention, config.causal
        self.o_proj = layers.dense(query_width, config.hidden_size, kernel_axes=("heads", "embed"), use_bias=False, **kwargs)

    def __call__(self, hidden: jax.Array, mask: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
        query = apply_rotary(attention.split_heads(self.q_proj(hidden), self.num_heads, self.head_dim), cos, sin)
        key = apply_rotary(attention.split_heads(self.k_proj(hidden), self.num_kv_heads, self.head_dim), cos, sin)
        value = attention.split_heads(self.v_proj(hidden), self.num_kv_heads, self.head_dim)
        return self.o_proj(attention.merge_heads(attention.dot_product_attention(
            query, key, value, mask, implementation=self.implementation, causal=self.causal)))


class Qwen2MLP(nnx.Module):
    """SwiGLU: down(act(gate(x)) · up(x))."""

    def __init__(self, config: Qwen2Config, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        kwargs = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs, init_std=config.initializer_range, use_bias=False)
        self.gate_proj = layers.dense(config.hidden_size, config.intermediate_size, kernel_axes=("embed", "mlp"), **kwargs)
        self.up_proj = layers.dense(config.hidden_size, config.intermediate_size, kernel_axes=("embed", "mlp"), **kwargs)
        self.down_proj = layers.dense(config.intermediate_size, config.hidden_size, kernel_axes=("mlp", "embed"), **kwargs)
        self.activation = layers.activation(config.hidden_act, config_key="hidden_act")

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return self.down_proj(self.activation(self.gate_proj(hidden)) * self.up_proj(hidden))


class Qwen2DecoderLayer(nnx.Module):
    """Pre-norm: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: Qwen2Config, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        norm = dict(epsilon=config.rms_norm_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.input_layernorm = layers.rms_norm(config.hidden_size, **norm)
        self.self_attn = Qwen2Attention(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.post_attention_layernorm = layers.rms_norm(config.hidden_size, **norm)
        self.mlp = Qwen2MLP(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, hidden: jax.Array, mask: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
        hidden = hidden + self.self_attn(self.input_layernorm(hidden), mask, cos, sin)
        return hidden + self.mlp(self.post_attention_layernorm(hidden))


class Qwen2Model(nnx.Module):
    """Last hidden states (B, L, hidden) of a Qwen2 encoder (after the final RMSNorm).

    `embed_tokens(input_ids)` is the word-embedding lookup alone: the attribute keeps Hugging Face's name and an
    `nnx.Embed` is callable, so it serves as the shared encoder interface's method too.
    """

    def __init__(self, config: Qwen2Config, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.hidden_size = config.hidden_size
        self.embed_tokens = layers.embedding(
            config.vocab_size, config.hidden_size, table_axes=("vocab", "embed"),
            dtype=dtype, param_dtype=param_dtype, rngs=rngs, init_std=config.initializer_range,
        )
        self.layers = layers.make_layers(
            lambda layer_rngs: Qwen2DecoderLayer(config, dtype=dtype, param_dtype=param_dtype, rngs=layer_rngs),
            config.num_hidden_layers,
            rngs,
            scan=config.scan,
        )
        self.norm = layers.rms_norm(
            config.hidden_size, epsilon=config.rms_norm_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

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
        hidden = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        mask = attention.attention_mask_for(attention_mask, causal=self.config.causal,
                                           implementation=self.config.attention)
        cos, sin = rotary_cos_sin(length, self.config.head_dim, self.config.rope_theta)
        hidden = layers.run_layers(
            self.layers, hidden, mask, cos, sin, scan=self.config.scan, remat=self.config.remat
        )
        return self.norm(hidden)


def from_hf_config(
    hf_config: Mapping[str, Any],
    *,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    rngs: nnx.Rngs,
    source: str = "config.json",
    **options: Any,
) -> Qwen2Model:
    """A randomly initialised Qwen2Model shaped like `hf_config` (weights come from embed_jax.models.hf_import)."""
    return Qwen2Model(config_from_hf(hf_config, source=source, **options), dtype=dtype, param_dtype=param_dtype, rngs=rngs)
