"""Teachers in PyTorch: a sentence-transformers folder, or a Hugging Face folder with a pooling spec.

* `pooling="auto"` on a sentence-transformers folder (one with modules.json) runs the folder's own module pipeline
  (Transformer → Pooling → optional Dense/Normalize) through `SentenceTransformer.preprocess` and its forward,
  exactly what `SentenceTransformer.encode` computes, prompt handling included.
* `pooling="mean"` or `"cls"` on any Hugging Face folder (config.json + weights + tokenizer) runs `AutoModel` and
  pools its last hidden states: masked mean over real tokens, or the first token.

A prompt is prepended to each text for this teacher only (SPEC §2: teachers may want an instruction prompt).
Teachers return raw vectors; normalisation and concatenation are `targets.concatenated_target`'s job.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from embed_jax import assets

POOLINGS = ("auto", "mean", "cls")
# Files that describe a model but do not change its vectors.
_NOT_FINGERPRINTED = ("README.md", "desktop.ini")
# Above this, a tokenizer's model_max_length is Hugging Face's "no limit" placeholder, not a real window.
_NO_LIMIT = 1_000_000


class TeacherConfigError(ValueError):
    """A teacher's config entry is wrong; the message names the key (`teachers.<name>.<field>`)."""


@dataclasses.dataclass(frozen=True)
class TeacherSpec:
    name: str
    path: str
    pooling: str = "auto"
    prompt: str = ""
    max_seq_length: int = 0  # 0: the model's own window


def folder_fingerprint(folder: Path) -> str:
    """sha256 over every file that shapes the vectors (weights, configs, tokenizer), by relative path."""
    digest = hashlib.sha256()
    for file in sorted(path for path in folder.rglob("*") if path.is_file()):
        if file.name in _NOT_FINGERPRINTED or any(part.startswith(".") for part in file.relative_to(folder).parts):
            continue
        digest.update(str(file.relative_to(folder)).encode("utf-8") + b"\0")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(16 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


class Teacher:
    """A loaded teacher: `token_lengths` for batching, `encode_batch` for raw vectors (float32, (n, dim))."""

    spec: TeacherSpec
    folder: Path
    dim: int
    max_seq_length: int

    def prompted(self, texts: Sequence[str]) -> list[str]:
        return [self.spec.prompt + text for text in texts] if self.spec.prompt else list(texts)

    def token_lengths(self, texts: Sequence[str]) -> np.ndarray:
        encoded = self.tokenizer(self.prompted(texts), truncation=True, max_length=self.max_seq_length)
        return np.array([len(ids) for ids in encoded["input_ids"]], dtype=np.int64)

    def encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError


class SentenceTransformerTeacher(Teacher):
    def __init__(self, spec: TeacherSpec, folder: Path):
        from sentence_transformers import SentenceTransformer

        self.spec, self.folder = spec, folder
        self.model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        self.model.eval()
        if spec.max_seq_length:
            self.model.max_seq_length = spec.max_seq_length
        self.max_seq_length = int(self.model.max_seq_length)
        self.tokenizer = self.model.tokenizer
        self.dim = int(self.model.get_embedding_dimension())

    @torch.inference_mode()
    def encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        features = self.model.preprocess(list(texts), prompt=self.spec.prompt or None)
        return self.model(features)["sentence_embedding"].float().numpy()


class PooledHuggingFaceTeacher(Teacher):
    def __init__(self, spec: TeacherSpec, folder: Path):
        from transformers import AutoModel, AutoTokenizer

        self.spec, self.folder = spec, folder
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32).eval()
        self.max_seq_length = spec.max_seq_length or self._model_window()
        self.dim = int(self.model.config.hidden_size)

    def _model_window(self) -> int:
        windows = [self.tokenizer.model_max_length, getattr(self.model.config, "max_position_embeddings", None)]
        windows = [int(window) for window in windows if window and window < _NO_LIMIT]
        if not windows:
            raise TeacherConfigError(f"teachers.{self.spec.name}.max_seq_length: {self.folder} states no input "
                                     f"window; set it, e.g. --config.teachers.{self.spec.name}.max_seq_length=512.")
        return min(windows)

    @torch.inference_mode()
    def encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        inputs = self.tokenizer(self.prompted(texts), truncation=True, max_length=self.max_seq_length,
                                padding=True, return_tensors="pt")
        hidden = self.model(**inputs).last_hidden_state.float()
        if self.spec.pooling == "cls":
            return hidden[:, 0].numpy()
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return ((hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)).numpy()


def load_teacher(spec: TeacherSpec) -> Teacher:
    """The teacher `spec` names, after checking its folder and pooling; errors name the config key."""
    key = f"teachers.{spec.name}"
    if spec.pooling not in POOLINGS:
        raise TeacherConfigError(f"{key}.pooling={spec.pooling!r}; choose one of {', '.join(POOLINGS)}.")
    if spec.max_seq_length < 0:
        raise TeacherConfigError(f"{key}.max_seq_length={spec.max_seq_length} must be ≥ 0 (0: the model's own).")
    try:
        folder = assets.resolve_model_path(spec.path)
    except assets.AssetError as error:
        raise TeacherConfigError(f"{key}.path={spec.path!r}: {error}") from error
    if not folder.is_dir():
        raise TeacherConfigError(f"{key}.path={spec.path!r}: {folder} is not a folder. Give a sentence-transformers "
                                 f"folder, or a Hugging Face folder with a pooling (mean or cls).")
    if spec.pooling == "auto":
        if not (folder / "modules.json").is_file():
            raise TeacherConfigError(f"{key}.pooling='auto' needs a sentence-transformers folder (modules.json), "
                                     f"and {folder} has none; set {key}.pooling to 'mean' or 'cls'.")
        return SentenceTransformerTeacher(spec, folder)
    if not (folder / "config.json").is_file():
        raise TeacherConfigError(f"{key}.path: {folder} has no config.json; it is not a Hugging Face model folder.")
    return PooledHuggingFaceTeacher(spec, folder)


def encode_texts(teacher: Teacher, texts: Sequence[str], *, max_tokens_per_batch: int,
                 max_batch_size: int) -> np.ndarray:
    """Raw (n, dim) float32 vectors of `texts` in their order, computed in length-bucketed batches."""
    from embed_jax.teachers.batching import plan_length_batches

    vectors = np.empty((len(texts), teacher.dim), dtype=np.float32)
    for batch in plan_length_batches(teacher.token_lengths(texts), max_tokens_per_batch, max_batch_size):
        vectors[batch] = teacher.encode_batch([texts[index] for index in batch])
    return vectors
