"""Small self-contained SVG charts for the reports: a line, horizontal bars, a scatter. Pure.

Each function returns one ``<svg>`` element as text: no script, no external font or stylesheet, so a
report opens offline in any browser (inline in HTML, or as an ``.svg`` file a Markdown file links to).
Every chart has a ``<title>`` and text labels; an empty data set gives a chart that says "no data".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

WIDTH = 640
HEIGHT = 260
_PAD_LEFT, _PAD_RIGHT, _PAD_TOP, _PAD_BOTTOM = 56, 16, 30, 36
_FAMILY = 'font-family="Helvetica, Arial, sans-serif"'
_FONT = f'{_FAMILY} font-size="11"'
POSITIVE = "#1a7f37"
NEGATIVE = "#cf222e"
NEUTRAL = "#0969da"


def _open(title: str, height: int = HEIGHT) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        f'<text x="{WIDTH / 2:.0f}" y="18" text-anchor="middle" {_FAMILY} font-size="13" '
        f'font-weight="bold">{escape(title)}</text>',
    ]


def _empty(title: str) -> str:
    parts = _open(title, 80)
    parts.append(
        f'<text x="{WIDTH / 2:.0f}" y="50" text-anchor="middle" {_FONT} fill="#57606a">no data</text>'
    )
    return "\n".join([*parts, "</svg>"])


def _span(values: Sequence[float], include_zero: bool) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if include_zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 1.0, hi + 1.0
    margin = (hi - lo) * 0.05
    return lo - margin, hi + margin


def _axes(
    parts: list[str], y_lo: float, y_hi: float, y_label: str, x_label: str, fmt: Callable[[float], str]
) -> Callable[[float], float]:
    """Draw the frame, 5 y ticks and the axis labels; return the y → pixel map."""
    top, bottom = _PAD_TOP, HEIGHT - _PAD_BOTTOM
    left, right = _PAD_LEFT, WIDTH - _PAD_RIGHT

    def y_px(v: float) -> float:
        return bottom - (v - y_lo) / (y_hi - y_lo) * (bottom - top)

    parts.append(f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" '
                 'stroke="#d0d7de"/>')  # fmt: skip
    for i in range(5):
        v = y_lo + (y_hi - y_lo) * i / 4
        y = y_px(v)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#eaeef2"/>')
        parts.append(
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" {_FONT}>{escape(fmt(v))}</text>'
        )
    if y_lo < 0 < y_hi:
        y0 = y_px(0.0)
        parts.append(f'<line x1="{left}" y1="{y0:.1f}" x2="{right}" y2="{y0:.1f}" stroke="#57606a"/>')
    parts.append(f'<text x="{(left + right) / 2:.0f}" y="{HEIGHT - 8}" text-anchor="middle" {_FONT}>'
                 f"{escape(x_label)}</text>")  # fmt: skip
    parts.append(f'<text x="12" y="{(top + bottom) / 2:.0f}" text-anchor="middle" {_FONT} '
                 f'transform="rotate(-90 12 {(top + bottom) / 2:.0f})">{escape(y_label)}</text>')  # fmt: skip
    return y_px


def _num(v: float) -> str:
    return f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"


def line_chart(values: Sequence[float], title: str, *, x_label: str, y_label: str) -> str:
    """A line through ``values`` at x = 0, 1, 2, ... (starting from a 0 point: an equity curve)."""
    if not values:
        return _empty(title)
    series = [0.0, *values]
    parts = _open(title)
    y_px = _axes(parts, *_span(series, include_zero=True), y_label, x_label, _num)
    left, right = _PAD_LEFT, WIDTH - _PAD_RIGHT
    step = (right - left) / max(1, len(series) - 1)
    points = " ".join(f"{left + i * step:.1f},{y_px(v):.1f}" for i, v in enumerate(series))
    colour = POSITIVE if series[-1] >= 0 else NEGATIVE
    parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
    parts.append(f'<text x="{right - 4}" y="{_PAD_TOP + 14}" text-anchor="end" {_FONT} fill="{colour}">'
                 f"last {series[-1]:+.2f}</text>")  # fmt: skip
    return "\n".join([*parts, "</svg>"])


def bar_chart(
    items: Sequence[tuple[str, float]],
    title: str,
    *,
    fmt: Callable[[float], str] = _num,
    max_value: float | None = None,
) -> str:
    """Horizontal bars, one per ``(label, value)`` in the given order; values >= 0 (a negative is drawn
    as 0 with its label). ``max_value`` fixes the scale (1.0 for rates)."""
    if not items:
        return _empty(title)
    bar, gap = 18, 6
    height = _PAD_TOP + len(items) * (bar + gap) + 12
    parts = _open(title, height)
    label_w = 150
    left, right = label_w + 8, WIDTH - 70
    top_value = max_value if max_value is not None else max(max(v for _, v in items), 1e-12)
    for i, (label, value) in enumerate(items):
        y = _PAD_TOP + i * (bar + gap)
        width = max(0.0, min(value, top_value)) / top_value * (right - left) if top_value > 0 else 0.0
        parts.append(f'<text x="{label_w}" y="{y + 13}" text-anchor="end" {_FONT}>{escape(label)}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{width:.1f}" height="{bar}" fill="{NEUTRAL}"/>')
        parts.append(f'<text x="{left + width + 4:.1f}" y="{y + 13}" {_FONT}>{escape(fmt(value))}</text>')
    return "\n".join([*parts, "</svg>"])


def scatter_chart(points: Sequence[tuple[float, float]], title: str, *, x_label: str, y_label: str) -> str:
    """Dots at ``(x, y)``; green above y = 0, red at or below (quality score vs P&L in R)."""
    clean = [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]
    if not clean:
        return _empty(title)
    parts = _open(title)
    y_px = _axes(parts, *_span([y for _, y in clean], include_zero=True), y_label, x_label, _num)
    x_lo, x_hi = _span([x for x, _ in clean], include_zero=False)
    left, right = _PAD_LEFT, WIDTH - _PAD_RIGHT
    for tick in range(5):
        v = x_lo + (x_hi - x_lo) * tick / 4
        x = left + (v - x_lo) / (x_hi - x_lo) * (right - left)
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - _PAD_BOTTOM + 14}" text-anchor="middle" {_FONT}>'
                     f"{v:.0f}</text>")  # fmt: skip
    for x_val, y_val in clean:
        x = left + (x_val - x_lo) / (x_hi - x_lo) * (right - left)
        colour = POSITIVE if y_val > 0 else NEGATIVE
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y_px(y_val):.1f}" r="4" fill="{colour}" fill-opacity="0.7"/>'
        )
    return "\n".join([*parts, "</svg>"])


__all__ = ["bar_chart", "line_chart", "scatter_chart"]
