"""Check a records folder: every shard read back, its size, record count, first and last id and sha256 against its
sidecar, and each sidecar against the manifest.

    python -m embed_jax.data.verify --records=workdir/records [--records=other/records ...]

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
from embed_jax.data import records
from embed_jax.data.records import Manifest, RecordsError, ShardCheck

PROBLEM_EXIT_CODE = 1

FLAGS = cli.program_flags()
_RECORDS = flags.DEFINE_multi_string("records", None, "Records folder to check (repeat for several).",
                                     flag_values=FLAGS)


@dataclasses.dataclass(frozen=True)
class FolderReport:
    folder: Path
    manifest: Manifest
    shards: tuple[ShardCheck, ...]
    problems: tuple[str, ...]  # every shard's problem, and the folder's own (a sidecar off its manifest)


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


def verify_folder(folder: str | Path) -> FolderReport:
    """Every check of every shard of `folder`; raises RecordsError only when it is not a records folder at all."""
    folder = Path(folder)
    manifest = records.read_manifest_file(folder / records.MANIFEST_NAME)
    shards, problems = listed_shards(folder, manifest)
    checks = tuple(records.verify_shard(folder / info.file, info) for _, info in sorted(shards.items()))
    problems += [check.problem for check in checks if check.problem]
    edits = records.manifest_inconsistencies(manifest)
    if edits:
        problems.append(f"{folder / records.MANIFEST_NAME} no longer matches itself ({'; '.join(edits)}): it was "
                        f"edited after the export. Restore it, or re-export.")
    return FolderReport(folder, manifest, checks, tuple(problems))


def report_lines(report: FolderReport) -> list[str]:
    manifest = report.manifest
    total = sum(check.num_records for check in report.shards)
    lines = [f"{report.folder}: export {manifest.export_id}, {manifest.status}, {total:,} records in "
             f"{len(report.shards)} shards, {manifest.teacher_dim}-d {manifest.dtype}",
             f"  {'shard':<26} {'records':>8} {'bytes':>14}  {'checksum':<22} status"]
    for check in report.shards:
        lines.append(f"  {check.file:<26} {check.num_records:>8,} {check.num_bytes:>14,}  {check.checksum:<22} "
                     f"{'problem' if check.problem else 'ok'}")
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
    for folder in _RECORDS.value:
        try:
            records.check_local_records_path(folder, "--records")
            report = verify_folder(folder)
        except RecordsError as error:
            return cli.fail(error)
        print("\n".join(report_lines(report)), flush=True)
        found_problem = found_problem or bool(report.problems)
    return PROBLEM_EXIT_CODE if found_problem else 0


if __name__ == "__main__":
    sys.exit(main())
