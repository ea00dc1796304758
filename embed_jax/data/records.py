"""Teacher records: the schema, the byte layout, shard files with their sidecars, and manifest.json.

A records folder holds what the teacher export wrote (docs/method.md §2: texts row-aligned with their teacher vectors):

    manifest.json                    the export's description; written first (status "in_progress") and completed
                                     at the end (status "complete", record count, corpus fingerprint, shard list)
    shard-00000.array_record         ArrayRecord file, `group_size:1` so that any record is read by random access
    shard-00000.json                 sidecar: the shard's own copy of the schema fields (teachers, dims, dtype,
                                     schema version, export id) plus its record count, first/last id, the running
                                     corpus hash at its end, the shard file's size and sha256, and its record
                                     index (every id and text hash: data/record_index.py). A shard counts as
                                     written only once its sidecar exists.
    ...
    .export.lock, .export-workers.json, .export-worker-00000.lock, ...
                                     the export's coordination files: a folder lock held while the manifest is set
                                     up or completed, the worker count a multi-worker export started with, one lock
                                     per worker index (embed_jax/teachers/workers.py). Empty or tiny; never records.

Checks of a shard against its sidecar, by cost: `read_manifest` (every reader, on open) compares each file's size;
`check_records_cheaply` (training, before step 1) also opens each shard for its record count and first id, which
finds truncated, replaced and swapped shards, and (`check_index_cheaply`) an index of another shard; `verify_shard`
(`python -m embed_jax.data.verify`) reads every record (its vector finite and of unit norm, its id and text hash as
the index lists them) and the file's sha256, which finds a flipped byte. Sidecars written before sizes and checksums were recorded have
neither (0 and ""): they are read as before, and verify says "no checksum recorded".

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
    ...     d*2|d*4   the vector: the renormalised concatenated teacher vector (docs/method.md §2), float16 or float32

The vector is not aligned to its item size; numpy.frombuffer reads it anyway. Readers always return float32.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import numpy as np

from embed_jax.data import record_index
from embed_jax.data.record_index import RecordIndex

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
STATUS_IN_PROGRESS = "in_progress"
STATUS_COMPLETE = "complete"
NORMALISATION = "per-teacher L2, concatenated in teacher order, L2 again (docs/method.md §2)"
STORAGE_DTYPES = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}
_DTYPE_CODES = {"float16": 1, "float32": 2}
_MAGIC = b"EJR1"
_HEADER = struct.Struct("<4sBBHII")
# Fields that must agree between a manifest and each shard sidecar, and between folders read together.
SCHEMA_FIELDS = ("schema_version", "teacher_dim", "dtype", "teachers", "normalisation")
# Fields that define an export: the same values give the same records, so a run may resume another's work.
IDENTITY_FIELDS = ("schema_version", "teachers", "dtype", "normalisation", "corpus", "shard_size")
TEMPORARY_SUFFIX = ".tmp"
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
    # The shard file as written; 0 and "" in sidecars written before they were recorded (read as before).
    num_bytes: int = 0
    sha256: str = ""


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
        """The fields every shard and every folder read together must share. Without the shard list, which they do
        not need: each sidecar is checked against this, so converting the list here made opening a folder cost
        shards² (measured: 0.5 s of 0.8 s for 40 shards; 2,000 shards at the paper's scale)."""
        as_dict = manifest_to_dict(dataclasses.replace(self, shards=()))
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


# Where a record's id starts, by layout: both keep the id's uint16 length at offset 6 and the id right after the
# header (this module's layout, and embed_jax/data/image_records.py's 28-byte header).
_ID_STARTS = {_MAGIC: _HEADER.size, b"EJI1": 28}


def record_id(data: bytes) -> str:
    """The id of a record of either layout, without decoding the rest."""
    start = _ID_STARTS.get(bytes(data[:4]))
    if start is None or len(data) < start:
        raise RecordsError(f"record does not start with an embed_jax magic ({', '.join(map(repr, _ID_STARTS))}; "
                           f"got {bytes(data[:4])!r}).")
    (id_length,) = struct.unpack_from("<H", data, 6)
    return bytes(data[start:start + id_length]).decode("utf-8", errors="replace")


def record_id_and_text(data: bytes) -> tuple[str, str]:
    """A text record's id and text, without its vector."""
    magic, _, _, id_length, text_length, _ = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise RecordsError(f"record does not start with {_MAGIC!r} (got {magic!r}): not an embed_jax text record.")
    text_start = _HEADER.size + id_length
    return (bytes(data[_HEADER.size:text_start]).decode("utf-8"),
            bytes(data[text_start:text_start + text_length]).decode("utf-8"))


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


def write_json_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + TEMPORARY_SUFFIX)
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
    temporary_path = folder / f"{stem}.array_record{TEMPORARY_SUFFIX}"
    try:
        writer = array_record_module.ArrayRecordWriter(str(temporary_path), "group_size:1")
        for record in records:
            writer.write(encode(*record, manifest.dtype))
        writer.close()
    except RuntimeError as error:
        temporary_path.unlink(missing_ok=True)  # on a full disk, give the space back at once
        raise riegeli_os_error(error, temporary_path) from None
    info = ShardInfo(file=final_path.name, num_records=len(records), first_id=records[0][0],
                     last_id=records[-1][0], corpus_hash=corpus_hash, num_bytes=temporary_path.stat().st_size,
                     sha256=file_sha256(temporary_path))
    _publish(temporary_path, final_path)
    _write_sidecar(folder / f"{stem}.json", info, manifest,
                   RecordIndex.of([record[0] for record in records], [record[1] for record in records]))
    return info


def riegeli_os_error(error: RuntimeError, path: Path) -> OSError:
    """Riegeli reports a failed write as a RuntimeError naming the system's message (measured on a full tmpfs:
    "write() failed: No space left on device; writing PATH; at byte 262144; ..."): the OSError it stands for."""
    message = str(error)
    code = next((code for code in sorted(errno.errorcode) if os.strerror(code) in message), None)
    return OSError(code, os.strerror(code) if code else message, str(path))


def _write_sidecar(path: Path, info: ShardInfo, manifest: Manifest, index: RecordIndex) -> None:
    sidecar = {**manifest.schema(), "export_id": manifest.export_id, "shard": dataclasses.asdict(info),
               record_index.INDEX_KEY: index.to_json()}
    write_json_atomically(path, json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(16 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def adopt_shard(folder: Path, index: int, source: Path, info: ShardInfo, manifest: Manifest) -> ShardInfo:
    """Copy a finished shard of another export (same teachers, dtype and shard size; same texts up to its end, as its
    corpus hash proves) into `folder` as shard `index` of `manifest`'s export: the bytes are the records an encoding
    would write, so the copy replaces the encoding (embed_jax/teachers/reuse.py). The caller verifies the source
    first (`verify_shard`); the copy's size and sha256 are those of the bytes copied."""
    stem = shard_stem(index)
    final_path = folder / f"{stem}.array_record"
    temporary_path = folder / f"{stem}.array_record{TEMPORARY_SUFFIX}"
    shutil.copyfile(source, temporary_path)
    adopted = dataclasses.replace(info, file=final_path.name, num_bytes=temporary_path.stat().st_size,
                                  sha256=file_sha256(temporary_path))
    # The donor's index when its sidecar has one; a donor exported before indexes were is read for it.
    index = read_shard_index(source.parent, info) or index_from_shard(temporary_path)
    _publish(temporary_path, final_path)
    _write_sidecar(folder / f"{stem}.json", adopted, manifest, index)
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
        raise RecordsError(f"{sidecar_path}: this shard's manifest disagrees with {folder / MANIFEST_NAME} on "
                           f"{'; '.join(differences)}. {_which_was_edited(folder, manifest, sidecar)}")
    try:
        return ShardInfo(**sidecar["shard"])
    except (KeyError, TypeError) as error:
        raise RecordsError(f"{sidecar_path}: sidecar lacks its shard description ({error}).") from error


def manifest_inconsistencies(manifest: Manifest) -> list[str]:
    """How a manifest disagrees with itself: what an edit by hand leaves (the export writes it consistent)."""
    found = []
    recomputed = export_id(manifest_to_dict(manifest))
    if recomputed != manifest.export_id:
        found.append(f"its fields give export id {recomputed}, it says {manifest.export_id}")
    if manifest.teacher_dim != sum(teacher.dim for teacher in manifest.teachers):
        found.append(f"teacher_dim {manifest.teacher_dim} is not the sum of its teachers' dims "
                     f"({' + '.join(str(teacher.dim) for teacher in manifest.teachers)})")
    if manifest.status == STATUS_COMPLETE and manifest.num_records != sum(s.num_records for s in manifest.shards):
        found.append(f"num_records {manifest.num_records} is not the sum of its shards' "
                     f"({sum(s.num_records for s in manifest.shards)})")
    return found


def _which_was_edited(folder: Path, manifest: Manifest, sidecar: dict[str, Any]) -> str:
    """Why a sidecar and its manifest disagree, and what to do: an edited manifest, an edited sidecar, or a shard
    of another export."""
    edits = manifest_inconsistencies(manifest)
    if edits:
        return (f"{folder / MANIFEST_NAME} no longer matches itself ({'; '.join(edits)}): it was edited after the "
                f"export. Restore it (every shard's sidecar keeps the values the export wrote), or re-export.")
    if sidecar.get("export_id") == manifest.export_id:
        return ("The sidecar names this export but other values: it was edited after the export. Restore it, or "
                "re-export into a new folder with --config.reuse_from on this one (intact shards are copied).")
    return ("The folder mixes shards of different exports; move the stray shard (and its .array_record) out, or "
            "re-export into an empty folder.")


def count_shard_records(path: Path) -> int:
    with _reading(path) as reader:
        return _num_records(reader, path)


# ------------------------------------------------------------------------------------ a shard against its sidecar


def repair_hint(folder: Path) -> str:
    """What to do about a damaged shard of `folder`, said once where a check fails for a reader."""
    return (f"Check every shard with `python -m embed_jax.data.verify --records={folder}`; to repair the folder, "
            f"export into a new one with --config.reuse_from={folder} (its intact shards are copied, the others "
            f"encoded again).")


@contextlib.contextmanager
def _reading(path: Path):
    """An ArrayRecordReader on `path`; a file ArrayRecord cannot open is an error naming it. Riegeli reports damage
    as RuntimeError, from the reader's constructor, a read, or `close()` once the reader has failed (measured: a
    flipped byte in a block header opens as 0 records, then fails on close)."""
    from array_record.python import array_record_module

    try:
        reader = array_record_module.ArrayRecordReader(str(path))
    except (RuntimeError, ValueError, OSError) as error:
        raise RecordsError(f"{path}: not a readable ArrayRecord file ({error}).") from None
    try:
        yield reader
    finally:
        with contextlib.suppress(RuntimeError):  # its failure, if any, was raised by _num_records or a read
            reader.close()


def _num_records(reader, path: Path) -> int:
    count = reader.num_records()
    if not reader.ok():
        try:
            reader.close()
        except RuntimeError as error:
            raise RecordsError(f"{path}: not a readable ArrayRecord file ({error}): the file is damaged.") from None
    return count


def check_shard_size(path: Path, info: ShardInfo) -> None:
    """The file exists and, where the sidecar recorded it, has the size it was written with (a stat)."""
    if not path.is_file():
        raise RecordsError(f"{path}: listed by its sidecar ({info.num_records} records) but missing.")
    size = path.stat().st_size
    if info.num_bytes and size != info.num_bytes:
        raise RecordsError(f"{path}: {size:,} bytes, its sidecar lists {info.num_bytes:,}: the file was truncated "
                           f"or replaced.")


def check_shard_cheaply(path: Path, info: ShardInfo) -> None:
    """Size, record count and first id against the sidecar: finds truncated, replaced and swapped shards without
    reading more than one record."""
    check_shard_size(path, info)
    with _reading(path) as reader:
        count = _num_records(reader, path)
        if count != info.num_records:
            raise RecordsError(f"{path}: holds {count} records, its sidecar lists {info.num_records}: the file was "
                               f"replaced or truncated.")
        first = _read_records(reader, path, 0, 1)[0]
    if record_id(first) != info.first_id:
        raise RecordsError(f"{path}: its first record is {record_id(first)!r}, its sidecar lists {info.first_id!r}: "
                           f"shard files were swapped or replaced.")


def sidecar_path_of(path: Path) -> Path:
    """shard-00000.array_record → shard-00000.json"""
    return path.with_name(path.name.removesuffix(".array_record") + ".json")


def read_shard_index(folder: Path, info: ShardInfo) -> RecordIndex | None:
    """The record index (ids, text hashes) in a shard's sidecar; None for a sidecar written before indexes were."""
    sidecar_path = sidecar_path_of(Path(folder) / info.file)
    try:
        return record_index.read_from_sidecar(_read_sidecar(sidecar_path))
    except record_index.IndexFormatError as error:
        raise RecordsError(f"{sidecar_path}: {error}: the sidecar was edited. {repair_hint(Path(folder))}") from None


def index_from_shard(path: Path, *, batch: int = 1024) -> RecordIndex:
    """A shard's record index read from its records (every byte of the shard): for shards whose sidecar has none."""
    ids, texts = [], []
    with _reading(path) as reader:
        count = _num_records(reader, path)
        for start in range(0, count, batch):
            for data in _read_records(reader, path, start, min(start + batch, count)):
                record_id_, text = record_id_and_text(data)
                ids.append(record_id_)
                texts.append(text)
    return RecordIndex.of(ids, texts)


def index_mismatch(sidecar_path: Path, shard_path: Path, row: int, expected: tuple[str, int] | None,
                   found: tuple[str, int] | None) -> RecordsError:
    """The one error for a sidecar index that disagrees with its shard: which row, what each says, the verify command."""
    def shown(value):
        return "nothing" if value is None else f"id {value[0]!r}, text hash {value[1]:016x}"
    return RecordsError(f"{sidecar_path}: its record index does not match {shard_path.name} at record {row} (sidecar: "
                        f"{shown(expected)}; shard: {shown(found)}): the sidecar was edited or belongs to another "
                        f"shard. {repair_hint(shard_path.parent)}")


def check_index_cheaply(path: Path, info: ShardInfo) -> None:
    """The sidecar's record index, where it has one, against the shard: its length, and the first record's id and
    text hash (one record read; `verify` compares every record)."""
    index = read_shard_index(path.parent, info)
    if index is None:
        return
    with _reading(path) as reader:
        first = _read_records(reader, path, 0, 1)[0] if _num_records(reader, path) else None
    found = None
    if first is not None and bytes(first[:4]) == _MAGIC:
        first_id, first_text = record_id_and_text(first)
        found = (first_id, record_index.text_hash(first_text))
    elif first is not None:  # an image–caption record: its id is all that is compared cheaply
        found = (record_id(first), int(index.text_hashes[0]))
    expected = (index.ids[0], int(index.text_hashes[0])) if len(index) else None
    if len(index) != info.num_records:
        raise RecordsError(f"{sidecar_path_of(path)}: its record index lists {len(index)} records, its shard "
                           f"{info.num_records}: the sidecar was edited. {repair_hint(path.parent)}")
    if expected != found:
        raise index_mismatch(sidecar_path_of(path), path, 0, expected, found)


def _read_records(reader, path: Path, start: int, stop: int) -> list[bytes]:
    try:
        return reader.read(start, stop)
    except (RuntimeError, ValueError, OSError) as error:
        raise RecordsError(f"{path}: records {start}…{stop - 1} are unreadable ({error}): the file is "
                           f"damaged.") from None


@dataclasses.dataclass(frozen=True)
class ShardCheck:
    """What `verify_shard` found in one shard: `problem` is None when the shard is sound."""
    file: str
    num_records: int
    num_bytes: int
    checksum: str  # "ok", "no checksum recorded", "mismatch", "not checked" (after another problem), "sampled"
    problem: str | None = None
    # The ids read (every record, or the sampled ones), in order: for duplicate ids across shards (data/verify.py).
    record_ids: tuple[str, ...] = dataclasses.field(default=(), repr=False, compare=False)


# How far a stored teacher vector's norm may be from 1 (the export stores unit vectors: docs/method.md §2). float16
# rounds each component to within 2⁻¹¹ of itself, which moves the norm by at most 2⁻¹¹ ≈ 4.9e-4: 2e-3 leaves a 4×
# margin. float32's rounding is 2⁻²⁴ a component, and the export normalises in float32 (a 12288-d sum): 1e-5.
NORM_TOLERANCES = {"float16": 2e-3, "float32": 1e-5}
_DTYPE_NAMES = {code: name for name, code in _DTYPE_CODES.items()}


@dataclasses.dataclass
class VectorChecks:
    """Each text record's vector, as verify found it: finite, and its norm (float64)."""
    rows: list[int] = dataclasses.field(default_factory=list)
    ids: list[str] = dataclasses.field(default_factory=list)
    finite: list[np.ndarray] = dataclasses.field(default_factory=list)
    norms: list[np.ndarray] = dataclasses.field(default_factory=list)
    dtype: str = "float32"

    def add(self, rows: Sequence[int], ids: Sequence[str], vectors: np.ndarray, dtype: str) -> None:
        finite = np.isfinite(vectors).all(axis=1)
        self.rows += rows
        self.ids += ids
        self.finite.append(finite)
        self.norms.append(np.linalg.norm(np.where(finite[:, None], vectors, 0).astype(np.float64), axis=1))
        self.dtype = dtype

    def problems(self, path: Path) -> list[str]:
        """Records whose vectors are not finite or not of unit norm at the stored dtype's tolerance: one line each
        kind, naming the first such record and counting the others."""
        if not self.rows:
            return []
        finite, norms = np.concatenate(self.finite), np.concatenate(self.norms)
        tolerance = NORM_TOLERANCES[self.dtype]
        off_norm = finite & (np.abs(norms - 1.0) > tolerance)
        problems = []
        for bad, what in ((~finite, "a non-finite vector (NaN or inf)"), (off_norm, None)):
            where = np.flatnonzero(bad)
            if len(where):
                first = int(where[0])
                described = what or f"a vector of norm {norms[first]:.6f}, not 1 within {tolerance:g} ({self.dtype})"
                more = f" (and {len(where) - 1} more records of this shard)" if len(where) > 1 else ""
                problems.append(f"{path}: record {self.rows[first]} (id {self.ids[first]!r}) holds {described}{more}: "
                                f"not a normalised teacher vector (docs/method.md §2). Re-export the shard "
                                f"(--config.reuse_from copies the sound ones).")
        return problems


def sample_rows(count: int, sample: int, seed: str) -> list[int]:
    """`sample` rows of a shard of `count` records, the first and last among them, the same on every run."""
    if sample >= count:
        return list(range(count))
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed.encode("utf-8")).digest()[:8], "little"))
    middle = rng.choice(np.arange(1, count - 1), size=max(sample - 2, 0), replace=False) if count > 2 else []
    return sorted({0, count - 1, *map(int, middle)})


def verify_shard(path: Path, info: ShardInfo, *, batch: int = 256, sample: int = 0) -> ShardCheck:
    """Every record read back (ArrayRecord checks each chunk's hash; text records are decoded, their vectors checked
    finite and of unit norm), count, first and last id, the sidecar's record index, and the file's sha256 when the
    sidecar recorded one. With `sample` > 0, only that many records (the first and last among them) are read, and
    the sha256 is not computed: a quick check (`verify --sample`)."""
    size = path.stat().st_size if path.is_file() else 0
    count = 0
    read_ids: list[str] = []
    try:
        check_shard_cheaply(path, info)
        index = read_shard_index(path.parent, info)
        vectors = VectorChecks()
        with _reading(path) as reader:
            count = _num_records(reader, path)
            rows = sample_rows(count, sample, path.name) if sample else list(range(count))
            for start in range(0, len(rows), batch):
                chunk = rows[start:start + batch]
                datas = (_read_records(reader, path, chunk[0], chunk[-1] + 1) if not sample
                         else _read_listed(reader, path, chunk))
                _check_records(path, chunk, datas, index, read_ids, vectors)
        problems = vectors.problems(path)
        if problems:
            raise RecordsError(" ".join(problems[:3]))
        if rows and rows[-1] == count - 1 and read_ids[-1] != info.last_id:
            raise RecordsError(f"{path}: its last record is {read_ids[-1]!r}, its sidecar lists "
                               f"{info.last_id!r}: the file was replaced.")
    except RecordsError as error:
        return ShardCheck(path.name, count, size, "not checked", str(error), tuple(read_ids))
    if sample:
        return ShardCheck(path.name, count, size, "sampled", None, tuple(read_ids))
    if not info.sha256:
        return ShardCheck(path.name, count, size, "no checksum recorded", None, tuple(read_ids))
    if file_sha256(path) != info.sha256:
        return ShardCheck(path.name, count, size, "mismatch",
                          f"{path}: its sha256 is not the one its sidecar lists: the bytes changed after the "
                          f"export.", tuple(read_ids))
    return ShardCheck(path.name, count, size, "ok", None, tuple(read_ids))


def _read_listed(reader, path: Path, rows: list[int]) -> list[bytes]:
    try:
        return reader.read(rows)
    except (RuntimeError, ValueError, OSError) as error:
        raise RecordsError(f"{path}: records {rows[0]}…{rows[-1]} are unreadable ({error}): the file is "
                           f"damaged.") from None


def _check_records(path: Path, rows: list[int], datas: list[bytes], index: RecordIndex | None,
                   read_ids: list[str], vectors: VectorChecks) -> None:
    """Decode a chunk of records: their ids go to `read_ids`, their vectors to `vectors`; an index that disagrees
    with them is raised at once."""
    text_rows, text_ids, text_vectors, dtype = [], [], [], "float32"
    for row, data in zip(rows, datas):
        if bytes(data[:4]) != _MAGIC:  # an image–caption record: its id against the index
            read_ids.append(record_id(data))
            found, expected_hash = (read_ids[-1], None), None
        else:
            record = decode_record(data)
            read_ids.append(record["id"])
            text_rows.append(row)
            text_ids.append(record["id"])
            text_vectors.append(record["teacher"])
            dtype = _DTYPE_NAMES[data[4]]
            found, expected_hash = (record["id"], record_index.text_hash(record["text"])), True
        if index is not None:
            expected = (index.ids[row], int(index.text_hashes[row])) if row < len(index) else None
            if expected is None or expected[0] != found[0] or (expected_hash and expected[1] != found[1]):
                raise index_mismatch(sidecar_path_of(path), path, row, expected,
                                     found if expected_hash else (found[0], expected[1] if expected else 0))
    if text_vectors:
        vectors.add(text_rows, text_ids, np.stack(text_vectors), dtype)


# ------------------------------------------------------------------------------------- finished shards


def finished_shard_map(folder: Path, manifest: Manifest) -> dict[int, ShardInfo]:
    """{index: shard} of every finished shard of an in-progress export, gaps allowed (several workers write one
    folder, each its own shards: embed_jax/teachers/workers.py). A shard is finished once its sidecar exists; its
    file must then hold the records the sidecar lists."""
    done: dict[int, ShardInfo] = {}
    for sidecar_path in sorted(folder.glob("shard-*.json")):
        index = shard_index(sidecar_path)
        if index < 0:
            continue
        info = check_sidecar(folder, manifest, sidecar_path)
        checked_with_hint(check_shard_cheaply, folder / info.file, info)
        done[index] = info
    return done


def shard_index(path: Path) -> int:
    try:
        return int(path.name.split(".")[0].removeprefix("shard-"))
    except ValueError:
        return -1


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
            raise RecordsError(f"{folder / listed.file}: listed in the manifest but missing. {repair_hint(folder)}")
        on_disk = check_sidecar(folder, manifest, sidecar_path)
        if on_disk != listed:
            differences = _differences(dataclasses.asdict(listed), dataclasses.asdict(on_disk))
            raise RecordsError(f"{folder / MANIFEST_NAME} no longer matches {sidecar_path.name} on shard {index} "
                               f"({'; '.join(differences)}, manifest vs sidecar): one of them was edited after the "
                               f"export. Restore it, or re-export.")
        checked_with_hint(check_shard_size, folder / listed.file, listed)
    return manifest


def checked_with_hint(check: Callable[[Path, ShardInfo], None], path: Path, info: ShardInfo) -> None:
    """`check(path, info)`, its error followed by what to do (repair_hint)."""
    try:
        check(path, info)
    except RecordsError as error:
        raise RecordsError(f"{error} {repair_hint(path.parent)}") from None


def check_records_cheaply(folder: str | os.PathLike, key: str) -> Manifest:
    """`read_manifest` and, for every shard, its size, record count and first id against its sidecar: what
    training runs before step 1 (a truncated, replaced or swapped shard is named then, not at the step that reads
    it). Errors name `key`, the config key the folder came from. The full check is `python -m embed_jax.data.verify`."""
    check_local_records_path(folder, key)
    try:
        manifest = read_manifest(folder)
        for path, info in zip(shard_paths(folder, manifest), manifest.shards):
            checked_with_hint(check_shard_cheaply, path, info)
            check_index_cheaply(path, info)
    except RecordsError as error:
        raise RecordsError(f"{key}={os.fspath(folder)!r}: {error}") from None
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
