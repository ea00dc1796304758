"""The plan of one config on one TPU slice: every stage's step compiled for the topology, read back per chip.

    for each stage of stage_order:  build its step from shapes (programs.py) → compile every length bucket for the
    topology's devices → memory by kind against the chip's HBM (fits, or over by how much and which knob), compiled
    FLOPs against the analytic count, the compiler's step-time estimate and the MFU it implies, collectives, and the
    stage's steps and hours

`choose_mesh` picks the mesh from the compiled memory (`--mesh=auto`): pure data parallelism where the weights and
optimizer state fit on every chip, FSDP only as far as needed (docs/launch.md, "Which mesh").
"""
from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections

from embed_jax.plan import compiled as compiled_analysis
from embed_jax.plan import programs
from embed_jax.plan.topology import GIB, Topology


# Below this share of the analytic FLOPs, the compiler's cost left loop trips unpriced: its time is a lower bound.
# (Remat's recompute makes a fully priced step exceed the analytic count, never fall short of it.)
PRICED_ENOUGH = 0.9


@dataclasses.dataclass
class BucketPlan:
    length: int
    analysis: compiled_analysis.Analysis
    analytic_flops: float | None  # the whole slice, one step (train/flops.py); None where it has no count
    compile_seconds: float
    hlo_text: str = dataclasses.field(default="", repr=False)  # the compiled program (kept for tests and --hlo)

    def priced_fraction(self, topology: Topology) -> float | None:
        """The share of the analytic FLOPs the compiled program's cost covers: below 1 where loop bodies (collective
        matmuls, windowed einsums) are priced once instead of once per trip."""
        if not self.analytic_flops:
            return None
        return self.analysis.flops * topology.num_chips / self.analytic_flops

    def underpriced(self, topology: Topology) -> bool:
        fraction = self.priced_fraction(topology)
        return fraction is not None and fraction < PRICED_ENOUGH

    def mfu(self, topology: Topology) -> float | None:
        """Model FLOPs utilisation implied by the compiler's step estimate (an estimate, not a measurement); None
        where the estimate prices only part of the step (`underpriced`): it would overstate the MFU."""
        seconds = self.analysis.step_seconds
        if not seconds or self.analytic_flops is None or self.underpriced(topology):
            return None
        return self.analytic_flops / (seconds * topology.num_chips * topology.chip.peak_bf16_flops)


@dataclasses.dataclass
class StagePlan:
    name: str
    kind: str
    mesh: dict[str, int]
    batch_size: int
    trainable_params: int
    frozen_params: int
    per_chip: dict[str, int]  # trainable, frozen, optimizer, batch: from the arguments' shardings
    buckets: list[BucketPlan]
    num_steps: int
    texts: int
    capacity: int
    remat: bool | str  # model.text_options.remat: False, True or a policy name (models/layers.py)
    pinned: bool
    cached_rows: int = 0
    note: str = ""
    floor: Any = None  # compute_floor.ComputeFloor, where the plan was asked for it (--compute_floor)
    replicate_frozen: bool = False  # the stage's replicate_frozen: its frozen parameters whole on every fsdp chip

    @property
    def longest(self) -> BucketPlan:
        return max(self.buckets, key=lambda bucket: bucket.length)

    @property
    def peak(self) -> int:
        return max(bucket.analysis.memory.peak for bucket in self.buckets)

    @property
    def temporaries(self) -> int:
        return max(bucket.analysis.memory.temporaries for bucket in self.buckets)

    @property
    def other(self) -> int:
        """Peak minus the kinds listed (outputs that reuse no argument, the program's code, padding)."""
        return max(0, self.peak - self.temporaries - sum(self.per_chip.values()))

    @property
    def fits(self) -> bool:
        return self.peak <= self.capacity and not any(bucket.analysis.refused for bucket in self.buckets)

    @property
    def states(self) -> int:
        return self.per_chip["trainable"] + self.per_chip["frozen"] + self.per_chip["optimizer"]

    def largest_batch(self) -> int | None:
        """The largest global batch (a multiple of the data-parallel size) whose longest bucket fits: temporaries and
        the batch grow linearly with it, states do not (an estimate from one compile; the plan says so)."""
        if self.kind not in programs.TEXT_BATCH_KINDS:
            return None
        per_example = (self.temporaries + self.per_chip["batch"]) / self.batch_size
        room = self.capacity - self.states - self.other
        if room <= 0 or per_example <= 0:
            return 0
        parallel = self.mesh.get("data", 1) * self.mesh.get("fsdp", 1)
        return int(room / per_example) // parallel * parallel

    def knob(self) -> str:
        """What would make an over-capacity stage fit."""
        fsdp = self.mesh.get("fsdp", 1)
        if self.replicate_frozen and fsdp > 1 and self.per_chip["frozen"]:
            freed = self.per_chip["frozen"] * (1 - 1 / fsdp)
            return (f"frozen: {self.name}.replicate_frozen=False splits the frozen parameters over fsdp={fsdp} "
                    f"(frees {freed / GIB:.1f} GiB per chip)")
        if self.states > self.capacity:
            return ("mesh: the weights and optimizer state alone need "
                    f"{self.states / GIB:.1f} GiB per chip; split them further (mesh.fsdp) or take a larger slice")
        if self.remat is not True and self.kind in programs.TEXT_BATCH_KINDS:
            return "remat: model.text_options.remat=True recomputes activations instead of storing them"
        largest = self.largest_batch()
        if self.kind == programs.CACHED:
            return ("data: the cached rows sit on every chip; cache fewer records or pool them without "
                    "stage1.cached_pooled")
        return f"batch: data.global_batch_size={largest} fits (estimate), or more chips"

    def verdict(self) -> str:
        if self.fits:
            return f"fits ({(self.capacity - self.peak) / GIB:.1f} GiB free)"
        return f"over by {(self.peak - self.capacity) / GIB:.1f} GiB"

    def hours(self) -> float | None:
        """The stage's steps at the longest bucket's estimate (an upper bound: shorter batches are cheaper)."""
        seconds = self.longest.analysis.step_seconds
        return None if seconds is None else self.num_steps * seconds / 3600

    def epochs(self) -> float:
        return self.num_steps * self.batch_size / max(self.texts, 1)


# XLA's SPMD partitioner turns a sharded matmul whose operands exceed this many MiB into a windowed einsum (a loop
# of collective-permutes and partial matmuls); one too large to reach keeps every matmul whole, so that the cost
# model, which prices a loop body once, sees all of them.
NO_WINDOWED_EINSUM = {"xla_jf_spmd_threshold_for_windowed_einsum_mib": "1000000"}


def compile_bucket(program: programs.StageProgram, length: int, log: Callable[[str], None], *,
                   windowed_einsum: bool = True) -> BucketPlan:
    """One bucket's program compiled and read; a program the compiler refuses for memory is a plan too (over)."""
    started = time.perf_counter()
    arguments = program.arguments(length)
    try:
        compiled = program.step.lower(*arguments).compile(compiler_options=None if windowed_einsum
                                                          else NO_WINDOWED_EINSUM)
    except Exception as error:  # noqa: BLE001 — jax raises JaxRuntimeError; only a memory refusal is kept
        refused = compiled_analysis.refusal(error)
        if refused is None:
            raise
        seconds = time.perf_counter() - started
        log(f"[plan] {program.name} length {length}: refused by the compiler in {seconds:.0f} s: {refused.message}")
        return BucketPlan(length, compiled_analysis.refused_analysis(refused, programs.per_chip_bytes(arguments)),
                          program.analytic_flops(length), seconds)
    seconds = time.perf_counter() - started
    log(f"[plan] {program.name} length {length}: compiled in {seconds:.0f} s")
    return BucketPlan(length, compiled_analysis.analyse(compiled), program.analytic_flops(length), seconds,
                      compiled.as_text())


def plan_stage(config: ml_collections.ConfigDict, stage_name: str, hf_config: dict[str, Any], topology: Topology,
               mesh: jax.sharding.Mesh, *, texts: int, pin_activations: bool = True,
               lengths: Sequence[int] | None = None, log: Callable[[str], None] = print,
               windowed_einsum: bool = True) -> StagePlan:
    program = programs.build_stage_program(config, stage_name, hf_config, mesh, pin_activations=pin_activations,
                                           cached_rows=texts)
    stage = config[stage_name]
    arguments = program.arguments(program.lengths[-1])
    trainable, frozen, opt_state = arguments[:3]
    per_chip = {"trainable": programs.per_chip_bytes(trainable), "frozen": programs.per_chip_bytes(frozen),
                "optimizer": programs.per_chip_bytes(opt_state), "batch": programs.per_chip_bytes(arguments[3:])}
    chosen = [length for length in program.lengths if lengths is None or length in lengths] or [program.lengths[-1]]
    buckets = [compile_bucket(program, length, log, windowed_einsum=windowed_einsum) for length in chosen]
    return StagePlan(
        name=stage_name, kind=program.kind, mesh=dict(mesh.shape), batch_size=program.batch_size,
        trainable_params=programs.parameter_count(trainable), frozen_params=programs.parameter_count(frozen),
        per_chip=per_chip, buckets=buckets, num_steps=int(stage.num_steps), texts=texts,
        capacity=topology.chip.hbm_bytes, remat=config.model.text_options.get("remat", False),
        pinned=pin_activations, cached_rows=program.cached_rows,
        replicate_frozen=bool(stage.get("replicate_frozen", False)))


# ---------------------------------------------------------------------------------------------------- the mesh


def mesh_candidates(num_chips: int, batch_size: int) -> list[dict[str, int]]:
    """data × fsdp splits of the chips, least FSDP first, whose data-parallel size divides the batch."""
    candidates = []
    fsdp = 1
    while fsdp <= num_chips:
        if num_chips % fsdp == 0 and batch_size % num_chips == 0:
            candidates.append({"data": num_chips // fsdp, "fsdp": fsdp, "tensor": 1})
        fsdp *= 2
    return candidates


def with_mesh(config: ml_collections.ConfigDict, mesh_sizes: dict[str, int]) -> ml_collections.ConfigDict:
    changed = copy.deepcopy(config)
    for axis, size in mesh_sizes.items():
        changed.mesh[axis] = int(size)
    return changed


def without_stage_meshes(config: ml_collections.ConfigDict, stage_names: Sequence[str]) -> ml_collections.ConfigDict:
    """The config with every planned stage on config.mesh (a stage's own `mesh` cleared)."""
    changed = copy.deepcopy(config)
    for name in stage_names:
        if name in changed and "mesh" in changed[name]:
            changed[name].mesh = ""
    return changed


def check_mesh(config: ml_collections.ConfigDict, devices: Sequence[Any]) -> jax.sharding.Mesh:
    return programs.make_mesh(config, devices)


def choose_mesh(config: ml_collections.ConfigDict, hf_config: dict[str, Any], topology: Topology,
                devices: Sequence[Any], *, texts: int, log: Callable[[str], None] = print
                ) -> tuple[dict[str, int], list[str]]:
    """The least-FSDP mesh whose every stage fits (longest bucket, compiled), and the lines saying why."""
    batch_size = int(config.data.global_batch_size)
    candidates = mesh_candidates(topology.num_chips, batch_size)
    if not candidates:
        raise programs.PlanError(f"--mesh=auto: data.global_batch_size={batch_size} does not divide over the "
                                 f"{topology.num_chips} chips; use a multiple of {topology.num_chips}")
    reasons = []
    for sizes in candidates:
        candidate = with_mesh(config, sizes)
        mesh = check_mesh(candidate, devices)
        over = []
        for stage_name in candidate.stage_order:
            stage_plan = plan_stage(candidate, stage_name, hf_config, topology, mesh, texts=texts,
                                    lengths=[max(candidate.data.length_buckets)], log=log)
            if not stage_plan.fits:
                over.append(f"{stage_name} {stage_plan.verdict()}")
                break
        label = f"data={sizes['data']} fsdp={sizes['fsdp']}"
        if not over:
            reasons.append(f"{label}: every stage fits")
            return sizes, reasons
        reasons.append(f"{label}: {', '.join(over)}")
    raise programs.PlanError("--mesh=auto: no data × fsdp mesh fits on " + topology.label + ": " + "; ".join(reasons))


# ---------------------------------------------------------------------------------------------------- shallow compiles


def _line(shallow: float, deeper: float, depths: tuple[int, int], depth: int) -> float:
    """The value at `depth` on the line through (depths[0], shallow) and (depths[1], deeper)."""
    return shallow + (deeper - shallow) * (depth - depths[0]) / (depths[1] - depths[0])


def _extrapolate_bucket(a: BucketPlan, b: BucketPlan, depths: tuple[int, int], depth: int) -> BucketPlan:
    def line(x: float, y: float) -> float:
        return _line(x, y, depths, depth)

    memory_a, memory_b = a.analysis.memory, b.analysis.memory
    # At least either compile's: a deeper stack holds every buffer a shallower one does. XLA's buffer reuse can give
    # the deeper compile fewer temporaries (v5p-32, stage 3, data-only mesh: 3 layers more than 4), and the line
    # through them then runs below zero at 28 layers.
    memory = compiled_analysis.Memory(*(int(max(line(getattr(memory_a, field.name), getattr(memory_b, field.name)),
                                                getattr(memory_a, field.name), getattr(memory_b, field.name)))
                                        for field in dataclasses.fields(compiled_analysis.Memory)))
    collectives = {kind: compiled_analysis.Collective(int(round(line(a.analysis.collectives[kind].count,
                                                                     b.analysis.collectives[kind].count))),
                                                      int(line(a.analysis.collectives[kind].bytes,
                                                               b.analysis.collectives[kind].bytes)))
                   for kind in compiled_analysis.COLLECTIVES}
    seconds = (None if a.analysis.step_seconds is None or b.analysis.step_seconds is None
               else line(a.analysis.step_seconds, b.analysis.step_seconds))
    optimal = (None if a.analysis.optimal_seconds is None or b.analysis.optimal_seconds is None
               else line(a.analysis.optimal_seconds, b.analysis.optimal_seconds))
    refused = b.analysis.refused or a.analysis.refused
    analysis = compiled_analysis.Analysis(memory, line(a.analysis.flops, b.analysis.flops), optimal,
                                          b.analysis.unpriced_calls, seconds, collectives, b.analysis.custom_calls,
                                          b.analysis.loops, refused)
    analytic = None if a.analytic_flops is None else line(a.analytic_flops, b.analytic_flops)
    return BucketPlan(a.length, analysis, analytic, a.compile_seconds + b.compile_seconds)


def extrapolate(shallow: StagePlan, deeper: StagePlan, depths: tuple[int, int], depth: int) -> StagePlan:
    """The plan of a `depth`-layer student from plans of two shallower ones: every per-chip byte count, FLOP count,
    collective and step estimate of an unscanned layer stack grows by the same amount per layer, so a line through
    two depths gives the full one (the peak's buffer reuse makes memory the least exact; the plan says it is
    extrapolated)."""
    def line(x: float, y: float) -> int:
        return int(_line(x, y, depths, depth))

    buckets = [_extrapolate_bucket(a, b, depths, depth)
               for a, b in zip(sorted(shallow.buckets, key=lambda x: x.length),
                               sorted(deeper.buckets, key=lambda x: x.length))]
    return dataclasses.replace(
        deeper, per_chip={kind: line(shallow.per_chip[kind], deeper.per_chip[kind]) for kind in deeper.per_chip},
        trainable_params=line(shallow.trainable_params, deeper.trainable_params),
        frozen_params=line(shallow.frozen_params, deeper.frozen_params), buckets=buckets,
        note=f"extrapolated to {depth} layers from compiles of {depths[0]} and {depths[1]} layers")


def full_depth(config: ml_collections.ConfigDict, hf_config: dict[str, Any]) -> int:
    return int(config.model.text_options.get("num_layers") or hf_config.get("num_hidden_layers") or 0)


def check_depths(config: ml_collections.ConfigDict, hf_config: dict[str, Any], stage_names: Sequence[str],
                 depths: tuple[int, int]) -> None:
    """Refuses --layers_from depths that cannot stand for the student, before anything compiles: two depths, the
    first smaller, at most the student's; and at least every planned stage's last_layers, so that the layers a deeper
    student adds are frozen ones, as in the full student (the line through the two plans is then exact)."""
    depth = full_depth(config, hf_config)
    if not 0 < depths[0] < depths[1] <= depth:
        raise programs.PlanError(f"--layers_from={depths[0]},{depths[1]}: give two depths, the first smaller, both "
                                 f"at most the student's {depth} layers")
    unfrozen = {name: int(config[name].last_layers) for name in stage_names
                if "last_layers" in str(config[name].get("trainable", ""))}
    if unfrozen and depths[0] < max(unfrozen.values()):
        needed = max(unfrozen.values())
        stage = max(unfrozen, key=unfrozen.get)
        raise programs.PlanError(f"--layers_from={depths[0]},{depths[1]}: {stage} trains the last {needed} layers "
                                 f"({stage}.last_layers), so the shallow students need at least {needed}: e.g. "
                                 f"--layers_from={needed},{needed + 1}")


def plan_stage_from_shallow(config: ml_collections.ConfigDict, stage_name: str, hf_config: dict[str, Any],
                            topology: Topology, mesh: jax.sharding.Mesh, depths: tuple[int, int], **options
                            ) -> StagePlan:
    """`plan_stage` of the full student, extrapolated from two shallow students (model.text_options.num_layers)."""
    check_depths(config, hf_config, [stage_name], depths)
    depth = full_depth(config, hf_config)
    plans = []
    for layers in depths:
        shallow_config = copy.deepcopy(config)
        with shallow_config.unlocked():
            shallow_config.model.text_options.num_layers = int(layers)
        plans.append(plan_stage(shallow_config, stage_name, hf_config, topology, mesh, **options))
    return extrapolate(plans[0], plans[1], depths, depth)
