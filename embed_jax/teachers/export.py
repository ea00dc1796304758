"""Teacher export: corpus → N teachers (PyTorch) → normalised concatenated vectors → ArrayRecord shards.

    python -m embed_jax.teachers.export --config=configs/teachers.py [--config.x.y=value ...]

The corpus streams in its fixed order. Empty or whitespace-only texts are skipped and counted; every other text is
kept, and every `shard_size` kept texts form one shard. For each shard, each teacher encodes the shard's texts in
length-bucketed batches; the vectors are checked (finite, non-zero), combined as SPEC §2 says, stored in the
configured dtype, and the shard is written (records in corpus order) and then its sidecar.

Resuming: the output folder's manifest.json records the export's identity (teachers with a fingerprint of their
files, corpus description, dtype, shard size). A run on a folder of the same identity keeps its finished shards,
checks on the way that the corpus still yields the same texts (the running corpus hash at each shard's end), and
writes the rest. Because shards are cut from the corpus order and batched within a shard, the resumed records are
those of an uninterrupted run: same ids, same texts, same vectors. A folder of another identity is refused.

`reuse_from`: other records folders whose finished shards are copied where they hold exactly this export's shard
(embed_jax/teachers/reuse.py) — to grow an export, or to cut an unfinished big one short without encoding again.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from embed_jax.data import records, sources
from embed_jax.data.records import Manifest, RecordsError, ShardInfo, TeacherInfo, Text
from embed_jax.teachers import encoders, reuse, targets
from embed_jax.teachers.progress import Progress, format_duration


class ExportError(ValueError):
    """The export configuration or corpus contents are wrong; the message names the key or record."""


@dataclasses.dataclass(frozen=True)
class ExportSettings:
    output_dir: Path
    teacher_specs: tuple[encoders.TeacherSpec, ...]
    storage_dtype: str
    shard_size: int
    max_tokens_per_batch: int
    max_batch_size: int
    progress_every_s: float
    torch_threads: int
    reuse_from: tuple[Path, ...] = ()


def settings_from_config(config) -> ExportSettings:
    """Checks every export key (except corpus.*, which sources checks) and names the one that is wrong."""
    if not config.output_dir:
        raise ExportError("output_dir is empty; name the records folder, e.g. --config.output_dir=workdir/records.")
    if config.storage_dtype not in records.STORAGE_DTYPES:
        raise ExportError(f"storage_dtype={config.storage_dtype!r}; choose one of "
                          f"{', '.join(records.STORAGE_DTYPES)}.")
    for key in ("shard_size", "max_tokens_per_batch", "max_batch_size"):
        if int(config[key]) <= 0:
            raise ExportError(f"{key}={config[key]} must be positive.")
    if int(config.get("torch_threads", 0)) < 0:
        raise ExportError(f"torch_threads={config.torch_threads} must be ≥ 0 (0: one per core).")
    order = [name.strip() for name in config.teacher_order.split(",") if name.strip()]
    if not order:
        raise ExportError("teacher_order is empty; list the teachers to run, e.g. --config.teacher_order=minilm,mpnet.")
    if len(set(order)) != len(order):
        raise ExportError(f"teacher_order={config.teacher_order!r} names a teacher twice.")
    specs = []
    for name in order:
        if name not in config.teachers:
            raise ExportError(f"teacher_order names {name!r}, but there is no teachers.{name} entry; the entries "
                              f"are {', '.join(config.teachers.keys()) or 'none'}.")
        entry = config.teachers[name]
        specs.append(encoders.TeacherSpec(name=name, path=str(entry.path), pooling=str(entry.pooling),
                                          prompt=str(entry.get("prompt", "")),
                                          max_seq_length=int(entry.get("max_seq_length", 0))))
    return ExportSettings(output_dir=Path(config.output_dir).expanduser(), teacher_specs=tuple(specs),
                          storage_dtype=config.storage_dtype, shard_size=int(config.shard_size),
                          max_tokens_per_batch=int(config.max_tokens_per_batch),
                          max_batch_size=int(config.max_batch_size),
                          progress_every_s=float(config.get("progress_every_s", 10.0)),
                          torch_threads=int(config.get("torch_threads", 0)),
                          reuse_from=tuple(Path(folder.strip()).expanduser()
                                           for folder in str(config.get("reuse_from", "") or "").split(",")
                                           if folder.strip()))


def teacher_info(teacher: encoders.Teacher, order: int) -> TeacherInfo:
    spec = teacher.spec
    return TeacherInfo(name=spec.name, path=spec.path, dim=teacher.dim, pooling=spec.pooling, prompt=spec.prompt,
                       max_seq_length=teacher.max_seq_length,
                       weights_sha256=encoders.folder_fingerprint(teacher.folder), order=order)


def draft_manifest(settings: ExportSettings, teachers: Sequence[encoders.Teacher],
                   corpus_description: dict) -> Manifest:
    infos = tuple(teacher_info(teacher, order) for order, teacher in enumerate(teachers))
    fields = {"schema_version": records.SCHEMA_VERSION, "teachers": [dataclasses.asdict(info) for info in infos],
              "dtype": settings.storage_dtype, "normalisation": records.NORMALISATION,
              "corpus": corpus_description, "shard_size": settings.shard_size}
    return Manifest(schema_version=records.SCHEMA_VERSION, export_id=records.export_id(fields),
                    status=records.STATUS_IN_PROGRESS, teachers=infos, teacher_dim=sum(info.dim for info in infos),
                    dtype=settings.storage_dtype, normalisation=records.NORMALISATION, corpus=corpus_description,
                    shard_size=settings.shard_size)


def log(message: str) -> None:
    print(f"[export] {message}", file=sys.stderr, flush=True)


def encode_shard(texts: Sequence[Text], teachers: Sequence[encoders.Teacher], settings: ExportSettings):
    """The shard's (n, teacher_dim) float32 target vectors (SPEC §2)."""
    strings = [item.text for item in texts]
    per_teacher = [encoders.encode_texts(teacher, strings, max_tokens_per_batch=settings.max_tokens_per_batch,
                                         max_batch_size=settings.max_batch_size) for teacher in teachers]
    return targets.concatenated_target(per_teacher, [teacher.spec.name for teacher in teachers],
                                       [item.id for item in texts])


def check_finished_shard(done: ShardInfo, texts: Sequence[Text], corpus_hash: str, index: int, folder: Path) -> None:
    """A shard kept from an earlier run must have been cut from the same texts as this run's."""
    same = (done.num_records == len(texts) and done.first_id == texts[0].id and done.last_id == texts[-1].id
            and done.corpus_hash == corpus_hash)
    if not same:
        raise ExportError(
            f"{folder / done.file}: the corpus changed since that shard was written (shard {index}: first id "
            f"{done.first_id!r}, {done.num_records} records; now {texts[0].id!r}, {len(texts)} records, or other "
            f"texts). Restore the corpus, or export into a new folder (--config.output_dir=...).")


class ShardedCorpus:
    """Streams the corpus into shards of kept texts, skipping and counting empty ones, refusing duplicate ids."""

    def __init__(self, corpus: sources.Corpus, shard_size: int):
        self.corpus, self.shard_size = corpus, shard_size
        self.skipped_empty = 0
        self.hasher = records.corpus_hasher()

    def __iter__(self):
        seen_ids: set[str] = set()
        pending: list[Text] = []
        for item in self.corpus:
            if not item.text.strip():
                self.skipped_empty += 1
                continue
            if item.id in seen_ids:
                raise ExportError(f"corpus: id {item.id!r} appears twice; ids must be unique so that every vector "
                                  f"stays aligned with its text. Fix the ids, or set --config.corpus.id_field='' "
                                  f"to use positions.")
            seen_ids.add(item.id)
            records.update_corpus_hash(self.hasher, [item])
            pending.append(item)
            if len(pending) == self.shard_size:
                yield pending, self.hasher.hexdigest()
                pending = []
        if pending:
            yield pending, self.hasher.hexdigest()


def run_export(config) -> Manifest:
    """Export (or resume, or confirm) the records `config` describes; returns the finished manifest."""
    settings = settings_from_config(config)
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    corpus = sources.open_corpus(config.corpus)
    log(f"corpus: {corpus.describe()['kind']} · teachers: {', '.join(spec.name for spec in settings.teacher_specs)}")
    teachers = [encoders.load_teacher(spec) for spec in settings.teacher_specs]
    draft = draft_manifest(settings, teachers, corpus.describe())
    done, previous = records.prepare_output_folder(settings.output_dir, draft)
    if previous is not None and previous.status == records.STATUS_COMPLETE:
        log(f"{settings.output_dir} already holds this export, complete ({previous.num_records:,} records); "
            f"nothing to do.")
        return previous
    if done:
        log(f"resuming: {len(done)} shards ({sum(shard.num_records for shard in done):,} records) already written")
    return write_records(corpus, teachers, draft, done, settings)


def write_records(corpus: sources.Corpus, teachers: Sequence[encoders.Teacher], draft: Manifest,
                  done: Sequence[ShardInfo], settings: ExportSettings) -> Manifest:
    folder = settings.output_dir
    progress = Progress(corpus.count(), every_s=settings.progress_every_s)
    stream = ShardedCorpus(corpus, settings.shard_size)
    shards: list[ShardInfo] = []
    started = time.monotonic()
    kept = 0
    donors = reuse.donor_shards(settings.reuse_from, draft)
    for index, (texts, corpus_hash) in enumerate(stream):
        before = progress.done
        donor = None if index < len(done) else reuse.matching_shard(donors, index, len(texts), texts[0].id,
                                                                     texts[-1].id, corpus_hash)
        if index < len(done):
            check_finished_shard(done[index], texts, corpus_hash, index, folder)
            shards.append(done[index])
        elif donor is not None:
            shards.append(records.adopt_shard(folder, index, donor[0], donor[1], draft))
            log(f"shard {index}: copied from {donor[0]} (same texts, same teachers)")
        else:
            vectors = encode_shard(texts, teachers, settings)
            rows = [(item.id, item.text, vector) for item, vector in zip(texts, vectors)]
            shards.append(records.write_shard(folder, index, rows, draft, corpus_hash))
        kept += len(texts)
        # Texts the corpus yielded so far: the kept ones and the skipped empty ones.
        (progress.skip if index < len(done) else progress.advance)(kept + stream.skipped_empty - before)
    if len(shards) < len(done):
        raise ExportError(f"{folder}: the corpus now yields {len(shards)} shards, but an earlier run of this export "
                          f"wrote {len(done)}: the corpus changed. Restore it, or export into a new folder.")
    manifest = dataclasses.replace(
        draft, status=records.STATUS_COMPLETE, num_records=kept,
        skipped_empty=stream.skipped_empty, corpus_fingerprint=stream.hasher.hexdigest(), shards=tuple(shards))
    records.finish_output_folder(folder, manifest)
    progress.finish()
    log(f"wrote {manifest.num_records:,} records in {len(shards)} shards to {folder} ({manifest.teacher_dim}-d, "
        f"{manifest.dtype}) in {format_duration(time.monotonic() - started)}; skipped {stream.skipped_empty:,} "
        f"empty or whitespace-only texts")
    return manifest


USER_ERRORS = (ExportError, RecordsError, sources.CorpusError, encoders.TeacherConfigError,
               targets.TeacherOutputError)


def main(config) -> int:
    """Run the export; user errors print one clear line (no traceback) and exit 2, Ctrl-C exits 130."""
    try:
        run_export(config)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished shards are kept; run the same command again to resume.", file=sys.stderr)
        return 130
    return 0


def cli() -> None:
    # Flags are defined here, not at import, so that importing this module next to embed_jax.main (which has its
    # own --config) cannot clash.
    from absl import app, flags
    from ml_collections import config_flags

    config = config_flags.DEFINE_config_file("config", None, "export config, e.g. configs/teachers.py",
                                             lock_config=True)
    flags.mark_flag_as_required("config")

    def run(argv: Sequence[str]) -> None:
        del argv
        quiet_libraries()
        sys.exit(main(config.value))

    app.run(run)


def quiet_libraries() -> None:
    """Our progress lines are the log: silence absl's INFO echo of library loggers and the weight-loading bars."""
    from absl import logging as absl_logging
    from transformers.utils import logging as transformers_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()


if __name__ == "__main__":
    # Teachers are local folders: never reach for a model hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    cli()
