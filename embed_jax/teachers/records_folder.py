"""The export's output records folder, from empty to complete: prepared for an export (a new folder, a resume of
the same export, a folder of another export refused or, holding no finished shard, taken over), and finished.

    prepare_output_folder   → (the shards a previous run of this export finished, that run's manifest)
    finish_output_folder    the complete manifest, written by rename

Only our own leftovers of an interrupted run are removed (temporary files, a shard whose sidecar never appeared);
a folder holding anything else is refused, naming it (the records' layout: embed_jax/data/records.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from embed_jax.data import records
from embed_jax.data.records import Manifest, ShardInfo


def prepare_output_folder(folder: Path, manifest: Manifest) -> tuple[list[ShardInfo], Manifest | None]:
    """Make `folder` ready for `manifest`'s export: (shards a previous run of it wrote, that run's manifest).

    Refuses a folder that holds anything else: another export's records, or files that are not ours. Removes only
    our own leftovers of an interrupted run (temporary files, a shard whose sidecar never appeared).
    """
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / records.MANIFEST_NAME
    if not manifest_path.exists():
        refuse_foreign_files(folder)
        records.write_json_atomically(manifest_path, manifest.to_json())
        return [], None
    existing = records.read_manifest_file(manifest_path)
    if existing.export_id != manifest.export_id:
        if holds_no_finished_shard(folder, existing):
            start_over(folder, manifest)
            return [], None
        edited = records.manifest_inconsistencies(existing)
        raise records.RecordsError(
            f"{folder} holds records of another configuration (differences: "
            f"{'; '.join(describe_export_differences(existing, manifest))}"
            f"{'; and its manifest.json was edited: ' + '; '.join(edited) if edited else ''}). Nothing was changed. "
            f"To keep those records, choose another output folder (--config.output_dir=...); to replace them, delete "
            f"{folder} first.")
    if existing.status == records.STATUS_COMPLETE:
        records.read_manifest(folder)  # checks the shards are still all there
        return list(existing.shards), existing
    return _resume_state(folder, existing), existing


def holds_no_finished_shard(folder: Path, existing: Manifest) -> bool:
    """An unfinished export that never finished a shard (it stopped on a corpus or teacher error, or was killed in
    its first shard): nothing in it is worth keeping, so another export may take the folder over."""
    return existing.status != records.STATUS_COMPLETE and not any(folder.glob("shard-*.json"))


def start_over(folder: Path, manifest: Manifest) -> None:
    """Replace an export that holds no finished shard by `manifest`'s: its unfinished shard files and worker count
    go (the lock files stay: the caller holds them)."""
    leftovers = [*folder.glob("shard-*"), *folder.glob(f"*{records.TEMPORARY_SUFFIX}"),
                 *folder.glob(f"{records.COORDINATION_PREFIX}*.json")]
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
    records.write_json_atomically(folder / records.MANIFEST_NAME, manifest.to_json())


def refuse_foreign_files(folder: Path) -> None:
    """A folder without a manifest must hold nothing but the export's own coordination files (or not exist)."""
    if (folder / records.MANIFEST_NAME).exists() or not folder.is_dir():
        return
    foreign = sorted(path.name for path in folder.iterdir()
                     if not path.name.startswith(records.COORDINATION_PREFIX))
    if foreign:
        raise records.RecordsError(
            f"{folder} is not empty ({', '.join(foreign[:5])}{' …' if len(foreign) > 5 else ''}) and holds no "
            f"{records.MANIFEST_NAME}: refusing to write records beside files that are not an embed_jax export. "
            f"Choose an empty or new output folder (--config.output_dir=...).")


def describe_export_differences(old: Manifest, new: Manifest) -> list[str]:
    """`key: old → new` for each identity leaf that differs, e.g. `corpus.max_texts: 50 → 60`."""
    old_dict, new_dict = records.manifest_to_dict(old), records.manifest_to_dict(new)
    old_leaves = dict(_leaves({field: old_dict[field] for field in records.IDENTITY_FIELDS}))
    new_leaves = dict(_leaves({field: new_dict[field] for field in records.IDENTITY_FIELDS}))
    return [f"{key}: {old_leaves.get(key, '(none)')!r} → {new_leaves.get(key, '(none)')!r}"
            for key in sorted(set(old_leaves) | set(new_leaves)) if old_leaves.get(key) != new_leaves.get(key)
            ] or ["export id"]


def _leaves(value: Any, prefix: str = ""):
    """(dotted key, value) for every non-container value of nested dicts and lists (list items as key[i])."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{prefix}.{key}" if prefix else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{prefix}[{index}]")
    else:
        yield prefix, value


def _resume_state(folder: Path, manifest: Manifest) -> list[ShardInfo]:
    for leftover in folder.glob(f"*{records.TEMPORARY_SUFFIX}"):
        leftover.unlink()
    done: list[ShardInfo] = []
    while (folder / f"{records.shard_stem(len(done))}.json").exists():
        info = records.check_sidecar(folder, manifest, folder / f"{records.shard_stem(len(done))}.json")
        records.checked_with_hint(records.check_shard_cheaply, folder / info.file, info)
        done.append(info)
    # A shard renamed into place whose sidecar was never written is our own unfinished work.
    orphan = folder / f"{records.shard_stem(len(done))}.array_record"
    if orphan.exists():
        orphan.unlink()
    later = sorted(path.name for path in folder.glob("shard-*") if records.shard_index(path) > len(done))
    if later:
        raise records.RecordsError(f"{folder}: shards {', '.join(later[:5])} follow a gap at "
                                   f"{records.shard_stem(len(done))}; the folder was edited by hand. Re-export into an "
                                   "empty folder.")
    return done


def remove_unfinished_shard(folder: Path, index: int) -> None:
    """A writer's own leftovers of shard `index` from an interrupted run: temporaries, records without sidecar."""
    stem = records.shard_stem(index)
    if (folder / f"{stem}.json").exists():
        return
    for leftover in (f"{stem}.array_record{records.TEMPORARY_SUFFIX}", f"{stem}.json{records.TEMPORARY_SUFFIX}",
                     f"{stem}.array_record"):
        (folder / leftover).unlink(missing_ok=True)


def finish_output_folder(folder: Path, manifest: Manifest) -> None:
    records.write_json_atomically(folder / records.MANIFEST_NAME, manifest.to_json())
