"""BERT-family text encoder in Flax NNX: BERT, MiniLM (a small BERT) and RoBERTa / XLM-RoBERTa.

Module and attribute names follow Hugging Face's `BertModel` (embeddings.word_embeddings, encoder.layer.{i}.attention.
self.query, …) so that embed_jax/models/tables/bert.py is mostly transposes. Differences from Hugging Face, on purpose:
- no pooler (dense + tanh on [CLS]): embedding models pool the last hidden states
  themselves (docs/method.md §1: masked mean);
- no dropout: the encoder is deterministic (the paper's student, Qwen2, has none either);
- RoBERTa/XLM-R number positions from the padding index (`padding_idx + 1, …` for real tokens, `padding_idx` for
  pads), computed from the input ids exactly as Hugging Face's `create_position_ids_from_input_ids`.

Inputs longer than the position table raise a ValueError, or are cut to the longest supported length when the
option `truncate_long_inputs=True` is set (the output is then shorter than the input).
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

# model_types whose positions start after the padding index (Hugging Face RobertaEmbeddings).
POSITIONS_FROM_PADDING = ("roberta", "xlm-roberta")


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Architecture (from config.json) and options (from the caller) of a BERT-family encoder."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    hidden_act: str = "gelu"
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    positions_from_padding: bool = False
    initializer_range: float = 0.02
    # Options (not in config.json).
    scan: bool = False
    remat: bool = False
    truncate_long_inputs: bool = False
    attention: str = "xla"  # embed_jax/models/attention.py IMPLEMENTATIONS

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def max_sequence_length(self) -> int:
        """Longest input the position table covers: RoBERTa's positions run from pad_token_id + 1."""
        if self.positions_from_padding:
            return self.max_position_embeddings - self.pad_token_id - 1
        return self.max_position_embeddings


OPTIONS = ("scan", "remat", "truncate_long_inputs", "attention")
ARCHITECTURE_KEYS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "max_position_embeddings", "hidden_act", "type_vocab_size", "layer_norm_eps", "pad_token_id", "initializer_range",
)


def config_from_hf(hf_config: Mapping[str, Any], *, source: str = "config.json", **options: Any) -> BertConfig:
    """BertConfig from a config.json dict, refusing settings this encoder does not implement."""
    unsupported = {
        "position_embedding_type": ("absolute", None),
        "is_decoder": (False, None),
        "add_cross_attention": (False, None),
    }
    for key, allowed in unsupported.items():
        if hf_config.get(key) not in allowed:
            raise ValueError(f"{source}: {key}={hf_config[key]!r} is not supported by the BERT encoder (only {allowed[0]!r})")
    config = build_config(
        BertConfig, hf_config, ARCHITECTURE_KEYS, OPTIONS, options, source=source,
        extra={"positions_from_padding": hf_config.get("model_type") in POSITIONS_FROM_PADDING},
    )
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"{source}: hidden_size={config.hidden_size} is not a multiple of "
            f"num_attention_heads={config.num_attention_heads}"
        )
    layers.activation(config.hidden_act, config_key=f"{source}: hidden_act")
    attention.check_implementation(config.attention)
    return config


class BertEmbeddings(nnx.Module):
    def __init__(self, config: BertConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        kwargs = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs, init_std=config.initializer_range)
        self.word_embeddings = layers.embedding(config.vocab_size, config.hidden_size, table_axes=("vocab", "embed"), **kwargs)
        self.position_embeddings = layers.embedding(
            config.max_position_embeddings, config.hidden_size, table_axes=(None, "embed"), **kwargs
        )
        self.token_type_embeddings = layers.embedding(
            config.type_vocab_size, config.hidden_size, table_axes=(None, "embed"), **kwargs
        )
        self.LayerNorm = layers.layer_norm(
            config.hidden_size, epsilon=config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, inputs_embeds: jax.Array, position_ids: jax.Array | None,
                 token_type_ids: jax.Array | None) -> jax.Array:
        """position_ids None: 0, 1, …, L−1 in every row; token_type_ids None: type 0 everywhere.

        The defaults read the tables by slicing instead of gathering: the gradient of a gather is a scatter-add, and
        B·L updates into the same L rows (or into one row, for token type 0) serialise on a GPU's atomics (measured on
        an H200, BERT-base 128×256: docs/training.md "GPU").
        """
        length = inputs_embeds.shape[1]
        if position_ids is None:
            positions = self.position_embeddings.embedding[:length][None].astype(inputs_embeds.dtype)
        else:
            positions = self.position_embeddings(position_ids)
        if token_type_ids is None:
            token_types = self.token_type_embeddings.embedding[0][None, None].astype(inputs_embeds.dtype)
        else:
            token_types = self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(inputs_embeds + positions + token_types)


class BertSelfAttention(nnx.Module):
    def __init__(self, config: BertConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        kwargs = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs, init_std=config.initializer_range)
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.implementation = config.attention
        self.query = layers.dense(config.hidden_size, config.hidden_size, kernel_axes=("embed", "heads"), **kwargs)
        self.key = layers.dense(config.hidden_size, config.hidden_size, kernel_axes=("embed", "heads"), **kwargs)
        self.value = layers.dense(config.hidden_size, config.hidden_size, kernel_axes=("embed", "heads"), **kwargs)

    def __call__(self, hidden: jax.Array, mask: jax.Array) -> jax.Array:
        query, key, value = (
            attention.split_heads(projection(hidden), self.num_heads, self.head_dim)
            for projection in (self.query, self.key, self.value)
        )
        return attention.merge_heads(attention.dot_product_attention(query, key, value, mask,
                                                                   implementation=self.implementation))


class BertSelfOutput(nnx.Module):
    """dense → residual → LayerNorm (post-LN), after attention."""

    def __init__(self, config: BertConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        self.dense = layers.dense(
            config.hidden_size, config.hidden_size, kernel_axes=("heads", "embed"),
            dtype=dtype, param_dtype=param_dtype, rngs=rngs, init_std=config.initializer_range,
        )
        self.LayerNorm = layers.layer_norm(
            config.hidden_size, epsilon=config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, attended: jax.Array, residual: jax.Array) -> jax.Array:
        return self.LayerNorm(self.dense(attended) + residual)


class BertAttention(nnx.Module):
    def __init__(self, config: BertConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        self.self = BertSelfAttention(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.output = BertSelfOutput(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, hidden: jax.Array, mask: jax.Array) -> jax.Array:
        return self.output(self.self(hidden, mask), hidden)


class BertIntermediate(nnx.Module):
    def __init__(self, config: BertConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        self.dense = layers.dense(
            config.hidden_size, config.intermediate_size, kernel_axes=("embed", "mlp"),
            dtype=dtype, param_dtype=param_dtype, rngs=rngs, init_std=config.initializer_range,
        )
        self.activation = layers.activation(config.hidden_act, config_key="hidden_act")

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return self.activation(self.dense(hidden))


class BertOutput(nnx.Module):
    """dense → residual → LayerNorm, after the feed-forward expansion."""

    def __init__(self, config: BertConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        self.dense = layers.dense(
            config.intermediate_size, config.hidden_size, kernel_axes=("mlp", "embed"),
            dtype=dtype, param_dtype=param_dtype, rngs=rngs, init_std=config.initializer_range,
        )
        self.LayerNorm = layers.layer_norm(
            config.hidden_size, epsilon=config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, expanded: jax.Array, residual: jax.Array) -> jax.Array:
        return self.LayerNorm(self.dense(expanded) + residual)


class BertLayer(nnx.Module):
    def __init__(self, config: BertConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        self.attention = BertAttention(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.intermediate = BertIntermediate(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.output = BertOutput(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, hidden: jax.Array, mask: jax.Array) -> jax.Array:
        attended = self.attention(hidden, mask)
        return self.output(self.intermediate(attended), attended)


class BertEncoder(nnx.Module):
    def __init__(self, config: BertConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        self.scan, self.remat = config.scan, config.remat
        self.layer = layers.make_layers(
            lambda layer_rngs: BertLayer(config, dtype=dtype, param_dtype=param_dtype, rngs=layer_rngs),
            config.num_hidden_layers,
            rngs,
            scan=config.scan,
        )

    def __call__(self, hidden: jax.Array, mask: jax.Array) -> jax.Array:
        return layers.run_layers(self.layer, hidden, mask, scan=self.scan, remat=self.remat)


def position_ids_from_input_ids(input_ids: jax.Array, padding_idx: int) -> jax.Array:
    """RoBERTa numbering: real tokens get padding_idx + 1, padding_idx + 2, … (counting real tokens only); pads get
    padding_idx. Same as Hugging Face's `create_position_ids_from_input_ids`."""
    is_real = (input_ids != padding_idx).astype(jnp.int32)
    return jnp.cumsum(is_real, axis=1) * is_real + padding_idx


class BertModel(nnx.Module):
    """Last hidden states (B, L, hidden) of a BERT / MiniLM / RoBERTa / XLM-R encoder."""

    def __init__(self, config: BertConfig, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.hidden_size = config.hidden_size
        self.embeddings = BertEmbeddings(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.encoder = BertEncoder(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def embed_tokens(self, input_ids: jax.Array) -> jax.Array:
        """The word-embedding lookup alone (no positions, token types or LayerNorm)."""
        return self.embeddings.word_embeddings(input_ids)

    def __call__(
        self,
        input_ids: jax.Array | None = None,
        attention_mask: jax.Array | None = None,
        *,
        inputs_embeds: jax.Array | None = None,
        token_type_ids: jax.Array | None = None,
    ) -> jax.Array:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        batch, length = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        input_ids, inputs_embeds, attention_mask, token_type_ids = layers.fit_to_position_table(
            length,
            self.config.max_sequence_length,
            truncate=self.config.truncate_long_inputs,
            arrays=(input_ids, inputs_embeds, attention_mask, token_type_ids),
        )
        length = min(length, self.config.max_sequence_length)
        if attention_mask is None:
            attention_mask = jnp.ones((batch, length), dtype=jnp.int32)
        position_ids = self._position_ids(input_ids, batch, length)
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        hidden = self.embeddings(inputs_embeds, position_ids, token_type_ids)
        mask = attention.attention_mask_for(attention_mask, causal=False, implementation=self.config.attention)
        return self.encoder(hidden, mask)

    def _position_ids(self, input_ids: jax.Array | None, batch: int, length: int) -> jax.Array | None:
        if not self.config.positions_from_padding:
            return None  # 0 … L−1: BertEmbeddings slices the table
        if input_ids is not None:
            return position_ids_from_input_ids(input_ids, self.config.pad_token_id)
        # From embeddings Hugging Face cannot tell pads apart and numbers every position (as here).
        first = self.config.pad_token_id + 1
        return jnp.broadcast_to(jnp.arange(first, first + length, dtype=jnp.int32), (batch, length))


def from_hf_config(
    hf_config: Mapping[str, Any],
    *,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    rngs: nnx.Rngs,
    source: str = "config.json",
    **options: Any,
) -> BertModel:
    """A randomly initialised BertModel shaped like `hf_config` (weights come from embed_jax.models.hf_import)."""
    return BertModel(config_from_hf(hf_config, source=source, **options), dtype=dtype, param_dtype=param_dtype, rngs=rngs)
