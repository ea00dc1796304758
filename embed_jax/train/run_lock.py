"""One training run per workdir at a time: a lock that a second run reports, naming the run that holds it.

    DIR/.lock.process-<i>     held with flock(2) by process i of the run for as long as it trains; it holds the
                              holder's host, pid, start time and command, for the refusal's message

Why flock: the kernel releases it when the holding process ends, however it ends (kill -9, a crash, a preempted VM),
so no stale lock ever strands a workdir, and nothing has to guess whether a recorded pid is still alive. Linux's NFS
client turns flock into a byte-range lock the server arbitrates, so a workdir on a shared file system is held
across machines too.

Why one file per process (not process 0 alone): on a multi-host slice, every process of a second run must be refused
by itself, before its first collective. Were only process 0 to check, the refused run's other processes would wait
in that collective until the coordination service's heartbeat timeout; with a file each, process i of the second
run finds process i of the first holding its file, and every process stops at once with the same message. Workers
whose workdir is on their own disk each protect their own.

A Cloud Storage workdir (gs://...) has no locks to take: the run goes ahead without one (docs/reliability.md).
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path


class WorkdirInUseError(RuntimeError):
    """Another training run holds the workdir; the message names it (host, pid, start time, command)."""


def lock_path(workdir: Path, process_index: int) -> Path:
    return Path(workdir) / f".lock.process-{process_index}"


def holder_record() -> dict[str, object]:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)}


def describe_holder(text: str) -> str:
    try:
        holder = json.loads(text)
        return (f"host {holder['host']}, pid {holder['pid']}, started {holder['started']}, command: "
                f"{holder['command']}")
    except (ValueError, KeyError, TypeError):
        return "a run that has not yet written its name"


@contextlib.contextmanager
def hold(workdir: Path, process_index: int = 0) -> Iterator[Path | None]:
    """Holds `workdir`'s lock for process `process_index` while the block runs; WorkdirInUseError if another run
    holds it. Yields the lock file (None for a gs:// workdir, which cannot be locked)."""
    if str(workdir).startswith("gs://"):
        yield None
        return
    path = lock_path(workdir, process_index)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe_holder(os.pread(descriptor, 65536, 0).decode("utf-8", "replace"))
            raise WorkdirInUseError(
                f"--workdir={workdir} is in use by another training run ({holder}). Wait for it to finish or stop "
                f"it, or train in another --workdir. (Its lock, {path}, is released when that process ends, even by "
                "kill -9.)") from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, (json.dumps(holder_record()) + "\n").encode(), 0)
        yield path
    finally:
        os.close(descriptor)  # closing the last descriptor releases the flock
