"""The evaluation's bar chart (results.png beside results.md): one panel per task metric (the table's columns), one
horizontal bar per model × head, its value written at the bar's end.

Small multiples rather than one grouped chart: an evaluation with asymmetric and quantised rows has 30+ rows
(docs/RESULTS.md's has 36), which a grouped chart turns into bars too thin to read and a legend taller than the
figure. Here every row is named once, on the shared y axis, and each panel has its own x range, so the WordNet
metrics (~0.1) are as legible as Lee's (~0.9). The rows of one model share a colour; quantised rows are lighter."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

ROW_INCHES, PANEL_INCHES, LABEL_INCHES = 0.24, 2.3, 4.0


class Bar(NamedTuple):
    """One row of the table: its label, one value per column (None where not scored), the model it belongs to
    (its bars share a colour) and whether its vectors are quantised (drawn lighter)."""
    label: str
    values: Sequence[float | None]
    model: str
    quantised: bool = False


def plot_results(columns: Sequence[str], rows: Sequence[Bar], path: Path) -> Path:
    """columns: metric titles; rows: one Bar per table row, in the table's order."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a TPU VM
    import matplotlib.pyplot as plt

    labels = [row.label for row in rows]
    models = list(dict.fromkeys(row.model for row in rows))
    palette = plt.get_cmap("tab10" if len(models) <= 10 else "tab20").colors
    colours = [palette[models.index(row.model) % len(palette)] for row in rows]
    lighter = [row.quantised for row in rows]
    figure, axes = plt.subplots(1, max(len(columns), 1), sharey=True, squeeze=False,
                                figsize=(LABEL_INCHES + PANEL_INCHES * len(columns),
                                         max(2.5, ROW_INCHES * len(rows) + 1.2)))
    for column, (axis, title) in enumerate(zip(axes[0], columns)):
        values = [row.values[column] for row in rows]
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
