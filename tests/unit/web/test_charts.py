"""Server-side SVG charts: what the user reads off them is in the markup (titles, labels,
the best bar marked) and text is escaped."""

from __future__ import annotations

import re

import pytest

from mlops.web.charts import Bar, Series, bar_chart, column_chart, line_chart


def test_bar_chart_marks_the_best_and_scales_to_the_largest() -> None:
    svg = str(bar_chart("accuracy", [Bar("v1", 0.5), Bar("v2", 0.25, highlight=True, note="x")]))
    assert svg.startswith('<svg class="chart" role="img"') and 'aria-label="accuracy"' in svg
    widths = [
        float(w)
        for w in re.findall(r'<rect class="bar[^"]*" x="[^"]+" y="[^"]+" width="([^"]+)"', svg)
    ]
    assert widths[0] == 2 * widths[1]
    assert svg.count('class="bar best"') == 1 and "0.25 x" in svg


def test_negative_values_extend_left_of_the_axis() -> None:
    svg = str(bar_chart("r2", [Bar("a", -1.0), Bar("b", 1.0)]))
    xs = [float(x) for x in re.findall(r'<rect class="bar" x="([^"]+)"', svg)]
    axis = float(re.search(r'<line class="axis" x1="([^"]+)"', svg).group(1))  # type: ignore[union-attr]
    assert xs[0] < axis <= xs[1] + 0.1


def test_line_chart_draws_each_series_with_a_legend() -> None:
    svg = str(
        line_chart(
            "cv_roc_auc",
            [Series("run a", [(0, 0.5), (1, 0.6)]), Series("run b", [(0, 0.4)], highlight=True)],
            x_label="step",
        )
    )
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 3
    assert "run a" in svg and "run b (best)" in svg and ">step<" in svg
    assert line_chart("empty", []) == ""


def test_column_chart_and_escaping() -> None:
    svg = str(column_chart("<hist>", ["a<b", "c"], [1.0, 3.0]))
    assert "&lt;hist&gt;" in svg and "a&lt;b" in svg and "<hist>" not in svg
    heights = [float(h) for h in re.findall(r'height="([^"]+)"><title>', svg)]
    assert heights[1] == pytest.approx(3 * heights[0], rel=0.01)
