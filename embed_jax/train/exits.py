"""How a training run ends, as a scheduler and a person see it: an exit status, and one line on stderr.

    0     every stage finished
    1     a fault while training: a non-finite loss, a disk that filled up or went read-only (the last good
          checkpoint stays; the line names it or the path)
    2     bad input, refused before any work where it can be: a config value, the records, the workdir in use
    143   stopped by SIGTERM (preemption, `kill`, scancel) after saving at a step or stage boundary
    130   stopped by Ctrl-C (SIGINT), the same way

143 and 130 are 128 + the signal's number, what a shell reports for a process the signal ended: schedulers and
wrappers that requeue a preempted job key on them (docs/training.md). Only the errors a user can act on become one
line (`--traceback` shows the stack); anything else keeps its traceback, since it is a bug to report.
"""
from __future__ import annotations

import errno
import os
import re
import sys
import sysconfig
import traceback
from collections.abc import Iterator
from pathlib import Path

import ml_collections

FINISHED, FAULT, BAD_INPUT = 0, 1, 2

# What to do about an OSError, by errno: each names a cause a user can fix.
OS_ERROR_HINTS = {
    errno.ENOSPC: "the disk is full: free space there, then rerun the same command (it resumes from the last "
                  "committed checkpoint)",
    errno.EDQUOT: "the disk quota is used up: free space there, then rerun the same command",
    errno.EROFS: "the file system is read-only: choose a --workdir on a writable disk",
    errno.EACCES: "permission denied: choose a --workdir you can write, or fix its permissions",
    errno.EPERM: "operation not permitted: choose a --workdir you can write",
    errno.EEXIST: "a file is in the way: move it, or choose another --workdir",
    errno.ENOTDIR: "a file is in the way (a path component is a file, not a folder): move it, or choose another "
                   "--workdir",
}


# Tensorstore's message for a failed write: 'Error writing ... Failed writing: "PATH": ... No space left on device
# [os_error_code='28']' (seen on a full tmpfs under an Orbax checkpoint save).
TENSORSTORE_OS_ERROR = re.compile(r"\[os_error_code='(\d+)'\]")
TENSORSTORE_FILE = re.compile(r'Failed (?:writing|to open|to create|to rename)[^"]*"([^"]+)"')
# Where installed libraries live (site-packages); this package's own errors and the standard library's are elsewhere.
LIBRARY_FOLDERS = tuple(sorted({sysconfig.get_paths()[name] for name in ("purelib", "platlib")}))
PACKAGE_FOLDER = str(Path(__file__).resolve().parents[1]) + os.sep  # embed_jax/


def causes(error: BaseException) -> Iterator[BaseException]:
    """The error and what it was raised from or during (Orbax's asynchronous saves wrap the OSError they hit)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def as_os_error(error: BaseException) -> OSError | None:
    """`error` as an OSError: itself, or the one tensorstore (which writes Orbax's arrays) reports as a ValueError
    whose message carries the errno and the file (TENSORSTORE_OS_ERROR, TENSORSTORE_FILE)."""
    if isinstance(error, OSError):
        return error
    code = TENSORSTORE_OS_ERROR.search(str(error))
    if code is None:
        return None
    number = int(code.group(1))
    where = TENSORSTORE_FILE.search(str(error))
    return OSError(number, os.strerror(number), where.group(1) if where else None)


def storage_error(error: BaseException) -> OSError | None:
    """The OSError in `error`'s chain whose errno names a cause a user can fix (OS_ERROR_HINTS), one that names its
    file first (a failed flush during clean-up may raise again, without the name, on top of the first)."""
    found = [cause for cause in map(as_os_error, causes(error)) if cause is not None and cause.errno in OS_ERROR_HINTS]
    return next((cause for cause in found if cause.filename), found[0] if found else None)


def raised_inside_a_library(error: BaseException) -> bool:
    """Whether `error` was raised inside an installed library (Orbax, tensorstore, jax, grain...), not by this
    package's own checks or the standard library on their behalf: a ValueError from there is a fault to report, not
    the user's input refused."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames or frames[-1].filename.startswith(PACKAGE_FOLDER):  # ours, even when installed in site-packages
        return False
    return any(frames[-1].filename.startswith(folder) for folder in LIBRARY_FOLDERS)


def describe_storage_error(error: OSError) -> str:
    where = error.filename or "a file of the run"
    code = errno.errorcode.get(error.errno, str(error.errno))
    return f"cannot write {where}: {error.strerror or error} ({code}); {OS_ERROR_HINTS[error.errno]}"


def run(config: ml_collections.ConfigDict, workdir: str | Path, *, stderr=None, show_traceback: bool = False) -> int:
    """Trains (embed_jax/train/loop.py) and returns the exit status above, printing one line for a refusal, a
    fault or a stop; `show_traceback` re-raises refusals and faults instead (--traceback)."""
    # Here, not at the top: main.py imports this module before it parses flags and sets up jax.distributed, and
    # these import jax (a --help or a flag error should not wait for it).
    from embed_jax.data.records import RecordsError
    from embed_jax.train import driver, loop, run_lock

    stderr = stderr or sys.stderr
    try:
        loop.train_and_evaluate(config, workdir)
    except driver.Preempted as stopped:
        print(f"[main] {stopped}; checkpoint saved, rerun the same command to resume (exit status "
              f"{stopped.exit_status})", file=stderr)
        return stopped.exit_status
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside a step loop's guard
        print("[main] interrupted: nothing saved since the last checkpoint; rerun the same command to resume from "
              "it", file=stderr)
        return 130
    except driver.NonFiniteLossError as error:
        if show_traceback:
            raise
        print(f"error: {error}", file=stderr)
        return FAULT
    except Exception as error:
        if show_traceback:
            raise
        found = storage_error(error)
        if found is not None:
            print(f"error: {describe_storage_error(found)}", file=stderr)
            return FAULT
        if isinstance(error, (ValueError, RecordsError, FileNotFoundError, run_lock.WorkdirInUseError)) and not \
                raised_inside_a_library(error):
            print(f"error: {error}", file=stderr)
            return BAD_INPUT
        raise
    return FINISHED
