"""The plan as a console table, JSON and Markdown: one section per stage, one row per length bucket.

Every time and MFU figure is the TPU compiler's estimate (`optimal_seconds`, corrected for its sentinels:
embed_jax/plan/compiled.py), labelled so; memory is XLA's buffer assignment per chip; FLOPs are the compiled
program's (per chip × chips) against train/flops.py's analytic count.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from embed_jax.plan.planner import StagePlan
from embed_jax.plan.topology import GIB, Topology

ESTIMATE_NOTE = ("step and MFU are the TPU compiler's estimates (cost model `optimal_seconds`, +1 s per unpriced custom "
                 "call), not measurements; a loop body is priced once, so where the compiled FLOPs fall short of the "
                 "analytic count the step is a lower bound (≥) and no MFU is given")


def gib(value: float) -> str:
    return f"{value / GIB:.2f}"


def seconds_text(seconds: float | None) -> str:
    return "no estimate" if seconds is None else f"{seconds:.3f} s"


def step_text(bucket, topology: Topology) -> str:
    """The step estimate; a lower bound (≥) where loops left part of the FLOPs unpriced, with the priced share."""
    seconds = bucket.analysis.step_seconds
    if seconds is None or not bucket.underpriced(topology):
        return seconds_text(seconds)
    return f"≥ {seconds:.3f} s ({100 * bucket.priced_fraction(topology):.0f}% of FLOPs priced)"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def collectives_text(bucket) -> str:
    parts = [f"{kind} {entry.count}× {gib(entry.bytes)} GiB"
             for kind, entry in bucket.analysis.collectives.items() if entry.count]
    return ", ".join(parts) or "none"


def stage_dict(plan: StagePlan, topology: Topology) -> dict[str, Any]:
    return {
        "stage": plan.name, "kind": plan.kind, "mesh": plan.mesh, "global_batch_size": plan.batch_size,
        "activations_pinned": plan.pinned, "remat": plan.remat, "replicate_frozen": plan.replicate_frozen,
        "parameters": {"trainable": plan.trainable_params, "frozen": plan.frozen_params},
        "per_chip_bytes": {**plan.per_chip, "temporaries": plan.temporaries, "other": plan.other, "peak": plan.peak,
                           "capacity": plan.capacity},
        "fits": plan.fits, "verdict": plan.verdict(), "knob": None if plan.fits else plan.knob(),
        "largest_batch_estimate": plan.largest_batch(),
        "cached_rows": plan.cached_rows or None,
        "buckets": [{
            "length": bucket.length,
            "memory_bytes": dataclasses.asdict(bucket.analysis.memory) | {"peak": bucket.analysis.memory.peak},
            "compiled_flops": bucket.analysis.flops * topology.num_chips,
            "analytic_flops": bucket.analytic_flops,
            "optimal_seconds_raw": bucket.analysis.optimal_seconds,
            "unpriced_custom_calls": bucket.analysis.unpriced_calls,
            "step_seconds_estimate": bucket.analysis.step_seconds,
            "mfu_estimate": bucket.mfu(topology),
            "priced_fraction_of_analytic_flops": bucket.priced_fraction(topology),
            "step_estimate_is_lower_bound": bucket.underpriced(topology),
            "collectives": {kind: dataclasses.asdict(entry) for kind, entry in bucket.analysis.collectives.items()},
            "custom_calls": bucket.analysis.custom_calls,
            "loops": bucket.analysis.loops,
            "refused": None if bucket.analysis.refused is None else dataclasses.asdict(bucket.analysis.refused),
            "compile_seconds": bucket.compile_seconds,
        } for bucket in plan.buckets],
        "note": plan.note or None,
        "compute_floor_estimate": None if plan.floor is None else {
            **plan.floor.as_dict(), "bounds_the_step": floor_bounds_step(plan)},
        "num_steps": plan.num_steps, "texts": plan.texts, "epochs": plan.epochs(),
        "hours_estimate": plan.hours(),
    }


def plan_dict(plans: list[StagePlan], topology: Topology, *, config_name: str, mesh_notes: list[str]) -> dict[str, Any]:
    return {"config": config_name, "topology": topology.jax_name, "accelerator_type": topology.accelerator_type,
            "chips": topology.num_chips, "hbm_per_chip_bytes": topology.chip.hbm_bytes,
            "peak_bf16_flops_per_chip": topology.chip.peak_bf16_flops, "note": ESTIMATE_NOTE,
            "mesh_choice": mesh_notes, "stages": [stage_dict(plan, topology) for plan in plans]}


HEADER = ("stage", "mesh d×f×t", "len", "peak / HBM GiB", "fit", "params T+F / opt / batch / temp GiB",
          "TFLOP compiled / analytic", "step (est.)", "MFU (est.)", "collectives per chip per step")


def rows(plans: list[StagePlan], topology: Topology) -> list[tuple[str, ...]]:
    table = []
    for plan in plans:
        mesh = "×".join(str(plan.mesh.get(axis, 1)) for axis in ("data", "fsdp", "tensor"))
        mesh += ", frozen whole" if plan.replicate_frozen and plan.frozen_params else ""
        for bucket in sorted(plan.buckets, key=lambda b: b.length):
            memory = bucket.analysis.memory
            table.append((
                plan.name, mesh, str(bucket.length) if bucket.length else "—",
                f"{gib(memory.peak)} / {gib(plan.capacity)}",
                "fits" if memory.peak <= plan.capacity else f"over {gib(memory.peak - plan.capacity)}",
                f"{gib(plan.per_chip['trainable'] + plan.per_chip['frozen'])} / {gib(plan.per_chip['optimizer'])} / "
                f"{gib(plan.per_chip['batch'])} / {gib(memory.temporaries)}",
                f"{bucket.analysis.flops * topology.num_chips / 1e12:.1f} / "
                + ("—" if bucket.analytic_flops is None else f"{bucket.analytic_flops / 1e12:.1f}"),
                step_text(bucket, topology), percent(bucket.mfu(topology)),
                collectives_text(bucket)))
    return table


def floor_bounds_step(plan: StagePlan) -> bool:
    """Whether the compute floor is at or below the sharded step: only then is its MFU a ceiling."""
    step = plan.longest.analysis.step_seconds
    return step is None or plan.floor.seconds <= step


def floor_line(plan: StagePlan) -> str:
    """The compute floor against the step (compute_floor.py): what the slice adds beyond one chip's share of the
    work."""
    floor, step = plan.floor, plan.longest.analysis.step_seconds
    head = f"  compute floor (estimate; one chip at batches {floor.batches[0]} and {floor.batches[1]}, no collectives)"
    if not floor_bounds_step(plan):
        # Seen on v6e-16 at batch 256 (16 sequences a chip): one chip holding the whole student's state and a 16-
        # sequence batch priced its share at 0.302 s against the sharded step's 0.188 s (docs/launch.md).
        return (f"{head}: {floor.seconds:.3g} s for a chip's share, above the step's {step:.3g} s, so no bound here "
                "and no ceiling: the one-chip programs at these batches are priced as other programs than a chip "
                "of the slice runs (e.g. one chip holding the whole student's state has less room for activations)")
    added = "" if step is None else f"; the step's other {step - floor.seconds:.3g} s are the collectives " \
                                    "and what the partitioning adds (the cost model adds them to compute)"
    return f"{head}: {floor.seconds:.3g} s a step, an MFU ceiling of {percent(floor.mfu)}{added}"


def stage_lines(plan: StagePlan, topology: Topology) -> list[str]:
    lines = [f"{plan.name} ({plan.kind}): {plan.verdict()}"
             + ("" if plan.fits else f"; knob: {plan.knob()}")]
    if plan.note:
        lines.append(f"  {plan.note}")
    lines += [f"  length {bucket.length}: the compiler refused it ({bucket.analysis.refused.message})"
              for bucket in plan.buckets if bucket.analysis.refused]
    largest = plan.largest_batch()
    if largest is not None:
        lines.append(f"  largest global batch at length {plan.longest.length} that fits (estimate, linear in "
                     f"activations): {largest}")
    if plan.floor is not None:
        lines.append(floor_line(plan))
    hours = plan.hours()
    lines.append(f"  {plan.num_steps:,} steps × {plan.batch_size} = {plan.epochs():.2f} epochs of {plan.texts:,} texts; "
                 + (f"{hours:.1f} h at the longest bucket's estimated step"
                    + (" (a lower bound: loops priced once)" if plan.longest.underpriced(topology)
                       else " (an upper bound: shorter buckets are cheaper)") if hours is not None
                    else "no time estimate (the cost model gave none)"))
    if plan.cached_rows:
        lines.append(f"  cached rows on every chip: {plan.cached_rows:,} pooled + teacher vectors")
    loops = plan.longest.analysis.loops
    if loops:
        lines.append(f"  {loops} loop(s) in the program: their bodies are priced and listed once")
    return lines


def text_table(header: tuple[str, ...], body: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[index]) for row in [header, *body]) for index in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in [header, *body])


def console(plans: list[StagePlan], topology: Topology, *, mesh_notes: list[str]) -> str:
    parts = [f"plan for {topology.label}: {gib(topology.chip.hbm_bytes)} GiB HBM and "
             f"{topology.chip.peak_bf16_flops / 1e12:.0f} TFLOP/s bf16 per chip", ESTIMATE_NOTE]
    parts += [f"mesh: {note}" for note in mesh_notes]
    parts.append(text_table(HEADER, rows(plans, topology)))
    for plan in plans:
        parts += stage_lines(plan, topology)
    return "\n".join(parts)


def markdown(plans: list[StagePlan], topology: Topology, *, config_name: str, mesh_notes: list[str]) -> str:
    lines = [f"# Plan: {config_name} on {topology.label}", "",
             f"{gib(topology.chip.hbm_bytes)} GiB HBM and {topology.chip.peak_bf16_flops / 1e12:.0f} TFLOP/s bf16 per "
             f"chip. {ESTIMATE_NOTE}.", ""]
    lines += [f"- mesh: {note}" for note in mesh_notes]
    lines += ["", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(plans, topology)]
    lines.append("")
    for plan in plans:
        lines += [f"- {line.strip()}" for line in stage_lines(plan, topology)]
    return "\n".join(lines) + "\n"


def write(out_dir: Path, stem: str, document: dict[str, Any], text: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    markdown_path.write_text(text)
    return [json_path, markdown_path]
