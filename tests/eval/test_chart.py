"""The evaluation's chart: one panel per metric, one named bar per row, however many rows (docs/eval.md)."""
import pytest
from PIL import Image

from embed_jax.eval import chart, report


def rows_of(count):
    return [chart.Bar(label=f"model{number // 3} · head{number % 3}" + (" · int8" if number % 3 == 2 else ""),
                      values=[0.5 + number / 100, None if number % 3 == 2 else 0.1], model=f"model{number // 3}",
                      quantised=number % 3 == 2) for number in range(count)]


def test_each_row_keeps_its_height_as_rows_are_added(tmp_path):
    few = Image.open(chart.plot_results(["Lee Spearman", "WN MRR@10"], rows_of(3), tmp_path / "few.png"))
    many = Image.open(chart.plot_results(["Lee Spearman", "WN MRR@10"], rows_of(36), tmp_path / "many.png"))
    assert many.width == few.width
    # 33 more rows at ROW_INCHES each (chart.py): the figure grows instead of the bars thinning
    assert many.height - few.height >= 0.9 * 33 * chart.ROW_INCHES * chart.DPI


@pytest.mark.slow
def test_the_chart_is_800_pixels_wide_however_many_metrics(tmp_path):
    """A page that shows it at 800 px (a Hub model card) shows it unscaled: the panels wrap into rows."""
    for count in (1, 6, 16):
        columns = [f"metric {number}" for number in range(count)]
        bars = [chart.Bar("a long model name /some/where/train (stage3) · 1152", [0.5] * count, "a")]
        image = Image.open(chart.plot_results(columns, bars, tmp_path / f"{count}.png"))
        assert image.width == 800, count


def test_rows_of_one_model_share_its_name():
    rows = [{"model": "runs/x", "head": head, "dim": 8, "default_head": head == "fc1", "metrics": {"t/spearman": 0.5},
             "mean": None, "holdout": {"status": "external"}, "source": {}, **extra}
            for head, extra in (("fc1", {}), ("fc1", {"precision": "int8"}))]
    results = {"tasks": {"t": {"description": "", "metrics": ["spearman"], "counts": {}}}, "headline": {"metrics": []},
               "rows": rows}
    bars = report.chart_bars(results)
    assert [bar.model for bar in bars] == ["runs/x", "runs/x"]
    assert [bar.quantised for bar in bars] == [False, True]
    assert bars[1].label.endswith(" · int8")


def test_a_column_nobody_scored_still_draws(tmp_path):
    path = chart.plot_results(["Lee Spearman"], [chart.Bar("a · fc1", [None], "a"), chart.Bar("b", [None], "b")],
                              tmp_path / "empty.png")
    assert path.stat().st_size > 1000
