"""The device mesh, and where every array lives on it: parameters by their logical axes, batches along the data axes.

Mesh axes (DESIGN.md): `data` (pure data parallelism: replicas), `fsdp` (data parallelism whose replicas also
split the parameters and optimizer state, ZeRO-3 style), `tensor` (splits matmuls: mlp/heads/vocab). A batch is
split over data × fsdp devices and replicated over `tensor`.

Logical axes. Every parameter carries its logical axis names as NNX variable metadata (`out_sharding`, formerly
`sharding_names`, e.g. a query kernel ('embed', 'heads'); embed_jax/models/layers.py). `LOGICAL_AXIS_RULES` — data,
not code — maps each name to mesh axes; `state_sharding` turns a whole NNX state into NamedShardings with it. A
dimension that the chosen mesh axes do not divide (BERT's vocabulary of 30,522 over tensor = 4) stays whole rather
than fail: it is replicated along those axes, and a warning names it.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from embed_jax.train.optimizer import path_name

logger = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")
# The batch is split over every data-parallel device.
DATA_AXES = ("data", "fsdp")

# Logical axis name → mesh axes it may be split over, in order (MaxText's rules, reduced to our three axes).
LOGICAL_AXIS_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("batch", DATA_AXES),
    ("length", ()),  # sequences stay whole: attention needs every position
    ("vocab", ("tensor",)),
    ("embed", ("fsdp",)),  # FSDP: each parameter's model-width dimension is split over the fsdp devices
    ("mlp", ("tensor",)),
    ("heads", ("tensor",)),
    ("kv", ("tensor",)),
    ("layers", ()),  # the stacked-layer axis of scanned encoders: every device runs every layer
)


def mesh_shape(mesh_config: Mapping[str, int], num_devices: int, *, key: str = "mesh") -> dict[str, int]:
    """Axis sizes from the config (`data`, `fsdp`, `tensor`; one of them may be -1 = all remaining devices)."""
    unknown = sorted(set(mesh_config) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"unknown config key(s) {[f'{key}.{name}' for name in unknown]}; the mesh axes are {MESH_AXES}")
    sizes = {axis: int(mesh_config.get(axis, 1)) for axis in MESH_AXES}
    fill = [axis for axis, size in sizes.items() if size == -1]
    bad = [axis for axis, size in sizes.items() if size == 0 or size < -1]
    if bad or len(fill) > 1:
        raise ValueError(
            f"config {key}: sizes {sizes} — each axis must be a positive integer, or -1 (at most one) for "
            "'all remaining devices'"
        )
    known = math.prod(size for size in sizes.values() if size != -1)
    if fill:
        if num_devices % known:
            raise ValueError(
                f"config {key}: {sizes} cannot fill {num_devices} devices ({num_devices} is not a multiple of {known})"
            )
        sizes[fill[0]] = num_devices // known
    elif known != num_devices:
        raise ValueError(
            f"config {key}: {sizes} needs {known} devices but {num_devices} are available; make the product of the "
            f"sizes {num_devices}, or set one axis to -1"
        )
    return sizes


def parse_mesh_sizes(text: str, *, key: str) -> dict[str, int]:
    """Mesh sizes written as 'data=D,fsdp=F[,tensor=T]' (an axis left out is 1; one may be -1: all remaining
    devices), as a stage's `mesh` key and the plan's --mesh spell them. Errors name `key`."""
    sizes = {}
    for part in text.split(","):
        axis, _, size = (piece.strip() for piece in part.partition("="))
        if axis not in MESH_AXES or axis in sizes or not size.lstrip("-").isdigit():
            raise ValueError(f"{key}={text!r}: write the mesh as data=D,fsdp=F[,tensor=T] (each axis once; one may "
                             "be -1 for all remaining devices), e.g. data=-1,fsdp=1 for data parallelism alone")
        sizes[axis] = int(size)
    return {axis: sizes.get(axis, 1) for axis in MESH_AXES}


def make_mesh(mesh_config: Mapping[str, int], devices: Sequence[jax.Device] | None = None, *, key: str = "mesh") -> Mesh:
    """A (data, fsdp, tensor) mesh over `devices` (default: all of them, every process's).

    Axis types are Auto, a deliberate choice: with Auto axes we set shardings at the jit boundary (parameters by
    their logical axes, batches along the data axes) and XLA's propagation completes them through the model, so
    the model and loss code stay mesh-agnostic. Explicit axes would make every op's output sharding part of its
    type, resolved at trace time: gathers (embedding lookups, the loss's pair selection), sorts and the loss's
    merge loop would each need annotations or fail to trace, and `with_sharding_constraint` would only assert.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_shape(mesh_config, len(devices), key=key)
    shape = tuple(sizes[axis] for axis in MESH_AXES)
    axis_types = (AxisType.Auto,) * len(MESH_AXES)
    try:
        # jax.make_mesh orders devices for the hardware's topology (ICI rings on TPU) where it knows it.
        return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types, devices=devices)
    except NotImplementedError:
        # A mesh size that is no product of whole torus axes: data=2 × fsdp=32 on v5p-128's 4x4x4 torus (whole axes
        # give 4, 16 or 64 chips). Splitting a physical axis still builds the mesh, as MaxText's
        # allow_split_physical_axes does; its rings then cross a torus axis part-way.
        from jax.experimental import mesh_utils

        logger.warning("mesh %s: no product of whole torus axes matches it; a physical axis is split between mesh "
                       "axes (it runs; rings along the split axis are shorter than the torus's)", sizes)
        grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
        return Mesh(grid, MESH_AXES, axis_types=axis_types)


def data_parallel_size(mesh: Mesh) -> int:
    return math.prod(mesh.shape[axis] for axis in DATA_AXES if axis in mesh.shape)


def check_batch_divisible(global_batch_size: int, mesh: Mesh, *, key: str = "data.global_batch_size") -> int:
    """Refuses a global batch that the data-parallel devices (or the processes) cannot share evenly.

    Returns the batch each process loads (global / process count).
    """
    parallel = data_parallel_size(mesh)
    processes = jax.process_count()
    if global_batch_size < 1 or global_batch_size % parallel:
        lower = max(parallel, global_batch_size // parallel * parallel)
        raise ValueError(
            f"config key {key}={global_batch_size} is not divisible by the data-parallel size {parallel} "
            f"(mesh data={mesh.shape.get('data', 1)} x fsdp={mesh.shape.get('fsdp', 1)}); use a multiple of "
            f"{parallel}, e.g. {lower} or {lower + parallel}, or change the mesh"
        )
    if global_batch_size % processes:
        raise ValueError(
            f"config key {key}={global_batch_size} is not divisible by the {processes} processes; use a multiple of "
            f"{math.lcm(parallel, processes)}"
        )
    return global_batch_size // processes


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension over the data-parallel axes, everything else replicated; any rank."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXES))


def activation_resolver(mesh: Mesh, rules: Sequence[tuple[str, Sequence[str]]] = LOGICAL_AXIS_RULES):
    """(logical names, shape) → NamedSharding on `mesh`: what a step hands `models.layers.activation_sharding` so
    that the activations it pins (the batch over `data` × `fsdp`) follow the same rules as the parameters. With the
    mesh's Auto axes the constraint binds the layout; the partitioner completes the rest."""

    def resolve(names: tuple, shape: tuple) -> NamedSharding:
        spec, _ = logical_to_partition_spec(names, shape, mesh, rules, where="activation")
        return NamedSharding(mesh, spec)

    return resolve


def logical_to_partition_spec(
    names: Sequence[str | None],
    shape: Sequence[int],
    mesh: Mesh,
    rules: Sequence[tuple[str, Sequence[str]]] = LOGICAL_AXIS_RULES,
    *,
    where: str = "array",
) -> tuple[PartitionSpec, list[str]]:
    """PartitionSpec for an array with these logical axis names, and the notes on dims left whole.

    Each dimension takes the mesh axes its rule names, in order, skipping an axis already used by an earlier
    dimension (a mesh axis splits one dimension at most) and stopping before an axis whose size does not divide
    what is left of the dimension.
    """
    rule_table = dict(rules)
    if len(names) != len(shape):
        raise ValueError(f"{where}: logical axes {tuple(names)} do not match its shape {tuple(shape)}")
    used: set[str] = set()
    spec: list[Any] = []
    notes: list[str] = []
    for name, size in zip(names, shape):
        if name is None:
            spec.append(None)
            continue
        if not isinstance(name, str) or name not in rule_table:
            raise ValueError(
                f"{where}: logical axis {name!r} has no sharding rule; known axes: {sorted(rule_table)}. Add it to "
                "LOGICAL_AXIS_RULES in embed_jax/train/sharding.py (or pass rules=)"
            )
        chosen: list[str] = []
        split = 1
        for axis in rule_table[name]:
            if axis in used or axis not in mesh.shape:
                continue
            if size % (split * mesh.shape[axis]):
                notes.append(f"{where} dim {name!r} ({size}) not split over {axis!r} ({mesh.shape[axis]})")
                break
            chosen.append(axis)
            split *= mesh.shape[axis]
        used.update(chosen)
        spec.append(None if not chosen else chosen[0] if len(chosen) == 1 else tuple(chosen))
    return PartitionSpec(*spec), notes


def _logical_names(variable: nnx.Variable) -> tuple | None:
    metadata = variable.get_metadata()
    names = metadata.get("out_sharding") or metadata.get("sharding_names")
    return tuple(names) if names else None


def without_axis(rules: Sequence[tuple[str, Sequence[str]]], axis: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """`rules` with `axis` taken out of every logical name's mesh axes: a state sharded by them is whole along it
    (frozen parameters replicated over `fsdp`: StageConfig.replicate_frozen)."""
    return tuple((name, tuple(mesh_axis for mesh_axis in mesh_axes if mesh_axis != axis)) for name, mesh_axes in rules)


def state_sharding(
    state: Any, mesh: Mesh, rules: Sequence[tuple[str, Sequence[str]]] = LOGICAL_AXIS_RULES
) -> Any:
    """NamedShardings with the structure of `state` (an NNX State, abstract or concrete, or an optimizer state built
    on one): each Variable with logical axes is split by `rules`; other Variables and plain leaves are replicated.
    Feed it to `jax.device_put`, `jax.jit(in_shardings=/out_shardings=)` or an Orbax restore target.

    Optimizer state: optax builds Adam's moments as copies of the parameter Variables, logical axes included, so
        opt_sharding = state_sharding(jax.eval_shape(tx.init, params), mesh)
        opt_state = jax.jit(tx.init, out_shardings=opt_sharding)(params)
    splits them like the parameters (without out_shardings, jit puts the zero moments on one device)."""
    notes: list[str] = []

    def for_variable(path: tuple, variable: nnx.Variable) -> nnx.Variable:
        names = _logical_names(variable)
        if names is None:
            return variable.replace(NamedSharding(mesh, PartitionSpec()))
        where = path_name(path)
        spec, dim_notes = logical_to_partition_spec(names, variable.shape, mesh, rules, where=where)
        notes.extend(dim_notes)
        return variable.replace(NamedSharding(mesh, spec))

    def for_leaf(path: tuple, leaf: Any) -> Any:
        if isinstance(leaf, nnx.Variable):
            return for_variable(path, leaf)
        return NamedSharding(mesh, PartitionSpec())

    shardings = jax.tree_util.tree_map_with_path(for_leaf, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    if notes:
        shown = "; ".join(notes[:5]) + (f"; and {len(notes) - 5} more" if len(notes) > 5 else "")
        logger.warning("replicated instead of split (size not divisible by the mesh axis): %s", shown)
    return shardings


def shard_shapes(state: Any, shardings: Any) -> dict[str, tuple[int, ...]]:
    """{path: the shape of one device's piece}: what each device holds (used by tests and by memory estimates)."""
    flat_state = jax.tree_util.tree_flatten_with_path(state)[0]
    flat_shardings = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
    return {
        path_name(path): tuple(sharding.shard_shape(np.shape(leaf)))
        for (path, leaf), sharding in zip(flat_state, flat_shardings)
    }
