"""A sentence-transformers folder as an evaluated model: a teacher, an asset, or a folder embed_jax exported.

Heads (stella's convention, which embed_jax's exporter follows): a folder with `2_Dense_{dim}/` folders holds one
FC head per folder, and modules.json routes through one of them (the default). Each head is scored as its own row,
plus "pooled" (the backbone's pooled vector, before any head). The modules before the Dense run once per batch,
then every head runs on their output; vectors are L2-normalised. A folder without such heads is one row, exactly
what `SentenceTransformer.encode(..., normalize_embeddings=True)` gives (no prompt: every task here is symmetric).
An embed_jax export trained with Matryoshka prefixes (embed_jax_export.json `matryoshka_dims`) adds a row per prefix,
`1152[:256]`: FC1's first 256 dims, renormalised, what `SentenceTransformer(folder, truncate_dim=256)` ranks by.

Batches are length-bucketed (embed_jax.teachers.batching: the same plan as the teacher export), with a progress line.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from embed_jax.eval import overlap
from embed_jax.eval.encoding import DEFAULT_HEAD, POOLED_HEAD, EncodeContext, EvalModel, EvalProgress, \
    ModelSpecError, files_fingerprint
from embed_jax.teachers.batching import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_TOKENS_PER_BATCH, plan_length_batches

DENSE_FOLDER = re.compile(r"^2_Dense_(\d+)$")
# A fast tokenizer (tokenizer.json), or a tokenizer config with one of the vocabulary files slow tokenizers read.
VOCABULARY_FILES = ("vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")


def read_modules(folder: Path) -> list[dict]:
    path = folder / "modules.json"
    try:
        modules = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ModelSpecError(f"{path}: unreadable ({error}); it is not a usable sentence-transformers folder.") \
            from error
    if not isinstance(modules, list) or not all(isinstance(module, dict) and "type" in module for module in modules):
        raise ModelSpecError(f"{path}: expected a list of {{\"type\", \"path\", ...}} entries.")
    return modules


def check_tokenizer(folder: Path, spec: str) -> None:
    """Refuse a model folder that cannot tokenize, before loading it (sentence-transformers would fail obscurely or
    try to download one)."""
    if (folder / "tokenizer.json").is_file():
        return
    if (folder / "tokenizer_config.json").is_file() and any((folder / name).is_file() for name in VOCABULARY_FILES):
        return
    raise ModelSpecError(
        f"model {spec}: {folder} has no tokenizer: neither tokenizer.json nor tokenizer_config.json with a vocabulary "
        f"file ({', '.join(VOCABULARY_FILES)}). Copy the tokenizer of the model it came from into it, e.g. "
        f"`AutoTokenizer.from_pretrained(SOURCE).save_pretrained('{folder}')`.")


def transformer_folder(folder: Path, modules: list[dict]) -> Path:
    for module in modules:
        if module["type"].endswith("Transformer"):
            return folder / module.get("path", "")
    return folder


def dense_heads(folder: Path) -> dict[int, Path]:
    """{dim: folder} of the `2_Dense_{dim}` head folders, largest first."""
    found = {int(match.group(1)): path for path in folder.iterdir()
             if path.is_dir() and (match := DENSE_FOLDER.match(path.name))}
    return dict(sorted(found.items(), reverse=True))


def matryoshka_prefixes(folder: Path, heads: dict[str, int]) -> dict[str, tuple[str, int]]:
    """{row name: (head, width)} of the Matryoshka prefixes an embed_jax export declares (embed_jax_export.json
    `matryoshka_dims`, prefixes of its FC1, the widest head); {} for any other folder."""
    path = folder / overlap.EXPORT_FILE
    try:
        dims = json.loads(path.read_text(encoding="utf-8")).get("matryoshka_dims") if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return {}
    widths = {head: dim for head, dim in heads.items() if head.isdigit()}
    if not dims or not widths:
        return {}
    widest = max(widths, key=widths.get)
    return {f"{widest}[:{dim}]": (widest, int(dim)) for dim in sorted(dims, reverse=True) if dim < widths[widest]}


class SentenceTransformerModel(EvalModel):
    kind = "sentence-transformers"

    def __init__(self, spec: str, folder: Path, *, holdout: overlap.HoldoutCheck, max_length: int = 0):
        from sentence_transformers import SentenceTransformer

        self.spec, self.folder, self.holdout = spec, folder, holdout
        modules = read_modules(folder)
        check_tokenizer(transformer_folder(folder, modules), spec)
        self.model = SentenceTransformer(str(folder), device="cpu", local_files_only=True).eval()
        if max_length:
            self.model.max_seq_length = max_length
        self.max_length = int(self.model.max_seq_length)
        head_folders = dense_heads(folder)
        if head_folders:
            self._init_heads(modules, head_folders)
        else:
            self.prefix, self.dense = list(self.model), {}
            self.heads = {DEFAULT_HEAD: int(self.model.get_embedding_dimension())}
            self.default_head = DEFAULT_HEAD
        self.prefixes = matryoshka_prefixes(folder, self.heads)
        self.heads.update({name: dim for name, (_, dim) in self.prefixes.items()})
        self.source = {"folder": str(folder), "max_length": self.max_length,
                       "dense_heads": [str(path.name) for path in head_folders.values()]}

    def _init_heads(self, modules: list[dict], head_folders: dict[int, Path]) -> None:
        from sentence_transformers.sentence_transformer.modules import Dense

        dense_positions = [index for index, module in enumerate(modules) if module["type"].endswith("Dense")]
        if not dense_positions:
            raise ModelSpecError(f"{self.folder}: has {', '.join(path.name for path in head_folders.values())} but "
                                 f"modules.json routes through no Dense module; it is not a stella-style folder.")
        first_dense = dense_positions[0]
        default_folder = Path(modules[first_dense].get("path", "")).name
        self.prefix = list(self.model)[:first_dense]
        self.dense = {str(dim): Dense.load(str(path)).eval() for dim, path in head_folders.items()}
        pooled_dim = next(iter(self.dense.values())).in_features
        self.heads = {**{head: module.out_features for head, module in self.dense.items()}, POOLED_HEAD: pooled_dim}
        match = DENSE_FOLDER.match(default_folder)
        self.default_head = match.group(1) if match else next(iter(self.dense))

    def fingerprint(self) -> str:
        return files_fingerprint(self.folder, settings={"kind": self.kind, "max_length": self.max_length})

    def token_lengths(self, texts: Sequence[str]) -> np.ndarray:
        encoded = self.model.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        return np.array([len(ids) for ids in encoded["input_ids"]], dtype=np.int64)

    @torch.inference_mode()
    def encode_batch(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        features = self.model.preprocess(list(texts))
        for module in self.prefix:
            features = module(features)
        pooled = features["sentence_embedding"].float()
        if not self.dense:
            return {DEFAULT_HEAD: pooled.numpy()}
        outputs = {head: module({"sentence_embedding": pooled})["sentence_embedding"].float().numpy()
                   for head, module in self.dense.items()}
        for name, (head, dim) in self.prefixes.items():
            prefix = outputs[head][:, :dim]
            outputs[name] = prefix / np.maximum(np.linalg.norm(prefix, axis=1, keepdims=True), 1e-12)
        return {**outputs, POOLED_HEAD: pooled.numpy()}

    def encode_uncached(self, texts: Sequence[str], context: EncodeContext) -> dict[str, np.ndarray]:
        vectors = {head: np.empty((len(texts), dim), dtype=np.float32) for head, dim in self.heads.items()}
        progress = EvalProgress(len(texts), self.spec, context.progress_every_s)
        for batch in plan_length_batches(self.token_lengths(texts), DEFAULT_MAX_TOKENS_PER_BATCH,
                                         DEFAULT_MAX_BATCH_SIZE):
            for head, array in self.encode_batch([texts[index] for index in batch]).items():
                vectors[head][batch] = array
            progress.advance(len(batch))
        progress.finish()
        return vectors
