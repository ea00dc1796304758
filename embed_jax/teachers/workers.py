"""Many export workers, one records folder: who writes which shard, and the locks that keep them apart.

An export of N workers is N processes running the same command (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; any
other launcher passes --config.worker_index / --config.num_workers). Each streams the whole corpus, so each cuts the
same shards in the same order, and writes shard i only when i % N is its own index: disjoint shares, fixed by the
corpus order alone, and records byte-identical to those of one worker (a shard's bytes depend on its texts only).

The folder's coordination files (records.COORDINATION_PREFIX), all created once and never removed, so that a lock
file survives a kill -9 correctly (the kernel drops a dead process's flock; the file stays, and the restarted worker
locks it again):

    .export.lock               held (flock, blocking) while the manifest is created, checked or completed
    .export-workers.json       {"num_workers": N}: the count the export started with; another count is refused
                               while the export is unfinished (the shares would overlap or leave gaps)
    .export-worker-00003.lock  held (flock, non-blocking) by worker 3 for its whole run: a second worker 3 is refused

Locks are POSIX flock: a local disk, or a shared file system that implements it across hosts (NFS v4, Lustre with
flock, Filestore). A gcsfuse mount does not lock across hosts; export to a disk and copy the folder to the bucket
(docs/launch.md).
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from embed_jax.data import records

FOLDER_LOCK = records.COORDINATION_PREFIX + ".lock"
WORKERS_FILE = records.COORDINATION_PREFIX + "-workers.json"


class WorkerError(ValueError):
    """The worker settings, or another worker, conflict with this run; the message names the key and the fix."""


@dataclasses.dataclass(frozen=True)
class Worker:
    index: int
    count: int

    def owns(self, shard_index: int) -> bool:
        return shard_index % self.count == self.index

    def __str__(self) -> str:
        return f"worker {self.index} of {self.count}"


def worker_lock_name(index: int) -> str:
    return f"{records.COORDINATION_PREFIX}-worker-{index:05d}.lock"


def resolve_worker(worker_index: int, num_workers: int, environment: Mapping[str, str] = os.environ) -> Worker:
    """The explicit --config.worker_index / num_workers (-1 / 0: unset), else torchrun's RANK / WORLD_SIZE, else 0 of 1."""
    if num_workers > 0 or worker_index >= 0:
        if num_workers <= 0 or worker_index < 0:
            raise WorkerError(f"worker_index={worker_index} and num_workers={num_workers}: set both (worker_index "
                              f"0 … num_workers-1 on each worker), or neither to take torchrun's RANK / WORLD_SIZE.")
        source = ("worker_index", "num_workers")
    elif "WORLD_SIZE" in environment or "RANK" in environment:
        try:
            worker_index, num_workers = int(environment.get("RANK", "")), int(environment.get("WORLD_SIZE", ""))
        except ValueError as error:
            raise WorkerError(f"RANK={environment.get('RANK')!r} and WORLD_SIZE={environment.get('WORLD_SIZE')!r} "
                              f"must both be integers (torchrun sets them); or pass --config.worker_index and "
                              f"--config.num_workers.") from error
        source = ("RANK", "WORLD_SIZE")
    else:
        return Worker(0, 1)
    if num_workers < 1 or not 0 <= worker_index < num_workers:
        raise WorkerError(f"{source[0]}={worker_index} with {source[1]}={num_workers}: the index must be 0 … "
                          f"{max(num_workers, 1) - 1} (one per worker, counted from 0).")
    return Worker(worker_index, num_workers)


def _lock(path: Path, *, blocking: bool) -> int | None:
    """An open descriptor holding an exclusive flock on `path` (created if absent), or None if another holds it."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Held while the folder's manifest and worker count are read, created or completed (short)."""
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = _lock(folder / FOLDER_LOCK, blocking=True)
    try:
        yield
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def claim(folder: Path, worker: Worker) -> Iterator[None]:
    """This worker's index, held for the whole run; a second process with the same index is refused at once."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / worker_lock_name(worker.index)
    descriptor = _lock(path, blocking=False)
    if descriptor is None:
        raise WorkerError(f"{path} is locked: another process is already {worker} of this export, and two workers "
                          f"with one index would write the same shards. Give each worker its own "
                          f"--config.worker_index (0 … {worker.count - 1}), or wait for the other to finish.")
    try:
        yield
    finally:
        os.close(descriptor)


def check_worker_count(folder: Path, worker: Worker) -> int:
    """Under `folder_lock`, on an unfinished export: the count it started with must be this run's (first run: set).
    Returns that count."""
    path = folder / WORKERS_FILE
    if not path.exists():
        # A folder without the file was started by an export of one worker (before workers existed) or is new.
        started = 1 if any(folder.glob("shard-*.json")) else worker.count
        path.write_text(json.dumps({"num_workers": started}) + "\n", encoding="utf-8")
    else:
        started = int(json.loads(path.read_text(encoding="utf-8"))["num_workers"])
    if started != worker.count:
        raise WorkerError(
            f"{folder} is an unfinished export started by {started} worker(s); this run is {worker} "
            f"(num_workers / WORLD_SIZE). The shares of the shards follow the count, so mixing counts would write "
            f"some shards twice and others never. Run {started} workers (--config.num_workers={started}); or, for "
            f"another count, export into a new folder with --config.reuse_from={folder} (its finished shards are "
            f"copied, not encoded again).")
    return started


def refuse_gaps(folder: Path, done: Mapping[int, records.ShardInfo]) -> None:
    """One worker writes its shards in order, so a gap in a one-worker export is a hand edit: not resumed around."""
    missing = [index for index in range(max(done, default=-1)) if index not in done]
    if missing:
        later = sorted(path.name for path in folder.glob("shard-*")
                       if path.name.split(".")[0] > records.shard_stem(missing[0]))
        raise records.RecordsError(f"{folder}: shards {', '.join(later[:5])} follow a gap at "
                                   f"{records.shard_stem(missing[0])}; the folder was edited by hand. Re-export into "
                                   f"an empty folder.")
