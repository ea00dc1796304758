"""Pairs the built-in data gives for free: a WordNet usage example and its synset's definition, both in the records.

    pair_table(index)            every synset whose definition and at least one usage example are records; the
                                 validation split's synsets left out, a held-out synset or text refused
    make_pair_dataset(...)       this process's batches for a pair stage (kind='pairs', docs/training.md "The
                                 supervised pair stage"): half usage examples, half their definitions

The built-in corpus exports each training-side synset's definition as `wordnet:<synset>:definition` and its usage
examples as `wordnet:<synset>:example:<n>` (corpora.wordnet_texts), so the records already hold labelled query →
document pairs with the teachers' vectors for both sides. Using the labels makes a stage that trains on them
supervised; it stays clear of both evaluation splits:
- the hold-out (corpora.is_held_out_synset, and any text equal, folded, to a held-out text) is refused, naming the
  record: such records were not exported by embed_jax's own corpus and would leak the evaluation into training;
- the validation split (corpora.is_validation_synset) is left out and counted: the recipe's knobs are chosen on it
  (docs/eval.md), so its pairs must not be trained on.

A batch of B rows is B/2 pairs of distinct synsets: their usage examples (queries), then their definitions
(documents). Each row carries `pair` (the pair's id: the synset's index in the table) and `is_query`, so the pair term
(embed_jax/contrastive.py) finds positives by label, whatever process or device holds the row. One usage example per
synset per epoch, the epoch's turn through its examples; the synsets in a seeded random order each epoch. Every batch
is a pure function of its index, so the iterator's state is that index and a restore resumes exactly.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import grain
import numpy as np

from embed_jax.data import corpora, record_index
from embed_jax.data.dataset_index import DatasetIndex
from embed_jax.data.pipeline import BatchEncoder, PipelineConfigError, RecordDataSource, check_length_buckets


class PairsError(ValueError):
    """The records cannot give a pair stage its pairs; the message names the record or key and the fix."""


@dataclasses.dataclass(frozen=True)
class PairTable:
    synsets: tuple[str, ...]
    definitions: np.ndarray  # (S,) the record position of each synset's definition
    examples: tuple[np.ndarray, ...]  # per synset, the record positions of its usage examples
    validation_left_out: int  # synsets of the validation split that had a pair, not used

    def __len__(self) -> int:
        return len(self.synsets)

    def queries(self, epoch: int) -> np.ndarray:
        """(S,) each synset's usage example for this epoch: its examples in turn."""
        return np.array([examples[epoch % len(examples)] for examples in self.examples], dtype=np.int64)


def parse_wordnet_id(record_id: str) -> tuple[str, str] | None:
    """('n01234567', 'definition' | 'example') for the built-in corpus's WordNet ids, else None."""
    parts = record_id.split(":")
    if len(parts) == 3 and parts[0] == "wordnet" and parts[2] == "definition":
        return parts[1], "definition"
    if len(parts) == 4 and parts[0] == "wordnet" and parts[2] == "example" and parts[3].isdigit():
        return parts[1], "example"
    return None


def held_out_hashes() -> np.ndarray:
    """The text hashes of every held-out text, folded (record_index.text_hash), as records store them."""
    return record_index.text_hashes(corpora.holdout_folded_texts())


def pair_table(index: DatasetIndex, *, records_key: str, held_out: np.ndarray | None = None) -> PairTable:
    """The records' pairs (module docstring); a PairsError naming the first held-out record, if any."""
    held_out = held_out_hashes() if held_out is None else held_out
    definitions: dict[str, int] = {}
    examples: dict[str, list[int]] = {}
    leaked = np.flatnonzero(np.isin(index.text_hashes, held_out))
    wordnet_rows = [(position, parsed) for position, parsed in enumerate(map(parse_wordnet_id, index.ids)) if parsed]
    for position, (synset, part) in wordnet_rows:
        if corpora.is_held_out_synset(synset):
            raise held_out_error(index, position, records_key, "its synset is in the WordNet hold-out")
        if part == "definition":
            definitions[synset] = position
        else:
            examples.setdefault(synset, []).append(position)
    paired = sorted(set(definitions) & set(examples))
    validation = [synset for synset in paired if corpora.is_validation_synset(synset)]
    kept = [synset for synset in paired if not corpora.is_validation_synset(synset)]
    kept_rows = {definitions[synset] for synset in kept} | {row for synset in kept for row in examples[synset]}
    for position in leaked:
        if int(position) in kept_rows:
            raise held_out_error(index, int(position), records_key, "its text is a held-out text")
    return PairTable(tuple(kept), np.array([definitions[synset] for synset in kept], dtype=np.int64),
                     tuple(np.array(sorted(examples[synset]), dtype=np.int64) for synset in kept), len(validation))


def held_out_error(index: DatasetIndex, position: int, records_key: str, why: str) -> PairsError:
    return PairsError(
        f"config key {records_key}: record {index.ids[position]!r} ({index.where(position)}) would be a training "
        f"pair, but {why}: the evaluation's WordNet task scores those synsets (docs/eval.md). Export the records "
        "with the built-in corpus, which leaves the hold-out out (python -m embed_jax.teachers.export), or drop "
        "those texts from yours.")


def check_enough_pairs(table: PairTable, global_batch_size: int, *, records_key: str, stage_name: str) -> None:
    """A batch is global_batch_size / 2 pairs of distinct synsets: the records must hold at least that many."""
    if global_batch_size % 2:
        raise PairsError(f"config key data.global_batch_size={global_batch_size}: stage {stage_name} trains on pairs, "
                         "half usage examples and half their definitions, so the batch must be even")
    if len(table) < global_batch_size // 2:
        raise PairsError(
            f"config key {records_key}: stage {stage_name} trains on WordNet pairs (a usage example and its "
            f"synset's definition, both records), but the records hold {len(table)} such synsets outside the "
            f"validation split ({table.validation_left_out} in it are left out), fewer than the "
            f"{global_batch_size // 2} one batch needs. Export the built-in corpus's WordNet texts "
            "(configs/teachers.py corpus.builtin) or lower data.global_batch_size.")


class PairBatches(grain.MapDataset):
    """Batch `index` of a pair stage: len(table) // (B/2) batches an epoch (module docstring). Each process keeps
    rows process_index::process_count of the global batch, labels included, so the global batch and the loss do not
    depend on the number of processes."""

    def __init__(self, table: PairTable, source: RecordDataSource, encoder: BatchEncoder, batch_size: int, seed: int,
                 process_index: int = 0, process_count: int = 1):
        super().__init__()
        self.table, self.source, self.encoder = table, source, encoder
        self.pairs_per_batch, self.seed = batch_size // 2, seed
        self.process_index, self.process_count = process_index, process_count
        self.batches_per_epoch = len(table) // self.pairs_per_batch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __str__(self) -> str:
        return f"PairBatches(pairs_per_batch={self.pairs_per_batch}, synsets={len(self.table)})"

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        epoch, batch = divmod(index, self.batches_per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.table))
        synsets = order[batch * self.pairs_per_batch:(batch + 1) * self.pairs_per_batch]
        positions = np.concatenate([self.table.queries(epoch)[synsets], self.table.definitions[synsets]])
        pair = np.concatenate([synsets, synsets]).astype(np.int32)
        is_query = np.repeat(np.array([1, 0], dtype=np.int32), len(synsets))
        rows = np.arange(len(positions))[self.process_index::self.process_count]
        records = self.source.read_many(positions[rows].tolist())
        out = self.encoder.pad(self.encoder.token_ids([record["text"] for record in records]),
                               np.stack([record["teacher"] for record in records]),
                               [record["id"] for record in records])
        return {**out, "pair": pair[rows], "is_query": is_query[rows]}


def make_pair_dataset(table: PairTable, source: RecordDataSource, *, tokenizer: str, global_batch_size: int,
                      max_length: int, length_buckets, seed: int = 0, num_epochs: int | None = None,
                      process_index: int = 0, process_count: int = 1, read_threads: int = 2,
                      prefetch_batches: int = 4, include_ids: bool = False,
                      teacher_scales: np.ndarray | None = None,
                      log: Callable[[str], None] = print) -> grain.IterDataset:
    """This process's stream of pair batches (PairBatches), tokenised and bucketed as the text pipeline's."""
    if global_batch_size <= 0 or global_batch_size % (2 * process_count):
        raise PipelineConfigError(f"data.global_batch_size={global_batch_size} must be a positive multiple of twice "
                                  f"the process count ({process_count}): each batch is pairs.")
    encoder = BatchEncoder(tokenizer, max_length, check_length_buckets(length_buckets, max_length), include_ids,
                           teacher_scales)
    dataset = PairBatches(table, source, encoder, global_batch_size, seed, process_index, process_count)
    log(f"[pairs] {len(table):,} WordNet synsets with a usage example and a definition in the records "
        f"({table.validation_left_out:,} of the validation split left out): {len(dataset):,} batches of "
        f"{global_batch_size // 2} pairs an epoch")
    dataset = dataset.repeat(num_epochs)
    return dataset.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch_batches))
