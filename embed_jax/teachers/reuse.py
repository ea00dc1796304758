"""Reusing finished shards of other exports: grow, shrink or finish early an export without encoding twice.

Built-in corpora come in a fixed order (hash of the id) and shards are cut from that order, so an export of the
first 8,192 texts and one of the first 32,768 share their first 8 shards exactly when the teachers, storage dtype
and shard size agree. `--config.reuse_from=FOLDER[,FOLDER…]` makes the export copy such a shard instead of running
the teachers on it: a bigger export after a small one pays only for the new texts, and a long export can be cut
short (export fewer texts with reuse_from pointing at the unfinished big one).

A shard is reused only when its running corpus hash, first and last id and record count equal this export's shard
at the same index (the hash covers every (id, text) from the first record to the shard's last: same hash, same
texts) and the exports agree on everything that shapes a vector (teachers by weights fingerprint, pooling, prompt,
window; dtype; normalisation; shard size). Copied shards are byte-identical to what encoding would write.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from embed_jax.data import records
from embed_jax.data.records import Manifest, ShardInfo


class ReuseError(ValueError):
    """A reuse_from folder that cannot serve this export; names the folder, the key and the difference."""


def vector_identity(manifest: Manifest) -> dict:
    """What decides the bytes of a record besides its text: teachers (their files' fingerprint, not their path),
    dtype, normalisation, schema and shard size."""
    teachers = [{key: value for key, value in dataclasses.asdict(teacher).items() if key != "path"}
                for teacher in manifest.teachers]
    return {"schema_version": manifest.schema_version, "teachers": teachers, "dtype": manifest.dtype,
            "normalisation": manifest.normalisation, "shard_size": manifest.shard_size}


def donor_shards(folders: Sequence[Path], draft: Manifest) -> list[tuple[Path, dict[int, ShardInfo]]]:
    """(folder, its finished shards) for every reuse_from folder; refuses one whose vectors would differ."""
    donors = []
    wanted = vector_identity(draft)
    for folder in folders:
        if not (folder / records.MANIFEST_NAME).is_file():
            raise ReuseError(f"reuse_from: {folder} holds no {records.MANIFEST_NAME}; name a records folder written "
                             "by embed_jax.teachers.export.")
        manifest, shards = records.finished_shards(folder)
        found = vector_identity(manifest)
        differences = [key for key in wanted if wanted[key] != found[key]]
        if differences:
            raise ReuseError(f"reuse_from: {folder} was exported with other {', '.join(differences)} than this export "
                             "(its vectors would differ); drop it from --config.reuse_from.")
        donors.append((folder, shards))
    return donors


def matching_shard(donors: Sequence[tuple[Path, dict[int, ShardInfo]]], index: int, num_records: int, first_id: str,
                   last_id: str, corpus_hash: str) -> tuple[Path, ShardInfo] | None:
    """The first donor shard at `index` cut from exactly the same texts, else None."""
    for folder, shards in donors:
        if index in shards:
            info = shards[index]
            if (info.num_records, info.first_id, info.last_id, info.corpus_hash) == (
                    num_records, first_id, last_id, corpus_hash):
                return folder / info.file, info
    return None
