"""One Markdown table across several plans (`python -m embed_jax.plan` JSON files): a row per slice and stage, at each
stage's longest length bucket, to compare slices, meshes and variants side by side.

    python scripts/plan_table.py plans/                       # every plan_*.json in the folder
    python scripts/plan_table.py a/plan_jasper_v5p-32.json b/plan_jasper_v5p-32.json --labels=fsdp,data

Every step time and MFU is the TPU compiler's estimate, as the plan labels it (docs/launch.md).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

GIB = 2 ** 30
HEADER = ("slice", "variant", "stage", "mesh d×f[×t]", "peak / HBM GiB", "fits", "step (est.)", "MFU (est.)",
          "largest batch (est.)", "stage time (est.)", "collectives per chip per step")


def plan_files(paths: list[str]) -> list[Path]:
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(path.glob("plan_*.json"))
        elif path.is_file():
            files.append(path)
        else:
            raise SystemExit(f"error: {path}: no such plan file or folder; give the --out folder of "
                             "python -m embed_jax.plan, or its plan_*.json files")
    if not files:
        raise SystemExit(f"error: no plan_*.json in {', '.join(paths)}; run python -m embed_jax.plan first")
    return files


def mesh_text(mesh: dict[str, int]) -> str:
    """data×fsdp, and ×tensor where the mesh splits matmuls (a 1×16×4 mesh is not 1×16)."""
    sizes = [mesh.get("data", 1), mesh.get("fsdp", 1)] + ([mesh["tensor"]] if mesh.get("tensor", 1) > 1 else [])
    return "×".join(str(size) for size in sizes)


def collectives(bucket: dict[str, Any]) -> str:
    parts = [f"{kind} {entry['count']}× {entry['bytes'] / GIB:.2f}"
             for kind, entry in bucket["collectives"].items() if entry["count"]]
    return (", ".join(parts) + " GiB") if parts else "none"


def step(bucket: dict[str, Any]) -> str:
    seconds = bucket["step_seconds_estimate"]
    if seconds is None:
        return "no estimate"
    return ("≥ " if bucket["step_estimate_is_lower_bound"] else "") + f"{seconds:.3f} s"


def duration(hours: float | None) -> str:
    """The stage's steps at the longest bucket's estimate, in minutes under an hour."""
    if hours is None:
        return "—"
    return f"{hours * 60:.1f} min" if hours < 1 else f"{hours:.1f} h"


def stage_row(plan: dict[str, Any], stage: dict[str, Any], variant: str) -> tuple[str, ...]:
    bucket = max(stage["buckets"], key=lambda entry: entry["length"] or 0)
    peak, capacity = stage["per_chip_bytes"]["peak"], stage["per_chip_bytes"]["capacity"]
    mfu = bucket["mfu_estimate"]
    hours = stage["hours_estimate"]
    return (plan["accelerator_type"], variant, stage["stage"] + (" (extrapolated)" if stage.get("note") else ""),
            mesh_text(stage["mesh"]),
            f"{peak / GIB:.1f} / {capacity / GIB:.0f}", "fits" if stage["fits"] else f"over {(peak - capacity) / GIB:.1f}",
            step(bucket), "—" if mfu is None else f"{100 * mfu:.0f}%",
            "—" if stage["largest_batch_estimate"] is None else f"{stage['largest_batch_estimate']:,}",
            duration(hours), collectives(bucket))


def table(files: list[Path], labels: list[str]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for index, path in enumerate(files):
        plan = json.loads(path.read_text())
        variant = labels[index] if index < len(labels) else path.parent.name
        lines += ["| " + " | ".join(stage_row(plan, stage, variant)) + " |" for stage in plan["stages"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="plan_*.json files or the folders holding them")
    parser.add_argument("--labels", default="", help="comma-separated variant names, one per file (default: each "
                                                     "file's folder name)")
    args = parser.parse_args(argv)
    print(table(plan_files(args.paths), [label for label in args.labels.split(",") if label]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
