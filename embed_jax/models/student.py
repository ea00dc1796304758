"""The Student: text encoder → pooling → FC heads, and an image path that feeds the same encoder (docs/method.md §1).

Text:   input_ids ─► text encoder (BERT / GPT-2 / Qwen2) ─► masked mean ─► FC heads ─► {dim: unit vector}
Image:  pixels ─► SigLIP tower ─► projection pool ─► N image tokens, written over the N `<img_token>` placeholders of
        `<img_start>` + N × `<img_token>` + `<img_end>` in the token embeddings ─► the same encoder, pooling and heads.

Choices where the paper is silent (docs/method.md §1 "open"):
- the mean pools every real token of an image sequence, markers and image tokens included, as the text path pools
  [CLS]/[SEP]: one pooling rule for both modalities;
- placeholder tokens a tokenizer adds past the encoder's vocabulary get their own rows (`added_embeddings`, appended
  logically after the encoder's table, initialised at the table's mean as Hugging Face's `resize_token_embeddings`
  does), so the encoder's pretrained table stays untouched; export appends them to the word-embedding table.

Placeholder counts are data-dependent, so they are checked on the host when the ids are concrete (eager calls, and
`check_image_placeholders` in the data pipeline). Under `jax.jit` a row whose count is wrong cannot raise: its
outputs become NaN, so the loss shows it instead of silently training on a misplaced image.

Outputs (big_vision style): {"embeddings": {dim: (B, dim) fp32 unit vectors}, "pooled": (B, hidden) fp32,
["last_hidden_state": (B, L, hidden)]}. Parameters are stored in `param_dtype` (fp32 for training) and computed in
`dtype` (bf16 on TPU); pooling, heads' normalisation and losses run in fp32.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from embed_jax.models import hf_import, layers, pooling, siglip
from embed_jax.models.heads import EmbeddingHeads
from embed_jax.models.image_tokens import ImagePlaceholders, check_image_placeholders
from embed_jax.models.projection_pool import ProjectionPool
from embed_jax.models.st_pooling import pooling_from_folder

CONFIG_KEYS = ("text_encoder", "text_options", "pooling", "heads", "vision", "dtype", "param_dtype")
HEADS_KEYS = ("teacher_dim", "reduction_dims")
VISION_KEYS = ("tower", "tower_options", "pool", "placeholders")
POOL_KEYS = ("mode", "num_tokens")
PLACEHOLDER_KEYS = ("start_id", "token_id", "end_id")

NO_VISION_TOWER = "this student has no vision tower: build it with a 'vision' config to pass pixel_values"


# ------------------------------------------------------------------------------- image tokens in the embeddings


def insert_image_tokens(
    token_embeddings: jax.Array, input_ids: jax.Array, image_tokens: jax.Array, token_id: int
) -> jax.Array:
    """Write image token k of row b over the k-th `<img_token>` of row b. Rows whose placeholder count differs from
    image_tokens.shape[1] become NaN (see the module docstring: under jit this is how the mismatch surfaces)."""
    num_tokens = image_tokens.shape[1]
    is_image = input_ids == token_id
    index = jnp.clip(jnp.cumsum(is_image, axis=1) - 1, 0, num_tokens - 1)
    gathered = jnp.take_along_axis(image_tokens.astype(token_embeddings.dtype), index[..., None], axis=1)
    merged = jnp.where(is_image[..., None], gathered, token_embeddings)
    wrong_count = jnp.sum(is_image, axis=1) != num_tokens
    return jnp.where(wrong_count[:, None, None], jnp.nan, merged)


def _added_embeddings(
    placeholders: ImagePlaceholders | None, vocab_size: int, hidden_size: int, *, dtype: Any, param_dtype: Any,
    rngs: nnx.Rngs,
) -> nnx.Embed | None:
    """Rows for placeholder ids past the encoder's vocabulary (ids vocab_size … largest id), or None if none is."""
    if placeholders is None or max(dataclasses.astuple(placeholders)) < vocab_size:
        return None
    rows = max(dataclasses.astuple(placeholders)) + 1 - vocab_size
    return layers.embedding(rows, hidden_size, table_axes=(None, "embed"), dtype=dtype, param_dtype=param_dtype,
                            rngs=rngs)


def _is_traced(array: Any) -> bool:
    return isinstance(array, jax.core.Tracer)


# ------------------------------------------------------------------------------------------------ the module


class Student(nnx.Module):
    """Text encoder + pooling + FC heads, with an optional SigLIP tower and projection pool for images.

    Build it with `Student.from_config(config, rngs=...)` or `Student.from_pretrained(folder, heads=..., ...)`;
    `student.config` is the plain dict that rebuilds the same architecture (saved beside checkpoints).
    """

    def __init__(
        self,
        text_encoder: nnx.Module,
        heads: EmbeddingHeads,
        *,
        config: dict[str, Any],
        vision: siglip.SiglipVisionModel | None = None,
        projection_pool: ProjectionPool | None = None,
        placeholders: ImagePlaceholders | None = None,
        pooling_method: str = "mean",
        dtype: Any = jnp.float32,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if pooling_method not in pooling.POOLINGS:
            raise ValueError(f"student config key pooling={pooling_method!r}: use one of {sorted(pooling.POOLINGS)}")
        if (vision is None) != (projection_pool is None) or (vision is None) != (placeholders is None):
            raise ValueError("an image path needs all of: vision tower, projection pool and placeholder token ids")
        self.config = config
        self.text_encoder = text_encoder
        self.hidden_size = text_encoder.hidden_size
        self.vocab_size = text_encoder.config.vocab_size
        self.heads = heads
        self.pooling_method = pooling_method
        self.vision = vision
        self.projection_pool = projection_pool
        self.placeholders = placeholders
        self.added_embeddings = _added_embeddings(
            placeholders, self.vocab_size, self.hidden_size, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    @property
    def num_image_tokens(self) -> int | None:
        return None if self.projection_pool is None else self.projection_pool.num_tokens

    def embed_tokens(self, input_ids: jax.Array) -> jax.Array:
        """Word embeddings, taking ids past the encoder's vocabulary (added placeholders) from `added_embeddings`."""
        in_table = self.text_encoder.embed_tokens(jnp.minimum(input_ids, self.vocab_size - 1))
        if self.added_embeddings is None:
            return in_table
        added_rows = self.added_embeddings.embedding.shape[0]
        added = self.added_embeddings(jnp.clip(input_ids - self.vocab_size, 0, added_rows - 1))
        return jnp.where((input_ids >= self.vocab_size)[..., None], added.astype(in_table.dtype), in_table)

    def encode_image(self, pixel_values: jax.Array) -> jax.Array:
        """Images (B, H, W, C) → image tokens (B, num_image_tokens, hidden) at the text encoder's width."""
        if self.vision is None:
            raise ValueError(NO_VISION_TOWER)
        return self.projection_pool(self.vision(pixel_values)["last_hidden_state"])

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        *,
        pixel_values: jax.Array | None = None,
        return_hidden_states: bool = False,
    ) -> dict[str, Any]:
        if attention_mask is None:
            attention_mask = jnp.ones(input_ids.shape, jnp.int32)
        if pixel_values is not None:
            self._check_image_batch(input_ids, pixel_values)
        if pixel_values is None and self.added_embeddings is None:
            hidden = self.text_encoder(input_ids, attention_mask)
        else:
            embeddings = self.embed_tokens(input_ids)
            if pixel_values is not None:
                embeddings = insert_image_tokens(
                    embeddings, input_ids, self.encode_image(pixel_values), self.placeholders.token_id
                )
            hidden = self.text_encoder(attention_mask=attention_mask, inputs_embeds=embeddings)
        # An encoder built with truncate_long_inputs=True may return fewer positions than it was given.
        pooled = layers.constrain(pooling.pool(hidden, attention_mask[:, : hidden.shape[1]], self.pooling_method),
                                  layers.VECTOR_AXES)
        embeddings = {dim: layers.constrain(vectors, layers.VECTOR_AXES) for dim, vectors in self.heads(pooled).items()}
        outputs = {"embeddings": embeddings, "pooled": pooled}
        if return_hidden_states:
            outputs["last_hidden_state"] = hidden
        return outputs

    def _check_image_batch(self, input_ids: jax.Array, pixel_values: jax.Array) -> None:
        if self.vision is None:
            raise ValueError(NO_VISION_TOWER)
        if pixel_values.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"pixel_values holds {pixel_values.shape[0]} images for {input_ids.shape[0]} token rows; each row "
                "carries exactly one image"
            )
        if not _is_traced(input_ids):
            check_image_placeholders(input_ids, num_tokens=self.num_image_tokens, placeholders=self.placeholders)

    # -------------------------------------------------------------------------------------------- constructors

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, rngs: nnx.Rngs) -> Student:
        """A randomly initialised student from a plain / ml_collections config (see `validate_config`)."""
        config = validate_config(config)
        dtype, param_dtype = jnp.dtype(config["dtype"]), jnp.dtype(config["param_dtype"])
        family, _ = hf_import.text_encoder_family(config["text_encoder"], source="student config key text_encoder")
        text_encoder = family.from_hf_config(
            config["text_encoder"], dtype=dtype, param_dtype=param_dtype, rngs=rngs,
            source="student config key text_encoder", **config["text_options"],
        )
        vision = None
        if config["vision"] is not None:
            vision = siglip.from_hf_config(
                config["vision"]["tower"], dtype=dtype, param_dtype=param_dtype, rngs=rngs,
                source="student config key vision.tower", **config["vision"]["tower_options"],
            )
        return cls._assemble(config, text_encoder, vision, rngs=rngs)

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        *,
        heads: Mapping[str, Any],
        vision: Mapping[str, Any] | None = None,
        pooling_method: str | None = None,
        dtype: Any = jnp.float32,
        param_dtype: Any = jnp.float32,
        text_options: Mapping[str, Any] | None = None,
        rngs: nnx.Rngs | None = None,
    ) -> Student:
        """Text encoder from a Hugging Face / sentence-transformers folder; new FC heads (and image path).

        heads: {"teacher_dim": int | None, "reduction_dims": [int, ...]}.
        vision: None, or {"folder": a SigLIP folder to load} or {"tower": a SigLIP config dict} (random), plus
            "pool": {"mode", "num_tokens"}, "placeholders": {"start_id", "token_id", "end_id"}, "tower_options".
        pooling_method: None takes the folder's sentence-transformers pooling (1_Pooling/config.json), else mean.
        """
        if vision is not None and "folder" in vision and "tower" in vision:
            raise ValueError("vision takes either 'folder' (load a SigLIP checkpoint) or 'tower' (a config to "
                             "initialise randomly), not both")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        options = dict(text_options or {})
        text_encoder, hf_config = hf_import.load_text_encoder(folder, dtype=dtype, param_dtype=param_dtype, **options)
        options.pop("num_layers", None)  # applied: hf_config now holds the reduced layer count
        vision_config, tower = None, None
        if vision is not None:
            vision = dict(vision)
            tower_options = dict(vision.get("tower_options") or {})
            if "folder" in vision:
                tower, tower_config = siglip.load(
                    vision.pop("folder"), dtype=dtype, param_dtype=param_dtype, **tower_options
                )
                vision["tower"] = {**tower_config, "model_type": siglip.VISION_MODEL_TYPE}
            vision_config = vision
        config = validate_config(
            {
                "text_encoder": hf_config,
                "text_options": options,
                "pooling": pooling_method or pooling_from_folder(folder),
                "heads": dict(heads),
                "vision": vision_config,
                "dtype": jnp.dtype(dtype).name,
                "param_dtype": jnp.dtype(param_dtype).name,
            }
        )
        if config["vision"] is not None and tower is None:
            tower = siglip.from_hf_config(
                config["vision"]["tower"], dtype=dtype, param_dtype=param_dtype, rngs=rngs,
                source="vision.tower", **config["vision"]["tower_options"],
            )
        student = cls._assemble(config, text_encoder, tower, rngs=rngs)
        if student.added_embeddings is not None:
            # Hugging Face's resize_token_embeddings (mean_resizing): new rows start near the pretrained rows' mean.
            table = student.text_encoder.embed_tokens(jnp.arange(student.vocab_size))
            mean = jnp.mean(table.astype(jnp.float32), axis=0)
            student.added_embeddings.embedding[...] = (student.added_embeddings.embedding[...] + mean).astype(
                student.added_embeddings.embedding[...].dtype
            )
        return student

    @classmethod
    def _assemble(
        cls, config: dict[str, Any], text_encoder: nnx.Module, vision: nnx.Module | None, *, rngs: nnx.Rngs
    ) -> Student:
        dtype, param_dtype = jnp.dtype(config["dtype"]), jnp.dtype(config["param_dtype"])
        hidden_size = text_encoder.hidden_size
        heads = EmbeddingHeads(
            hidden_size, teacher_dim=config["heads"]["teacher_dim"], reduction_dims=config["heads"]["reduction_dims"],
            dtype=dtype, param_dtype=param_dtype, rngs=rngs,
        )
        projection_pool, placeholders = None, None
        if vision is not None:
            pool_config = config["vision"]["pool"]
            projection_pool = ProjectionPool(
                vision.hidden_size, hidden_size, pool_config["num_tokens"], mode=pool_config["mode"], dtype=dtype,
                param_dtype=param_dtype, rngs=rngs,
            )
            placeholders = ImagePlaceholders(**config["vision"]["placeholders"])
        return cls(
            text_encoder, heads, config=config, vision=vision, projection_pool=projection_pool,
            placeholders=placeholders, pooling_method=config["pooling"], dtype=dtype, param_dtype=param_dtype,
            rngs=rngs,
        )


# ------------------------------------------------------------------------------------------------ configuration


def _plain(value: Any) -> Any:
    """A deep copy as plain dicts/lists (ml_collections ConfigDicts and tuples included)."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return copy.deepcopy(value)


def _require_keys(section: Any, allowed: tuple[str, ...], required: tuple[str, ...], where: str) -> None:
    if not isinstance(section, Mapping):
        raise ValueError(f"student config key {where} must be a mapping, got {type(section).__name__}")
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise ValueError(f"student config key {where} has unknown key(s) {unknown}; valid keys: {list(allowed)}")
    absent = [key for key in required if key not in section]
    if absent:
        raise ValueError(f"student config key {where} lacks {absent}")


def _dtype_name(value: Any, key: str) -> str:
    try:
        return jnp.dtype(value).name
    except TypeError as error:
        raise ValueError(f"student config key {key}={value!r} is not a dtype (use 'float32' or 'bfloat16')") from error


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The student config as a plain dict with defaults filled in, or a ValueError naming the key.

        text_encoder:  a Hugging Face config.json dict (its model_type picks the family)
        text_options:  {} or family options (scan, remat, causal, truncate_long_inputs)
        pooling:       "mean" (the paper's), "cls"/"first", "last"
        heads:         {"teacher_dim": int | None, "reduction_dims": [int, ...]}
        vision:        None, or {"tower": SigLIP config.json dict, "tower_options": {},
                                 "pool": {"mode": "adaptive_average" | "linear", "num_tokens": int},
                                 "placeholders": {"start_id": int, "token_id": int, "end_id": int}}
        dtype, param_dtype: compute and storage dtypes ("bfloat16", "float32")
    """
    config = _plain(config)
    _require_keys(config, CONFIG_KEYS, ("text_encoder", "heads"), "(top level)")
    if not isinstance(config["text_encoder"], Mapping) or "model_type" not in config["text_encoder"]:
        raise ValueError("student config key text_encoder must be a Hugging Face config.json dict with a model_type")
    config.setdefault("text_options", {})
    config.setdefault("pooling", "mean")
    config.setdefault("vision", None)
    config["dtype"] = _dtype_name(config.get("dtype", "float32"), "dtype")
    config["param_dtype"] = _dtype_name(config.get("param_dtype", "float32"), "param_dtype")
    if config["pooling"] not in pooling.POOLINGS:
        raise ValueError(f"student config key pooling={config['pooling']!r}: use one of {sorted(pooling.POOLINGS)}")
    _require_keys(config["heads"], HEADS_KEYS, ("teacher_dim",), "heads")
    config["heads"].setdefault("reduction_dims", [])
    vision = config["vision"]
    if vision is not None:
        _require_keys(vision, VISION_KEYS, ("tower", "pool", "placeholders"), "vision")
        vision.setdefault("tower_options", {})
        _require_keys(vision["pool"], POOL_KEYS, ("num_tokens",), "vision.pool")
        vision["pool"].setdefault("mode", "adaptive_average")
        _require_keys(vision["placeholders"], PLACEHOLDER_KEYS, PLACEHOLDER_KEYS, "vision.placeholders")
        ids = vision["placeholders"]
        if len({ids[key] for key in PLACEHOLDER_KEYS}) != 3 or not all(
            isinstance(ids[key], int) and ids[key] >= 0 for key in PLACEHOLDER_KEYS
        ):
            raise ValueError(f"student config key vision.placeholders={ids} must be three distinct token ids ≥ 0")
    return config
