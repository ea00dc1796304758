"""Checkpoints of a training run: student state, optimizer state, step and data-stream position, saved together.

One Orbax `CheckpointManager` step folder holds three kinds of item:

- one pytree item per entry of the state dict the loop passes (e.g. ``params`` — an NNX ``State`` — and
  ``opt_state``), written asynchronously: `save` returns once the arrays are copied to host memory, so the train step
  may donate its buffers right after;
- ``data_iterator``: the grain iterator's position, through grain's own Orbax handler (one JSON file per process),
  so that a resumed run reads the exact batches an uninterrupted run would have read;
- ``run_metadata``: a small JSON naming the run (its identity and the config values that fix array shapes, plus the
  shape of every saved array). A resume compares it with the current run before any array is read, so that a
  changed teacher dim or a folder left by another run is refused with the difference named, instead of failing deep
  inside Orbax or, worse, silently training on mismatched weights. A manager that saves into a folder it did not
  restore from checks it the same way first, so that keeping the last N never deletes another run's checkpoints.

Arrays are restored with the shardings of the abstract targets the caller gives, so a run saved on one mesh resumes on
another (a different slice size, or one CPU for inspection): Orbax reads each target shard from the stored chunks.

The loop drives it: `save(step, state, data_iterator)` every step (Orbax keeps only the steps on the save interval,
``keep`` of them), `save(..., force=True)` on preemption and at the end; after a NaN loss it simply stops saving, and
`wait_until_finished` + `latest_step` name the last good checkpoint.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import importlib.util
import json
from collections.abc import Mapping
from typing import Any

import grain
import grain.checkpoint
import jax
import orbax.checkpoint as ocp
from etils import epath

from embed_jax.models.param_paths import path_name

METADATA_ITEM = "run_metadata"
DATA_ITERATOR_ITEM = "data_iterator"
RESERVED_ITEMS = (METADATA_ITEM, DATA_ITERATOR_ITEM)
# Bumped when the layout of a step folder changes in a way an older reader would misread.
FORMAT = "embed_jax.checkpoint/1"
# How many differences an error lists before summarising: enough to see the pattern, short enough to read.
MAX_LISTED_DIFFERENCES = 12

GRAIN_ITERATOR_TYPES = (grain.DatasetIterator, grain.DataLoaderIterator)


class CheckpointMismatchError(ValueError):
    """The checkpoint folder cannot be resumed by this run (base class of the two cases below)."""


class ForeignCheckpointError(CheckpointMismatchError):
    """The folder holds checkpoints of another run, or things this module did not write."""


class ShapeMismatchError(CheckpointMismatchError):
    """The run's config changes array shapes that the checkpoint was saved with."""


class DataIteratorMismatchError(CheckpointMismatchError):
    """The saved data-stream position cannot be carried over to this run (different process count)."""


@dataclasses.dataclass(frozen=True)
class Restored:
    """What `CheckpointManager.restore` gives back; the data iterator, if any, was restored in place."""

    step: int
    state: dict[str, Any]
    metadata: dict[str, Any]


def config_fingerprint(values: Mapping[str, Any]) -> str:
    """A short, stable hash of JSON-able config values (key order does not matter)."""
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def array_shapes(state: Mapping[str, Any]) -> dict[str, list[int]]:
    """Shape of every array leaf of the state dict (concrete or abstract), keyed by `path_name`."""
    leaves = jax.tree_util.tree_flatten_with_path(dict(state))[0]
    return {path_name(path): list(getattr(leaf, "shape", ())) for path, leaf in leaves}


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
    """The abstract restore target of `tree` (arrays or ShapeDtypeStructs) placed with `shardings` (same structure).

    This is how a checkpoint saved on one mesh is read onto another: give the new mesh's shardings here.
    """
    return jax.tree.map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), tree, shardings
    )


def run_metadata(identity: Mapping[str, Any], shape_config: Mapping[str, Any], state: Mapping[str, Any]) -> dict:
    """The JSON stored beside every checkpoint (see the module docstring)."""
    return {
        "format": FORMAT,
        "identity": dict(identity),
        "identity_fingerprint": config_fingerprint(identity),
        "shape_config": dict(shape_config),
        "array_shapes": array_shapes(state),
        "process_count": jax.process_count(),
        "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _as_json(value: Any) -> Any:
    """Normalises a value the way a JSON round trip would (tuples become lists), so comparisons are fair."""
    return json.loads(json.dumps(value, default=str))


def mapping_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Lines 'key: checkpoint X, this run Y' for every key whose value differs (a missing key reads as <absent>)."""
    saved, current = _as_json(dict(saved)), _as_json(dict(current))
    absent = "<absent>"
    return [
        f"{key}: checkpoint {saved.get(key, absent)!r}, this run {current.get(key, absent)!r}"
        for key in sorted(set(saved) | set(current))
        if saved.get(key, absent) != current.get(key, absent)
    ]


def shape_differences(saved: Mapping[str, list], current: Mapping[str, list]) -> list[str]:
    """Lines naming each array whose shape differs, or that only one side has, restricted to `current`'s items."""
    items = {name.split("/")[0] for name in current}
    saved = {name: shape for name, shape in saved.items() if name.split("/")[0] in items}
    lines = []
    for name in sorted(set(saved) | set(current)):
        if name not in current:
            lines.append(f"{name}: in the checkpoint, not in this run's state")
        elif name not in saved:
            lines.append(f"{name}: in this run's state, not in the checkpoint")
        elif list(saved[name]) != list(current[name]):
            lines.append(f"{name}: checkpoint shape {tuple(saved[name])}, this run {tuple(current[name])}")
    return lines


def _listed(lines: list[str]) -> str:
    shown = [f"  {line}" for line in lines[:MAX_LISTED_DIFFERENCES]]
    if len(lines) > MAX_LISTED_DIFFERENCES:
        shown.append(f"  ... and {len(lines) - MAX_LISTED_DIFFERENCES} more")
    return "\n".join(shown)


def check_compatible(
    saved: Mapping[str, Any],
    *,
    identity: Mapping[str, Any] | None,
    shape_config: Mapping[str, Any],
    targets: Mapping[str, Any],
    where: str,
) -> None:
    """Raises a `CheckpointMismatchError` naming every difference between a checkpoint's metadata and this run.

    `identity=None` is for starting from another run's weights on purpose (the next distillation stage): that run's
    config may differ in anything, so only the arrays being read must have the shapes the targets expect.
    """
    if saved.get("format") != FORMAT:
        raise ForeignCheckpointError(
            f"{where}: run_metadata has format {saved.get('format')!r}, expected {FORMAT!r}; this folder was not "
            "written by embed_jax.train.checkpoint (or by an incompatible version). Use a new --workdir."
        )
    if identity is not None:
        differences = mapping_differences(saved.get("identity", {}), identity)
        if differences:
            raise ForeignCheckpointError(
                f"{where} holds the checkpoints of another run; its identity differs from this run's:\n"
                f"{_listed(differences)}\n"
                "Resume with the config that wrote it, or point --workdir at a new folder (nothing there is "
                "overwritten)."
            )
    differences = [] if identity is None else mapping_differences(saved.get("shape_config", {}), shape_config)
    differences += shape_differences(saved.get("array_shapes", {}), array_shapes(targets))
    if differences:
        raise ShapeMismatchError(
            f"cannot resume from {where}: this run's config changes shapes the checkpoint was saved with:\n"
            f"{_listed(differences)}\n"
            "Resume with the values the checkpoint was saved with, or start a new run in another --workdir."
        )


def _check_state_dict(state: Mapping[str, Any], what: str) -> None:
    if not isinstance(state, Mapping) or not state:
        raise TypeError(f"{what} must be a non-empty dict of item name -> pytree, got {type(state).__name__}")
    reserved = sorted(set(state) & set(RESERVED_ITEMS))
    if reserved:
        raise ValueError(f"{what} uses the reserved item name(s) {reserved}; rename them")


def _check_data_iterator(data_iterator: Any) -> None:
    if data_iterator is not None and not isinstance(data_iterator, GRAIN_ITERATOR_TYPES):
        raise TypeError(
            f"data_iterator must be a grain DatasetIterator or DataLoaderIterator (the object whose get_state() grain "
            f"checkpoints), got {type(data_iterator).__name__}; pass the grain iterator the pipeline wraps."
        )


def _check_storage_support(directory: str) -> None:
    """Orbax reaches gs:// folders through etils.epath, which needs gcsfs; say so before any step runs."""
    if directory.startswith("gs://") and importlib.util.find_spec("gcsfs") is None:
        raise ImportError(
            f"checkpoint folder {directory} is on Google Cloud Storage, which needs the gcsfs package: "
            "pip install gcsfs."
        )


class CheckpointManager:
    """Periodic asynchronous checkpoints of one run in `directory` (local path or gs://), keeping the last `keep`.

    `identity`: JSON-able values that define the run (student, teachers, records, stage, seed, ...); a folder whose
    checkpoints carry another identity is refused. Leave out what a user may change on resume (total steps, logging).
    `shape_config`: the config values that fix array shapes (hidden size, head dims, teacher dim); a resume that
    changes one is refused with the key named.
    """

    def __init__(
        self,
        directory: str | epath.PathLike,
        *,
        save_every: int,
        keep: int,
        identity: Mapping[str, Any],
        shape_config: Mapping[str, Any],
        async_save: bool = True,
    ):
        if save_every < 1:
            raise ValueError(f"save_every must be >= 1 (steps between checkpoints), got {save_every}")
        if keep < 1:
            raise ValueError(f"keep must be >= 1 (checkpoints kept), got {keep}")
        _check_storage_support(str(directory))
        self.identity = _as_json(dict(identity))
        self.shape_config = _as_json(dict(shape_config))
        self.directory = epath.Path(directory)
        # Exactly every `save_every` steps, plus the step jax's preemption service picks. Orbax's default policy also
        # saves the first step of a fresh run: a full write of weights that the config can rebuild, so it is left out.
        save_policy = ocp.checkpoint_managers.AnySavePolicy(
            [
                ocp.checkpoint_managers.FixedIntervalPolicy(save_every),
                ocp.checkpoint_managers.PreemptionCheckpointingPolicy(),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=save_policy,
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            create=True,
        )
        # No item handlers named: each item's args type picks its handler (grain registers its CheckpointSave /
        # CheckpointRestore with Orbax on import), so the state dict's item names need not be known here.
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        # Whether the folder's existing checkpoints are known to be this run's. Until then the first save checks: Orbax
        # deletes the oldest steps beyond `keep`, and those must never be another run's.
        self._folder_checked = self.latest_step() is None

    # --- saving -----------------------------------------------------------------------------------------------------

    def save(self, step: int, state: Mapping[str, Any], data_iterator: Any = None, *, force: bool = False) -> bool:
        """Starts saving `state` (dict of pytrees) and the iterator's position at `step`, if the interval says so.

        Returns whether a save was started. `force=True` saves off the interval (preemption, end of training); a step
        that is already saved is not saved twice. Call on every process.
        """
        _check_state_dict(state, "state")
        _check_data_iterator(data_iterator)
        if step == self.latest_step():
            return False
        if not self._folder_checked:
            self._check_folder_is_this_runs(state)
        items = {name: ocp.args.StandardSave(tree) for name, tree in state.items()}
        items[METADATA_ITEM] = ocp.args.JsonSave(run_metadata(self.identity, self.shape_config, state))
        if data_iterator is not None:
            items[DATA_ITERATOR_ITEM] = grain.checkpoint.CheckpointSave(data_iterator)
        return self._manager.save(step, args=ocp.args.Composite(**items), force=force)

    def _check_folder_is_this_runs(self, state: Mapping[str, Any]) -> None:
        """Before the first save into a folder that already has checkpoints this manager did not restore."""
        latest = self.latest_step()
        check_compatible(
            self.metadata(latest),
            identity=self.identity,
            shape_config=self.shape_config,
            targets=state,
            where=f"checkpoint folder {self.directory} (step {latest})",
        )
        self._folder_checked = True

    def wait_until_finished(self) -> None:
        """Blocks until the asynchronous save in flight, if any, is committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for saves in flight and releases Orbax's threads."""
        self._manager.close()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- reading ----------------------------------------------------------------------------------------------------

    def latest_step(self) -> int | None:
        """The newest step whose checkpoint is committed (or being saved by this process), None if none."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def metadata(self, step: int) -> dict[str, Any]:
        """The run metadata stored with `step`; ForeignCheckpointError if the step folder has none."""
        if step not in self.all_steps():
            raise FileNotFoundError(f"{self.directory} has no checkpoint for step {step}; it has {self.all_steps()}")
        item_folder = self.directory / str(step) / METADATA_ITEM
        if not item_folder.exists():
            raise ForeignCheckpointError(
                f"{self.directory / str(step)} has no {METADATA_ITEM} item: this folder was not written by "
                "embed_jax.train.checkpoint. Point --workdir at a new folder."
            )
        restored = self._manager.restore(step, args=ocp.args.Composite(**{METADATA_ITEM: ocp.args.JsonRestore()}))
        return dict(restored[METADATA_ITEM])

    def restore(
        self,
        step: int | None,
        targets: Mapping[str, Any],
        data_iterator: Any = None,
        *,
        check_identity: bool = True,
    ) -> Restored | None:
        """Restores the items named in `targets` from `step` (None: the latest), or returns None if there is none.

        `targets` maps item names to abstract pytrees (`jax.ShapeDtypeStruct`s with shardings, see
        `abstract_with_shardings`) or concrete ones: arrays come back with those shapes, dtypes and shardings,
        whatever mesh saved them. Items left out of `targets` are not read (e.g. the optimizer state when a stage
        starts from the previous stage's params). `data_iterator`, if given, is moved to the saved position.
        `check_identity=False` accepts another run's checkpoint whose shapes fit (starting a new stage from it).
        """
        _check_state_dict(targets, "targets")
        _check_data_iterator(data_iterator)
        self.wait_until_finished()  # never read a step this process is still writing
        if step is None:
            step = self.latest_step()
            if step is None:
                return None
        where = f"checkpoint folder {self.directory} (step {step})"
        saved = self.metadata(step)
        check_compatible(
            saved,
            identity=self.identity if check_identity else None,
            shape_config=self.shape_config,
            targets=targets,
            where=where,
        )
        items = {name: ocp.args.StandardRestore(target) for name, target in targets.items()}
        if data_iterator is not None:
            self._check_iterator_files(step, saved)
            items[DATA_ITERATOR_ITEM] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        self._folder_checked = self._folder_checked or check_identity
        return Restored(step=step, state={name: restored[name] for name in targets}, metadata=saved)

    def _check_iterator_files(self, step: int, saved: Mapping[str, Any]) -> None:
        """Grain stores one position per process: a run with another process count cannot pick them up."""
        folder = self.directory / str(step) / DATA_ITERATOR_ITEM
        if not folder.exists():
            raise DataIteratorMismatchError(
                f"checkpoint folder {self.directory} (step {step}) has no data-iterator position (it was saved "
                "without one); restore with data_iterator=None to start the data stream from its beginning."
            )
        expected = folder / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        if not expected.exists():
            saved_files = sorted(path.name for path in folder.glob("process_*"))
            raise DataIteratorMismatchError(
                f"checkpoint folder {self.directory} (step {step}) holds data-iterator positions for "
                f"{saved.get('process_count', '?')} process(es) ({', '.join(saved_files)}), but this run has "
                f"{jax.process_count()} (no {expected.name}). Resume on the same number of hosts to continue the "
                "exact data stream, or restore with data_iterator=None to restart it (records already seen will be "
                "seen again)."
            )


def read_only_manager(directory: str | epath.PathLike) -> CheckpointManager:
    """A manager for reading a run's checkpoints (latest step, metadata, restore) without knowing its identity:
    export, evaluation and the next stage read checkpoints this way. Use it as a context manager."""
    return CheckpointManager(directory, save_every=1, keep=1, identity={}, shape_config={})
