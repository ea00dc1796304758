"""Refuse to score a model on a hold-out its training records contain.

Where the training records are written down:
* an exported folder: `embed_jax_export.json` → "training_records": [{"records_dir": ..., ...}, ...];
* a training workdir or one of its stage folders: the run config `config.json` that embed_jax.main writes into the
  workdir (the training config as JSON) → data.records_dir (comma-separated folders); without one, the
  records folders whose corpus fingerprint the checkpoints record, searched where the exporter searches (beside
  the workdir).

Every record of those folders is checked from its shard's sidecar, which holds each record's id and a hash of its
folded text (data/record_index.py; a folder exported before sidecars held them is read record by record, and a line
says so): an id that names evaluation material (`corpora.is_held_out_record_id`: `lee:*`, or a held-out WordNet
synset) or a text equal, after `corpora.fold`, to a held-out text (`corpora.holdout_folded_texts()`, compared by
hash) is an overlap. Overlap stops the evaluation with the records folder and the first
offending ids, unless the user passes --allow_overlap, which scores the model and marks its rows.

A model trained elsewhere (any other sentence-transformers folder) has no records to read: its rows say "external".
A workdir or export whose records cannot be found (folder moved, `--skip_records`) is scored with its rows marked
"unchecked" and a warning.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

from embed_jax.convert.hf_export import EXPORT_FILE
from embed_jax.data import corpora, dataset_index, record_index, records
from embed_jax.train import workdir
from embed_jax.train.workdir import RUN_CONFIG_FILE

SHOWN_OFFENDERS = 5

CLEAN, OVERLAP_ALLOWED, UNCHECKED, EXTERNAL = "clean", "overlap-allowed", "unchecked", "external"
# How a status shows in the Markdown table (worst first when models combine).
STATUS_ORDER = (OVERLAP_ALLOWED, UNCHECKED, EXTERNAL, CLEAN)


class HoldoutOverlapError(ValueError):
    """The model's training records contain hold-out material; the message names the folder and the records."""


class TrainingRecordsError(ValueError):
    """Where a model's training records are written down, something is malformed; the message names the key."""


@dataclasses.dataclass(frozen=True)
class Offender:
    record_id: str
    reason: str  # "held-out id" or "held-out text"


@dataclasses.dataclass(frozen=True)
class RecordsScan:
    records_dir: str
    num_records: int
    offenders: tuple[Offender, ...]  # the first SHOWN_OFFENDERS
    num_offending: int


@dataclasses.dataclass(frozen=True)
class HoldoutCheck:
    """What the JSON report says about a model's training data and the hold-out."""

    status: str
    note: str = ""
    records_dirs: tuple[str, ...] = ()
    records_checked: int = 0
    num_offending: int = 0
    offenders: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def external(note: str = "not trained by embed_jax: its training data is unknown") -> HoldoutCheck:
    return HoldoutCheck(status=EXTERNAL, note=note)


def combine(checks: Sequence[HoldoutCheck], note: str) -> HoldoutCheck:
    """One check for a model built from others (concat, pca): the worst status, every folder."""
    worst = min(checks, key=lambda check: STATUS_ORDER.index(check.status))
    return HoldoutCheck(
        status=worst.status, note=f"{note}; {worst.note}" if worst.note else note,
        records_dirs=tuple(folder for check in checks for folder in check.records_dirs),
        records_checked=sum(check.records_checked for check in checks),
        num_offending=sum(check.num_offending for check in checks),
        offenders=tuple(offender for check in checks for offender in check.offenders)[:SHOWN_OFFENDERS])


# ------------------------------------------------------------------------------------------------ finding them


def _records_dirs_value(value: Any, where: str) -> list[Path]:
    """A records folder, comma-separated folders, or a list of folders → paths."""
    items = value.split(",") if isinstance(value, str) else value
    if isinstance(items, list) and all(isinstance(item, str) for item in items):
        folders = [Path(item.strip()).expanduser() for item in items if item.strip()]
        if folders:
            return folders
    raise TrainingRecordsError(f"{where}: expected a records folder (or several, comma-separated), got {value!r}.")


def records_from_export(folder: Path) -> list[Path] | None:
    """The records folders an exported folder's embed_jax_export.json lists under "training_records"; None when
    the export says it did not locate them (records_dir null: `--skip_records`)."""
    path = folder / EXPORT_FILE
    try:
        export = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise TrainingRecordsError(f"{path}: unreadable ({error}).") from error
    entries = export.get("training_records") if isinstance(export, dict) else None
    if not isinstance(entries, list) or not entries:
        raise TrainingRecordsError(f"{path}: key \"training_records\" must be a non-empty list of "
                                   f"{{\"records_dir\": ...}} entries (got {entries!r}); re-export the model.")
    folders = []
    for index, entry in enumerate(entries):
        where = f"{path}: training_records[{index}].records_dir"
        if not isinstance(entry, dict) or "records_dir" not in entry:
            raise TrainingRecordsError(f"{where} is missing; re-export the model.")
        if entry["records_dir"] is None:
            return None
        # An export writes its records folders relative to itself (a published folder holds no local path).
        folders.extend(path if path.is_absolute() else folder / path
                       for path in _records_dirs_value(entry["records_dir"], where))
    return folders


def records_from_run_config(path: Path) -> list[Path]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise TrainingRecordsError(f"{path}: unreadable ({error}).") from error
    data = config.get("data") if isinstance(config, dict) else None
    if not isinstance(data, dict) or "records_dir" not in data:
        raise TrainingRecordsError(f"{path}: key data.records_dir is missing; it is not an embed_jax run config.")
    return _records_dirs_value(data["records_dir"], f"{path}: data.records_dir")


# ----------------------------------------------------------------------------------------------- reading them


@functools.cache
def holdout_text_hashes() -> frozenset[int]:
    """The hashes of every held-out text's folded form (record_index.text_hash folds again: folding is idempotent)."""
    return frozenset(int(value) for value in record_index.text_hashes(corpora.holdout_folded_texts()))


def offence(record_id: str, text_hash: int, held_out_hashes: frozenset[int]) -> str | None:
    if corpora.is_held_out_record_id(record_id):
        return "held-out id"
    if text_hash in held_out_hashes:
        return "held-out text"
    return None


def find_offenders(items: Iterable[tuple[str, int]], held_out_hashes: frozenset[int]) -> tuple[int, list[Offender], int]:
    """(records read, the first SHOWN_OFFENDERS offenders, number of offenders) over (id, text hash) pairs."""
    count, shown, offending = 0, [], 0
    for record_id, text_hash in items:
        count += 1
        reason = offence(record_id, text_hash, held_out_hashes)
        if reason is not None:
            offending += 1
            if len(shown) < SHOWN_OFFENDERS:
                shown.append(Offender(record_id, reason))
    return count, shown, offending


def warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@functools.lru_cache(maxsize=16)
def scan_records(records_dir: str) -> RecordsScan:
    """Every record of one folder checked against the hold-out (once per folder per process), from its sidecars."""
    folder = Path(records_dir)
    index = dataset_index.dataset_index([folder], [records.read_manifest(folder)], log=warn)
    count, shown, offending = find_offenders(zip(index.ids, map(int, index.text_hashes)), holdout_text_hashes())
    return RecordsScan(records_dir=records_dir, num_records=count, offenders=tuple(shown), num_offending=offending)


def overlap_message(model: str, scan: RecordsScan) -> str:
    shown = ", ".join(f"{offender.record_id!r} ({offender.reason})" for offender in scan.offenders)
    return (f"model {model}: its training records in {scan.records_dir} contain {scan.num_offending} of "
            f"{scan.num_records} records from the evaluation hold-out (first: {shown}). Its hold-out scores would "
            f"be inflated, so they are not reported. Train on records without the hold-out (the built-in corpora "
            f"exclude it: embed_jax/data/corpora.py), or pass --allow_overlap to score it anyway with its rows "
            f"marked.")


def check_records(model: str, folders: Sequence[Path], *, source: str, allow_overlap: bool) -> HoldoutCheck:
    """Read every training records folder of `model`; raise HoldoutOverlapError on overlap unless allowed."""
    missing = [folder for folder in folders if not (folder / records.MANIFEST_NAME).is_file()]
    if missing:
        return HoldoutCheck(status=UNCHECKED, records_dirs=tuple(map(str, folders)),
                            note=f"training records listed in {source} not found: {', '.join(map(str, missing))}")
    scans = [scan_records(str(folder.resolve())) for folder in folders]
    offending = [scan for scan in scans if scan.num_offending]
    if offending and not allow_overlap:
        raise HoldoutOverlapError(overlap_message(model, offending[0]))
    return HoldoutCheck(
        status=OVERLAP_ALLOWED if offending else CLEAN,
        note=(f"{sum(scan.num_offending for scan in scans)} training records overlap the hold-out "
              f"(--allow_overlap)" if offending else f"training records read from {source}"),
        records_dirs=tuple(scan.records_dir for scan in scans),
        records_checked=sum(scan.num_records for scan in scans),
        num_offending=sum(scan.num_offending for scan in scans),
        offenders=tuple(offender.record_id for scan in scans for offender in scan.offenders)[:SHOWN_OFFENDERS])


def check_exported_folder(model: str, folder: Path, *, allow_overlap: bool) -> HoldoutCheck:
    folders = records_from_export(folder)
    if folders is None:
        return HoldoutCheck(status=UNCHECKED, note=f"{folder / EXPORT_FILE} lists no training records folder "
                                                   f"(exported with --skip_records)")
    return check_records(model, folders, source=str(folder / EXPORT_FILE), allow_overlap=allow_overlap)


def records_by_fingerprint(run_dir: Path) -> list[Path]:
    """The records folders whose corpus fingerprints the workdir's checkpoints record, found where the exporter
    looks (beside the workdir: embed_jax.train.workdir.find_training_records); FileNotFoundError if one is not."""
    found = workdir.find_training_records(run_dir, workdir.records_fingerprints(run_dir), [])
    return [folder for folder, _ in found]


def check_stage_folder(model: str, stage_dir: Path, *, allow_overlap: bool) -> HoldoutCheck:
    """Records from the run config; without one, the records whose fingerprint the checkpoints record."""
    config_file = workdir.run_config_file(stage_dir)
    if config_file is not None:
        return check_records(model, records_from_run_config(config_file), source=str(config_file),
                             allow_overlap=allow_overlap)
    try:
        folders = records_by_fingerprint(stage_dir.parent)
    except FileNotFoundError as error:
        return HoldoutCheck(status=UNCHECKED, note=f"no {RUN_CONFIG_FILE} in {stage_dir.parent}, and the "
                                                   f"checkpoints' records were not found beside it ({error})")
    return check_records(model, folders, source="the records whose corpus fingerprint the checkpoints record",
                         allow_overlap=allow_overlap)
