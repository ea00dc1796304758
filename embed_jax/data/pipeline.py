"""Input pipeline (grain): teacher records → per-process batches of token ids, attention masks and teacher vectors.

    records (one or more folders) ─ RecordDataSource: random access over every shard, decoded
      → record indices, shuffled (seeded; a new permutation each epoch, grain's index shuffle, nothing materialised)
      → trimmed, each epoch, to a multiple of the global batch (every process then gets the same number of batches)
      → this process's share: positions process_index, process_index + process_count, ...
      → GroupedBatches: global_batch_size / process_count records per batch, read in one call, tokenised with the
        student's tokenizer (truncated to max_length), padded to the smallest length bucket that holds the batch's
        longest text; optionally regrouped over a window of batches (length_grouping_window): by token length
        (group_by="length") or by teacher neighbourhood (group_by="teacher", neighbour_batches.py)
      → repeat (num_epochs; None = forever)

Each process yields `{"input_ids": int32 (B_local, L), "attention_mask": int32 (B_local, L), "teacher": float32
(B_local, teacher_dim)}` with L one of `length_buckets`; the teacher vectors are the records', each teacher's block
scaled by its weight when the training config weighs them (data.teacher_weights, embed_jax/data/teacher_weights.py).
Without grouping, the global batch at step s is the union of the processes' batches at step s, a disjoint cover of
one slice of the epoch's permutation. Processes may pick
different buckets for the same step: the trainer agrees on the largest and calls `pad_batch_to_length`.

The iterator (`iter(dataset)`) is a grain DatasetIterator: `get_state()` / `set_state()` save and restore its exact
position (a small dict), and grain's Orbax handler checkpoints it beside the train state.

No torch, no transformers: the tokenizer is the Rust `tokenizers` library; this module is on the training path.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

import grain
import numpy as np

from embed_jax.assets import resolve_model_path
from embed_jax.data import dataset_index, neighbour_batches, records, tokenizer_folder
from embed_jax.data.records import Manifest, RecordsError


class PipelineConfigError(ValueError):
    """A pipeline setting or the records do not fit the training config; the message names the key."""


# What GroupedBatches regroups a window of batches by: token length (less padding) or teacher neighbourhood (closer
# in-batch pairs for the similarity losses, neighbour_batches.py).
GROUP_BY_CHOICES = ("length", "teacher")


class RecordDataSource(grain.sources.RandomAccessDataSource):
    """Every record of one or more records folders (whose manifests must agree), decoded, by global index."""

    def __init__(self, folders: str | os.PathLike | Sequence[str | os.PathLike], *,
                 records_key: str = "data.records_dir"):
        """`records_key`: the config key the folders came from, named in errors (e.g. data.eval_records_dir)."""
        folders = [folders] if isinstance(folders, (str, os.PathLike)) else list(folders)
        if not folders:
            raise RecordsError("no records folder given; export one with `python -m embed_jax.teachers.export`.")
        for folder in folders:
            records.check_local_records_path(folder, records_key)  # before Path() turns gs://b into gs:/b
        self.folders = [Path(folder) for folder in folders]
        self.manifests = [records.read_manifest(folder) for folder in self.folders]
        records.check_manifests_agree(list(zip(self.folders, self.manifests)))
        paths = [str(path) for folder, manifest in zip(self.folders, self.manifests)
                 for path in records.shard_paths(folder, manifest)]
        if not paths:  # grain's reader fails on an empty list without naming the folder
            raise RecordsError(f"{', '.join(map(str, self.folders))} holds 0 records (its manifest lists no shard: "
                               "an empty corpus?). Export records from a corpus with texts "
                               "(python -m embed_jax.teachers.export) and train on those.")
        # Duplicate ids from the sidecars' record indexes, not the records (shards without one: `verify` checks them).
        dataset_index.check_unique_ids(dataset_index.dataset_index(self.folders, self.manifests, log=lambda _: None,
                                                                   read_unindexed=False), records_key)
        self._paths = paths
        self._shard_ends = np.cumsum([shard.num_records for manifest in self.manifests for shard in manifest.shards])
        try:
            self._shards = grain.sources.ArrayRecordDataSource(paths)
        except Exception as error:  # riegeli's damage errors name no file
            raise self._unreadable(paths, error) from None
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
        return self.read_many([index])[0]

    def read_many(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Records at `indices`, read in one call (ArrayRecord reads them in parallel). A record that fails to read
        or decode is named by its shard: the one that failed, found by reading each shard's records alone."""
        indices = list(indices)
        try:
            return [records.decode_record(data) for data in self._shards.__getitems__(indices)]
        except Exception as error:  # riegeli's messages name no file; a batch spans many shards
            raise self._unreadable(self._failing_shards(indices), error) from None

    def _failing_shards(self, indices: Sequence[int]) -> list[str]:
        """The shards among those of `indices` whose records fail to read or decode alone (the error path only)."""
        by_shard: dict[int, list[int]] = {}
        for index in indices:
            by_shard.setdefault(int(np.searchsorted(self._shard_ends, index, side="right")), []).append(index)
        failing = []
        for shard, shard_indices in sorted(by_shard.items()):
            try:
                for data in self._shards.__getitems__(shard_indices):
                    records.decode_record(data)
            except Exception:  # noqa: BLE001 - any failure of this shard's read is what is being located
                failing.append(self._paths[shard])
        return failing or self._shard_paths_of(indices)

    def ids_and_texts(self, chunk: int = 4096) -> Iterator[tuple[str, str]]:
        """(id, text) of every record in order, read `chunk` records at a time."""
        for start in range(0, len(self), chunk):
            for record in self.read_many(range(start, min(start + chunk, len(self)))):
                yield record["id"], record["text"]

    def _shard_paths_of(self, indices: Sequence[int]) -> list[str]:
        shards = sorted({int(np.searchsorted(self._shard_ends, index, side="right")) for index in indices})
        return [self._paths[shard] for shard in shards if shard < len(self._paths)]

    def _unreadable(self, paths: Sequence[str], error: Exception) -> RecordsError:
        folders = " ".join(f"--records={folder}" for folder in self.folders)
        shown = ", ".join(paths[:3]) + (f" (and {len(paths) - 3} more)" if len(paths) > 3 else "")
        return RecordsError(f"unreadable records in {shown}: {type(error).__name__}: {str(error).splitlines()[0][:200]}. "
                            f"The file is damaged; `python -m embed_jax.data.verify {folders}` checks every shard. "
                            "Re-export it (the export rewrites a damaged shard it is pointed at with reuse_from).")

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

    folder = resolve_model_path(path)
    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise PipelineConfigError(
            f"data.tokenizer={path!r}: {folder} has no tokenizer.json (the one file the student's tokenizer "
            f"reads; of {', '.join(tokenizer_folder.VOCABULARY_FILES)} it has "
            f"{', '.join(found_tokenizer_files(folder)) or 'none'}). Write one with a fast tokenizer: "
            f"`AutoTokenizer.from_pretrained(folder).save_pretrained(folder)`.")
    tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_file))
    special = [token for token in tokenizer.get_added_tokens_decoder().values() if token.special]
    try:
        tokenizer_folder.require_real_vocabulary(tokenizer.get_vocab_size(with_added_tokens=True), len(special),
                                                 tokenizer_file, f"data.tokenizer={path!r}")
    except tokenizer_folder.TokenizerFolderError as error:
        raise PipelineConfigError(str(error)) from None
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return tokenizer, pad_token_id(tokenizer, folder)


def found_tokenizer_files(folder: Path) -> list[str]:
    return [name for name in tokenizer_folder.VOCABULARY_FILES if (folder / name).is_file()]


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


class BatchEncoder:
    """Records → one padded batch: token ids and mask padded to a length bucket, teacher vectors stacked.

    One Rust tokenizer serves every read thread: after set-up it is only read (`encode_batch`), which the
    `tokenizers` library allows concurrently (its "Already borrowed" error comes from changing settings mid-use).
    """

    def __init__(self, tokenizer_path: str, max_length: int, buckets: Sequence[int], include_ids: bool = False,
                 teacher_scales: np.ndarray | None = None):
        self.tokenizer, self.pad_token_id = load_tokenizer(tokenizer_path, max_length)
        self.buckets, self.include_ids = tuple(buckets), include_ids
        self.teacher_scales = teacher_scales

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.tokenizer.encode_batch(list(texts))]

    def pad(self, token_ids: Sequence[Sequence[int]], teacher: np.ndarray, ids: Sequence[str]) -> dict[str, np.ndarray]:
        length = bucket_for(max(len(row) for row in token_ids), self.buckets)
        input_ids = np.full((len(token_ids), length), self.pad_token_id, dtype=np.int32)
        attention_mask = np.zeros((len(token_ids), length), dtype=np.int32)
        for row, row_ids in enumerate(token_ids):
            input_ids[row, :len(row_ids)] = row_ids
            attention_mask[row, :len(row_ids)] = 1
        if self.teacher_scales is not None:  # per-teacher weights (embed_jax/data/teacher_weights.py)
            teacher = teacher * self.teacher_scales
        out = {"input_ids": input_ids, "attention_mask": attention_mask, "teacher": teacher}
        if self.include_ids:
            out["id"] = np.array(ids)
        return out


class GroupedBatches(grain.MapDataset):
    """Batch `index`, for any index (epoch e = index // batches per epoch): the records of a window of `window`
    batches, read at once, tokenised, and — when window > 1 — sorted by token length, cut into `window` batches of
    similar lengths, handed out in a seeded random order.

    window = 1 gives plain random batches (what the paper trains on). With a larger window, a batch holds texts of
    similar length: far less padding when lengths are mixed (measured on the default records: 88% of the tokens of
    a random batch of 128 at max length 128 are padding, because a batch almost always holds one long passage), at
    the price of batches that are no longer uniform samples of the corpus, which the in-batch losses see. Every
    batch is a pure function of its index, so the iterator's state is that index and a restore resumes exactly.

    `record_indices` is the global record order and `batch_size` the global batch: each process forms the same global
    batches (grouping sees the whole window, not a process's share) and keeps rows process_index::process_count of
    each, so the global batch — and the loss — does not depend on the number of processes.
    """

    def __init__(self, record_indices: grain.MapDataset, source: RecordDataSource, encoder: BatchEncoder,
                 batch_size: int, window: int, seed: int, process_index: int = 0, process_count: int = 1,
                 group_by: str = "length"):
        super().__init__(record_indices)
        self.source, self.encoder = source, encoder
        self.batch_size, self.window, self.seed, self.group_by = batch_size, window, seed, group_by
        self.process_index, self.process_count = process_index, process_count
        self.records_per_epoch = len(record_indices)
        self.batches_per_epoch = self.records_per_epoch // batch_size
        self._windows: dict[tuple[int, int], concurrent.futures.Future] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __str__(self) -> str:
        return f"GroupedBatches(batch_size={self.batch_size}, window={self.window}, group_by={self.group_by})"

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        epoch, batch_in_epoch = divmod(index, self.batches_per_epoch)
        window_index, position = divmod(batch_in_epoch, self.window)
        return self._window(epoch, window_index)[position]

    def _window(self, epoch: int, window_index: int) -> list[dict[str, np.ndarray]]:
        """The window's batches, built once: read threads asking for batches of the same window wait for the one
        thread that builds it, rather than each reading and tokenising it again."""
        key = (epoch, window_index)
        with self._lock:
            future = self._windows.get(key)
            builds = future is None
            if builds:
                future = self._windows[key] = concurrent.futures.Future()
                # Read threads work on neighbouring batches: the last few windows suffice.
                while len(self._windows) > 4:
                    self._windows.pop(next(iter(self._windows)))
        if builds:
            try:
                future.set_result(self._build_window(epoch, window_index))
            except BaseException as error:
                future.set_exception(error)
                raise
        return future.result()

    def _targets(self, records: Sequence[dict[str, Any]]) -> np.ndarray:
        """The records' targets as the losses see them (per-teacher weights applied): what neighbours are near in."""
        teacher = np.stack([record["teacher"] for record in records])
        scales = self.encoder.teacher_scales
        return teacher if scales is None else teacher * scales

    def _build_window(self, epoch: int, window_index: int) -> list[dict[str, np.ndarray]]:
        first_batch = window_index * self.window
        count = min(self.window, self.batches_per_epoch - first_batch)
        start = epoch * self.records_per_epoch + first_batch * self.batch_size
        positions = [self._parent[start + offset] for offset in range(count * self.batch_size)]
        if self.window == 1:  # one random batch: this process reads only its own rows
            positions = positions[self.process_index::self.process_count]
        records = self.source.read_many(positions)
        token_ids = self.encoder.token_ids([record["text"] for record in records])
        order = np.arange(len(records))
        batch_order = np.arange(count)
        rows_per_batch = len(records) // count
        if self.window > 1:
            order = (neighbour_batches.neighbour_order(self._targets(records), count) if self.group_by == "teacher"
                     else np.argsort([len(row) for row in token_ids], kind="stable"))
            batch_order = np.random.default_rng([self.seed, epoch, window_index]).permutation(count)
        batches = []
        for batch in batch_order:
            rows = order[batch * rows_per_batch:(batch + 1) * rows_per_batch]
            if self.window > 1:
                rows = rows[self.process_index::self.process_count]
            batches.append(self.encoder.pad([token_ids[row] for row in rows],
                                            np.stack([records[row]["teacher"] for row in rows]),
                                            [records[row]["id"] for row in rows]))
        return batches


# ------------------------------------------------------------------------------------------------- the dataset


def make_dataset(source: RecordDataSource, *, tokenizer: str, global_batch_size: int, max_length: int,
                 length_buckets: Sequence[int] = (), seed: int = 0, shuffle: bool = True,
                 length_grouping_window: int = 1, num_epochs: int | None = None, process_index: int = 0,
                 process_count: int = 1, read_threads: int = 2, prefetch_batches: int = 4,
                 include_ids: bool = False, group_by: str = "length",
                 teacher_scales: np.ndarray | None = None) -> grain.IterDataset:
    """This process's stream of tokenised, bucketed batches (module docstring); `iter()` it for a resumable iterator.

    length_grouping_window: 1 for uniformly random batches; W > 1 regroups each W consecutive batches' records,
    by token length (group_by="length") or by teacher neighbourhood (group_by="teacher"; see GroupedBatches).
    teacher_scales: (teacher_dim,) factors every teacher vector is multiplied by (the per-teacher weights,
    teacher_weights.block_scales); None leaves the records' vectors as they are.
    """
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise PipelineConfigError(f"data.global_batch_size={global_batch_size} must be a positive multiple of the "
                                  f"process count ({process_count}).")
    if not 0 <= process_index < process_count:
        raise PipelineConfigError(f"process_index={process_index} is outside 0..{process_count - 1}.")
    if length_grouping_window < 1:
        raise PipelineConfigError(f"data.length_grouping_window={length_grouping_window} must be ≥ 1 (1: off).")
    if group_by not in GROUP_BY_CHOICES:
        raise PipelineConfigError(f"data.group_by={group_by!r}: use one of {list(GROUP_BY_CHOICES)} (what a window "
                                  "of data.length_grouping_window batches is regrouped by).")
    usable = len(source) // global_batch_size * global_batch_size
    if usable == 0:
        raise PipelineConfigError(f"data.global_batch_size={global_batch_size} exceeds the {len(source)} records in "
                                  f"{', '.join(map(str, source.folders))}; lower it or export more texts.")
    encoder = BatchEncoder(tokenizer, max_length, check_length_buckets(length_buckets, max_length), include_ids,
                           teacher_scales)
    record_indices = grain.MapDataset.range(len(source))
    if shuffle:
        record_indices = record_indices.shuffle(seed=seed)
    dataset = GroupedBatches(record_indices[:usable], source, encoder, global_batch_size, length_grouping_window,
                             seed, process_index, process_count, group_by)
    dataset = dataset.repeat(num_epochs)
    return dataset.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch_batches))
