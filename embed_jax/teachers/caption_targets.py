"""Stage 4's targets (docs/method.md §4): images + captions → each caption's vector per head → image–caption records.
The program is `python -m embed_jax.teachers.caption_export` (embed_jax/teachers/caption_export.py).

The teacher of stage 4 is a text path: by default the trained student's own (self-distillation, as in the paper:
`--text_student` names a text stage folder; its tokenizer is the one that run trained with
(embed_jax/train/trained_student.py), or `--tokenizer`), whose every head gives one vector per caption; or any
sentence-transformers folder (`--text_teacher`), whose one vector becomes head `dense_{its dim}`. Captions repeat
(templates), so each distinct caption is encoded once. The records (embed_jax/data/image_records.py) store a
fingerprint of the text path, which stage 4 checks against the student it trains.

Images: scikit-learn's digits (embed_jax/data/digits.py), stored raw (uint8 8×8×1). The writer (`write_image_records`,
the output folder's lifecycle: embed_jax/teachers/records_folder.py) takes any (id, caption, image, vector) rows, raw
arrays or PNG/JPEG bytes, for other image sets.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from embed_jax.data import digits, image_records, records
from embed_jax.data.records import Manifest
from embed_jax.teachers import records_folder
from embed_jax.train import workdir

DATASETS = ("digits",)


def student_caption_vectors(stage_dir: str, captions: Sequence[str], tokenizer: str = "", max_length: int = 128
                            ) -> tuple[list[image_records.CaptionHead], np.ndarray, dict]:
    """(heads, (n, Σ dims) vectors, text_source) of the captions through a trained student's text path."""
    from embed_jax.train import trained_student  # jax: only for a student's text path, not a teacher's

    stage_path = workdir.absolute_workdir(stage_dir)
    student = trained_student.load_student(stage_path)
    per_head = trained_student.encode_texts(student, trained_student.tokenizer_folder(stage_path, tokenizer),
                                            captions, max_length=max_length).embeddings
    heads = [image_records.CaptionHead(f"dense_{dim}", dim) for dim in student.heads.dims]
    vectors = np.concatenate([per_head[dim] for dim in student.heads.dims], axis=1)
    source = {"path": str(stage_path), "pooling": student.pooling_method, "max_seq_length": max_length,
              "weights_sha256": trained_student.text_path_fingerprint(student)}
    return heads, vectors, source


def teacher_caption_vectors(folder: str, captions: Sequence[str]) -> tuple[list[image_records.CaptionHead],
                                                                             np.ndarray, dict]:
    """(heads, vectors, text_source) from a sentence-transformers folder: one head, its normalised output."""
    from embed_jax.teachers import encoders  # torch: only for a sentence-transformers text path

    teacher = encoders.load_teacher(encoders.TeacherSpec(name="caption_teacher", path=folder))
    raw = encoders.encode_texts(teacher, list(captions), max_tokens_per_batch=8192, max_batch_size=128)
    vectors = raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)
    source = {"path": str(teacher.folder), "pooling": teacher.spec.pooling, "max_seq_length": teacher.max_seq_length,
              "weights_sha256": encoders.folder_fingerprint(teacher.folder)}
    return [image_records.CaptionHead(f"dense_{teacher.dim}", teacher.dim)], vectors.astype(np.float32), source


def export_digits(output_dir: str, split: str, *, text_student: str = "", text_teacher: str = "",
                  tokenizer: str = "", storage_dtype: str = "float32", shard_size: int = 4096) -> Manifest:
    """The digits of `split` with their captions' vectors, written to `output_dir` (resumable, see records.py)."""
    if bool(text_student) == bool(text_teacher):
        raise ValueError("name exactly one text path: --text_student=STAGE_DIR (self-distillation, the paper's) or "
                         "--text_teacher=FOLDER (a sentence-transformers model)")
    items = list(digits.captioned_images(split))
    captions = sorted({item.caption for item in items})
    if text_student:
        heads, vectors, source = student_caption_vectors(text_student, captions, tokenizer)
    else:
        heads, vectors, source = teacher_caption_vectors(text_teacher, captions)
    row_of = {caption: row for row, caption in enumerate(captions)}
    rows = [(item.id, item.caption, item.image, vectors[row_of[item.caption]]) for item in items]
    draft = image_records.draft_manifest(heads, text_source=source, corpus=digits.describe(split),
                                         dtype=storage_dtype, shard_size=shard_size)
    return write_image_records(output_dir, rows, draft)


def write_image_records(folder: str | os.PathLike, rows: Sequence[tuple[str, str, Any, np.ndarray]],
                        draft: Manifest) -> Manifest:
    """Write (id, caption, image, vector) rows as a finished records folder; returns the complete manifest.

    A folder holding this same export complete is left as it is; an interrupted one keeps its finished shards
    (checked against the rows' running hash) and gets the rest; anything else is refused (records_folder.py)."""
    folder = Path(folder)
    seen: set[str] = set()
    for record_id, _, _, vector in rows:
        if record_id in seen:
            raise image_records.invalid(record_id, "appears twice; ids must be unique so that each vector stays with "
                                        "its image")
        seen.add(record_id)
        if np.shape(vector) != (draft.teacher_dim,):
            raise image_records.invalid(record_id, f"its caption vector has shape {np.shape(vector)}; the heads "
                                        f"{', '.join(f'{t.name} ({t.dim})' for t in draft.teachers)} need "
                                        f"({draft.teacher_dim},)")
    done, previous = records_folder.prepare_output_folder(folder, draft)
    if previous is not None and previous.status == records.STATUS_COMPLETE:
        return previous
    hasher = records.corpus_hasher()
    shards = []
    for index, start in enumerate(range(0, len(rows), draft.shard_size)):
        shard_rows = rows[start:start + draft.shard_size]
        for record_id, caption, image, _ in shard_rows:
            records.update_corpus_hash(hasher, [records.Text(record_id, caption)])
            hasher.update(image if isinstance(image, bytes) else np.ascontiguousarray(image).tobytes())
        if index < len(done):
            if done[index].corpus_hash != hasher.hexdigest():
                raise records.RecordsError(f"{folder / done[index].file}: written from other images or captions than "
                                           "these; export into a new folder, or delete this one first.")
            shards.append(done[index])
        else:
            shards.append(records.write_shard(folder, index, shard_rows, draft, hasher.hexdigest(),
                                              encode=image_records.encode_image_record))
    manifest = dataclasses.replace(draft, status=records.STATUS_COMPLETE, num_records=len(rows), skipped_empty=0,
                                   corpus_fingerprint=hasher.hexdigest(), shards=tuple(shards))
    records_folder.finish_output_folder(folder, manifest)
    return manifest
