"""Image–caption records for stage 4 (docs/method.md §4): the image, its caption, and
the caption's vector through every head.

A folder follows the text records' conventions (embed_jax/data/records.py: manifest.json written first and completed
last, ArrayRecord shards with `group_size:1`, JSON sidecars, atomic renames, resumable export; the writer is
embed_jax/teachers/caption_targets.py's `write_image_records`) with three differences:

- manifest `corpus.kind` is "image_caption" (text readers and this reader refuse each other's folders by it);
- manifest `teachers` lists one entry per *head* of the text path that made the caption vectors, named like the
  student's heads (`dense_{dim}`), in the vector's order; `teacher_dim` is the sum of their dims, and
  `Manifest.teacher_slices` gives each head's part. Each part is that head's own unit vector (the student's outputs
  are L2-normalised per head); the concatenation is not renormalised (NORMALISATION below);
- each record carries an image.

Byte layout of one record (image schema version 1), little-endian:

    offset  size      field
    0       4         magic b"EJI1"
    4       1         uint8  vector storage dtype code: 1 = float16, 2 = float32
    5       1         uint8  image storage: 1 = raw uint8 array (height, width, channels), row-major, channels-last;
                                            2 = encoded file bytes (PNG or JPEG, decoded with PIL)
    6       2         uint16 n_id       = length in bytes of the id (UTF-8)
    8       4         uint32 n_caption  = length in bytes of the caption (UTF-8)
    12      4         uint32 d          = the vector's length (sum of the head dims)
    16      2         uint16 height     (raw images; 0 for encoded ones)
    18      2         uint16 width      (raw images; 0 for encoded ones)
    20      1         uint8  channels   (raw images: 1 grey or 3 RGB; 0 for encoded ones)
    21      3         reserved, 0
    24      4         uint32 n_image    = length in bytes of the image
    28      n_id      id, UTF-8
    ...     n_caption caption, UTF-8
    ...     n_image   the image
    ...     d*2|d*4   the caption's head vectors, concatenated in manifest order, float16 or float32

Raw arrays keep small images exact and cheap to decode (a digit is 64 bytes); encoded bytes keep photographs small.
Either way images are stored at their own size: resizing to the tower's resolution is preprocessing
(embed_jax/data/images.py), so one export serves towers of any resolution.

The reader yields `{"id", "caption", "image": uint8 (h, w, c), "teacher": float32 (d,)}`; `make_image_dataset` batches
them as `{"pixel_values": float32 (B, S, S, 3), "input_ids"/"attention_mask": int32 (B, L) (the image prompt,
embed_jax/data/image_prompt.py), "teacher": float32 (B, d)}`. Every problem names the record: corrupt image bytes, a wrong shape, channel count or
dtype, a missing image, a vector of the wrong length.
"""
from __future__ import annotations

import dataclasses
import io
import os
import struct
from pathlib import Path
from typing import Any, Sequence

import grain
import numpy as np

from embed_jax.data import images as image_processing
from embed_jax.data import records
from embed_jax.data.image_prompt import ImagePrompt
from embed_jax.data.pipeline import PipelineConfigError
from embed_jax.data.records import Manifest, RecordsError
from embed_jax.models.heads import head_name

KIND = "image_caption"
NORMALISATION = "per head: the text path's own L2-normalised head output; heads concatenated, not renormalised"
RAW, ENCODED = 1, 2
_MAGIC = b"EJI1"
_HEADER = struct.Struct("<4sBBHIIHHB3xI")
_DTYPE_CODES = {"float16": 1, "float32": 2}
_CODE_DTYPES = {code: name for name, code in _DTYPE_CODES.items()}


def invalid(record_id: str, problem: str) -> RecordsError:
    return RecordsError(f"image record {record_id!r}: {problem}")


# ----------------------------------------------------------------------------------------------------- records


def encode_image_record(record_id: str, caption: str, image: np.ndarray | bytes | None, vector: np.ndarray,
                        dtype: str) -> bytes:
    """One record's bytes (module docstring). `image`: a uint8 (h, w) / (h, w, 1|3) array, or PNG/JPEG bytes."""
    if image is None:
        raise invalid(record_id, "has no image; every image–caption record needs one")
    if isinstance(image, (bytes, bytearray, memoryview)):
        image_bytes, storage, shape = bytes(image), ENCODED, (0, 0, 0)
        if not image_bytes:
            raise invalid(record_id, "its image is 0 bytes; every image–caption record needs one")
        decode_encoded_image(image_bytes, record_id)  # refuse corrupt bytes at export, not at training
    else:
        try:
            array = image_processing.check_uint8_image(image, name=f"image record {record_id!r}")
        except image_processing.ImageError as error:
            raise RecordsError(str(error)) from error
        if max(array.shape[:2]) > 0xFFFF:
            raise invalid(record_id, f"image of shape {array.shape} is larger than 65535 pixels on a side")
        image_bytes, storage, shape = np.ascontiguousarray(array).tobytes(), RAW, array.shape
    id_bytes, caption_bytes = record_id.encode("utf-8"), caption.encode("utf-8")
    values = np.asarray(vector)
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.floating) or not np.all(np.isfinite(values)):
        raise invalid(record_id, f"its caption vector must be a finite 1-D float array, got {values.dtype} "
                               f"{values.shape}")
    values = values.astype(records.STORAGE_DTYPES[dtype])
    header = _HEADER.pack(_MAGIC, _DTYPE_CODES[dtype], storage, len(id_bytes), len(caption_bytes), values.shape[0],
                          *shape, len(image_bytes))
    return b"".join((header, id_bytes, caption_bytes, image_bytes, values.tobytes()))


def decode_encoded_image(data: bytes, record_id: str) -> np.ndarray:
    """PNG/JPEG bytes → uint8 (h, w, 1|3); corrupt bytes raise a RecordsError naming the record."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            image = opened.convert("L" if opened.mode in ("1", "L", "I;16", "I", "F") else "RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise invalid(record_id, f"its image bytes ({len(data)} B) are not a readable PNG/JPEG ({error}); re-export "
                               "the record from an intact file") from error
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def decode_image_record(data: bytes) -> dict[str, Any]:
    """`{"id", "caption", "image": uint8 (h, w, c), "teacher": float32 (d,)}` from one record's bytes."""
    if len(data) < _HEADER.size or data[:4] != _MAGIC:
        hint = " (a text record: point the image stage at image–caption records)" if data[:4] == b"EJR1" else ""
        raise RecordsError(f"record does not start with {_MAGIC!r} (got {bytes(data[:4])!r}): not an embed_jax "
                           f"image–caption record{hint}.")
    (_, dtype_code, storage, id_length, caption_length, dim, height, width, channels,
     image_length) = _HEADER.unpack_from(data)
    caption_start = _HEADER.size + id_length
    image_start = caption_start + caption_length
    vector_start = image_start + image_length
    record_id = data[_HEADER.size:caption_start].decode("utf-8", errors="replace")
    if dtype_code not in _CODE_DTYPES:
        raise invalid(record_id, f"unknown vector dtype code {dtype_code}: the shard is damaged")
    dtype = records.STORAGE_DTYPES[_CODE_DTYPES[dtype_code]]
    if len(data) != vector_start + dim * dtype.itemsize:
        raise invalid(record_id, f"{len(data)} bytes do not match its header (caption {caption_length} B, image "
                               f"{image_length} B, {dim} × {dtype.name}): the shard is damaged")
    if image_length == 0:
        raise invalid(record_id, "has no image; re-export it with its image")
    image_bytes = data[image_start:vector_start]
    if storage == RAW:
        if channels not in (1, 3) or height * width * channels != image_length:
            raise invalid(record_id, f"raw image of {image_length} B does not fit its stored shape "
                                   f"({height}, {width}, {channels}) with 1 or 3 channels: the shard is damaged")
        image = np.frombuffer(image_bytes, np.uint8).reshape(height, width, channels)
    elif storage == ENCODED:
        image = decode_encoded_image(image_bytes, record_id)
    else:
        raise invalid(record_id, f"unknown image storage code {storage}: the shard is damaged")
    return {
        "id": record_id,
        "caption": data[caption_start:image_start].decode("utf-8"),
        "image": image,
        "teacher": np.frombuffer(data, dtype=dtype, count=dim, offset=vector_start).astype(np.float32),
    }


# ------------------------------------------------------------------------------------------------------ writing


@dataclasses.dataclass(frozen=True)
class CaptionHead:
    """One head of the text path that made the caption vectors, as the manifest lists it."""

    name: str  # "dense_{dim}", the student's head name
    dim: int


def draft_manifest(heads: Sequence[CaptionHead], *, text_source: dict[str, Any], corpus: dict[str, Any],
                   dtype: str, shard_size: int) -> Manifest:
    """An in-progress manifest. text_source: {"path", "pooling", "max_seq_length", "weights_sha256"} of the text
    path (a stage folder or a teacher folder); corpus: the images' description (its "kind" is set here)."""
    if dtype not in records.STORAGE_DTYPES:
        raise RecordsError(f"storage dtype {dtype!r}: choose one of {', '.join(records.STORAGE_DTYPES)}.")
    corpus = {**corpus, "kind": KIND}
    infos = tuple(records.TeacherInfo(name=head.name, path=str(text_source["path"]), dim=int(head.dim),
                                      pooling=str(text_source["pooling"]), prompt="",
                                      max_seq_length=int(text_source["max_seq_length"]),
                                      weights_sha256=str(text_source["weights_sha256"]), order=order)
                  for order, head in enumerate(heads))
    fields = {"schema_version": records.SCHEMA_VERSION, "teachers": [dataclasses.asdict(info) for info in infos],
              "dtype": dtype, "normalisation": NORMALISATION, "corpus": corpus, "shard_size": shard_size}
    return Manifest(schema_version=records.SCHEMA_VERSION, export_id=records.export_id(fields),
                    status=records.STATUS_IN_PROGRESS, teachers=infos, teacher_dim=sum(info.dim for info in infos),
                    dtype=dtype, normalisation=NORMALISATION, corpus=corpus, shard_size=shard_size)


# ---------------------------------------------------------------------------------------------------- manifest


def check_image_manifest(manifest: Manifest, folder: Path) -> None:
    kind = (manifest.corpus or {}).get("kind")
    if kind != KIND:
        raise RecordsError(f"{folder}: holds {kind or 'text'} records, not image–caption records (manifest "
                           f"corpus.kind={kind!r}). Export them with `python -m embed_jax.teachers.caption_export`.")


def head_slices(manifest: Manifest) -> dict[str, slice]:
    """{'dense_{dim}': slice of the record vector} for every head the caption vectors were made with."""
    return manifest.teacher_slices


def check_heads_for_training(manifest: Manifest, student_head_dims: Sequence[int], *, records_key: str) -> None:
    """The caption vectors must hold exactly the student's heads, same names, dims and order; errors name the key."""
    stored = [(teacher.name, teacher.dim) for teacher in manifest.teachers]
    expected = [(head_name(dim), dim) for dim in student_head_dims]
    if stored != expected:
        raise RecordsError(
            f"{records_key}: the records hold caption vectors for heads "
            f"{', '.join(f'{name} ({dim}-d)' for name, dim in stored)}, but the student's heads are "
            f"{', '.join(f'{name} ({dim}-d)' for name, dim in expected)}. Export the captions with the text student "
            "this stage starts from (`python -m embed_jax.teachers.caption_export --text_student=STAGE_DIR`), or set "
            "model.teacher_dim / model.reduction_dims to the records' heads.")


# ------------------------------------------------------------------------------------------------------ reading


class ImageRecordSource(grain.sources.RandomAccessDataSource):
    """Every record of one image–caption folder, decoded, by index."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.manifest = records.read_manifest(self.folder)
        check_image_manifest(self.manifest, self.folder)
        self._shards = grain.sources.ArrayRecordDataSource(
            [str(path) for path in records.shard_paths(self.folder, self.manifest)])
        if len(self._shards) != self.manifest.num_records:
            raise RecordsError(f"{self.folder}: the shards hold {len(self._shards)} records, the manifest lists "
                               f"{self.manifest.num_records}; a shard was replaced. Re-export the records.")

    def __len__(self) -> int:
        return len(self._shards)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._checked(decode_image_record(self._shards[index]))

    def read_many(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        return [self._checked(decode_image_record(data)) for data in self._shards.__getitems__(list(indices))]

    def _checked(self, record: dict[str, Any]) -> dict[str, Any]:
        if record["teacher"].shape[0] != self.manifest.teacher_dim:
            raise invalid(record["id"], f"its caption vector has {record['teacher'].shape[0]} values, the manifest's "
                                      f"heads sum to {self.manifest.teacher_dim}: the folder mixes exports")
        return record

    def __repr__(self) -> str:
        return f"ImageRecordSource({self.folder}, {len(self)} records)"


# ------------------------------------------------------------------------------------------------------ batches


class ImageBatches(grain.MapDataset):
    """Batch `index` (any index: epoch = index // batches per epoch, grain's per-epoch reshuffle underneath):
    records read in one call, images preprocessed as SigLIP's processor, the prompt row repeated."""

    def __init__(self, record_indices: grain.MapDataset, source: ImageRecordSource, batch_size: int,
                 settings: image_processing.ImageSettings, prompt: ImagePrompt, include_ids: bool = False):
        super().__init__(record_indices)
        self.source, self.batch_size, self.settings, self.prompt = source, batch_size, settings, prompt
        self.include_ids = include_ids
        self.records_per_epoch = len(record_indices)

    def __len__(self) -> int:
        return self.records_per_epoch // self.batch_size

    def __str__(self) -> str:
        return f"ImageBatches(batch_size={self.batch_size})"

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        epoch, batch = divmod(index, len(self))
        start = epoch * self.records_per_epoch + batch * self.batch_size
        rows = self.source.read_many([self._parent[start + offset] for offset in range(self.batch_size)])
        ids = [row["id"] for row in rows]
        pixels = image_processing.preprocess_batch(
            [row["image"] for row in rows], self.settings, [f"image record {name!r}" for name in ids])
        input_ids = np.broadcast_to(self.prompt.input_ids, (len(rows), self.prompt.input_ids.shape[0])).copy()
        out = {"pixel_values": pixels, "input_ids": input_ids, "attention_mask": np.ones_like(input_ids),
               "teacher": np.stack([row["teacher"] for row in rows])}
        if self.include_ids:
            out["id"] = np.array(ids)
        return out


def make_image_dataset(source: ImageRecordSource, *, settings: image_processing.ImageSettings, prompt: ImagePrompt,
                       global_batch_size: int, seed: int = 0, shuffle: bool = True, num_epochs: int | None = None,
                       process_index: int = 0, process_count: int = 1, read_threads: int = 2,
                       prefetch_batches: int = 4, include_ids: bool = False) -> grain.IterDataset:
    """This process's stream of image batches (module docstring), as `pipeline.make_dataset` for text: seeded
    shuffle, epochs trimmed to whole global batches, this process's share, resumable iterator."""
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise PipelineConfigError(f"data.global_batch_size={global_batch_size} must be a positive multiple of the "
                                  f"process count ({process_count}).")
    usable = len(source) // global_batch_size * global_batch_size
    if usable == 0:
        raise PipelineConfigError(f"data.global_batch_size={global_batch_size} exceeds the {len(source)} records in "
                                  f"{source.folder}; lower it or export more images.")
    record_indices = grain.MapDataset.range(len(source))
    if shuffle:
        record_indices = record_indices.shuffle(seed=seed)
    record_indices = record_indices[:usable][process_index::process_count]
    dataset = ImageBatches(record_indices, source, global_batch_size // process_count, settings, prompt, include_ids)
    dataset = dataset.repeat(num_epochs)
    return dataset.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch_batches))
