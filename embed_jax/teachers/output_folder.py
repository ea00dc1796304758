"""Where the records go: refused up front when no folder can be written there, and a failed write said in one line.

A write that fails midway (a full disk, a file system gone read-only) never leaves a shard that counts as finished:
a shard counts once its sidecar exists, and both appear by rename (embed_jax/data/records.py). What is left is a
temporary file, which the next run removes, so the fix is always the same: make room, run the same command again.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

from embed_jax.teachers.shards import ExportError

KEY = "output_dir"


def check_writable(path: Path) -> None:
    """`path` is a folder or can be made one: its nearest existing ancestor is a folder this process may write."""
    if path.exists() and not path.is_dir():
        raise ExportError(f"{KEY}={str(path)!r} is a file, not a folder; choose a folder (--config.{KEY}=...).")
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ExportError(f"{KEY}={str(path)!r}: {ancestor} is a file, so no folder can be made under it; choose "
                          f"another --config.{KEY}.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ExportError(f"{KEY}={str(path)!r}: {ancestor} is not writable (read-only, or owned by another user); "
                          f"make it writable or choose another --config.{KEY}.")


def write_failed(error: OSError, folder: Path) -> ExportError:
    """One line for an OSError met while the export wrote `folder` (or, rarely, read a file elsewhere): the path, the
    cause and what to do."""
    path = Path(error.filename) if error.filename else folder
    cause = error.strerror or str(error)
    name = errno.errorcode.get(error.errno, "") if error.errno else ""
    if not path.resolve().is_relative_to(folder.resolve()):  # not ours to write: a teacher or corpus file
        return ExportError(f"{path}: {cause}{f' ({name})' if name else ''}; fix that path and run the same command "
                           f"again (finished shards are kept).")
    if error.errno == errno.ENOSPC:
        fix = "free space there (or choose another --config.output_dir), then run the same command again"
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make it writable (or choose another --config.output_dir), then run the same command again"
    else:
        fix = "fix that path (or choose another --config.output_dir), then run the same command again"
    return ExportError(f"{KEY}={str(folder)!r}: writing {path} failed: {cause}{f' ({name})' if name else ''}; {fix}: "
                       f"finished shards are kept, an unfinished one is written again.")
