"""MPNet text encoder in Flax NNX (all-mpnet-base-v2 and other `model_type: mpnet` checkpoints).

Mirrors Hugging Face's `MPNetModel` (transformers/models/mpnet/modeling_mpnet.py), with its module and attribute names
(embeddings.word_embeddings, encoder.layer.{i}.attention.attn.q, encoder.relative_attention_bias, …) so that
embed_jax/models/tables/mpnet.py is mostly transposes. What sets MPNet apart from BERT:
- no token-type embeddings;
- positions numbered from the padding index as RoBERTa does (`padding_idx + 1, …` for real tokens, `padding_idx` for
  pads). Hugging Face hard-codes padding_idx = 1 in `MPNetEmbeddings`, whatever config.json's pad_token_id says, and so
  does this module;
- a T5-style relative position bias: one (buckets, heads) table in the encoder, looked up once per call from the
  signed distance key − query (bidirectional buckets: 32, exact up to 8, logarithmic up to 128) and added to the
  attention scores of every layer. Hugging Face computes it from the row positions 0…L−1, not from the padded
  position ids, and always with 32 buckets (`compute_position_bias(num_buckets=32)`): the same here;
- the attention's output projection is `attn.o`, and its residual LayerNorm sits in `attention.LayerNorm`.

As in embed_jax/models/bert.py, there is no pooler (embedding models pool the hidden states themselves) and no dropout.
Inputs longer than the position table raise a ValueError, or are cut when `truncate_long_inputs=True`.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from embed_jax.models import attention, bert, layers
from embed_jax.models.config_utils import build_config

# Hugging Face's MPNetEmbeddings sets `self.padding_idx = 1` (not config.pad_token_id).
PADDING_IDX = 1
# Hugging Face's MPNetEncoder.compute_position_bias / relative_position_bucket defaults, used whatever the config says.
RELATIVE_BUCKETS = 32
RELATIVE_MAX_DISTANCE = 128


@dataclasses.dataclass(frozen=True)
class MPNetConfig:
    """Architecture (from config.json) and options (from the caller) of an MPNet encoder."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    relative_attention_num_buckets: int = RELATIVE_BUCKETS
    initializer_range: float = 0.02
    # Options (not in config.json).
    scan: bool = False
    remat: bool = False
    truncate_long_inputs: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def max_sequence_length(self) -> int:
        """Longest input the position table covers: positions run from PADDING_IDX + 1 (514 rows → 512 tokens)."""
        return self.max_position_embeddings - PADDING_IDX - 1


OPTIONS = ("scan", "remat", "truncate_long_inputs")
ARCHITECTURE_KEYS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "max_position_embeddings", "hidden_act", "layer_norm_eps", "relative_attention_num_buckets", "initializer_range",
)


def config_from_hf(hf_config: Mapping[str, Any], *, source: str = "config.json", **options: Any) -> MPNetConfig:
    """MPNetConfig from a config.json dict, refusing settings this encoder (or Hugging Face's MPNet) does not honour."""
    buckets = hf_config.get("relative_attention_num_buckets", RELATIVE_BUCKETS)
    if buckets != RELATIVE_BUCKETS:
        raise ValueError(
            f"{source}: relative_attention_num_buckets={buckets!r} is not supported by the MPNet encoder (only "
            f"{RELATIVE_BUCKETS}): Hugging Face's MPNet always buckets relative positions into {RELATIVE_BUCKETS} "
            "(MPNetEncoder.compute_position_bias), so a table of another size is either too small or partly unused"
        )
    for key in ("is_decoder", "add_cross_attention"):
        if hf_config.get(key) not in (False, None):
            raise ValueError(f"{source}: {key}={hf_config[key]!r} is not supported by the MPNet encoder (only False)")
    config = build_config(MPNetConfig, hf_config, ARCHITECTURE_KEYS, OPTIONS, options, source=source)
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"{source}: hidden_size={config.hidden_size} is not a multiple of "
            f"num_attention_heads={config.num_attention_heads}"
        )
    if config.max_sequence_length < 1:
        raise ValueError(
            f"{source}: max_position_embeddings={config.max_position_embeddings} leaves no position for a token "
            f"(MPNet numbers positions from {PADDING_IDX + 1}); it must be at least {PADDING_IDX + 2}"
        )
    layers.activation(config.hidden_act, config_key=f"{source}: hidden_act")
    return config


def relative_position_buckets(length: int) -> np.ndarray:
    """(length, length) int32 bucket of each (query i, key j) pair, as Hugging Face's `relative_position_bucket`.

    Computed on the host in float32 with the same operations as PyTorch (the log-spaced bucket boundaries are float
    comparisons; tests/models/test_mpnet.py checks every distance up to 4096 against Hugging Face). The length is
    static under jit, so this is a constant of the compiled program.
    """
    positions = np.arange(length, dtype=np.int64)
    distance = positions[:, None] - positions[None, :]  # Hugging Face's n = −(memory − context) = i − j
    half = RELATIVE_BUCKETS // 2
    bucket = (distance < 0).astype(np.int64) * half
    distance = np.abs(distance)
    max_exact = half // 2
    scaled = np.log(np.maximum(distance, 1).astype(np.float32) / np.float32(max_exact)) / np.float32(
        math.log(RELATIVE_MAX_DISTANCE / max_exact)
    ) * np.float32(half - max_exact)
    if_large = np.minimum(max_exact + scaled.astype(np.int64), half - 1)
    bucket += np.where(distance < max_exact, distance, if_large)
    return bucket.astype(np.int32)


class MPNetEmbeddings(nnx.Module):
    def __init__(self, config: MPNetConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        kwargs = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs, init_std=config.initializer_range)
        self.word_embeddings = layers.embedding(config.vocab_size, config.hidden_size, table_axes=("vocab", "embed"), **kwargs)
        self.position_embeddings = layers.embedding(
            config.max_position_embeddings, config.hidden_size, table_axes=(None, "embed"), **kwargs
        )
        self.LayerNorm = layers.layer_norm(
            config.hidden_size, epsilon=config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, inputs_embeds: jax.Array, position_ids: jax.Array) -> jax.Array:
        return self.LayerNorm(inputs_embeds + self.position_embeddings(position_ids))


class MPNetSelfAttention(nnx.Module):
    """q, k, v → softmax(q·kᵀ/√d + relative position bias, masked) · v → o."""

    def __init__(self, config: MPNetConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        kwargs = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs, init_std=config.initializer_range)
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.q = layers.dense(config.hidden_size, config.hidden_size, kernel_axes=("embed", "heads"), **kwargs)
        self.k = layers.dense(config.hidden_size, config.hidden_size, kernel_axes=("embed", "heads"), **kwargs)
        self.v = layers.dense(config.hidden_size, config.hidden_size, kernel_axes=("embed", "heads"), **kwargs)
        self.o = layers.dense(config.hidden_size, config.hidden_size, kernel_axes=("heads", "embed"), **kwargs)

    def __call__(self, hidden: jax.Array, position_bias: jax.Array, mask: jax.Array) -> jax.Array:
        query, key, value = (
            attention.split_heads(projection(hidden), self.num_heads, self.head_dim)
            for projection in (self.q, self.k, self.v)
        )
        # jax.nn's bias is added to the scaled scores before masking, as Hugging Face adds position_bias then the mask.
        attended = jax.nn.dot_product_attention(query, key, value, bias=position_bias.astype(query.dtype), mask=mask)
        return self.o(attention.merge_heads(attended))


class MPNetAttention(nnx.Module):
    """Self-attention → residual → LayerNorm (post-LN)."""

    def __init__(self, config: MPNetConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        self.attn = MPNetSelfAttention(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.LayerNorm = layers.layer_norm(
            config.hidden_size, epsilon=config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, hidden: jax.Array, position_bias: jax.Array, mask: jax.Array) -> jax.Array:
        return self.LayerNorm(self.attn(hidden, position_bias, mask) + hidden)


class MPNetLayer(nnx.Module):
    def __init__(self, config: MPNetConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        self.attention = MPNetAttention(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        # The feed-forward block is BERT's, tensor names included (intermediate.dense, output.dense, output.LayerNorm).
        self.intermediate = bert.BertIntermediate(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.output = bert.BertOutput(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, hidden: jax.Array, position_bias: jax.Array, mask: jax.Array) -> jax.Array:
        attended = self.attention(hidden, position_bias, mask)
        return self.output(self.intermediate(attended), attended)


class MPNetEncoder(nnx.Module):
    """The layers and the relative position bias table they share (computed once per call, added in every layer)."""

    def __init__(self, config: MPNetConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        self.scan, self.remat = config.scan, config.remat
        self.layer = layers.make_layers(
            lambda layer_rngs: MPNetLayer(config, dtype=dtype, param_dtype=param_dtype, rngs=layer_rngs),
            config.num_hidden_layers,
            rngs,
            scan=config.scan,
        )
        # (buckets, heads): tiny, so replicated rather than split with the heads.
        self.relative_attention_bias = layers.embedding(
            config.relative_attention_num_buckets, config.num_attention_heads, table_axes=(None, None),
            dtype=dtype, param_dtype=param_dtype, rngs=rngs, init_std=config.initializer_range,
        )

    def position_bias(self, length: int) -> jax.Array:
        """(1, heads, L, L) bias added to every layer's attention scores."""
        values = self.relative_attention_bias(jnp.asarray(relative_position_buckets(length)))  # (L, L, heads)
        return jnp.transpose(values, (2, 0, 1))[None]

    def __call__(self, hidden: jax.Array, mask: jax.Array) -> jax.Array:
        position_bias = self.position_bias(hidden.shape[1])
        return layers.run_layers(self.layer, hidden, position_bias, mask, scan=self.scan, remat=self.remat)


class MPNetModel(nnx.Module):
    """Last hidden states (B, L, hidden) of an MPNet encoder."""

    def __init__(self, config: MPNetConfig, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.hidden_size = config.hidden_size
        self.embeddings = MPNetEmbeddings(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.encoder = MPNetEncoder(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def embed_tokens(self, input_ids: jax.Array) -> jax.Array:
        """The word-embedding lookup alone (no positions or LayerNorm)."""
        return self.embeddings.word_embeddings(input_ids)

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
            length,
            self.config.max_sequence_length,
            truncate=self.config.truncate_long_inputs,
            arrays=(input_ids, inputs_embeds, attention_mask),
        )
        length = min(length, self.config.max_sequence_length)
        if attention_mask is None:
            attention_mask = jnp.ones((batch, length), dtype=jnp.int32)
        if input_ids is not None:
            position_ids = bert.position_ids_from_input_ids(input_ids, PADDING_IDX)
            inputs_embeds = self.embed_tokens(input_ids)
        else:
            # From embeddings Hugging Face cannot tell pads apart and numbers every position (as here).
            first = PADDING_IDX + 1
            position_ids = jnp.broadcast_to(jnp.arange(first, first + length, dtype=jnp.int32), (batch, length))
        hidden = self.embeddings(inputs_embeds, position_ids)
        mask = attention.attention_bias_mask(attention_mask, causal=False)
        return self.encoder(hidden, mask)


def from_hf_config(
    hf_config: Mapping[str, Any],
    *,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    rngs: nnx.Rngs,
    source: str = "config.json",
    **options: Any,
) -> MPNetModel:
    """A randomly initialised MPNetModel shaped like `hf_config` (weights come from embed_jax.models.hf_import)."""
    return MPNetModel(config_from_hf(hf_config, source=source, **options), dtype=dtype, param_dtype=param_dtype, rngs=rngs)
