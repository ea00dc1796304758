"""What every side-by-side benchmark here shares: interleaved rounds, median and spread, and the machine's load.

A busy machine slows the two sides unequally (PyTorch's OpenMP threads spin-wait on busy cores, docs/training.md),
so a comparison that runs all of A and then all of B measures the load as much as the code. Here the sides
alternate, A B A B ..., each round in the same conditions as its neighbour, and each side reports the median of
its rounds with the spread (min–max). The load average is printed before and after; above `BUSY_LOAD_PER_CORE`
per core the figures are flagged as taken on a busy machine.

    from harness import compare, print_load, summarise
    load_before = print_load("start")
    results = compare({"embed_jax": run_a, "pytorch": run_b}, rounds=5)
    summary = median_of(results["embed_jax"], "texts_per_s")
    ...
    print_load("end", since=load_before)

A side that must live in its own process (its peak memory its own, or torch and JAX apart) is a `ChildSide`: the
child is started once (imports, loading and compiling stay outside the rounds), then each round asks it for one
measurement over its stdin/stdout, so the children's rounds alternate like in-process sides. The child's script
calls `claim_stdout` first and `serve_rounds` once set up.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
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


class SideFailed(RuntimeError):
    """A child side exited or answered something other than one JSON line; the message is its last error line."""


def last_error_line(text: str) -> str:
    """The line of a child's stderr that says what went wrong: the last one naming an error, else the last one."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()] or ["(no output)"]
    return next((line for line in reversed(lines) if "Error" in line or "error:" in line), lines[-1])[:300]


class ChildSide:
    """One side run by a long-lived child process (`command` ends in a call to `serve_rounds`).

    Starting waits for the child's "ready" line (its setup: a dict, e.g. compile time); each call runs one round and
    returns the child's result dict. Between rounds the child blocks on its stdin, so it does not compete with the
    other side; `settle_s` lets a finished side's spinning threads (OpenMP, Eigen) go to sleep first."""

    def __init__(self, name: str, command: Sequence[str], *, env: Mapping[str, str] | None = None,
                 settle_s: float = 0.5):
        self.name, self.settle_s = name, settle_s
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._process = subprocess.Popen(list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self._stderr, text=True, env=None if env is None else dict(env))
        self.setup = self._answer()

    def __call__(self) -> Mapping[str, Any]:
        time.sleep(self.settle_s)
        self._send("round")
        return self._answer()

    def __enter__(self) -> "ChildSide":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self._process.poll() is None:
            self._send("quit")
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._stderr.close()

    def _send(self, command: str) -> None:
        try:
            self._process.stdin.write(command + "\n")
            self._process.stdin.flush()
        except BrokenPipeError:
            pass  # the child is gone; _answer reports why

    def _answer(self) -> dict[str, Any]:
        line = self._process.stdout.readline()
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            self._process.wait(timeout=30)
            self._stderr.seek(0)
            raise SideFailed(f"{self.name}: {last_error_line(self._stderr.read())}") from None


def claim_stdout():
    """For a child side: a private copy of stdout for the protocol, with file descriptor 1 (and sys.stdout) sent to
    stderr, so that whatever a library prints while loading cannot be taken for an answer. Call it first."""
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return protocol


def serve_rounds(protocol, run_round: Callable[[], Mapping[str, Any]], setup: Mapping[str, Any] | None = None) -> None:
    """The child's half of `ChildSide`: writes `setup` as the ready line on `protocol` (from `claim_stdout`), then
    one JSON line per "round" read on stdin, until "quit" or end of input."""
    print(json.dumps(dict(setup or {})), file=protocol, flush=True)
    for command in sys.stdin:
        if command.strip() != "round":
            return
        print(json.dumps(dict(run_round())), file=protocol, flush=True)
