"""Teacher export: corpus → N teachers (PyTorch) → normalised concatenated vectors → ArrayRecord shards.

    python -m embed_jax.teachers.export --config=configs/teachers.py [--config.x.y=value ...]

The corpus streams in its fixed order. Empty or whitespace-only texts are skipped and counted; every other text is
kept, and every `shard_size` kept texts form one shard. For each shard, each teacher encodes the shard's texts in
length-bucketed batches; the vectors are checked (finite, non-zero), combined as docs/method.md §2 says, stored in the
configured dtype, and the shard is written (records in corpus order) and then its sidecar.

Resuming: the output folder's manifest.json records the export's identity (teachers with a fingerprint of their
files, corpus description, dtype, shard size). A run on a folder of the same identity keeps its finished shards,
checks on the way that the corpus still yields the same texts (the running corpus hash at each shard's end), and
writes the rest. Because shards are cut from the corpus order and batched within a shard, the resumed records are
those of an uninterrupted run: same ids, same texts, same vectors. A folder of another identity is refused.

`reuse_from`: other records folders whose finished shards are copied where they hold exactly this export's shard
(embed_jax/teachers/reuse.py) — to grow an export, or to cut an unfinished big one short without encoding again.

Many workers, one folder (embed_jax/teachers/workers.py): run the same command N times, under torchrun or with
--config.worker_index/num_workers. Worker k writes the shards i with i % N == k; whichever worker finds every shard
on disk at its end writes the complete manifest. A restarted worker redoes only its own unfinished shard.

`dry_run=True` loads the teachers, encodes a sample, prints the plan (texts, target dim, bytes on disk, rate, ETA
at N workers) and writes nothing.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from embed_jax.cli import exit_on_help
from embed_jax.data import records, sources
from embed_jax.data.records import Manifest, RecordsError, ShardInfo, TeacherInfo, Text
from embed_jax.data.tokenizer_folder import TokenizerFolderError
from embed_jax.teachers import encoders, output_folder, plan, records_folder, reuse, shards, targets, workers
from embed_jax.teachers.progress import Progress, format_duration
from embed_jax.teachers.shards import ExportError, ShardedCorpus
from embed_jax.teachers.workers import Worker


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
    worker: Worker = Worker(0, 1)
    dry_run: bool = False
    dry_run_texts: int = 256


def teacher_spec(name: str, entry) -> encoders.TeacherSpec:
    """`teachers.<name>` as a spec; the keys added for devices and published teachers default to the old behaviour."""
    return encoders.TeacherSpec(
        name=name, path=str(entry.path), pooling=str(entry.pooling), prompt=str(entry.get("prompt", "")),
        max_seq_length=int(entry.get("max_seq_length", 0)), device=str(entry.get("device", "cpu")),
        dtype=str(entry.get("dtype", "float32")), autocast=bool(entry.get("autocast", False)),
        trust_remote_code=bool(entry.get("trust_remote_code", False)),
        prompt_name=str(entry.get("prompt_name", "") or ""), dense_head=str(entry.get("dense_head", "") or ""),
        append_eos=bool(entry.get("append_eos", False)))


def local_folders(value: str, key: str) -> tuple[Path, ...]:
    """Comma-separated local folders (a gs:// URL is refused with what to mount instead)."""
    folders = [folder.strip() for folder in str(value or "").split(",") if folder.strip()]
    for folder in folders:
        records.check_local_records_path(folder, key)
    return tuple(Path(folder).expanduser() for folder in folders)


def settings_from_config(config) -> ExportSettings:
    """Checks every export key (except corpus.*, which sources checks) and names the one that is wrong."""
    if not config.output_dir:
        raise ExportError("output_dir is empty; name the records folder, e.g. --config.output_dir=workdir/records.")
    records.check_local_records_path(config.output_dir, "output_dir")
    output_folder.check_writable(Path(config.output_dir).expanduser())
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
        specs.append(teacher_spec(name, config.teachers[name]))
    worker = workers.resolve_worker(int(config.get("worker_index", -1)), int(config.get("num_workers", 0)))
    if int(config.get("dry_run_texts", 256)) <= 0:
        raise ExportError(f"dry_run_texts={config.dry_run_texts} must be positive.")
    return ExportSettings(output_dir=Path(config.output_dir).expanduser(), teacher_specs=tuple(specs),
                          storage_dtype=config.storage_dtype, shard_size=int(config.shard_size),
                          max_tokens_per_batch=int(config.max_tokens_per_batch),
                          max_batch_size=int(config.max_batch_size),
                          progress_every_s=float(config.get("progress_every_s", 10.0)),
                          torch_threads=int(config.get("torch_threads", 0)),
                          reuse_from=local_folders(config.get("reuse_from", ""), "reuse_from"), worker=worker,
                          dry_run=bool(config.get("dry_run", False)),
                          dry_run_texts=int(config.get("dry_run_texts", 256)))


def teacher_info(teacher: encoders.Teacher, order: int) -> TeacherInfo:
    spec = teacher.spec
    return TeacherInfo(name=spec.name, path=spec.path, dim=teacher.dim, pooling=spec.pooling, prompt=teacher.prompt,
                       max_seq_length=teacher.max_seq_length,
                       weights_sha256=encoders.folder_fingerprint(teacher.folder), order=order, dtype=spec.dtype,
                       autocast=spec.autocast, device=teacher.placement.device_kind, prompt_name=spec.prompt_name,
                       dense_head=spec.dense_head, append_eos=spec.append_eos)


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
    """The shard's (n, teacher_dim) float32 target vectors (docs/method.md §2)."""
    strings = [item.text for item in texts]
    per_teacher = [encoders.encode_texts(teacher, strings, max_tokens_per_batch=settings.max_tokens_per_batch,
                                         max_batch_size=settings.max_batch_size) for teacher in teachers]
    return targets.concatenated_target(per_teacher, [teacher.spec.name for teacher in teachers],
                                       [item.id for item in texts])


def check_finished_shard(done: ShardInfo, texts: Sequence[Text], corpus_hash: str, index: int, folder: Path) -> None:
    """A shard kept from an earlier run (or written by another worker) must be cut from this run's texts."""
    same = (done.num_records == len(texts) and done.first_id == texts[0].id and done.last_id == texts[-1].id
            and done.corpus_hash == corpus_hash)
    if not same:
        raise ExportError(
            f"{folder / done.file}: the corpus changed since that shard was written (shard {index}: first id "
            f"{done.first_id!r}, {done.num_records} records; now {texts[0].id!r}, {len(texts)} records, or other "
            f"texts). Restore the corpus, or export into a new folder (--config.output_dir=...).")


def run_export(config) -> Manifest | None:
    """Export (or resume, or confirm) this worker's share of the records `config` describes; returns the finished
    manifest, or None when other workers' shards are still missing (the last worker to finish writes it)."""
    settings = settings_from_config(config)
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    for spec in settings.teacher_specs:  # every folder before the first teacher loads
        encoders.check_teacher_folder(spec)
    corpus = sources.open_corpus(config.corpus)
    shards.require_a_text(corpus)
    worker = settings.worker
    log(f"corpus: {corpus.describe()['kind']} · teachers: {', '.join(spec.name for spec in settings.teacher_specs)}"
        + (f" · {worker}" if worker.count > 1 else ""))
    teachers = [encoders.load_teacher(spec) for spec in settings.teacher_specs]
    if settings.dry_run:
        plan.print_plan(corpus, teachers, settings)
        return None
    draft = draft_manifest(settings, teachers, corpus.describe())
    try:
        return write_folder(corpus, teachers, draft, settings)
    except OSError as error:
        raise output_folder.write_failed(error, settings.output_dir) from None
    except sources.CorpusError as error:  # a bad text met mid-export: say what is left of the folder
        raise sources.CorpusError(
            f"{error} The export in {settings.output_dir} stopped there, unfinished (its manifest says "
            f"{records.STATUS_IN_PROGRESS}; the shards before that text are kept): run the same command again once "
            "the line is fixed, and it resumes, or names what changed in the corpus") from None


def write_folder(corpus: sources.Corpus, teachers: Sequence[encoders.Teacher], draft: Manifest,
                 settings: ExportSettings) -> Manifest | None:
    """Claim this worker's index, set up or check the folder's manifest, then write this worker's shards."""
    folder, worker = settings.output_dir, settings.worker
    refuse_before_claiming(folder, draft)
    with workers.claim(folder, worker):
        with workers.folder_lock(folder):
            manifest_path = folder / records.MANIFEST_NAME
            if not manifest_path.exists():
                records_folder.prepare_output_folder(folder, draft)  # refuses files that are not ours; writes the draft
            previous = records.read_manifest_file(manifest_path)
            if previous.export_id != draft.export_id or previous.status == records.STATUS_COMPLETE:
                records_folder.prepare_output_folder(folder, draft)  # refuses another export; checks a complete one
            if previous.status == records.STATUS_COMPLETE:
                log(f"{folder} already holds this export, complete ({previous.num_records:,} records); nothing to do.")
                return previous
            started_with = workers.check_worker_count(folder, worker)
            done = records.finished_shard_map(folder, draft)
            if started_with == 1:
                workers.refuse_gaps(folder, done)
        if done:
            log(f"resuming: {len(done)} shards ({sum(shard.num_records for shard in done.values()):,} records) "
                f"already written")
        return write_records(corpus, teachers, draft, done, settings)


def refuse_before_claiming(folder: Path, draft: Manifest) -> None:
    """A folder that is not ours, or holds another export, is refused before any lock file appears in it (the
    checks run again under the folder lock, where they count). Another export that never finished a shard is not
    worth refusing for: this one takes the folder over, saying so."""
    records_folder.refuse_foreign_files(folder)
    manifest_path = folder / records.MANIFEST_NAME
    if not manifest_path.exists():
        return
    existing = records.read_manifest_file(manifest_path)
    if existing.export_id == draft.export_id:
        return
    if records_folder.holds_no_finished_shard(folder, existing):
        log(f"{folder} holds an unfinished export of another configuration with no finished shard "
            f"({'; '.join(records_folder.describe_export_differences(existing, draft))}); this export starts over "
            "there")
        return
    records_folder.prepare_output_folder(folder, draft)  # raises, naming the differences


def write_records(corpus: sources.Corpus, teachers: Sequence[encoders.Teacher], draft: Manifest,
                  done: dict[int, ShardInfo], settings: ExportSettings) -> Manifest | None:
    folder, worker = settings.output_dir, settings.worker
    progress = Progress(corpus.count(), every_s=settings.progress_every_s)
    stream = ShardedCorpus(corpus, settings.shard_size)
    cut: list[ShardInfo] = []  # every shard as this run cut it from the corpus: what a finished one must match
    started = time.monotonic()
    kept = 0
    donors = reuse.donor_shards(settings.reuse_from, draft)
    for index, (texts, corpus_hash) in enumerate(stream):
        before = progress.done
        cut.append(ShardInfo(file="", num_records=len(texts), first_id=texts[0].id, last_id=texts[-1].id,
                             corpus_hash=corpus_hash))
        if index in done:
            check_finished_shard(done[index], texts, corpus_hash, index, folder)
        elif worker.owns(index):
            records_folder.remove_unfinished_shard(folder, index)
            donor = reuse.matching_shard(donors, index, len(texts), texts[0].id, texts[-1].id, corpus_hash)
            problem = records.verify_shard(*donor).problem if donor is not None else None
            if problem:
                log(f"shard {index}: not copied from {donor[0]}, which fails its check ({problem}); encoding it")
                donor = None
            if donor is not None:
                records.adopt_shard(folder, index, donor[0], donor[1], draft)
                log(f"shard {index}: copied from {donor[0]} (same texts, same teachers)")
            else:
                vectors = encode_shard(texts, teachers, settings)
                rows = [(item.id, item.text, vector) for item, vector in zip(texts, vectors)]
                records.write_shard(folder, index, rows, draft, corpus_hash)
        kept += len(texts)
        # Texts the corpus yielded so far: the kept ones and the skipped empty ones. Other workers' shards count as
        # progress too: they run alongside, so the rate and ETA are the whole export's.
        (progress.skip if index in done else progress.advance)(kept + stream.skipped_empty - before)
    if done and max(done) >= len(cut):
        raise ExportError(f"{folder}: the corpus now yields {len(cut)} shards, but an earlier run of this export "
                          f"wrote shard {max(done)}: the corpus changed. Restore it, or export into a new folder.")
    progress.finish()
    manifest = dataclasses.replace(
        draft, status=records.STATUS_COMPLETE, num_records=kept,
        skipped_empty=stream.skipped_empty, corpus_fingerprint=stream.hasher.hexdigest())
    return finish_if_complete(manifest, cut, settings, time.monotonic() - started)


def finish_if_complete(manifest: Manifest, cut: Sequence[ShardInfo], settings: ExportSettings,
                       seconds: float) -> Manifest | None:
    """Write the complete manifest when every shard is on disk (whoever finishes last); else say what is missing."""
    folder, worker = settings.output_dir, settings.worker
    with workers.folder_lock(folder):
        on_disk = records.finished_shard_map(folder, manifest)
        missing = [index for index in range(len(cut)) if index not in on_disk]
        if missing:
            owners = sorted({index % worker.count for index in missing})
            log(f"{worker}: its shards are written in {format_duration(seconds)}; {len(missing)} shards of workers "
                f"{', '.join(map(str, owners))} are still missing (e.g. {records.shard_stem(missing[0])}). The last "
                f"worker to finish writes the manifest.")
            return None
        for index, info in on_disk.items():
            expected = cut[index]
            if (info.num_records, info.first_id, info.last_id, info.corpus_hash) != (
                    expected.num_records, expected.first_id, expected.last_id, expected.corpus_hash):
                raise ExportError(f"{folder / info.file}: written by another worker from other texts than this "
                                  f"worker read (shard {index}); every worker must read the same corpus. Check "
                                  f"corpus.* on every worker, then delete that shard and its sidecar and rerun it.")
        manifest = dataclasses.replace(manifest, shards=tuple(on_disk[index] for index in range(len(cut))))
        records_folder.finish_output_folder(folder, manifest)
    log(f"wrote {manifest.num_records:,} records in {len(cut)} shards to {folder} ({manifest.teacher_dim}-d, "
        f"{manifest.dtype}) in {format_duration(seconds)}; skipped {manifest.skipped_empty:,} "
        f"empty or whitespace-only texts")
    return manifest


USER_ERRORS = (ExportError, RecordsError, sources.CorpusError, encoders.TeacherConfigError,
               targets.TeacherOutputError, workers.WorkerError, reuse.ReuseError, TokenizerFolderError)


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
    exit_on_help(sys.argv, doc=__doc__)
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
