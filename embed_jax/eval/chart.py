"""The evaluation's bar chart (results.png beside results.md): one panel per task metric (the table's columns), one
horizontal bar per model × head, its value written at the bar's end.

Small multiples rather than one grouped chart: an evaluation with asymmetric and quantised rows has 30+ rows
(docs/RESULTS.md's has 36), which a grouped chart turns into bars too thin to read and a legend taller than the
figure. Here every row is named once, on the shared y axis, and each panel has its own x range, so the WordNet
metrics (~0.1) are as legible as Lee's (~0.9). The rows of one model share a colour; quantised rows are lighter."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

QUANTISED_SUFFIXES = (" · int8", " · binary")  # report.write_chart's row labels (docs/eval.md, quantised rows)
ROW_INCHES, PANEL_INCHES, LABEL_INCHES = 0.24, 2.3, 4.0


def model_of(label: str) -> str:
    """The model part of a row label ('MODEL · HEAD[ · QUANTISATION]')."""
    return label.split(" · ")[0]


def plot_results(columns: Sequence[str], rows: Sequence[tuple[str, Sequence[float | None]]], path: Path) -> Path:
    """columns: metric titles; rows: (model and head label, one value per column, None where not scored)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a TPU VM
    import matplotlib.pyplot as plt

    labels = [label for label, _ in rows]
    models = list(dict.fromkeys(model_of(label) for label in labels))
    palette = plt.get_cmap("tab10" if len(models) <= 10 else "tab20").colors
    colours = [palette[models.index(model_of(label)) % len(palette)] for label in labels]
    lighter = [label.endswith(QUANTISED_SUFFIXES) for label in labels]
    figure, axes = plt.subplots(1, max(len(columns), 1), sharey=True, squeeze=False,
                                figsize=(LABEL_INCHES + PANEL_INCHES * len(columns),
                                         max(2.5, ROW_INCHES * len(rows) + 1.2)))
    for column, (axis, title) in enumerate(zip(axes[0], columns)):
        values = [row_values[column] for _, row_values in rows]
        top = max((value for value in values if value is not None), default=0.0)
        for position, value in enumerate(values):
            if value is None:
                continue
            axis.barh(position, value, color=colours[position], alpha=0.5 if lighter[position] else 1.0)
            axis.annotate(f"{value:.3f}", (value, position), xytext=(2, 0), textcoords="offset points",
                          va="center", fontsize=6)
        axis.set_xlim(0, top * 1.3 if top > 0 else 1.0)  # room for the value written at the longest bar's end
        axis.set_title(title, fontsize=9)
        axis.tick_params(axis="x", labelsize=7)
        axis.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(labels)), labels, fontsize=7)
    axes[0][0].invert_yaxis()  # the table's first row at the top, as in results.md
    figure.supxlabel("score (higher is better)", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
