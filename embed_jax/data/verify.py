"""Check a records folder: every shard read back, its size, record count, first and last id and sha256 against its
sidecar, each record's vector (finite, of unit norm at the stored dtype's tolerance) and its id and text hash against
the sidecar's record index, ids unique within and across shards (and across the folders named together), and each
sidecar against the manifest.

    python -m embed_jax.data.verify --records=workdir/records [--records=other/records ...] [--sample=64]

--sample=K: the quick check: every shard's cheap checks (size, count, first id, index), K records a shard read and
checked as above, duplicate ids from the sidecars' record indexes, no sha256 (docs/data.md has both costs at scale).

Prints a table of what it found (one row per shard) and every problem, each naming the file and what to do. Exit
status: 0 when every shard is sound, 1 when a problem was found, 2 when a folder is not a records folder or the
command is wrong. Shards written before sidecars recorded a checksum are read in full and marked "no checksum
recorded". Training runs the cheap part of this check before step 1 (`records.check_records_cheaply`); this is the
full one, which reads every byte (docs/data.md, "Checking a records folder").
"""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from absl import flags

from embed_jax import cli
from embed_jax.data import dataset_index, records
from embed_jax.data.records import Manifest, RecordsError, ShardCheck

PROBLEM_EXIT_CODE = 1

FLAGS = cli.program_flags()
_RECORDS = flags.DEFINE_multi_string("records", None, "Records folder to check (repeat for several).",
                                     flag_values=FLAGS)
_SAMPLE = flags.DEFINE_integer("sample", 0, "Read only this many records of each shard (0: every record, and each "
                               "file's sha256).", lower_bound=0, flag_values=FLAGS)


@dataclasses.dataclass(frozen=True)
class FolderReport:
    folder: Path
    manifest: Manifest
    shards: tuple[ShardCheck, ...]
    problems: tuple[str, ...]  # every shard's problem, and the folder's own (a sidecar off its manifest, repeated ids)
    places: dict[str, list[str]] = dataclasses.field(default_factory=dict, repr=False)  # id → where it was found
    notes: tuple[str, ...] = ()  # what was not checked, and why


def listed_shards(folder: Path, manifest: Manifest) -> tuple[dict[int, records.ShardInfo], list[str]]:
    """{index: shard} as the sidecars describe them (checked against the manifest), and the problems found."""
    problems = []
    if manifest.status == records.STATUS_COMPLETE:
        expected = dict(enumerate(manifest.shards))
    else:  # an unfinished export: its finished shards, those with a sidecar
        indices = [records.shard_index(path) for path in sorted(folder.glob("shard-*.json"))]
        expected = {index: None for index in indices if index >= 0}
    found = {}
    for index, listed in expected.items():
        sidecar_path = folder / f"{records.shard_stem(index)}.json"
        try:
            on_disk = records.check_sidecar(folder, manifest, sidecar_path)
        except RecordsError as error:
            problems.append(str(error))
            continue
        if listed is not None and on_disk != listed:
            problems.append(f"{sidecar_path}: describes another shard than {folder / records.MANIFEST_NAME} lists "
                            f"at {index}: one of them was edited after the export.")
        found[index] = on_disk
    return found, problems


def duplicate_id_problems(places: dict[str, list[str]], what: str) -> list[str]:
    """One line for ids found more than once: the first such id, where, and how many others."""
    repeated = [(record_id, where) for record_id, where in places.items() if len(where) > 1]
    if not repeated:
        return []
    record_id, where = repeated[0]
    others = f"; {len(repeated) - 1} other ids repeat too" if len(repeated) > 1 else ""
    return [f"record id {record_id!r} appears {len(where)} times {what}: {' and '.join(where[:3])}{others}. An id "
            f"names one record: drop the repeats, or re-export from a corpus with unique ids."]


def id_places(folder: Path, checks: Sequence[ShardCheck], sampled: bool,
              shards: dict[int, records.ShardInfo]) -> tuple[dict[str, list[str]], list[str]]:
    """{id: ["shard-00003.array_record (record 5)", ...]} of the folder, and a note when some ids are unknown: from
    what was read, or, when sampled, from the sidecars' record indexes (shards without one are left out)."""
    places: dict[str, list[str]] = {}
    notes = []
    if not sampled:
        for check in checks:
            for row, record_id in enumerate(check.record_ids):
                places.setdefault(record_id, []).append(f"{folder / check.file} (record {row})")
        return places, notes
    infos = [info for _, info in sorted(shards.items())]
    manifest_like = dataclasses.replace(records.read_manifest_file(folder / records.MANIFEST_NAME),
                                        shards=tuple(infos))
    index = dataset_index.dataset_index([folder], [manifest_like], log=notes.append, read_unindexed=False)
    for position, record_id in enumerate(index.ids):
        places.setdefault(record_id, []).append(index.where(position))
    return places, notes


def verify_folder(folder: str | Path, sample: int = 0) -> FolderReport:
    """Every check of every shard of `folder` (`sample` > 0: that many records a shard, no sha256); raises
    RecordsError only when it is not a records folder at all."""
    folder = Path(folder)
    manifest = records.read_manifest_file(folder / records.MANIFEST_NAME)
    shards, problems = listed_shards(folder, manifest)
    checks = tuple(records.verify_shard(folder / info.file, info, sample=sample) for _, info in sorted(shards.items()))
    problems += [check.problem for check in checks if check.problem]
    places, notes = id_places(folder, checks, bool(sample), shards)
    problems += duplicate_id_problems(places, f"in {folder}")
    edits = records.manifest_inconsistencies(manifest)
    if edits:
        problems.append(f"{folder / records.MANIFEST_NAME} no longer matches itself ({'; '.join(edits)}): it was "
                        f"edited after the export. Restore it, or re-export.")
    return FolderReport(folder, manifest, checks, tuple(problems), places,
                        tuple(note.removeprefix("[records] note: ") for note in notes))


def report_lines(report: FolderReport) -> list[str]:
    manifest = report.manifest
    total = sum(check.num_records for check in report.shards)
    lines = [f"{report.folder}: export {manifest.export_id}, {manifest.status}, {total:,} records in "
             f"{len(report.shards)} shards, {manifest.teacher_dim}-d {manifest.dtype}",
             f"  {'shard':<26} {'records':>8} {'bytes':>14}  {'checksum':<22} status"]
    for check in report.shards:
        lines.append(f"  {check.file:<26} {check.num_records:>8,} {check.num_bytes:>14,}  {check.checksum:<22} "
                     f"{'problem' if check.problem else 'ok'}")
    lines += [f"  note: {note}" for note in report.notes]
    lines += [f"  problem: {problem}" for problem in report.problems]
    sound = sum(1 for check in report.shards if not check.problem)
    lines.append(f"  {sound} of {len(report.shards)} shards sound; {len(report.problems)} problem(s)")
    if report.problems:
        lines.append(f"  to repair: export into a new folder with --config.reuse_from={report.folder} (its sound "
                     f"shards are copied, the others encoded again).")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cli.parse(FLAGS, argv, doc=__doc__)
        cli.require(FLAGS, ["records"])
    except cli.UsageError as error:
        return cli.fail(error)
    found_problem = False
    across: dict[str, list[str]] = {}
    for folder in _RECORDS.value:
        try:
            records.check_local_records_path(folder, "--records")
            report = verify_folder(folder, _SAMPLE.value)
        except RecordsError as error:
            return cli.fail(error)
        print("\n".join(report_lines(report)), flush=True)
        found_problem = found_problem or bool(report.problems)
        for record_id, where in report.places.items():
            across.setdefault(record_id, []).append(where[0])
    if len(_RECORDS.value) > 1:  # folders named together are read together: an id once in all of them
        for problem in duplicate_id_problems(across, "across the folders"):
            print(f"problem: {problem}", flush=True)
            found_problem = True
    return PROBLEM_EXIT_CODE if found_problem else 0


if __name__ == "__main__":
    sys.exit(main())
