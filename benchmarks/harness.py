"""What every side-by-side benchmark here shares: interleaved rounds, median and spread, and the machine's load.

A busy machine slows the two sides unequally (PyTorch's OpenMP threads spin-wait on busy cores, docs/training.md),
so a comparison that runs all of A and then all of B measures the load as much as the code. Here the sides
alternate, A B A B ..., each round in the same conditions as its neighbour, and each side reports the median of
its rounds with the spread (min–max). The load average is printed before and after; above `BUSY_LOAD_PER_CORE`
per core the figures are flagged as taken on a busy machine.

    from harness import compare, print_load, summarise
    load_before = print_load("start")
    results = compare({"embed_jax": run_a, "pytorch": run_b}, rounds=5, value="texts_per_s")
    ...
    print_load("end", since=load_before)
"""
from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

# One runnable thread per two cores already costs a two-thread side about a third of its speed on this 2-core
# machine (docs/training.md); half a waiting thread per core is where figures start to drift.
BUSY_LOAD_PER_CORE = 0.5


def load_average() -> float:
    return os.getloadavg()[0]


def print_load(when: str, since: float | None = None) -> float:
    """Prints the 1-minute load average (and a warning when busy); returns it."""
    load, cores = load_average(), os.cpu_count() or 1
    busy = load / cores > BUSY_LOAD_PER_CORE
    note = f" — WARNING: busy machine (> {BUSY_LOAD_PER_CORE} per core); ratios may not hold on an idle one" if busy else ""
    before = f" (at start {since:.2f})" if since is not None else ""
    print(f"[load] {when}: 1-min load average {load:.2f} on {cores} cores{before}{note}", file=sys.stderr)
    return load


def compare(sides: Mapping[str, Callable[[], Mapping[str, Any]]], *, rounds: int,
            warmup_rounds: int = 0) -> dict[str, list[Mapping[str, Any]]]:
    """Runs each side once per round, in the same order every round (A B A B ...); {side: [result per round]}.
    `warmup_rounds` extra rounds run first and are dropped (compilation, page cache)."""
    if rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {rounds}")
    results: dict[str, list[Mapping[str, Any]]] = {name: [] for name in sides}
    for index in range(warmup_rounds + rounds):
        for name, run in sides.items():
            result = run()
            if index >= warmup_rounds:
                results[name].append(result)
    return results


def summarise(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max and the relative spread (max − min) / median of one side's rounds."""
    median = statistics.median(values)
    return {"median": median, "min": min(values), "max": max(values), "rounds": len(values),
            "spread": (max(values) - min(values)) / median if median else float("nan")}


def median_of(results: Sequence[Mapping[str, Any]], key: str) -> dict[str, float]:
    return summarise([float(result[key]) for result in results])


def format_spread(summary: Mapping[str, float], unit: str = "", digits: int = 1) -> str:
    """'123.4 (118.0–125.1, n=5)'"""
    return (f"{summary['median']:.{digits}f}{unit} ({summary['min']:.{digits}f}–{summary['max']:.{digits}f}, "
            f"n={summary['rounds']})")
