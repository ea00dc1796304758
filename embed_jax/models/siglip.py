"""SigLIP vision tower in Flax NNX, numerically Hugging Face's `SiglipVisionModel`
(docs/method.md §1: Jasper's image encoder).

patch conv (stride = kernel = patch) → + learned position embeddings → N pre-LN encoder layers → post_layernorm
→ optional multi-head attention pooling ("MAP") head on a learned probe.

Module and attribute names follow Hugging Face's (embeddings.patch_embedding, encoder.layers.{i}.self_attn.q_proj,
post_layernorm, head.attention, …) so that embed_jax/models/tables/siglip.py is mostly transposes. Differences:
- images are channels-last (B, H, W, C), JAX's convolution layout; Hugging Face's processors give (B, C, H, W), which
  is recognised and refused with the transpose to apply;
- no position-embedding interpolation: an image must have the configured size (a clear error otherwise);
- the MAP head's packed query/key/value projection (`torch.nn.MultiheadAttention.in_proj_weight`) stays packed as
  `head.attention.in_proj`, split after the matmul;
- no dropout (SigLIP's attention_dropout is 0.0 in every released config).

Returns a dict, big_vision style: {"last_hidden_state": (B, N_patches, D), "pooler_output": (B, D) if the head is on}.
The student feeds last_hidden_state to the projection pool (docs/method.md §1); the
head is loaded when a checkpoint has it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from embed_jax.models import attention, hf_import, layers
from embed_jax.models.config_utils import build_config
from embed_jax.models.tables.siglip import TABLE

# config.json model_type values this tower reads: the vision model alone, or a full SigLIP (vision_config inside).
VISION_MODEL_TYPE = "siglip_vision_model"
FULL_MODEL_TYPE = "siglip"
SUPPORTED_MODEL_TYPES = (FULL_MODEL_TYPE, VISION_MODEL_TYPE)


@dataclasses.dataclass(frozen=True)
class SiglipVisionConfig:
    """Architecture (config.json; defaults are Hugging Face's, which save_pretrained may omit) and options."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 16
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    vision_use_head: bool = True
    # Options (not in config.json).
    scan: bool = False
    remat: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def grid_size(self) -> int:
        """Patches per side: a 'valid' convolution drops a remainder, as Hugging Face's does."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2


OPTIONS = ("scan", "remat")
ARCHITECTURE_KEYS = tuple(
    field.name for field in dataclasses.fields(SiglipVisionConfig) if field.name not in OPTIONS
)


def validate_config(config: SiglipVisionConfig, *, source: str) -> SiglipVisionConfig:
    """The config itself, or a ValueError naming the key that cannot work."""
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
                "image_size", "patch_size"):
        value = getattr(config, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{source}: {key}={value!r} must be a positive integer")
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"{source}: hidden_size={config.hidden_size} is not a multiple of "
            f"num_attention_heads={config.num_attention_heads}"
        )
    if config.patch_size > config.image_size:
        raise ValueError(f"{source}: patch_size={config.patch_size} is larger than image_size={config.image_size}")
    layers.activation(config.hidden_act, config_key=f"{source}: hidden_act")
    return config


def vision_config_dict(hf_config: Mapping[str, Any], *, source: str = "config.json") -> dict[str, Any]:
    """The vision part of a config.json: itself for a SiglipVisionModel, `vision_config` for a full SiglipModel."""
    model_type = hf_config.get("model_type")
    if model_type == VISION_MODEL_TYPE:
        return dict(hf_config)
    if model_type == FULL_MODEL_TYPE:
        return dict(hf_config.get("vision_config") or {})
    raise ValueError(
        f"{source}: model_type {model_type!r} is not a SigLIP vision tower; supported model_type values: "
        f"{', '.join(SUPPORTED_MODEL_TYPES)}"
    )


def config_from_hf(hf_config: Mapping[str, Any], *, source: str = "config.json", **options: Any) -> SiglipVisionConfig:
    """SiglipVisionConfig from a config.json dict (vision model or full SigLIP) plus options (scan, remat)."""
    vision = vision_config_dict(hf_config, source=source)
    config = build_config(SiglipVisionConfig, vision, ARCHITECTURE_KEYS, OPTIONS, options, source=source)
    return validate_config(config, source=source)


def check_images(pixel_values: jax.Array, config: SiglipVisionConfig) -> None:
    """Raise a ValueError unless `pixel_values` is (B, image_size, image_size, num_channels)."""
    size, channels = config.image_size, config.num_channels
    expected = f"(batch, {size}, {size}, {channels})"
    shape = tuple(pixel_values.shape)
    if len(shape) == 4 and shape[1:] == (size, size, channels):
        return
    if len(shape) == 4 and shape[1] == channels and shape[2:] == (size, size):
        raise ValueError(
            f"images of shape {shape} look channels-first (B, C, H, W); this vision tower takes channels-last "
            f"{expected}: pass pixel_values.transpose(0, 2, 3, 1)"
        )
    if len(shape) == 4 and shape[-1] != channels:
        raise ValueError(
            f"images of shape {shape} have {shape[-1]} channels; the vision tower expects {expected} "
            f"(config num_channels={channels}): convert grey-scale or RGBA images to {channels} channels first"
        )
    raise ValueError(
        f"images of shape {shape} do not fit the vision tower, which expects {expected} (config image_size={size}): "
        f"resize images to {size}×{size} before the model (position embeddings are not interpolated)"
    )


def _dense(in_features: int, out_features: int, kernel_axes: tuple[str, str], dtype: Any, param_dtype: Any,
           rngs: nnx.Rngs) -> layers.Dense:
    # std 0.02: the ViT initialisation (timm, big_vision's BERT-style heads) for a tower trained from scratch.
    return layers.dense(in_features, out_features, kernel_axes=kernel_axes, dtype=dtype, param_dtype=param_dtype,
                        rngs=rngs, init_std=0.02)


class SiglipVisionEmbeddings(nnx.Module):
    def __init__(self, config: SiglipVisionConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        self.patch_embedding = nnx.Conv(
            config.num_channels,
            config.hidden_size,
            kernel_size=(config.patch_size, config.patch_size),
            strides=(config.patch_size, config.patch_size),
            padding="VALID",
            dtype=dtype,
            param_dtype=param_dtype,
            kernel_metadata=layers.axes(None, None, None, "embed"),
            bias_metadata=layers.axes("embed"),
            rngs=rngs,
        )
        # std 1/√D: big_vision's and Hugging Face's SigLIP position-embedding initialisation.
        self.position_embedding = layers.embedding(
            config.num_patches, config.hidden_size, table_axes=(None, "embed"), dtype=dtype, param_dtype=param_dtype,
            rngs=rngs, init_std=config.hidden_size**-0.5,
        )

    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        patches = self.patch_embedding(pixel_values)  # (B, grid, grid, D), row-major like torch's flatten(2)
        batch, grid_h, grid_w, width = patches.shape
        positions = self.position_embedding.embedding[...].astype(patches.dtype)
        return patches.reshape(batch, grid_h * grid_w, width) + positions[None]


class SiglipAttention(nnx.Module):
    """Bidirectional multi-head self-attention over all patches (no mask: every patch is real)."""

    def __init__(self, config: SiglipVisionConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        width = config.hidden_size
        self.q_proj = _dense(width, width, ("embed", "heads"), dtype, param_dtype, rngs)
        self.k_proj = _dense(width, width, ("embed", "heads"), dtype, param_dtype, rngs)
        self.v_proj = _dense(width, width, ("embed", "heads"), dtype, param_dtype, rngs)
        self.out_proj = _dense(width, width, ("heads", "embed"), dtype, param_dtype, rngs)

    def __call__(self, hidden: jax.Array) -> jax.Array:
        query, key, value = (
            attention.split_heads(projection(hidden), self.num_heads, self.head_dim)
            for projection in (self.q_proj, self.k_proj, self.v_proj)
        )
        attended = jax.nn.dot_product_attention(query, key, value)
        return self.out_proj(attention.merge_heads(attended))


class SiglipMLP(nnx.Module):
    def __init__(self, config: SiglipVisionConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        self.fc1 = _dense(config.hidden_size, config.intermediate_size, ("embed", "mlp"), dtype, param_dtype, rngs)
        self.fc2 = _dense(config.intermediate_size, config.hidden_size, ("mlp", "embed"), dtype, param_dtype, rngs)
        self.activation = layers.activation(config.hidden_act, config_key="hidden_act")

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return self.fc2(self.activation(self.fc1(hidden)))


def _layer_norm(config: SiglipVisionConfig, dtype: Any, param_dtype: Any, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return layers.layer_norm(config.hidden_size, epsilon=config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype,
                             rngs=rngs)


class SiglipEncoderLayer(nnx.Module):
    """Pre-LN block: x + attn(LN1(x)), then x + mlp(LN2(x))."""

    def __init__(self, config: SiglipVisionConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        self.layer_norm1 = _layer_norm(config, dtype, param_dtype, rngs)
        self.self_attn = SiglipAttention(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.layer_norm2 = _layer_norm(config, dtype, param_dtype, rngs)
        self.mlp = SiglipMLP(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, hidden: jax.Array) -> jax.Array:
        hidden = hidden + self.self_attn(self.layer_norm1(hidden))
        return hidden + self.mlp(self.layer_norm2(hidden))


class SiglipEncoder(nnx.Module):
    def __init__(self, config: SiglipVisionConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        self.scan, self.remat = config.scan, config.remat
        self.layers = layers.make_layers(
            lambda layer_rngs: SiglipEncoderLayer(config, dtype=dtype, param_dtype=param_dtype, rngs=layer_rngs),
            config.num_hidden_layers,
            rngs,
            scan=config.scan,
        )

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return layers.run_layers(self.layers, hidden, scan=self.scan, remat=self.remat)


class SiglipMultiheadAttention(nnx.Module):
    """`torch.nn.MultiheadAttention` (batch_first) with its packed in-projection: query from the probe, keys and
    values from the patches."""

    def __init__(self, config: SiglipVisionConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        width = config.hidden_size
        self.in_proj = _dense(width, 3 * width, ("embed", "heads"), dtype, param_dtype, rngs)
        self.out_proj = _dense(width, width, ("heads", "embed"), dtype, param_dtype, rngs)

    def __call__(self, query: jax.Array, key_value: jax.Array) -> jax.Array:
        # Projecting the patches through all of in_proj wastes its query third (one D×D matmul in the whole tower)
        # and keeps the packed layout of the checkpoint.
        width = self.num_heads * self.head_dim
        query = self.in_proj(query)[..., :width]
        key, value = jnp.split(self.in_proj(key_value)[..., width:], 2, axis=-1)
        query, key, value = (attention.split_heads(x, self.num_heads, self.head_dim) for x in (query, key, value))
        attended = jax.nn.dot_product_attention(query, key, value)
        return self.out_proj(attention.merge_heads(attended))


class SiglipMultiheadAttentionPoolingHead(nnx.Module):
    """MAP head: a learned probe attends over the patches, then probe + mlp(LN(probe)); one vector per image."""

    def __init__(self, config: SiglipVisionConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        self.probe = nnx.Param(
            jax.nn.initializers.xavier_uniform()(rngs.params(), (1, 1, config.hidden_size), param_dtype),
            **layers.axes(None, None, "embed"),
        )
        self.attention = SiglipMultiheadAttention(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.layernorm = _layer_norm(config, dtype, param_dtype, rngs)
        self.mlp = SiglipMLP(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, hidden: jax.Array) -> jax.Array:
        probe = jnp.broadcast_to(self.probe[...].astype(hidden.dtype), (hidden.shape[0], 1, hidden.shape[-1]))
        pooled = self.attention(probe, hidden)
        pooled = pooled + self.mlp(self.layernorm(pooled))
        return pooled[:, 0]


class SiglipVisionModel(nnx.Module):
    """Images (B, H, W, C) → {"last_hidden_state": (B, N_patches, D)[, "pooler_output": (B, D)]}."""

    def __init__(self, config: SiglipVisionConfig, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                 rngs: nnx.Rngs):
        validate_config(config, source="SiglipVisionConfig")
        self.config = config
        self.hidden_size = config.hidden_size
        self.dtype = dtype
        self.embeddings = SiglipVisionEmbeddings(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.encoder = SiglipEncoder(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.post_layernorm = _layer_norm(config, dtype, param_dtype, rngs)
        if config.vision_use_head:
            self.head = SiglipMultiheadAttentionPoolingHead(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, pixel_values: jax.Array) -> dict[str, jax.Array]:
        check_images(pixel_values, self.config)
        hidden = self.embeddings(pixel_values.astype(self.dtype))
        hidden = self.post_layernorm(self.encoder(hidden))
        outputs = {"last_hidden_state": hidden}
        if self.config.vision_use_head:
            outputs["pooler_output"] = self.head(hidden)
        return outputs


def from_hf_config(
    hf_config: Mapping[str, Any],
    *,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    rngs: nnx.Rngs,
    source: str = "config.json",
    **options: Any,
) -> SiglipVisionModel:
    """A randomly initialised tower shaped like `hf_config` (a vision model's or a full SigLIP's config.json)."""
    return SiglipVisionModel(config_from_hf(hf_config, source=source, **options), dtype=dtype,
                             param_dtype=param_dtype, rngs=rngs)


def load(
    folder: str | Path, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32, **options: Any
) -> tuple[SiglipVisionModel, dict[str, Any]]:
    """The vision tower of a Hugging Face SigLIP folder (SiglipVisionModel or SiglipModel), with its weights.

    Returns (module, the vision part of config.json). Weight problems raise hf_import.WeightMismatchError, naming
    every missing, unexpected and mis-shaped tensor at once.
    """
    model_folder = hf_import.resolve_model_folder(folder)
    hf_config = hf_import.read_config(model_folder)
    source = str(model_folder / "config.json")
    abstract = nnx.eval_shape(
        lambda: from_hf_config(hf_config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0), source=source,
                               **options)
    )
    hf_import.load_weights(abstract, model_folder, TABLE)
    return abstract, vision_config_dict(hf_config, source=source)
