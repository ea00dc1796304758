"""Where training metrics go: a progress bar on the console, TensorBoard event files, metrics.jsonl, and a PNG of the
loss curves at the end. Only process 0 writes; every process computes the same (global) values.

A stage that resumes from its checkpoint at step S replays the steps after S that a killed run had already logged.
So that each step is logged once, the writer first drops metrics.jsonl's rows past S (an atomic rewrite) and opens
its TensorBoard file with purge_step=S+1, which tells TensorBoard to hide the older files' events from step S+1 on.
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np

# Terms shown on the progress bar; everything else goes to TensorBoard and metrics.jsonl only.
SHOWN_ON_BAR = ("loss", "learning_rate", "examples_per_s")


class MetricsWriter:
    """Writes one row of scalars per logged step to every sink; `close()` draws the loss curves."""

    def __init__(self, workdir: str | Path, *, total_steps: int, start_step: int, title: str = "training"):
        self.workdir = Path(workdir)
        self.is_writer = jax.process_index() == 0
        self.rows: list[dict[str, float]] = []
        self.title = title
        self._bar = None
        self._tensorboard = None
        if not self.is_writer:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.path = self.workdir / "metrics.jsonl"
        keep_rows_up_to(self.path, start_step)
        self._jsonl = self.path.open("a")
        from tensorboardX import SummaryWriter  # pure Python; writes event files TensorBoard reads

        # tensorboardX names its file by the second it opened it and opens it with "wb": a run resumed within the
        # same second would empty the first run's file. The suffix keeps every run's file apart.
        self._tensorboard = SummaryWriter(str(self.workdir / "tensorboard"), purge_step=start_step + 1,
                                          filename_suffix=f".from-step-{start_step}.pid-{os.getpid()}")
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total_steps, initial=start_step, desc=title, unit="step", dynamic_ncols=True,
                         smoothing=0.1)

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.is_writer:
            return
        row = {"step": step, **{name: float(value) for name, value in scalars.items()}}
        self.rows.append(row)
        try:
            self._jsonl.write(json.dumps(row) + "\n")
            self._jsonl.flush()
        except OSError as error:  # a full disk: name the file (a failed write's OSError names none)
            raise OSError(error.errno, error.strerror, str(self.path)) from error
        for name, value in scalars.items():
            self._tensorboard.add_scalar(name, float(value), step)
        shown = {name: f"{row[name]:.4g}" for name in SHOWN_ON_BAR if name in row}
        self._bar.set_postfix(shown, refresh=False)

    def advance(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def message(self, text: str) -> None:
        """A line above the progress bar (process 0 only)."""
        if not self.is_writer:
            return
        self._bar.write(text)

    def close(self) -> None:
        if not self.is_writer:
            return
        self._bar.close()
        self._tensorboard.close()
        self._jsonl.close()
        rows = read_metrics(self.workdir / "metrics.jsonl")
        if rows:
            plot_losses(rows, self.workdir / "loss_curves.png", title=self.title)


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def keep_rows_up_to(path: Path, step: int) -> None:
    """Drops the rows of metrics.jsonl past `step` (the step a stage resumes from), writing a new file and renaming
    it over the old one, so that a kill during the rewrite leaves one or the other, whole. A row cut off by a kill
    mid-write is dropped too."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if is_row_up_to(line, step)]
    if len(kept) == len(lines):
        return
    partial = path.with_name(path.name + ".tmp")
    partial.write_text("".join(line + "\n" for line in kept))
    os.replace(partial, path)


def is_row_up_to(line: str, step: int) -> bool:
    try:
        return json.loads(line)["step"] <= step
    except (ValueError, KeyError, TypeError):
        return False


def one_row_per_step(rows: list[Mapping[str, float]]) -> list[Mapping[str, float]]:
    """Rows in step order, the last one written for a step winning: curves never run backwards."""
    return sorted({row["step"]: row for row in rows}.values(), key=lambda row: row["step"])


def loss_term_names(rows: list[Mapping[str, float]]) -> list[str]:
    """The unweighted loss terms ('dense_1152/cosine', ...) present in the rows, in a stable order."""
    names = {name for row in rows for name in row if "/" in name and not name.startswith("eval/")}
    return sorted(names)


def plot_losses(rows: list[Mapping[str, float]], path: str | Path, *, title: str) -> None:
    """One panel for the total loss and one per loss term, log-scale y, eval points overlaid where present."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a TPU VM
    import matplotlib.pyplot as plt

    rows = one_row_per_step(rows)

    panels = ["loss", *loss_term_names(rows)]
    columns = min(3, len(panels))
    lines = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(4.5 * columns, 3.2 * lines), squeeze=False)
    for axis, name in zip(axes.flat, panels):
        points = [(row["step"], row[name]) for row in rows if name in row and np.isfinite(row[name])]
        if points:
            steps, values = zip(*points)
            axis.plot(steps, values, linewidth=1.2, label="train")
        evaluated = [(row["step"], row[f"eval/{name}"]) for row in rows if f"eval/{name}" in row]
        if evaluated:
            steps, values = zip(*evaluated)
            axis.plot(steps, values, "o-", markersize=3, label="eval")
            axis.legend(fontsize=8)
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("step")
        if points and min(values for _, values in points) > 0:
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


class Throughput:
    """Examples/s and tokens/s between two logging points (wall clock, includes input and host work)."""

    def __init__(self):
        self._start = time.perf_counter()
        self._examples = 0
        self._tokens = 0

    def add(self, examples: int, tokens: int) -> None:
        self._examples += examples
        self._tokens += tokens

    def read(self) -> dict[str, float]:
        """The rates since the last read (or since the start); counting starts again from now."""
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        rates = {"examples_per_s": self._examples / elapsed, "tokens_per_s": self._tokens / elapsed}
        self.__init__()
        return rates


class StepRate:
    """Steps/s since the stage (re)started: the cached heads-only stage's steps (embed_jax/train/stages/cached.py)
    read no records, so examples/s would say nothing its step rate does not."""

    def __init__(self):
        self._start = time.perf_counter()
        self._steps = 0

    def add(self, examples: int, tokens: int) -> None:
        del examples, tokens
        self._steps += 1

    def read(self) -> dict[str, float]:
        return {"steps_per_s": self._steps / max(time.perf_counter() - self._start, 1e-9)}
