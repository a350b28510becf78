"""Charts drawn on the server as inline SVG: no JavaScript and no CDN, so every page renders
offline and fast. Each function returns markup safe to place in a template."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from markupsafe import Markup

WIDTH = 640
BAR_HEIGHT = 22
GAP = 8
LABEL_WIDTH = 200
VALUE_WIDTH = 150
TITLE_HEIGHT = 22


@dataclass
class Bar:
    label: str
    value: float
    highlight: bool = False
    note: str = ""


def bar_chart(title: str, bars: list[Bar], unit: str = "", digits: int = 4) -> Markup:
    """Horizontal bars, highlighted ones in the accent colour, the value and a note at the
    end of each bar. Bars start at zero (negative values extend left of the axis)."""
    if not bars:
        return Markup("")
    low = min(0.0, *(b.value for b in bars))
    high = max(0.0, *(b.value for b in bars))
    span = (high - low) or 1.0
    plot = WIDTH - LABEL_WIDTH - VALUE_WIDTH
    zero = LABEL_WIDTH + (0.0 - low) / span * plot
    height = TITLE_HEIGHT + len(bars) * (BAR_HEIGHT + GAP) + GAP
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
        f'height="{height}" aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f'<text class="heading" x="0" y="15">{escape(title)}</text>'
    ]
    for i, bar in enumerate(bars):
        y = TITLE_HEIGHT + GAP + i * (BAR_HEIGHT + GAP)
        x_end = LABEL_WIDTH + (bar.value - low) / span * plot
        left, width = min(zero, x_end), max(abs(x_end - zero), 1.0)
        css = "bar best" if bar.highlight else "bar"
        text = f"{bar.value:.{digits}g}{unit}" + (f" {bar.note}" if bar.note else "")
        parts.append(
            f'<text class="label" x="{LABEL_WIDTH - 6}" y="{y + BAR_HEIGHT * 0.7:.1f}" '
            f'text-anchor="end">{escape(bar.label)}</text>'
            f'<rect class="{css}" x="{left:.1f}" y="{y}" width="{width:.1f}" '
            f'height="{BAR_HEIGHT}"><title>{escape(bar.label)}: {escape(text)}</title></rect>'
            f'<text class="value" x="{max(x_end, zero) + 4:.1f}" '
            f'y="{y + BAR_HEIGHT * 0.7:.1f}">{escape(text)}</text>'
        )
    parts.append(
        f'<line class="axis" x1="{zero:.1f}" y1="{TITLE_HEIGHT}" x2="{zero:.1f}" '
        f'y2="{height}"/></svg>'
    )
    return Markup("".join(parts))


PALETTE = ("#0b5cad", "#c4540c", "#2f7d32", "#8a3ffc", "#a40e26", "#007d79", "#6f6f6f")
LINE_WIDTH, LINE_HEIGHT, MARGIN = 640, 260, 44


@dataclass
class Series:
    name: str
    points: list[tuple[float, float]]
    """(x, y) pairs; x is a step, an epoch second or an index."""
    highlight: bool = False


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    if high == low:
        return [low]
    return [low + (high - low) * i / count for i in range(count + 1)]


def line_chart(
    title: str,
    series: list[Series],
    x_label: str = "",
    y_label: str = "",
    x_format: str = "{:.0f}",
) -> Markup:
    """Lines with markers and a legend (several runs, experiments or templates). A
    highlighted series is drawn thicker. `x_format` formats the x-axis tick labels."""
    points = [p for s in series for p in s.points]
    if not points:
        return Markup("")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_low, x_high, y_low, y_high = min(xs), max(xs), min(ys), max(ys)
    if y_high == y_low:
        y_low, y_high = y_low - 0.5, y_high + 0.5
    legend_height = 18 * len(series)
    height = LINE_HEIGHT + legend_height
    plot_w, plot_h = LINE_WIDTH - 2 * MARGIN, LINE_HEIGHT - 2 * MARGIN

    def sx(x: float) -> float:
        return MARGIN + (0.5 if x_high == x_low else (x - x_low) / (x_high - x_low)) * plot_w

    def sy(y: float) -> float:
        return MARGIN + plot_h - (y - y_low) / (y_high - y_low) * plot_h

    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {LINE_WIDTH} {height}" '
        f'width="{LINE_WIDTH}" height="{height}" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
        f'<line class="axis" x1="{MARGIN}" y1="{MARGIN + plot_h}" x2="{MARGIN + plot_w}" '
        f'y2="{MARGIN + plot_h}"/><line class="axis" x1="{MARGIN}" y1="{MARGIN}" '
        f'x2="{MARGIN}" y2="{MARGIN + plot_h}"/>'
    ]
    for y in _ticks(y_low, y_high):
        parts.append(
            f'<text class="label" x="{MARGIN - 4}" y="{sy(y) + 4:.1f}" text-anchor="end">'
            f"{y:.3g}</text>"
        )
    for x in _ticks(x_low, x_high):
        parts.append(
            f'<text class="label" x="{sx(x):.1f}" y="{MARGIN + plot_h + 16}" '
            f'text-anchor="middle">{escape(x_format.format(x))}</text>'
        )
    if x_label:
        parts.append(
            f'<text class="label" x="{MARGIN + plot_w / 2}" y="{MARGIN + plot_h + 32}" '
            f'text-anchor="middle">{escape(x_label)}</text>'
        )
    if y_label:
        parts.append(f'<text class="label" x="4" y="{MARGIN - 12}">{escape(y_label)}</text>')
    for i, item in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        width = 3 if item.highlight else 1.5
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in sorted(item.points))
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="{width}" points="{path}">'
            f"<title>{escape(item.name)}</title></polyline>"
        )
        for x, y in item.points:
            parts.append(
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}">'
                f"<title>{escape(item.name)}: {escape(x_format.format(x))}, {y:.4g}</title>"
                "</circle>"
            )
        y = LINE_HEIGHT + 14 + 18 * i
        parts.append(
            f'<rect x="{MARGIN}" y="{y - 9}" width="12" height="4" fill="{colour}"/>'
            f'<text class="label" x="{MARGIN + 18}" y="{y}">{escape(item.name)}'
            f"{' (best)' if item.highlight else ''}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def column_chart(title: str, labels: list[str], values: list[float]) -> Markup:
    """Vertical bars (a histogram: one column per bin), each with its label under it."""
    if not values:
        return Markup("")
    top = max(values) or 1.0
    plot_w, plot_h = LINE_WIDTH - 2 * MARGIN, LINE_HEIGHT - 2 * MARGIN
    step = plot_w / len(values)
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {LINE_WIDTH} {LINE_HEIGHT}" '
        f'width="{LINE_WIDTH}" height="{LINE_HEIGHT}" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
    ]
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        height = value / top * plot_h
        x = MARGIN + i * step
        parts.append(
            f'<rect class="bar" x="{x + 1:.1f}" y="{MARGIN + plot_h - height:.1f}" '
            f'width="{max(step - 2, 1):.1f}" height="{height:.1f}">'
            f"<title>{escape(label)}: {value:g}</title></rect>"
        )
        if len(values) <= 12 or i % max(1, len(values) // 6) == 0:
            parts.append(
                f'<text class="label" x="{x + step / 2:.1f}" y="{MARGIN + plot_h + 14}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    parts.append(
        f'<line class="axis" x1="{MARGIN}" y1="{MARGIN + plot_h}" x2="{MARGIN + plot_w}" '
        f'y2="{MARGIN + plot_h}"/></svg>'
    )
    return Markup("".join(parts))
