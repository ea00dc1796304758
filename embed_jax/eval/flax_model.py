"""A trained student (a stage folder of embed_jax.main) as an evaluated model, encoded by the Flax model itself.

Rows: every FC head ("1152", "256", ...) and "pooled" (the backbone's pooled vector, before the heads: in stage 1
it is the init model's own vector, so it shows what the backbone alone gives).

Tokenizer: the run config's data.tokenizer, else its model.init_from (what training tokenised with); without a run
config, the checkpoint's recorded init_from. Window (max_length): --max_length if given, else the tokenizer folder's
sentence-transformers window (sentence_bert_config.json, 256 for all-MiniLM-L6-v2: the window the init model is
used with), else min(512, the encoder's max_position_embeddings).

Encoding: texts sorted by token length, padded to a few length buckets with a fixed row count per bucket, so the
jitted forward compiles once per bucket; one device.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np
from flax import nnx

from embed_jax.data.pipeline import load_tokenizer
from embed_jax.eval import overlap
from embed_jax.eval.encoding import POOLED_HEAD, EncodeContext, EvalModel, EvalProgress, ModelSpecError, \
    files_fingerprint
from embed_jax.assets import AssetError, resolve_model_path
from embed_jax.train import workdir

LENGTH_BUCKETS = (16, 32, 64, 128, 256, 512)
# Rows × padded length per batch: ~8k tokens keeps MiniLM's activations near 100 MB and its matmuls large enough
# to keep both CPU cores busy.
TOKENS_PER_BATCH = 8192
MAX_ROWS = 256
DEFAULT_WINDOW = 512


def checkpoint_identity(stage_dir: Path) -> dict[str, Any]:
    """The newest checkpoint's recorded identity (init_from, records fingerprint, teachers, ...)."""
    steps = workdir.checkpoint_steps(stage_dir)
    if not steps:
        raise ModelSpecError(f"{stage_dir / workdir.CHECKPOINTS_DIR}: no checkpoint; train this stage first.")
    return workdir.stored_identity(stage_dir, steps[-1])


def tokenizer_source(stage_dir: Path, identity: dict[str, Any]) -> tuple[str, str]:
    """(tokenizer path or asset name, where it was found)."""
    config_file = workdir.run_config_file(stage_dir)
    if config_file is not None:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        data, model = config.get("data", {}), config.get("model", {})
        if data.get("tokenizer"):
            return data["tokenizer"], f"{config_file}: data.tokenizer"
        if model.get("init_from"):
            return model["init_from"], f"{config_file}: model.init_from"
    init_from = identity.get("init_from")
    if not init_from:
        raise ModelSpecError(f"{stage_dir}: neither a run config nor the checkpoint's run_metadata names the "
                             f"tokenizer (identity.init_from); pass a stage folder written by embed_jax.main.")
    return init_from, f"{stage_dir}/{workdir.CHECKPOINTS_DIR}/*/run_metadata: identity.init_from"


def default_window(tokenizer_folder: Path, student_config: dict[str, Any]) -> int:
    sentence_config = tokenizer_folder / "sentence_bert_config.json"
    if sentence_config.is_file():
        window = json.loads(sentence_config.read_text(encoding="utf-8")).get("max_seq_length")
        if window:
            return int(window)
    positions = student_config["text_encoder"].get("max_position_embeddings") or DEFAULT_WINDOW
    return min(DEFAULT_WINDOW, int(positions))


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


class FlaxStudentModel(EvalModel):
    kind = "flax-student"

    def __init__(self, spec: str, stage_dir: Path, *, holdout: overlap.HoldoutCheck, max_length: int = 0):
        self.spec, self.stage_dir, self.holdout = spec, stage_dir, holdout
        identity = checkpoint_identity(stage_dir)
        tokenizer_path, tokenizer_where = tokenizer_source(stage_dir, identity)
        try:
            tokenizer_folder = resolve_model_path(tokenizer_path)
        except AssetError as error:
            raise ModelSpecError(f"model {spec}: tokenizer {tokenizer_path!r} ({tokenizer_where}): {error}") from error
        if not (tokenizer_folder / "tokenizer.json").is_file():
            raise ModelSpecError(
                f"model {spec}: the tokenizer folder {tokenizer_folder} ({tokenizer_where}) has no tokenizer.json. "
                f"Restore that folder, or write a fast tokenizer into it: "
                f"`AutoTokenizer.from_pretrained(SOURCE).save_pretrained('{tokenizer_folder}')`.")
        student_config = workdir.read_student_config(stage_dir)
        self.max_length = max_length or default_window(tokenizer_folder, student_config)
        self.tokenizer, self.pad_id = load_tokenizer(str(tokenizer_folder), self.max_length)
        self.tokenizer_folder = tokenizer_folder
        self.student = workdir.load_trained_student(stage_dir)
        dims = [int(dim) for dim in self.student.heads.dims]
        self.heads = {**{str(dim): dim for dim in dims}, POOLED_HEAD: int(self.student.hidden_size)}
        self.default_head = str(dims[0])
        self.source = {"stage_dir": str(stage_dir), "tokenizer": str(tokenizer_folder),
                       "tokenizer_from": tokenizer_where, "max_length": self.max_length,
                       "identity": identity}
        self._forward = None

    def fingerprint(self) -> str:
        """The checkpoints, the architecture and the tokenizer: what the vectors depend on. Not the whole stage
        folder: a resumed run that trains nothing rewrites student_config.json (same text), loss_curves.png and
        TensorBoard events, which must not cost a re-encoding (measured on `bash scripts/run.sh`, docs/eval.md)."""
        student_config = (self.stage_dir / workdir.STUDENT_CONFIG_FILE).read_bytes()
        return files_fingerprint(self.stage_dir / workdir.CHECKPOINTS_DIR, self.tokenizer_folder,
                                 settings={"kind": self.kind, "max_length": self.max_length,
                                           "student_config": hashlib.sha256(student_config).hexdigest()})

    def forward(self):
        """The jitted forward: (input_ids, attention_mask) → ({dim: unit vectors}, pooled)."""
        if self._forward is None:
            graphdef, state = nnx.split(self.student)

            @jax.jit
            def run(state, input_ids, attention_mask):
                outputs = nnx.merge(graphdef, state)(input_ids, attention_mask)
                return outputs["embeddings"], outputs["pooled"]

            self._forward = lambda ids, mask: run(state, ids, mask)
        return self._forward

    def encode_uncached(self, texts: Sequence[str], context: EncodeContext) -> dict[str, np.ndarray]:
        encodings = self.tokenizer.encode_batch(list(texts))
        lengths = np.array([len(encoding.ids) for encoding in encodings])
        vectors = {head: np.empty((len(texts), dim), dtype=np.float32) for head, dim in self.heads.items()}
        progress = EvalProgress(len(texts), self.spec, context.progress_every_s)
        for length, rows, members in plan_buckets(lengths, self.max_length):
            input_ids = np.full((rows, length), self.pad_id, dtype=np.int32)
            attention_mask = np.zeros((rows, length), dtype=np.int32)
            attention_mask[:, 0] = 1  # filler rows (a short last batch) keep one real token: no empty mean
            for row, index in enumerate(members):
                ids = encodings[index].ids
                input_ids[row, :len(ids)] = ids
                attention_mask[row, :len(ids)] = 1
            embeddings, pooled = self.forward()(input_ids, attention_mask)
            for dim, array in embeddings.items():
                vectors[str(int(dim))][members] = np.asarray(array, dtype=np.float32)[:len(members)]
            vectors[POOLED_HEAD][members] = np.asarray(pooled, dtype=np.float32)[:len(members)]
            progress.advance(len(members))
        progress.finish()
        return vectors
