"""The compute floor of a stage's step: what the compiler prices its work at on one chip, with no collectives.

The TPU cost model adds a program's collectives to its compute rather than overlapping them (measured on v5p:2x2x1:
an 8192² bf16 matmul priced at 2.79 ms, an independent all-gather of 384 MiB per chip at 0.74 ms, both in one
program at 3.53 ms, their sum). So the plan's step estimate is compute + collectives, and a low MFU estimate can be
either. The floor separates them: the stage is compiled for ONE chip of the slice at two batches, b and b + 2 (the
relative-similarity loss needs at least 3 texts); the difference prices one sequence's forward and backward pass,
and the rest of the one-chip step is the part that does not grow with the batch (the optimizer's update of every
parameter, the embedding table's gradient). On the slice each chip does the work of global batch / chips
sequences and updates 1 / (fsdp × tensor) of the parameters, so

    floor = per-sequence seconds × global batch / chips + fixed seconds / (fsdp × tensor)

and `step − floor` is what the slice adds: the collectives, and whatever the partitioning costs. The floor's MFU is
the ceiling that no mesh passes at this batch, in the cost model's pricing; on hardware XLA overlaps asynchronous
collectives with compute, which the cost model does not credit.

It is a line, and the cost model's one-chip price is not quite one: concave in the batch, a sequence costs less in
a bigger batch (configs/jasper.py's stage 3 on one v5p chip, remat off, length 512, 28 layers extrapolated from 3
and 4: batches 3, 4, 5, 8 → 72, 91, 107, 134 ms). Hence batches just above the per-chip share, and the label
"estimate".
"""
from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections

from embed_jax.plan import planner, programs
from embed_jax.plan.topology import Topology

# The relative-similarity loss compares pairs of text pairs: at least 3 texts in a batch (embed_jax/losses.py).
SMALLEST_BATCH = 3
# The second batch is the first + this many: the least that keeps the second compile's memory near the first's.
BATCH_STEP = 2


@dataclasses.dataclass
class ComputeFloor:
    per_sequence_seconds: float  # one sequence's forward and backward at the longest bucket, on one chip
    fixed_seconds: float  # the one-chip step's part that does not grow with the batch (the whole optimizer update)
    batches: tuple[int, int]
    seconds: float  # on the slice: its per-chip share of the batch and of the optimizer update
    mfu: float | None  # the MFU the floor implies: a ceiling at this batch

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def one_chip_batches(global_batch: int, num_chips: int) -> tuple[int, int]:
    first = max(SMALLEST_BATCH, math.ceil(global_batch / num_chips))
    return first, first + BATCH_STEP


def floor_of(step_seconds: Sequence[float], batches: tuple[int, int], plan: planner.StagePlan,
             topology: Topology) -> ComputeFloor:
    """The line through the one-chip step estimates at two batches, scaled to one chip's share of the slice."""
    per_sequence = (step_seconds[1] - step_seconds[0]) / (batches[1] - batches[0])
    fixed = max(0.0, step_seconds[0] - per_sequence * batches[0])
    state_shards = plan.mesh.get("fsdp", 1) * plan.mesh.get("tensor", 1)
    seconds = per_sequence * plan.batch_size / topology.num_chips + fixed / state_shards
    analytic = plan.longest.analytic_flops
    mfu = None if not analytic or seconds <= 0 else (
        analytic / (seconds * topology.num_chips * topology.chip.peak_bf16_flops))
    return ComputeFloor(per_sequence, fixed, batches, seconds, mfu)


def compute_floor(config: ml_collections.ConfigDict, plan: planner.StagePlan, hf_config: dict[str, Any],
                  topology: Topology, devices: Sequence[Any], *, depths: tuple[int, int] | None = None,
                  pin_activations: bool = True, windowed_einsum: bool = True,
                  log: Callable[[str], None] = print) -> ComputeFloor | None:
    """`plan`'s stage compiled on one chip at two batches (its longest bucket), or None where there is no floor to
    give: a stage that is not a text batch, a one-chip program the compiler refuses (the whole student's state does
    not fit one chip) or cannot price."""
    if plan.kind not in programs.TEXT_BATCH_KINDS:
        return None
    one_chip = planner.without_stage_meshes(planner.with_mesh(config, {"data": 1, "fsdp": 1, "tensor": 1}),
                                            [plan.name])
    mesh = planner.check_mesh(one_chip, list(devices)[:1])
    batches = one_chip_batches(plan.batch_size, topology.num_chips)
    options = dict(texts=plan.texts, pin_activations=pin_activations, lengths=[plan.longest.length],
                   windowed_einsum=windowed_einsum, log=lambda line: log(f"{line} (one chip, compute floor)"))
    seconds = []
    for batch in batches:
        sized = copy.deepcopy(one_chip)
        sized.data.global_batch_size = batch
        one = (planner.plan_stage(sized, plan.name, hf_config, topology, mesh, **options) if depths is None else
               planner.plan_stage_from_shallow(sized, plan.name, hf_config, topology, mesh, depths, **options))
        analysis = one.longest.analysis
        if analysis.refused or analysis.step_seconds is None:
            log(f"[plan] {plan.name}: no compute floor (one chip at batch {batch}: "
                + ("the compiler refused it for memory)" if analysis.refused else "no step estimate)"))
            return None
        seconds.append(analysis.step_seconds)
    return floor_of(seconds, batches, plan, topology)
