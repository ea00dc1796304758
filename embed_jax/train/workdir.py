"""A training workdir, as `python -m embed_jax.main --workdir=DIR` leaves it, for everyone who reads one.

    DIR/config.json                      the full config of the latest run (records folders made absolute)
    DIR/<stage>/student_config.json      the stage's student architecture (Student.from_config's argument)
    DIR/<stage>/checkpoints/<step>/      Orbax checkpoints: params, opt_state, the grain iterator, run metadata
    DIR/<stage>/metrics.jsonl            logged metrics (embed_jax/train/metrics.py)
    DIR/records, DIR/../records, ...     where a run's records are looked for when they are not named

The training loop writes it; export (embed_jax/convert/), evaluation (embed_jax/eval/) and the caption export
(embed_jax/teachers/caption_targets.py) read it through this module, and a stage's student and tokenizer through
embed_jax/train/trained_student.py. It imports no jax at module level, so that reading a run folder's layout and
configs costs nothing.
"""
from __future__ import annotations

import errno
import json
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from embed_jax.data import records, teacher_weights

STUDENT_CONFIG_FILE = "student_config.json"
RUN_CONFIG_FILE = "config.json"
CHECKPOINTS_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"
PARAMS_ITEM, OPT_STATE_ITEM = "params", "opt_state"


def is_cloud_path(path: str | Path) -> bool:
    return str(path).startswith("gs://")


def as_path(path: str | Path):
    """A run folder path as given: pathlib for local paths, etils epath for gs:// (see `absolute_workdir`)."""
    return absolute_workdir(path) if is_cloud_path(path) else Path(path)


def absolute_workdir(workdir: str | Path):
    """Orbax needs absolute checkpoint paths; a relative local workdir is taken from the current folder. A Cloud
    Storage workdir (gs://...) becomes an etils `epath.Path`, which keeps the scheme (pathlib's Path would collapse
    it to gs:/...) and supports the same `/`, mkdir and write_text (through gcsfs, the `tpu` extra)."""
    if is_cloud_path(workdir):
        from etils import epath  # Orbax's path library: only for cloud workdirs

        return epath.Path(str(workdir))
    return Path(workdir).resolve()


def make_workdir(workdir: Path) -> None:
    """Creates the workdir and proves it writable before any work; an OSError naming the path and the cause (a file
    in the way, a read-only or full disk, no permission) otherwise. A gs:// workdir is Orbax's to create."""
    if str(workdir).startswith("gs://"):
        return
    if workdir.exists() and not workdir.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "a file, not a folder, is in the way of --workdir", str(workdir))
    workdir.mkdir(parents=True, exist_ok=True)
    # One probe per process: every host of a run probes the same folder at once (a shared disk; the two-process
    # test), and one's unlink must not take away another's file.
    probe = workdir / f"{PROBE_PREFIX}{socket.gethostname()}.{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()


# ---------------------------------------------------------------------------------------------------- whose folder

# What a run leaves in its workdir besides config.json and its stage folders, and what a user may put there before
# the first run (DIR/records is one of the places a run's records are looked for): nothing training overwrites.
OWN_ENTRIES = (f".{RUN_CONFIG_FILE}.tmp", "records")
LOCK_PREFIX, PROBE_PREFIX = ".lock.", ".write-probe."
# The run config keys that say which run a workdir holds: init_from, seed and teacher weights are the parts of
# `run_identity` a config fixes (the records' fingerprint is compared through their folders' manifests).
IDENTITY_KEYS = (("model", "init_from"), ("seed",), ("data", "teacher_weights"))


class ForeignWorkdirError(ValueError):
    """The workdir holds something training would overwrite: another tool's files, or another run's."""


def is_run_config(values: Any) -> bool:
    """Whether parsed JSON is a run config this module wrote (its sections), not e.g. a Hugging Face config.json."""
    return (isinstance(values, dict) and isinstance(values.get("stage_order"), list)
            and isinstance(values.get("model"), dict) and "init_from" in values["model"])


def describe_foreign_config(folder: Path, values: Any) -> str:
    """What a config.json that no run wrote belongs to, as far as its folder says."""
    if (folder / "modules.json").is_file():
        return "a sentence-transformers model (modules.json, config.json)"
    if isinstance(values, dict) and "model_type" in values:
        return f"a Hugging Face model (config.json with model_type {values['model_type']!r})"
    return "a config.json that no embed_jax training run wrote"


def identity_differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """'key: workdir X, this run Y' for each identity key (IDENTITY_KEYS, the records' fingerprint) that differs."""
    lines = []
    for keys in IDENTITY_KEYS:
        old, new = stored, current
        for key in keys:
            old = old.get(key, "") if isinstance(old, Mapping) else ""
            new = new.get(key, "") if isinstance(new, Mapping) else ""
        if keys == ("data", "teacher_weights"):
            old, new = teacher_weights.identity_weights(str(old)), teacher_weights.identity_weights(str(new))
        if str(old) != str(new):
            lines.append(f"{'.'.join(keys)}: workdir {old!r}, this run {new!r}")
    old_records, new_records = (run_config_values(values).get("data", {}).get("records_dir", "")
                                for values in (stored, current))
    if old_records != new_records:
        fingerprints = [records_folders_fingerprint(folders) for folders in (old_records, new_records)]
        if None in fingerprints or fingerprints[0] != fingerprints[1]:
            lines.append(f"data.records_dir: workdir {old_records!r}, this run {new_records!r} (other records)")
    return lines


def records_folders_fingerprint(folders: str) -> list[str] | None:
    """The corpus fingerprints of comma-separated records folders; None when one cannot be read."""
    try:
        return [records.read_manifest(folder).corpus_fingerprint for folder in folders.split(",") if folder]
    except (records.RecordsError, OSError, ValueError):
        return None


def check_workdir_is_ours(workdir: Path, config_values: Mapping[str, Any]) -> None:
    """Refuses, before anything is written, a workdir that is neither empty (or absent) nor a run of the same
    identity: training writes DIR/config.json and DIR/<stage>/, which would replace what another tool or run left
    there (an exported model folder, the student's own init_from folder). ForeignWorkdirError names what was found."""
    workdir = as_path(workdir)
    if not workdir.is_dir():
        return  # absent (made by make_workdir), or a file in the way (make_workdir's one line)
    where = f"--workdir={workdir}"
    run_config = workdir / RUN_CONFIG_FILE
    if run_config.is_file():
        try:
            stored = json.loads(run_config.read_text())
        except (ValueError, UnicodeDecodeError):
            stored = None
        if not is_run_config(stored):
            init_from = str(config_values.get("model", {}).get("init_from", ""))
            same = " It is this run's --config.model.init_from." if init_from and not is_cloud_path(init_from) and \
                Path(init_from).expanduser().resolve() == Path(str(workdir)) else ""
            raise ForeignWorkdirError(
                f"{where} holds {describe_foreign_config(workdir, stored)}, not an embed_jax training run: training "
                f"would overwrite its config.json.{same} Choose an empty or new folder for --workdir")
        differences = identity_differences(stored, config_values)
        if differences:
            raise ForeignWorkdirError(
                f"{where} holds an embed_jax run of another identity ({'; '.join(differences)}): training would "
                "overwrite its config.json and mix its checkpoints. Rerun with the workdir's values to resume it, or "
                "choose an empty or new folder for --workdir")
        return
    stages = set(config_values.get("stage_order", ()))
    foreign = sorted(path.name for path in workdir.iterdir()
                     if path.name not in OWN_ENTRIES and path.name not in stages
                     and not path.name.startswith((LOCK_PREFIX, PROBE_PREFIX)))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ForeignWorkdirError(
            f"{where} is not empty and holds no embed_jax run ({RUN_CONFIG_FILE} is missing); it holds {shown}. "
            "Choose an empty or new folder for --workdir (a records folder may sit in it as records/)")


# ---------------------------------------------------------------------------------------------------- configs


def run_config_values(config_values: Mapping[str, Any]) -> dict[str, Any]:
    """The run config as written to DIR/config.json: records folders made absolute, so that export and evaluation
    find the records and tokenizer a checkpoint was trained on from any current folder."""
    values = json.loads(json.dumps(dict(config_values), default=str))
    data = values.get("data", {})
    for key in ("records_dir", "eval_records_dir", "image_records_dir"):
        if key not in data:
            continue
        folders = str(data[key] or "")
        data[key] = ",".join(folder.strip() if is_cloud_path(folder.strip()) else str(Path(folder.strip()).resolve())
                             for folder in folders.split(",") if folder.strip())
    return values


def write_run_config(config_values: Mapping[str, Any], workdir: Path) -> None:
    """DIR/config.json, replaced whole (a temporary file renamed over it): a kill mid-write must not leave a partial
    one, which `check_workdir_is_ours` would take for another tool's file."""
    workdir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(run_config_values(config_values), indent=1, default=str) + "\n"
    if is_cloud_path(workdir):  # a Cloud Storage object is written whole
        (workdir / RUN_CONFIG_FILE).write_text(text)
        return
    temporary = workdir / f".{RUN_CONFIG_FILE}.tmp"
    temporary.write_text(text)
    os.replace(temporary, workdir / RUN_CONFIG_FILE)


def run_config_file(stage_dir: Path) -> Path | None:
    """The run config in a stage folder's workdir, if there is one."""
    path = as_path(stage_dir).parent / RUN_CONFIG_FILE
    return path if path.is_file() else None


def write_student_config(stage_dir: Path, student_config: Mapping[str, Any]) -> None:
    stage_dir.mkdir(parents=True, exist_ok=True)
    (stage_dir / STUDENT_CONFIG_FILE).write_text(json.dumps(dict(student_config), indent=1, default=str))


def is_stage_folder(folder: Path) -> bool:
    return (Path(folder) / STUDENT_CONFIG_FILE).is_file()


def read_student_config(stage_dir: str | Path, *, key: str = "") -> dict[str, Any]:
    """A stage's student_config.json; the error says what to pass instead (`key` names the flag or config key)."""
    config_file = as_path(stage_dir) / STUDENT_CONFIG_FILE
    if not config_file.is_file():
        where = f"{key}={stage_dir}: " if key else ""
        raise FileNotFoundError(f"{where}{config_file} is missing: {stage_dir} is not a stage folder written by "
                                "embed_jax.main (name DIR/<stage>, e.g. runs/default/train/stage3_pairs)")
    return json.loads(config_file.read_text())


# ---------------------------------------------------------------------------------------------------- stages


def stage_folders(workdir: Path) -> list[Path]:
    """The workdir's stage folders (those holding student_config.json), in the run config's stage_order (a stage
    may be named anything, e.g. a heads-only stage3_heads before stage3), then by name (stage1, stage2, ...)."""
    if not workdir.is_dir():
        raise FileNotFoundError(f"--workdir={workdir}: no such folder (the --workdir given to python -m embed_jax.main)")
    order = run_stage_order(workdir)
    return sorted((path for path in workdir.iterdir() if is_stage_folder(path)),
                  key=lambda path: (order.index(path.name) if path.name in order else len(order),
                                    len(path.name), path.name))


def run_stage_order(workdir: Path) -> list[str]:
    """stage_order of the workdir's run config (empty without one)."""
    path = as_path(workdir) / RUN_CONFIG_FILE
    if not path.is_file():
        return []
    try:
        return [str(name) for name in json.loads(path.read_text()).get("stage_order", ())]
    except (ValueError, AttributeError):  # a damaged run config is reported by whoever reads it for its settings
        return []


def checkpoint_steps(stage_dir: Path) -> list[int]:
    folder = as_path(stage_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    return sorted(int(path.name) for path in folder.iterdir() if path.name.isdigit() and path.is_dir())


def choose_stage(workdir: Path, stage: str | None) -> Path:
    """--stage's folder, or the last stage with a checkpoint; errors name what the workdir holds."""
    stages = stage_folders(workdir)
    trained = [path for path in stages if checkpoint_steps(path)]
    if not trained:
        raise FileNotFoundError(
            f"--workdir={workdir} holds no checkpoint: no stage folder (stage1, stage2, ...) with {STUDENT_CONFIG_FILE} "
            f"and {CHECKPOINTS_DIR}/. Train first with python -m embed_jax.main --config=configs/distill.py "
            f"--workdir={workdir}")
    if stage is None:
        return trained[-1]
    names = [path.name for path in trained]
    if stage not in names:
        raise FileNotFoundError(f"--stage={stage}: {workdir} has no trained stage of that name; trained stages: "
                                f"{', '.join(names)}")
    return workdir / stage


# ---------------------------------------------------------------------------------------------------- identity


def run_identity(config: Any, stage_name: str, manifest: Any) -> dict[str, Any]:
    """What defines a run's checkpoints (config, stage, records Manifest): a folder holding another identity is
    refused (embed_jax/train/checkpoint.py)."""
    identity = {
        "stage": stage_name,
        "init_from": str(config.model.init_from),
        "records_fingerprint": manifest.corpus_fingerprint,
        "teachers": [teacher.name for teacher in manifest.teachers],
        "seed": int(config.seed),
    }
    # Another target: a run with other weights is another run. Equal weights leave the identity as before them.
    weights = teacher_weights.identity_weights(config.data.get("teacher_weights", ""))
    if weights is not None:
        identity["teacher_weights"] = weights
    return identity


def stored_identity(stage_dir: Path, step: int | None = None) -> dict[str, Any]:
    """The identity the training loop stored with a checkpoint (`step`, default the latest)."""
    from embed_jax.train import checkpoint  # Orbax: only when a checkpoint is read

    with checkpoint.read_only_manager(as_path(stage_dir) / CHECKPOINTS_DIR) as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{as_path(stage_dir) / CHECKPOINTS_DIR} holds no checkpoint; train this stage first")
        return dict(manager.metadata(step).get("identity", {}))


def records_fingerprints(workdir: Path) -> list[str]:
    """The corpus fingerprints of the records every trained stage of `workdir` was trained on (latest checkpoints)."""
    return sorted({fingerprint for stage_dir in stage_folders(workdir) if checkpoint_steps(stage_dir)
                   for fingerprint in [stored_identity(stage_dir, checkpoint_steps(stage_dir)[-1])
                                       .get("records_fingerprint")] if fingerprint})


def find_training_records(workdir: Path, fingerprints: Sequence[str], records_dirs: Sequence[str]
                          ) -> list[tuple[Path, records.Manifest]]:
    """The records folders (and Manifests) whose corpus fingerprints the checkpoints record: the given folders
    first, then the usual places beside the workdir (DIR/records, DIR/../records, DIR/../*/); an error naming the
    fingerprint and the flag when one is not found."""
    given = [Path(folder).expanduser().resolve() for folder in records_dirs]
    nearby = [workdir / "records", workdir.parent / "records"] + sorted(
        path.parent for path in workdir.parent.glob(f"*/{records.MANIFEST_NAME}"))
    manifests = {}
    for folder in given + nearby:
        if not (folder / records.MANIFEST_NAME).is_file() or folder in manifests:
            continue
        try:
            manifests[folder] = records.read_manifest(folder)
        except records.RecordsError:
            if folder in given:
                raise
    for folder in given:
        if folder not in manifests:
            raise FileNotFoundError(f"--records_dir={folder}: no {records.MANIFEST_NAME} there")
        if manifests[folder].corpus_fingerprint not in fingerprints:
            raise ValueError(f"--records_dir={folder}: corpus fingerprint {manifests[folder].corpus_fingerprint}, but "
                             f"the checkpoints were trained on {', '.join(fingerprints)}: not this run's records")
    found = []
    for fingerprint in fingerprints:
        match = next((folder for folder, manifest in manifests.items()
                      if manifest.corpus_fingerprint == fingerprint), None)
        if match is None:
            raise FileNotFoundError(
                f"the checkpoints were trained on records with corpus fingerprint {fingerprint}, and none of "
                f"{', '.join(str(path) for path in given + nearby) or 'the usual places'} holds them. Pass "
                "--records_dir=FOLDER (the run's --config.data.records_dir), or --skip_records to export without "
                "them (evaluation then cannot check that its hold-out was not trained on)")
        found.append((match, manifests[match]))
    return found
