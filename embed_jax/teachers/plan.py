"""The plan of an export before it spends anything (`--config.dry_run=True`): size, disk, rate, ETA; writes nothing.

The corpus is read once in full (counting kept and empty texts, and the bytes of every record's id and text, as the
export would cut them) and each teacher encodes the first `dry_run_texts` kept texts on its configured device and
dtype, after a warm-up batch. The rate of one worker is that of its teachers in turn (they run one after the other
on each shard); the ETA assumes N workers each at that rate, as N GPUs of one kind would run.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from typing import Sequence, TextIO

from embed_jax.data import records, sources
from embed_jax.teachers import encoders
from embed_jax.teachers.progress import format_duration
from embed_jax.teachers.shards import ShardedCorpus

# Bytes of one record besides its id, text and vector: the header of records.py's layout.
RECORD_HEADER_BYTES = 16
# An ArrayRecord file (`group_size:1`) as measured with array_record here: ~64 bytes of framing per record, the file
# rounded up to 64 KiB blocks plus one (4 records of 900 B: 128 KiB; 1,024 of 25,000 B: 393 blocks, 25.8 MB).
ARRAY_RECORD_FRAMING_BYTES = 64
ARRAY_RECORD_BLOCK = 65536
WARM_UP_TEXTS = 8


@dataclasses.dataclass(frozen=True)
class ExportPlan:
    num_texts: int
    skipped_empty: int
    num_shards: int
    shard_size: int
    teacher_dim: int
    bytes_on_disk: int
    rates: dict[str, float]  # texts/s per teacher
    worker_rate: float  # texts/s of one worker running every teacher
    num_workers: int

    def busy_workers(self, num_workers: int) -> int:
        """Workers with a shard to write: worker k writes shards k, k + N, ... (workers.py)."""
        return min(num_workers, self.num_shards)

    def worker_texts(self, worker: int, num_workers: int) -> int:
        """The texts worker `worker` of `num_workers` encodes: its shards, each full but the last."""
        last = self.num_texts - (self.num_shards - 1) * self.shard_size
        return sum(last if index == self.num_shards - 1 else self.shard_size
                   for index in range(worker, self.num_shards, num_workers))

    def eta_seconds(self, num_workers: int) -> float:
        """The busiest worker's time: N workers do not split a shard, so N > shards is no faster than N = shards."""
        return max(self.worker_texts(worker, num_workers) for worker in range(self.busy_workers(num_workers))
                   ) / self.worker_rate


def measure_rate(teacher: encoders.Teacher, texts: Sequence[str], settings) -> float:
    batching = {"max_tokens_per_batch": settings.max_tokens_per_batch, "max_batch_size": settings.max_batch_size}
    encoders.encode_texts(teacher, texts[:WARM_UP_TEXTS], **batching)
    started = time.perf_counter()
    encoders.encode_texts(teacher, texts, **batching)
    return len(texts) / (time.perf_counter() - started)


def make_plan(corpus: sources.Corpus, teachers: Sequence[encoders.Teacher], settings) -> ExportPlan:
    stream = ShardedCorpus(corpus, settings.shard_size)
    teacher_dim = sum(teacher.dim for teacher in teachers)
    vector_bytes = teacher_dim * records.STORAGE_DTYPES[settings.storage_dtype].itemsize
    num_texts = num_shards = bytes_on_disk = 0
    sample: list[str] = []
    for texts, _ in stream:
        num_shards += 1
        num_texts += len(texts)
        payload = sum(RECORD_HEADER_BYTES + ARRAY_RECORD_FRAMING_BYTES + vector_bytes + len(item.id.encode("utf-8"))
                      + len(item.text.encode("utf-8")) for item in texts)
        bytes_on_disk += (-(-payload // ARRAY_RECORD_BLOCK) + 1) * ARRAY_RECORD_BLOCK
        sample.extend(item.text for item in texts[:max(settings.dry_run_texts - len(sample), 0)])
    rates = {teacher.spec.name: measure_rate(teacher, sample, settings) for teacher in teachers}
    worker_rate = 1.0 / sum(1.0 / rate for rate in rates.values())
    return ExportPlan(num_texts=num_texts, skipped_empty=stream.skipped_empty, num_shards=num_shards,
                      shard_size=settings.shard_size,
                      teacher_dim=teacher_dim, bytes_on_disk=bytes_on_disk,
                      rates=rates, worker_rate=worker_rate, num_workers=settings.worker.count)


def format_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1000
    raise AssertionError("unreachable")


def plan_lines(plan: ExportPlan, teachers: Sequence[encoders.Teacher], settings) -> list[str]:
    lines = [f"dry run: nothing written to {settings.output_dir}",
             f"texts: {plan.num_texts:,} ({plan.skipped_empty:,} empty skipped) in {plan.num_shards:,} shards of "
             f"{settings.shard_size:,}",
             f"target: {plan.teacher_dim}-d ({' + '.join(str(teacher.dim) for teacher in teachers)})",
             f"on disk: {format_bytes(plan.bytes_on_disk)} at storage_dtype={settings.storage_dtype}"]
    for teacher in teachers:
        placement = teacher.placement
        precision = f"{teacher.spec.dtype}{' autocast' if teacher.spec.autocast else ''}"
        lines.append(f"teacher {teacher.spec.name}: {teacher.dim}-d on {placement.device} in {precision}, "
                     f"{plan.rates[teacher.spec.name]:.1f} texts/s over {min(settings.dry_run_texts, plan.num_texts)}"
                     f" sample texts")
    lines.append(f"one worker, every teacher: {plan.worker_rate:.1f} texts/s")
    for count in sorted({1, plan.num_workers}):
        idle = (f" ({plan.num_shards} shard{'s' if plan.num_shards > 1 else ''}: {count - plan.busy_workers(count)} "
                f"of the workers would have none)" if plan.busy_workers(count) < count else "")
        lines.append(f"ETA at {count} worker{'s' if count > 1 else ''}: {format_duration(plan.eta_seconds(count))}"
                     + idle)
    return lines


def print_plan(corpus: sources.Corpus, teachers: Sequence[encoders.Teacher], settings,
               stream: TextIO | None = None) -> ExportPlan:
    plan = make_plan(corpus, teachers, settings)
    for line in plan_lines(plan, teachers, settings):
        print(f"[export] {line}", file=stream or sys.stderr, flush=True)
    return plan
