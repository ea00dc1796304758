"""Every record's id and text hash of one or more records folders read together, from the shards' sidecars.

    dataset_index(folders, manifests, log=...)   ids, text hashes and shard of every record, in record order
    check_unique_ids(index, key)                 one line naming a repeated id and the shards that hold it

Each shard's sidecar holds its record index (data/record_index.py), so these read tens of bytes a record, never the
records. A shard whose sidecar has no index (exported before indexes were written) is read instead, with one line
saying so per folder: the checks stay what they were for old folders, at their old cost.
"""
from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from embed_jax.data import records
from embed_jax.data.record_index import RecordIndex
from embed_jax.data.records import Manifest, RecordsError

SHOWN_NAMES = 3


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetIndex:
    ids: list[str]
    text_hashes: np.ndarray  # uint64 (num_records,)
    shard_ends: np.ndarray  # the cumulative record count at each shard's end
    shard_paths: list[Path]
    unindexed: int = 0  # shards whose records had to be read (no index in their sidecar)

    def __len__(self) -> int:
        return len(self.ids)

    def where(self, position: int) -> str:
        """`shard-00003.array_record (record 5)` for a global record position."""
        shard = int(np.searchsorted(self.shard_ends, position, side="right"))
        start = int(self.shard_ends[shard - 1]) if shard else 0
        return f"{self.shard_paths[shard]} (record {position - start})"


def unindexed_note(folder: Path, missing: Sequence[Path], total: int, read: bool) -> str:
    """One line for a folder with shards whose sidecar has no record index; `read`: their records are read instead."""
    names = ", ".join(path.name for path in missing[:SHOWN_NAMES]) + (" …" if len(missing) > SHOWN_NAMES else "")
    what = ("no sidecar holds a record index" if len(missing) == total
            else f"it mixes shards with a record index and {len(missing)} without ({names}: an export resumed "
                 f"across versions, or shards copied in)")
    consequence = ("their records are read for this check" if read
                   else "their ids are not checked for repeats here (the full `verify` reads them)")
    return (f"[records] note: {folder}: {what} (ids and text hashes, written by exports since they were added); "
            f"{consequence}. A re-export with --config.reuse_from={folder} writes them (its shards are copied).")


def dataset_index(folders: Sequence[Path], manifests: Sequence[Manifest], *, log: Callable[[str], None] = print,
                  read_unindexed: bool = True) -> DatasetIndex:
    """The record index of `folders` read as one dataset. Shards without an index in their sidecar are read
    (`read_unindexed`) or left out; either way `log` gets one line per folder that has some."""
    ids: list[str] = []
    hashes, ends, paths, unindexed = [], [], [], 0
    for folder, manifest in zip(folders, manifests):
        found = [(path, info, records.read_shard_index(Path(folder), info))
                 for path, info in zip(records.shard_paths(folder, manifest), manifest.shards)]
        missing = [path for path, _, index in found if index is None]
        if missing:
            log(unindexed_note(Path(folder), missing, len(found), read_unindexed))
            unindexed += len(missing)
        for path, info, index in found:
            if index is None and read_unindexed:
                index = records.index_from_shard(path)
            if index is None:
                continue
            ids.extend(index.ids)
            hashes.append(index.text_hashes)
            paths.append(path)
            ends.append(len(ids))
    return DatasetIndex(ids, np.concatenate(hashes) if hashes else np.zeros(0, np.uint64), np.array(ends, np.int64),
                        paths, unindexed)


def check_unique_ids(index: DatasetIndex, key: str) -> None:
    """Refuse a dataset that holds an id twice (inside a shard, across shards or folders), naming the id, where it
    is, and how many others repeat: ids name records for the hold-out checks and in a NaN's report."""
    if len(set(index.ids)) == len(index.ids):
        return
    counts = collections.Counter(index.ids)
    repeated = [record_id for record_id, count in counts.items() if count > 1]
    first = repeated[0]
    places = [index.where(position) for position, record_id in enumerate(index.ids) if record_id == first]
    others = f"; {len(repeated) - 1} other ids repeat too" if len(repeated) > 1 else ""
    raise RecordsError(
        f"{key}: record id {first!r} appears {counts[first]} times: {' and '.join(places[:SHOWN_NAMES])}{others}. "
        f"An id names one record (the export refuses a corpus that repeats one), so these records were combined or "
        f"edited after their export: read each folder once, or re-export from a corpus with unique ids.")
