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
    height = len(bars) * (BAR_HEIGHT + GAP) + GAP
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
        f'height="{height}" aria-label="{escape(title)}"><title>{escape(title)}</title>'
    ]
    for i, bar in enumerate(bars):
        y = GAP + i * (BAR_HEIGHT + GAP)
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
    parts.append(f'<line class="axis" x1="{zero:.1f}" y1="0" x2="{zero:.1f}" y2="{height}"/></svg>')
    return Markup("".join(parts))
