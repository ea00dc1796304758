"""Teacher records: the schema, the byte layout, shard files with their sidecars, and manifest.json.

A records folder holds what the teacher export wrote (SPEC §2: texts row-aligned with their teacher vectors):

    manifest.json                    the export's description; written first (status "in_progress") and completed
                                     at the end (status "complete", record count, corpus fingerprint, shard list)
    shard-00000.array_record         ArrayRecord file, `group_size:1` so that any record is read by random access
    shard-00000.json                 sidecar: the shard's own copy of the schema fields (teachers, dims, dtype,
                                     schema version, export id) plus its record count, first/last id and the running
                                     corpus hash at its end. A shard counts as written only once its sidecar exists.
    ...
    .export.lock, .export-workers.json, .export-worker-00000.lock, ...
                                     the export's coordination files: a folder lock held while the manifest is set
                                     up or completed, the worker count a multi-worker export started with, one lock
                                     per worker index (embed_jax/teachers/workers.py). Empty or tiny; never records.

Records are local files: ArrayRecord opens local paths only, so a bucket is read through a gcsfuse mount
(`check_local_records_path`, docs/launch.md).

Byte layout of one record (schema version 1), little-endian:

    offset  size      field
    0       4         magic b"EJR1"
    4       1         uint8  storage dtype code: 1 = float16, 2 = float32
    5       1         uint8  reserved, 0
    6       2         uint16 n_id   = length in bytes of the id (UTF-8)
    8       4         uint32 n_text = length in bytes of the text (UTF-8)
    12      4         uint32 d      = teacher_dim, the length of the vector
    16      n_id      id, UTF-8
    ...     n_text    text, UTF-8
    ...     d*2|d*4   the vector: the renormalised concatenated teacher vector (SPEC §2), float16 or float32

The vector is not aligned to its item size; numpy.frombuffer reads it anyway. Readers always return float32.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import numpy as np

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
STATUS_IN_PROGRESS = "in_progress"
STATUS_COMPLETE = "complete"
NORMALISATION = "per-teacher L2, concatenated in teacher order, L2 again (SPEC §2)"
STORAGE_DTYPES = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}
_DTYPE_CODES = {"float16": 1, "float32": 2}
_MAGIC = b"EJR1"
_HEADER = struct.Struct("<4sBBHII")
# Fields that must agree between a manifest and each shard sidecar, and between folders read together.
SCHEMA_FIELDS = ("schema_version", "teacher_dim", "dtype", "teachers", "normalisation")
# Fields that define an export: the same values give the same records, so a run may resume another's work.
IDENTITY_FIELDS = ("schema_version", "teachers", "dtype", "normalisation", "corpus", "shard_size")
_TEMPORARY_SUFFIX = ".tmp"
# Names of the export's own coordination files (embed_jax/teachers/workers.py): not "foreign" to a records folder.
COORDINATION_PREFIX = ".export"
# Where launch/tpu.py's `setup --gcsfuse-bucket=BUCKET` mounts a bucket on every worker (docs/launch.md).
GCSFUSE_MOUNT_ROOT = "/mnt/gcs"


class RecordsError(ValueError):
    """A records folder, shard or record is wrong; the message names the file and what to do."""


class Text(NamedTuple):
    """One input text with its stable id (unique within a corpus)."""
    id: str
    text: str


@dataclasses.dataclass(frozen=True)
class TeacherInfo:
    """One teacher as the manifest records it; `order` is its slot in the concatenated vector."""
    name: str
    path: str
    dim: int
    pooling: str
    prompt: str
    max_seq_length: int
    weights_sha256: str
    order: int
    # Added after schema 1's first exports, with the values those exports had: a manifest without them reads as
    # before, and `export_id` leaves default values out so that its identity stays the same.
    dtype: str = "float32"  # the weights' dtype, or with autocast the forward's
    autocast: bool = False
    device: str = "cpu"  # the kind of device that computed the vectors (cpu, cuda)
    prompt_name: str = ""  # where `prompt` came from, if from the folder's named prompts
    dense_head: str = ""  # the sentence-transformers Dense folder that replaced the folder's own
    append_eos: bool = False  # each text ended with the tokenizer's EOS token


_TEACHER_DEFAULTS = {field.name: field.default for field in dataclasses.fields(TeacherInfo)
                     if field.default is not dataclasses.MISSING}


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    file: str
    num_records: int
    first_id: str
    last_id: str
    corpus_hash: str  # running hash of every kept (id, text) up to this shard's last record


@dataclasses.dataclass(frozen=True)
class Manifest:
    schema_version: int
    export_id: str
    status: str
    teachers: tuple[TeacherInfo, ...]
    teacher_dim: int
    dtype: str
    normalisation: str
    corpus: dict[str, Any]
    shard_size: int
    num_records: int | None = None
    skipped_empty: int | None = None
    corpus_fingerprint: str | None = None  # the running corpus hash after the last record
    shards: tuple[ShardInfo, ...] = ()

    @property
    def teacher_names(self) -> tuple[str, ...]:
        return tuple(teacher.name for teacher in self.teachers)

    @property
    def teacher_slices(self) -> dict[str, slice]:
        """Where each teacher's (normalised, then jointly rescaled) part sits in the concatenated vector."""
        slices, start = {}, 0
        for teacher in self.teachers:
            slices[teacher.name] = slice(start, start + teacher.dim)
            start += teacher.dim
        return slices

    def schema(self) -> dict[str, Any]:
        """The fields every shard and every folder read together must share."""
        as_dict = manifest_to_dict(self)
        return {field: as_dict[field] for field in SCHEMA_FIELDS}

    def to_json(self) -> str:
        return json.dumps(manifest_to_dict(self), indent=2, ensure_ascii=False) + "\n"


def manifest_to_dict(manifest: Manifest) -> dict[str, Any]:
    """Plain JSON types (lists, not tuples), so that a fresh manifest compares equal to one read from disk."""
    return json.loads(json.dumps(dataclasses.asdict(manifest), ensure_ascii=False))


def export_id(fields: dict[str, Any]) -> str:
    """Hash of the identity fields (IDENTITY_FIELDS) of a manifest being built.

    A teacher is identified by the fingerprint of its files, not by its path, so that the same model reached by
    another path (a moved cache, a relative path from another folder) resumes the same export.
    """
    identity = {field: fields[field] for field in IDENTITY_FIELDS}
    identity["teachers"] = [{key: value for key, value in teacher.items()
                             if key != "path" and not (key in _TEACHER_DEFAULTS and value == _TEACHER_DEFAULTS[key])}
                            for teacher in identity["teachers"]]
    canonical = json.dumps(identity, sort_keys=True, ensure_ascii=False, default=list)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def manifest_from_dict(data: dict[str, Any], *, source: str) -> Manifest:
    try:
        fields = dict(data)
        fields["teachers"] = tuple(TeacherInfo(**teacher) for teacher in fields["teachers"])
        fields["shards"] = tuple(ShardInfo(**shard) for shard in fields.get("shards", ()))
        return Manifest(**fields)
    except (KeyError, TypeError) as error:
        raise RecordsError(f"{source}: not a schema-{SCHEMA_VERSION} embed_jax manifest ({error}). Re-export the "
                           f"records with `python -m embed_jax.teachers.export`.") from error


# ----------------------------------------------------------------------------------------------------- records


def encode_record(record_id: str, text: str, vector: np.ndarray, dtype: str) -> bytes:
    """One record's bytes (layout in the module docstring)."""
    id_bytes, text_bytes = record_id.encode("utf-8"), text.encode("utf-8")
    if len(id_bytes) > 0xFFFF:
        raise RecordsError(f"record id {record_id[:80]!r}... is {len(id_bytes)} bytes; ids must fit 65535 bytes.")
    values = np.asarray(vector).astype(STORAGE_DTYPES[dtype], copy=False)
    header = _HEADER.pack(_MAGIC, _DTYPE_CODES[dtype], 0, len(id_bytes), len(text_bytes), values.shape[0])
    return b"".join((header, id_bytes, text_bytes, values.tobytes()))


def decode_record(data: bytes) -> dict[str, Any]:
    """`{"id": str, "text": str, "teacher": float32 (teacher_dim,)}` from one record's bytes."""
    magic, dtype_code, _, id_length, text_length, dim = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise RecordsError(f"record does not start with {_MAGIC!r} (got {magic!r}): not an embed_jax record.")
    dtype = STORAGE_DTYPES["float16" if dtype_code == 1 else "float32"]
    text_start = _HEADER.size + id_length
    vector_start = text_start + text_length
    if len(data) != vector_start + dim * dtype.itemsize:
        raise RecordsError(f"record of {len(data)} bytes does not match its header (id {id_length} B, "
                           f"text {text_length} B, {dim} × {dtype.name}): the shard is damaged.")
    return {
        "id": data[_HEADER.size:text_start].decode("utf-8"),
        "text": data[text_start:vector_start].decode("utf-8"),
        "teacher": np.frombuffer(data, dtype=dtype, count=dim, offset=vector_start).astype(np.float32),
    }


def check_local_records_path(path: str | os.PathLike, key: str) -> None:
    """Refuse a URL (gs://, s3://...) where a records folder is read or written: ArrayRecord opens local files only,
    and `Path("gs://b/x")` would silently become the local `gs:/b/x`. The error names the mount to use instead."""
    text = os.fspath(path)
    scheme, separator, rest = text.partition("://")
    if not separator:
        return
    if scheme == "gs":
        bucket, _, inside = rest.partition("/")
        mounted = f"{GCSFUSE_MOUNT_ROOT}/{bucket}" + (f"/{inside}" if inside else "")
        raise RecordsError(
            f"{key}={text!r}: records are local files (the ArrayRecord reader opens local paths only). Mount the "
            f"bucket with gcsfuse on every worker (`python -m launch.tpu setup ... --gcsfuse-bucket={bucket}` mounts "
            f"it at {GCSFUSE_MOUNT_ROOT}/{bucket}) and pass {key}={mounted}; docs/launch.md, \"Records in a bucket\".")
    raise RecordsError(f"{key}={text!r}: records are local files (the ArrayRecord reader opens local paths only); "
                       f"mount the storage as a local folder and pass that folder's path.")


# ------------------------------------------------------------------------------------------------------ shards


def shard_stem(index: int) -> str:
    return f"shard-{index:05d}"


def _publish(temporary: Path, final: Path) -> None:
    """The one way a file of a records folder appears: an atomic rename of its finished temporary."""
    os.replace(temporary, final)


def _write_json_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + _TEMPORARY_SUFFIX)
    temporary.write_text(text, encoding="utf-8")
    _publish(temporary, path)


def write_shard(folder: Path, index: int, records: Sequence[tuple[str, str, np.ndarray]], manifest: Manifest,
                corpus_hash: str, encode: Callable[..., bytes] = encode_record) -> ShardInfo:
    """Write one shard, then its sidecar; both appear by rename, the sidecar last, so a crash leaves no half shard.

    `encode(*record, manifest.dtype)` gives a record's bytes; each record's first field is its id. Text records use
    `encode_record`; image–caption records (embed_jax/data/image_records.py) pass their own layout."""
    from array_record.python import array_record_module

    stem = shard_stem(index)
    final_path = folder / f"{stem}.array_record"
    temporary_path = folder / f"{stem}.array_record{_TEMPORARY_SUFFIX}"
    writer = array_record_module.ArrayRecordWriter(str(temporary_path), "group_size:1")
    for record in records:
        writer.write(encode(*record, manifest.dtype))
    writer.close()
    _publish(temporary_path, final_path)
    info = ShardInfo(file=final_path.name, num_records=len(records), first_id=records[0][0],
                     last_id=records[-1][0], corpus_hash=corpus_hash)
    sidecar = {**manifest.schema(), "export_id": manifest.export_id, "shard": dataclasses.asdict(info)}
    _write_json_atomically(folder / f"{stem}.json", json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n")
    return info


def adopt_shard(folder: Path, index: int, source: Path, info: ShardInfo, manifest: Manifest) -> ShardInfo:
    """Copy a finished shard of another export (same teachers, dtype and shard size; same texts up to its end, as its
    corpus hash proves) into `folder` as shard `index` of `manifest`'s export: the bytes are the records an encoding
    would write, so the copy replaces the encoding (embed_jax/teachers/reuse.py)."""
    stem = shard_stem(index)
    final_path = folder / f"{stem}.array_record"
    temporary_path = folder / f"{stem}.array_record{_TEMPORARY_SUFFIX}"
    shutil.copyfile(source, temporary_path)
    _publish(temporary_path, final_path)
    adopted = dataclasses.replace(info, file=final_path.name)
    sidecar = {**manifest.schema(), "export_id": manifest.export_id, "shard": dataclasses.asdict(adopted)}
    _write_json_atomically(folder / f"{stem}.json", json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n")
    return adopted


def finished_shards(folder: Path) -> tuple[Manifest, dict[int, ShardInfo]]:
    """The manifest of the export in `folder` (finished or not) and {index: shard} of the shards it has finished
    (an unfinished export of several workers may have gaps)."""
    manifest = read_manifest_file(folder / MANIFEST_NAME)
    if manifest.status == STATUS_COMPLETE:
        return manifest, dict(enumerate(manifest.shards))
    return manifest, finished_shard_map(folder, manifest)


def _read_sidecar(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise RecordsError(f"{path}: unreadable shard sidecar ({error}).") from error


def _differences(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    return [f"{field}: {expected.get(field)!r} vs {found.get(field)!r}"
            for field in expected if expected.get(field) != found.get(field)]


def check_sidecar(folder: Path, manifest: Manifest, sidecar_path: Path) -> ShardInfo:
    """The sidecar's schema fields must equal the manifest's; returns the shard it describes."""
    sidecar = _read_sidecar(sidecar_path)
    expected = {**manifest.schema(), "export_id": manifest.export_id}
    differences = _differences(expected, sidecar)
    if differences:
        raise RecordsError(
            f"{sidecar_path}: this shard's manifest disagrees with {folder / MANIFEST_NAME} on "
            f"{'; '.join(differences)}. The folder mixes shards of different exports; move the stray shard (and its "
            f".array_record) out, or re-export into an empty folder.")
    try:
        return ShardInfo(**sidecar["shard"])
    except (KeyError, TypeError) as error:
        raise RecordsError(f"{sidecar_path}: sidecar lacks its shard description ({error}).") from error


def count_shard_records(path: Path) -> int:
    from array_record.python import array_record_module

    reader = array_record_module.ArrayRecordReader(str(path))
    try:
        return reader.num_records()
    finally:
        reader.close()


# ------------------------------------------------------------------------------------- writing a records folder


def prepare_output_folder(folder: Path, manifest: Manifest) -> tuple[list[ShardInfo], Manifest | None]:
    """Make `folder` ready for `manifest`'s export: (shards a previous run of it wrote, that run's manifest).

    Refuses a folder that holds anything else: another export's records, or files that are not ours. Removes only
    our own leftovers of an interrupted run (temporary files, a shard whose sidecar never appeared).
    """
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.exists():
        refuse_foreign_files(folder)
        _write_json_atomically(manifest_path, manifest.to_json())
        return [], None
    existing = read_manifest_file(manifest_path)
    if existing.export_id != manifest.export_id:
        raise RecordsError(
            f"{folder} holds records of another configuration (differences: "
            f"{'; '.join(describe_export_differences(existing, manifest))}). Nothing was changed. To keep those "
            f"records, choose another output folder (--config.output_dir=...); to replace them, delete {folder} "
            f"first.")
    if existing.status == STATUS_COMPLETE:
        read_manifest(folder)  # checks the shards are still all there
        return list(existing.shards), existing
    return _resume_state(folder, existing), existing


def refuse_foreign_files(folder: Path) -> None:
    """A folder without a manifest must hold nothing but the export's own coordination files (or not exist)."""
    if (folder / MANIFEST_NAME).exists() or not folder.is_dir():
        return
    foreign = sorted(path.name for path in folder.iterdir() if not path.name.startswith(COORDINATION_PREFIX))
    if foreign:
        raise RecordsError(
            f"{folder} is not empty ({', '.join(foreign[:5])}{' …' if len(foreign) > 5 else ''}) and holds no "
            f"{MANIFEST_NAME}: refusing to write records beside files that are not an embed_jax export. "
            f"Choose an empty or new output folder (--config.output_dir=...).")


def describe_export_differences(old: Manifest, new: Manifest) -> list[str]:
    """`key: old → new` for each identity leaf that differs, e.g. `corpus.max_texts: 50 → 60`."""
    old_dict, new_dict = manifest_to_dict(old), manifest_to_dict(new)
    old_leaves = dict(_leaves({field: old_dict[field] for field in IDENTITY_FIELDS}))
    new_leaves = dict(_leaves({field: new_dict[field] for field in IDENTITY_FIELDS}))
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
    for leftover in folder.glob(f"*{_TEMPORARY_SUFFIX}"):
        leftover.unlink()
    done: list[ShardInfo] = []
    while (folder / f"{shard_stem(len(done))}.json").exists():
        info = check_sidecar(folder, manifest, folder / f"{shard_stem(len(done))}.json")
        shard_path = folder / info.file
        if not shard_path.exists() or count_shard_records(shard_path) != info.num_records:
            raise RecordsError(f"{shard_path}: missing or not the {info.num_records} records its sidecar lists. "
                               f"Delete {shard_path} and {shard_path.with_suffix('.json')} and run again.")
        done.append(info)
    # A shard renamed into place whose sidecar was never written is our own unfinished work.
    orphan = folder / f"{shard_stem(len(done))}.array_record"
    if orphan.exists():
        orphan.unlink()
    later = sorted(path.name for path in folder.glob("shard-*") if _shard_index(path) > len(done))
    if later:
        raise RecordsError(f"{folder}: shards {', '.join(later[:5])} follow a gap at {shard_stem(len(done))}; "
                           f"the folder was edited by hand. Re-export into an empty folder.")
    return done


def finished_shard_map(folder: Path, manifest: Manifest) -> dict[int, ShardInfo]:
    """{index: shard} of every finished shard of an in-progress export, gaps allowed (several workers write one
    folder, each its own shards: embed_jax/teachers/workers.py). A shard is finished once its sidecar exists; its
    file must then hold the records the sidecar lists."""
    done: dict[int, ShardInfo] = {}
    for sidecar_path in sorted(folder.glob("shard-*.json")):
        index = _shard_index(sidecar_path)
        if index < 0:
            continue
        info = check_sidecar(folder, manifest, sidecar_path)
        shard_path = folder / info.file
        if not shard_path.exists() or count_shard_records(shard_path) != info.num_records:
            raise RecordsError(f"{shard_path}: missing or not the {info.num_records} records its sidecar lists. "
                               f"Delete {shard_path} and {sidecar_path} and run again.")
        done[index] = info
    return done


def remove_unfinished_shard(folder: Path, index: int) -> None:
    """A writer's own leftovers of shard `index` from an interrupted run: temporaries, records without sidecar."""
    stem = shard_stem(index)
    if (folder / f"{stem}.json").exists():
        return
    for leftover in (f"{stem}.array_record{_TEMPORARY_SUFFIX}", f"{stem}.json{_TEMPORARY_SUFFIX}",
                     f"{stem}.array_record"):
        (folder / leftover).unlink(missing_ok=True)


def _shard_index(path: Path) -> int:
    try:
        return int(path.name.split(".")[0].removeprefix("shard-"))
    except ValueError:
        return -1


def finish_output_folder(folder: Path, manifest: Manifest) -> None:
    _write_json_atomically(folder / MANIFEST_NAME, manifest.to_json())


# ------------------------------------------------------------------------------------- reading a records folder


def read_manifest_file(path: Path) -> Manifest:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise RecordsError(f"{path} does not exist: {path.parent} is not an embed_jax records folder. Export one "
                           f"with `python -m embed_jax.teachers.export --config=configs/teachers.py`.") from error
    except (OSError, json.JSONDecodeError) as error:
        raise RecordsError(f"{path}: unreadable manifest ({error}).") from error
    manifest = manifest_from_dict(data, source=str(path))
    if manifest.schema_version != SCHEMA_VERSION:
        raise RecordsError(f"{path}: schema version {manifest.schema_version}, this embed_jax reads "
                           f"{SCHEMA_VERSION}. Re-export the records with this version.")
    return manifest


def read_manifest(folder: str | os.PathLike) -> Manifest:
    """The manifest of a finished export, checked against every shard's sidecar and file."""
    folder = Path(folder)
    manifest = read_manifest_file(folder / MANIFEST_NAME)
    if manifest.status != STATUS_COMPLETE:
        raise RecordsError(f"{folder}: the export is not finished (status {manifest.status!r}). Run the same export "
                           f"command again: it resumes where it stopped.")
    for index, listed in enumerate(manifest.shards):
        sidecar_path = folder / f"{shard_stem(index)}.json"
        if not (folder / listed.file).exists():
            raise RecordsError(f"{folder / listed.file}: listed in the manifest but missing.")
        on_disk = check_sidecar(folder, manifest, sidecar_path)
        if on_disk != listed:
            raise RecordsError(f"{sidecar_path}: describes {on_disk} but the manifest lists {listed}.")
    return manifest


def check_manifests_agree(folders_and_manifests: Sequence[tuple[Path, Manifest]]) -> None:
    """Folders read as one dataset must share teachers (names, dims, order), dim, dtype and schema."""
    first_folder, first = folders_and_manifests[0]
    for folder, manifest in folders_and_manifests[1:]:
        differences = _differences(first.schema(), manifest.schema())
        if differences:
            raise RecordsError(f"records in {folder} disagree with {first_folder} on {'; '.join(differences)}; "
                               f"they cannot be read as one dataset. Export both with the same teachers and dtype.")


def shard_paths(folder: str | os.PathLike, manifest: Manifest) -> list[Path]:
    return [Path(folder) / shard.file for shard in manifest.shards]


def corpus_hasher() -> "hashlib._Hash":
    """Running hash over kept (id, text) pairs in corpus order; length-prefixed so boundaries are unambiguous."""
    return hashlib.sha256(b"embed_jax corpus v1\0")


def update_corpus_hash(hasher: "hashlib._Hash", texts: Iterable[Text]) -> None:
    for item in texts:
        id_bytes, text_bytes = item.id.encode("utf-8"), item.text.encode("utf-8")
        hasher.update(struct.pack("<II", len(id_bytes), len(text_bytes)) + id_bytes + text_bytes)
