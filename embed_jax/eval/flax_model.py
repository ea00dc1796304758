"""A trained student (a stage folder of embed_jax.main) as an evaluated model, encoded by the Flax model itself.

Rows: every FC head ("1152", "256", ...) and "pooled" (the backbone's pooled vector, before the heads: in stage 1
it is the init model's own vector, so it shows what the backbone alone gives).

Tokenizer: the stage's own, by embed_jax/train/trained_student.py's one rule (the run config's data.tokenizer, else
its model.init_from; without a run config, the checkpoint's recorded init_from). Window (max_length): --max_length
if given, else the tokenizer folder's sentence-transformers window (sentence_bert_config.json, 256 for
all-MiniLM-L6-v2: the window the init model is used with), else min(512, the encoder's max_position_embeddings).

Encoding: trained_student.encode_texts (texts sorted by token length, padded to a few length buckets with a fixed
row count per bucket, so the jitted forward compiles once per bucket; one device).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from embed_jax.eval import overlap
from embed_jax.eval.encoding import POOLED_HEAD, EncodeContext, EvalModel, EvalProgress, ModelSpecError, \
    files_fingerprint
from embed_jax.assets import AssetError, resolve_model_path
from embed_jax.train import trained_student, workdir

DEFAULT_WINDOW = 512


def default_window(tokenizer_folder: Path, student_config: dict[str, Any]) -> int:
    sentence_config = tokenizer_folder / "sentence_bert_config.json"
    if sentence_config.is_file():
        window = json.loads(sentence_config.read_text(encoding="utf-8")).get("max_seq_length")
        if window:
            return int(window)
    positions = student_config["text_encoder"].get("max_position_embeddings") or DEFAULT_WINDOW
    return min(DEFAULT_WINDOW, int(positions))


class FlaxStudentModel(EvalModel):
    kind = "flax-student"

    def __init__(self, spec: str, stage_dir: Path, *, holdout: overlap.HoldoutCheck, max_length: int = 0):
        self.spec, self.stage_dir, self.holdout = spec, stage_dir, holdout
        try:
            identity = trained_student.latest_identity(stage_dir)
            tokenizer_path, tokenizer_where = trained_student.tokenizer_source(stage_dir)
        except FileNotFoundError as error:
            raise ModelSpecError(str(error)) from error
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
        self.tokenizer_folder = tokenizer_folder
        self.student = trained_student.load_student(stage_dir)
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
        """The jitted forward, compiled once for every call of this model."""
        if self._forward is None:
            self._forward = trained_student.text_forward(self.student)
        return self._forward

    def encode_uncached(self, texts: Sequence[str], context: EncodeContext) -> dict[str, np.ndarray]:
        progress = EvalProgress(len(texts), self.spec, context.progress_every_s)
        encoded = trained_student.encode_texts(self.student, self.tokenizer_folder, texts, max_length=self.max_length,
                                               forward=self.forward(), on_batch=progress.advance)
        progress.finish()
        return {**{str(dim): vectors for dim, vectors in encoded.embeddings.items()}, POOLED_HEAD: encoded.pooled}
