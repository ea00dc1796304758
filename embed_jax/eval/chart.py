"""The evaluation's bar chart (results.png beside results.md): one panel per task metric (the table's columns), one
horizontal bar per model × head, its value written at the bar's end.

Small multiples rather than one grouped chart: an evaluation with asymmetric and quantised rows has 30+ rows
(docs/RESULTS.md's has 36), which a grouped chart turns into bars too thin to read and a legend taller than the
figure. Here every row is named once, on the shared y axis, and each panel has its own x range, so the WordNet
metrics (~0.1) are as legible as Lee's (~0.9). The rows of one model share a colour; quantised rows are lighter.

The panels sit in a grid of COLUMNS columns, WIDTH_INCHES × DPI = 800 pixels wide whatever the number of metrics: a
page that shows the image at 800 px (a Hub model card) shows it at full size. In one row, 6 metrics made a 2,136-px
image that such a page scaled to 800 × 112 px, and 16 user-data metrics 4,896 px: unreadable. More metrics make the
image taller, never wider."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

ROW_INCHES, WIDTH_INCHES, DPI, COLUMNS = 0.2, 8.0, 100, 2
LABEL_CHARACTERS = 38  # a row's label is cut to this (the table has it whole): the labels' column stays ~2.4 in


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

    labels = [short_label(row.label) for row in rows]
    models = list(dict.fromkeys(row.model for row in rows))
    palette = plt.get_cmap("tab10" if len(models) <= 10 else "tab20").colors
    colours = [palette[models.index(row.model) % len(palette)] for row in rows]
    lighter = [row.quantised for row in rows]
    panels = max(len(columns), 1)
    grid_columns = min(COLUMNS, panels)
    grid_rows = -(-panels // grid_columns)
    figure, axes = plt.subplots(grid_rows, grid_columns, sharey=True, squeeze=False,
                                figsize=(WIDTH_INCHES, grid_rows * max(1.6, ROW_INCHES * len(rows) + 0.7) + 0.3))
    for column, axis in enumerate(axes.flat):
        if column >= len(columns):
            axis.set_visible(False)
            continue
        values = [row.values[column] for row in rows]
        top = max((value for value in values if value is not None), default=0.0)
        for position, value in enumerate(values):
            if value is None:
                continue
            axis.barh(position, value, color=colours[position], alpha=0.5 if lighter[position] else 1.0)
            axis.annotate(f"{value:.3f}", (value, position), xytext=(2, 0), textcoords="offset points",
                          va="center", fontsize=7)
        axis.set_xlim(0, top * 1.35 if top > 0 else 1.0)  # room for the value written at the longest bar's end
        axis.set_title(columns[column], fontsize=9)
        axis.tick_params(axis="x", labelsize=7)
        axis.grid(axis="x", alpha=0.3)
    for axis in axes[:, 0]:
        axis.set_yticks(range(len(labels)), labels, fontsize=7)
    axes[0][0].invert_yaxis()  # the table's first row at the top, as in results.md (shared by every panel)
    figure.supxlabel("score (higher is better)", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def short_label(label: str) -> str:
    """A label cut to LABEL_CHARACTERS, keeping its end (the head and precision) and eliding its middle."""
    if len(label) <= LABEL_CHARACTERS:
        return label
    keep = LABEL_CHARACTERS - 1
    return label[:keep // 2] + "…" + label[-(keep - keep // 2):]
