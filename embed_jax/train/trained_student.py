"""A trained stage, read back: its student, its tokenizer (one rule for every reader) and the encoding of texts and
images through it. Evaluation (embed_jax/eval/), export (embed_jax/convert/), the caption export
(embed_jax/teachers/caption_targets.py) and scripts/ read a stage folder through this module.

    student    = Student.from_config(DIR/<stage>/student_config.json) + the stage's latest checkpoint (or a step)
    tokenizer  = the rule training tokenised with (batches.tokenizer_path): the run config's data.tokenizer, else its
                 model.init_from; a stage folder without its run config: the checkpoint's recorded init_from
    encode_texts / encode_images   {dim: (n, dim) unit vectors} (and the pooled vectors), one device

Preflight refuses a run whose data.tokenizer and model.init_from name different vocabularies, so that the one
tokenizer a stage is read with is the one its token embeddings were trained with.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from embed_jax.assets import resolve_model_path
from embed_jax.data import images
from embed_jax.data.image_prompt import ImagePrompt
from embed_jax.data.pipeline import load_tokenizer
from embed_jax.models.student import Student
from embed_jax.train import checkpoint, sharding, workdir

FINGERPRINT_PREFIX = "text-path:"
# Parameters that make a caption's vectors: the encoder and the heads. Placeholder rows (added_embeddings) never
# meet a caption's tokens, and the vision tower and pool only see images.
TEXT_PATH_ROOTS = ("text_encoder", "heads")
# Padded lengths of the text batches: each compiles the forward once.
LENGTH_BUCKETS = (16, 32, 64, 128, 256, 512)
# Rows × padded length per batch: ~8k tokens keeps MiniLM's activations near 100 MB and its matmuls large enough
# to keep both CPU cores busy (measured with the evaluation, docs/eval.md).
TOKENS_PER_BATCH = 8192
MAX_ROWS = 256


# ---------------------------------------------------------------------------------------------------- the student


def restore_stage_params(stage_dir: Path, student_config: Mapping[str, Any], mesh: Any, step: int | None = None):
    """A stage's trained parameters (its latest checkpoint, or `step`), read straight into `mesh`'s shardings."""
    abstract = nnx.state(nnx.eval_shape(lambda: Student.from_config(student_config, rngs=nnx.Rngs(0))), nnx.Param)
    targets = checkpoint.abstract_with_shardings(abstract, sharding.state_sharding(abstract, mesh))
    with checkpoint.read_only_manager(workdir.as_path(stage_dir) / workdir.CHECKPOINTS_DIR) as manager:
        restored = manager.restore(step, {workdir.PARAMS_ITEM: targets}, check_identity=False)
    if restored is None:
        raise FileNotFoundError(f"{workdir.as_path(stage_dir) / workdir.CHECKPOINTS_DIR} holds no checkpoint; train "
                                "this stage first")
    return restored.state[workdir.PARAMS_ITEM]


def load_student(stage_dir: str | Path, step: int | None = None) -> Student:
    """The Student a stage trained, on one device: the start of export and evaluation."""
    stage_dir = workdir.absolute_workdir(stage_dir)
    student_config = workdir.read_student_config(stage_dir)
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    student = Student.from_config(student_config, rngs=nnx.Rngs(0))
    nnx.update(student, restore_stage_params(stage_dir, student_config, mesh, step))
    return student


# ---------------------------------------------------------------------------------------------------- the tokenizer


class TokenizerSource(NamedTuple):
    """The tokenizer a stage was trained with: a folder path or asset name, and where that was read."""
    path: str
    where: str


def tokenizer_source(stage_dir: str | Path) -> TokenizerSource:
    """The one rule (module docstring): the run config's data.tokenizer, else model.init_from, else the checkpoint's
    recorded init_from."""
    stage_dir = workdir.as_path(stage_dir)
    config_file = workdir.run_config_file(stage_dir)
    if config_file is not None:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        data, model = config.get("data") or {}, config.get("model") or {}
        if data.get("tokenizer"):
            return TokenizerSource(str(data["tokenizer"]), f"{config_file}: data.tokenizer")
        if model.get("init_from"):
            return TokenizerSource(str(model["init_from"]), f"{config_file}: model.init_from")
    init_from = latest_identity(stage_dir).get("init_from")
    if not init_from:
        raise FileNotFoundError(f"{stage_dir}: neither a run config nor the checkpoint's run_metadata names the "
                                "tokenizer (identity.init_from); pass a stage folder written by embed_jax.main, or "
                                "the tokenizer folder (--tokenizer)")
    return TokenizerSource(str(init_from), f"{stage_dir}/{workdir.CHECKPOINTS_DIR}/*/run_metadata: identity.init_from")


def latest_identity(stage_dir: Path) -> dict[str, Any]:
    """The newest checkpoint's recorded identity (init_from, records fingerprint, teachers, ...)."""
    steps = workdir.checkpoint_steps(stage_dir)
    if not steps:
        raise FileNotFoundError(f"{stage_dir / workdir.CHECKPOINTS_DIR}: no checkpoint; train this stage first")
    return workdir.stored_identity(stage_dir, steps[-1])


def tokenizer_folder(stage_dir: str | Path, override: str = "") -> Path:
    """The folder of the stage's tokenizer (`override`, e.g. a program's --tokenizer, wins)."""
    return resolve_model_path(override or tokenizer_source(stage_dir).path)


# ---------------------------------------------------------------------------------------------------- encoding


@dataclasses.dataclass(frozen=True)
class Encoded:
    embeddings: dict[int, np.ndarray]  # {head dim: (n, dim) unit vectors}
    pooled: np.ndarray  # (n, hidden) the encoder's pooled vectors, before the heads


def plan_buckets(lengths: np.ndarray, max_length: int) -> list[tuple[int, int, np.ndarray]]:
    """[(padded length, rows per batch, text indices)] covering every text once, longest first."""
    buckets = sorted({bucket for bucket in LENGTH_BUCKETS if bucket < max_length} | {max_length})
    chosen = np.array([next(bucket for bucket in buckets if bucket >= max(length, 1)) for length in lengths])
    order = np.argsort(-np.asarray(lengths), kind="stable")
    plan = []
    for bucket in sorted(set(chosen.tolist()), reverse=True):
        members = order[chosen[order] == bucket]
        rows = max(1, min(MAX_ROWS, TOKENS_PER_BATCH // bucket, len(members)))
        plan.extend((bucket, rows, members[start:start + rows]) for start in range(0, len(members), rows))
    return plan


def text_forward(student: Student) -> Callable:
    """The jitted text path: (input_ids, attention_mask) → ({dim: unit vectors}, pooled)."""
    graphdef, state = nnx.split(student)

    @jax.jit
    def run(state, input_ids, attention_mask):
        outputs = nnx.merge(graphdef, state)(input_ids, attention_mask)
        return outputs["embeddings"], outputs["pooled"]

    return lambda ids, mask: run(state, ids, mask)


def encode_texts(student: Student, tokenizer: str | Path, texts: Sequence[str], *, max_length: int,
                 forward: Callable | None = None, on_batch: Callable[[int], None] | None = None) -> Encoded:
    """`texts` through the student's text path (truncated to `max_length` tokens, and to the encoder's position
    table): sorted by token length and padded to a few length buckets with a fixed row count per bucket, so the
    forward compiles once per bucket. `forward`: a `text_forward(student)` to reuse; `on_batch(n)` after each batch."""
    positions = student.config["text_encoder"].get("max_position_embeddings") or max_length
    max_length = min(int(max_length), int(positions))
    encoder, pad_id = load_tokenizer(str(tokenizer), max_length)
    forward = forward or text_forward(student)
    encodings = encoder.encode_batch(list(texts))
    lengths = np.array([len(encoding.ids) for encoding in encodings])
    embeddings = {int(dim): np.empty((len(texts), int(dim)), dtype=np.float32) for dim in student.heads.dims}
    pooled = np.empty((len(texts), int(student.hidden_size)), dtype=np.float32)
    for length, rows, members in plan_buckets(lengths, max_length):
        input_ids = np.full((rows, length), pad_id, dtype=np.int32)
        attention_mask = np.zeros((rows, length), dtype=np.int32)
        attention_mask[:, 0] = 1  # filler rows (a short last batch) keep one real token: no empty mean
        for row, index in enumerate(members):
            ids = encodings[index].ids
            input_ids[row, :len(ids)] = ids
            attention_mask[row, :len(ids)] = 1
        batch_embeddings, batch_pooled = forward(input_ids, attention_mask)
        for dim, array in batch_embeddings.items():
            embeddings[int(dim)][members] = np.asarray(array, dtype=np.float32)[:len(members)]
        pooled[members] = np.asarray(batch_pooled, dtype=np.float32)[:len(members)]
        if on_batch is not None:
            on_batch(len(members))
    return Encoded(embeddings, pooled)


def encode_images(student: Student, prompt: ImagePrompt, pixel_values: np.ndarray, *,
                  batch_size: int = 64) -> dict[int, np.ndarray]:
    """{dim: (n, dim) unit vectors} of preprocessed images (n, S, S, 3) through the image path."""
    forward = nnx.jit(lambda model, ids, pixels: model(ids, pixel_values=pixels)["embeddings"])
    outputs: dict[int, list[np.ndarray]] = {}
    for start in range(0, len(pixel_values), batch_size):
        chunk = pixel_values[start:start + batch_size]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - len(chunk), axis=0)])
        ids = np.broadcast_to(prompt.input_ids, (batch_size, prompt.input_ids.shape[0]))
        for dim, vectors in forward(student, jnp.asarray(ids), jnp.asarray(padded)).items():
            outputs.setdefault(dim, []).append(np.asarray(vectors)[:len(chunk)])
    return {dim: np.concatenate(parts) for dim, parts in outputs.items()}


def image_settings(student: Student) -> images.ImageSettings:
    return images.ImageSettings(student.vision.config.image_size)


# ---------------------------------------------------------------------------------------------------- fingerprint


def text_path_fingerprint(student: Student) -> str:
    """SHA-256 over the text path's parameters (names, shapes, dtypes, bytes), as 'text-path:<hex>'."""
    hasher = hashlib.sha256(b"embed_jax text path v1\0")
    flat = sorted(nnx.to_flat_state(nnx.state(student, nnx.Param)), key=lambda item: tuple(map(str, item[0])))
    for path, variable in flat:
        if path[0] not in TEXT_PATH_ROOTS:
            continue
        value = np.asarray(jax.device_get(variable.get_value()))
        hasher.update(f"{'/'.join(map(str, path))}:{value.shape}:{value.dtype}\0".encode())
        hasher.update(np.ascontiguousarray(value).tobytes())
    return FINGERPRINT_PREFIX + hasher.hexdigest()
