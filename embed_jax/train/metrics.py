"""Where training metrics go: a progress bar on the console, TensorBoard event files, metrics.jsonl, and a PNG of the
loss curves at the end. Only process 0 writes; every process computes the same (global) values.
"""
from __future__ import annotations

import json
import math
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
        self._jsonl = (self.workdir / "metrics.jsonl").open("a")
        from tensorboardX import SummaryWriter  # pure Python; writes event files TensorBoard reads

        self._tensorboard = SummaryWriter(str(self.workdir / "tensorboard"))
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total_steps, initial=start_step, desc=title, unit="step", dynamic_ncols=True,
                         smoothing=0.1)

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.is_writer:
            return
        row = {"step": step, **{name: float(value) for name, value in scalars.items()}}
        self.rows.append(row)
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
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


def loss_term_names(rows: list[Mapping[str, float]]) -> list[str]:
    """The unweighted loss terms ('dense_1152/cosine', ...) present in the rows, in a stable order."""
    names = {name for row in rows for name in row if "/" in name and not name.startswith("eval/")}
    return sorted(names)


def plot_losses(rows: list[Mapping[str, float]], path: str | Path, *, title: str) -> None:
    """One panel for the total loss and one per loss term, log-scale y, eval points overlaid where present."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a TPU VM
    import matplotlib.pyplot as plt

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
    """Steps/s since the stage (re)started: the cached heads-only stage's steps (embed_jax/train/cached_stage.py)
    read no records, so examples/s would say nothing its step rate does not."""

    def __init__(self):
        self._start = time.perf_counter()
        self._steps = 0

    def add(self, examples: int, tokens: int) -> None:
        del examples, tokens
        self._steps += 1

    def read(self) -> dict[str, float]:
        return {"steps_per_s": self._steps / max(time.perf_counter() - self._start, 1e-9)}
