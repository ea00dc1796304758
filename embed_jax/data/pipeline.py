"""Input pipeline (grain): teacher records → per-process batches of token ids, attention masks and teacher vectors.

    records (one or more folders) ─ RecordDataSource: random access over every shard, decoded
      → shuffle (seeded; a new permutation each epoch, grain's index shuffle, nothing materialised)
      → trim each epoch to a multiple of the global batch (every process then gets the same number of batches)
      → this process's share: elements process_index, process_index + process_count, ...
      → batch global_batch_size / process_count records
      → tokenise with the student's Hugging Face tokenizer (truncated to max_length), pad to the smallest length
        bucket that holds the batch's longest text
      → repeat (num_epochs; None = forever)

Each process yields `{"input_ids": int32 (B_local, L), "attention_mask": int32 (B_local, L), "teacher": float32
(B_local, teacher_dim)}` with L one of `length_buckets`. The global batch at step s is the union of the processes'
batches at step s, a disjoint cover of one slice of the epoch's permutation. Processes may pick different buckets
for the same step: the trainer agrees on the largest and calls `pad_batch_to_length`.

The iterator (`iter(dataset)`) is a grain DatasetIterator: `get_state()` / `set_state()` save and restore its exact
position (a small dict), and grain's Orbax handler checkpoints it beside the train state.

No torch, no transformers: the tokenizer is the Rust `tokenizers` library; this module is on the training path.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import grain
import numpy as np

from embed_jax.data import records
from embed_jax.data.records import Manifest, RecordsError


class PipelineConfigError(ValueError):
    """A pipeline setting or the records do not fit the training config; the message names the key."""


class RecordDataSource(grain.sources.RandomAccessDataSource):
    """Every record of one or more records folders (whose manifests must agree), decoded, by global index."""

    def __init__(self, folders: str | os.PathLike | Sequence[str | os.PathLike]):
        folders = [folders] if isinstance(folders, (str, os.PathLike)) else list(folders)
        if not folders:
            raise RecordsError("no records folder given; export one with `python -m embed_jax.teachers.export`.")
        self.folders = [Path(folder) for folder in folders]
        self.manifests = [records.read_manifest(folder) for folder in self.folders]
        records.check_manifests_agree(list(zip(self.folders, self.manifests)))
        paths = [str(path) for folder, manifest in zip(self.folders, self.manifests)
                 for path in records.shard_paths(folder, manifest)]
        self._shards = grain.sources.ArrayRecordDataSource(paths)
        expected = sum(manifest.num_records for manifest in self.manifests)
        if len(self._shards) != expected:
            raise RecordsError(f"{', '.join(map(str, self.folders))}: the shards hold {len(self._shards)} records, "
                               f"the manifests list {expected}; a shard was replaced. Re-export the records.")

    @property
    def manifest(self) -> Manifest:
        """The first folder's manifest (all agree on teachers, dim, dtype and schema)."""
        return self.manifests[0]

    def __len__(self) -> int:
        return len(self._shards)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return records.decode_record(self._shards[index])

    def __repr__(self) -> str:
        return f"RecordDataSource({', '.join(map(str, self.folders))}, {len(self)} records)"


def check_manifest_for_training(manifest: Manifest, *, teacher_dim: int, teacher_dim_key: str,
                                records_key: str = "data.records") -> None:
    """Refuse records that do not fit the training config, before the first step; errors name the config key."""
    if manifest.schema_version != records.SCHEMA_VERSION:
        raise PipelineConfigError(f"{records_key}: records of schema version {manifest.schema_version}; this "
                                  f"embed_jax reads {records.SCHEMA_VERSION}. Re-export them.")
    if manifest.teacher_dim != teacher_dim:
        parts = " + ".join(f"{teacher.name} {teacher.dim}" for teacher in manifest.teachers)
        raise PipelineConfigError(
            f"{teacher_dim_key}={teacher_dim}, but the records in {records_key} hold {manifest.teacher_dim}-d teacher "
            f"vectors ({parts}). Set --config.{teacher_dim_key}={manifest.teacher_dim}, or point {records_key} at "
            f"records exported with the teachers you mean.")


# ------------------------------------------------------------------------------------------- tokens and padding


def check_length_buckets(length_buckets: Sequence[int], max_length: int,
                         key: str = "data.length_buckets") -> tuple[int, ...]:
    """Sorted buckets ending at max_length (added if missing); errors name the key."""
    if max_length <= 0:
        raise PipelineConfigError(f"data.max_length={max_length} must be positive.")
    buckets = sorted(set(int(bucket) for bucket in length_buckets))
    if any(bucket <= 0 or bucket > max_length for bucket in buckets):
        raise PipelineConfigError(f"{key}={tuple(length_buckets)}: every bucket must be in 1..max_length "
                                  f"({max_length}).")
    return tuple(bucket for bucket in buckets if bucket < max_length) + (max_length,)


def bucket_for(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket ≥ length (buckets sorted, the last one = max_length ≥ any truncated length)."""
    return next(bucket for bucket in buckets if bucket >= length)


def pad_batch_to_length(batch: dict[str, np.ndarray], length: int, *, pad_token_id: int = 0) -> dict[str, np.ndarray]:
    """`batch` with input_ids and attention_mask right-padded to `length` (processes agreeing on one length)."""
    current = batch["input_ids"].shape[1]
    if length < current:
        raise ValueError(f"cannot pad a batch of length {current} down to {length}; pick the largest length.")
    if length == current:
        return batch
    extra = ((0, 0), (0, length - current))
    return {**batch,
            "input_ids": np.pad(batch["input_ids"], extra, constant_values=pad_token_id),
            "attention_mask": np.pad(batch["attention_mask"], extra, constant_values=0)}


def load_tokenizer(path: str, max_length: int):
    """The student's tokenizer (its folder's tokenizer.json, Rust `tokenizers`), truncating to max_length, no padding.

    The `tokenizers` library is what Hugging Face's fast tokenizers run underneath (tests/data/test_pipeline.py checks
    equal ids against `AutoTokenizer`), without importing transformers, which would import torch if installed. A
    tokenizer.json's own truncation and padding settings are replaced: max_length comes from the training config.
    """
    import tokenizers

    from embed_jax.teachers.assets import resolve_model_path  # imports no torch: it only locates folders

    folder = resolve_model_path(path)
    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise PipelineConfigError(
            f"data.tokenizer={path!r}: {folder} has no tokenizer.json. Write one with a fast tokenizer: "
            f"`AutoTokenizer.from_pretrained(folder).save_pretrained(folder)`.")
    tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return tokenizer, pad_token_id(tokenizer, folder)


def pad_token_id(tokenizer, folder: Path) -> int:
    """The id of the folder's pad token (tokenizer_config.json or tokenizer.json's padding); 0 when it names none
    (GPT-2): padded positions are masked out, so any id does."""
    config_file = folder / "tokenizer_config.json"
    pad_token = None
    if config_file.is_file():
        pad_token = json.loads(config_file.read_text(encoding="utf-8")).get("pad_token")
        pad_token = pad_token.get("content") if isinstance(pad_token, dict) else pad_token
    if pad_token is None and tokenizer.padding:
        pad_token = tokenizer.padding.get("pad_token")
    token_id = tokenizer.token_to_id(pad_token) if pad_token else None
    return int(token_id) if token_id is not None else 0


class TokenizeAndPad(grain.transforms.Map):
    """A batch of records → token ids and mask padded to a length bucket, plus the stacked teacher vectors.

    One Rust tokenizer serves every read thread: after set-up it is only read (`encode_batch`), which the
    `tokenizers` library allows concurrently (its "Already borrowed" error comes from changing settings mid-use).
    """

    def __init__(self, tokenizer_path: str, max_length: int, buckets: Sequence[int], include_ids: bool = False):
        self.tokenizer, self.pad_token_id = load_tokenizer(tokenizer_path, max_length)
        self.buckets, self.include_ids = tuple(buckets), include_ids

    def map(self, batch: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        encoded = [encoding.ids for encoding in self.tokenizer.encode_batch([record["text"] for record in batch])]
        length = bucket_for(max(len(ids) for ids in encoded), self.buckets)
        input_ids = np.full((len(batch), length), self.pad_token_id, dtype=np.int32)
        attention_mask = np.zeros((len(batch), length), dtype=np.int32)
        for row, ids in enumerate(encoded):
            input_ids[row, :len(ids)] = ids
            attention_mask[row, :len(ids)] = 1
        out = {"input_ids": input_ids, "attention_mask": attention_mask,
               "teacher": np.stack([record["teacher"] for record in batch])}
        if self.include_ids:
            out["id"] = np.array([record["id"] for record in batch])
        return out


# ------------------------------------------------------------------------------------------------- the dataset


def make_dataset(source: RecordDataSource, *, tokenizer: str, global_batch_size: int, max_length: int,
                 length_buckets: Sequence[int] = (), seed: int = 0, shuffle: bool = True,
                 num_epochs: int | None = None, process_index: int = 0, process_count: int = 1,
                 read_threads: int = 2, prefetch_batches: int = 4, include_ids: bool = False) -> grain.IterDataset:
    """This process's stream of tokenised, bucketed batches (module docstring); `iter()` it for a resumable iterator."""
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise PipelineConfigError(f"data.global_batch_size={global_batch_size} must be a positive multiple of the "
                                  f"process count ({process_count}).")
    if not 0 <= process_index < process_count:
        raise PipelineConfigError(f"process_index={process_index} is outside 0..{process_count - 1}.")
    usable = len(source) // global_batch_size * global_batch_size
    if usable == 0:
        raise PipelineConfigError(f"data.global_batch_size={global_batch_size} exceeds the {len(source)} records in "
                                  f"{', '.join(map(str, source.folders))}; lower it or export more texts.")
    buckets = check_length_buckets(length_buckets, max_length)
    dataset = grain.MapDataset.source(source)
    if shuffle:
        dataset = dataset.shuffle(seed=seed)
    dataset = dataset[:usable][process_index::process_count]
    dataset = dataset.batch(global_batch_size // process_count, drop_remainder=True, batch_fn=list)
    dataset = dataset.map(TokenizeAndPad(tokenizer, max_length, buckets, include_ids))
    dataset = dataset.repeat(num_epochs)
    return dataset.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch_batches))
