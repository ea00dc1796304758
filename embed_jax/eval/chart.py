"""The evaluation's bar chart (results.png beside results.md): one group of bars per task metric (the table's
columns), one bar per model × head, the value written above each bar."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence


def plot_results(columns: Sequence[str], rows: Sequence[tuple[str, Sequence[float | None]]], path: Path) -> Path:
    """columns: metric titles; rows: (model and head label, one value per column, None where not scored)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a TPU VM
    import matplotlib.pyplot as plt

    width = 0.8 / max(len(rows), 1)
    # tab10 repeats after ten bars; quantised and asymmetric rows (docs/eval.md) easily make more.
    colours = plt.get_cmap("tab10" if len(rows) <= 10 else "tab20").colors
    figure, axis = plt.subplots(figsize=(min(16.0, max(6.0, 0.3 * len(columns) * len(rows) + 4)), 4.5))
    for number, (label, values) in enumerate(rows):
        positions = [column + (number - (len(rows) - 1) / 2) * width for column in range(len(columns))]
        heights = [value if value is not None else 0.0 for value in values]
        bars = axis.bar(positions, heights, width, label=label, color=colours[number % len(colours)])
        for bar, value in zip(bars, values):
            if value is not None:
                axis.annotate(f"{value:.2f}", (bar.get_x() + bar.get_width() / 2, value), ha="center",
                              va="bottom", fontsize=6, rotation=90 if len(rows) > 3 else 0)
    axis.set_xticks(range(len(columns)), columns, rotation=20, ha="right", fontsize=8)
    axis.set_ylim(0, 1.1)
    axis.set_ylabel("score (higher is better)")
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
