"""Statistics the dashboard shows over finished signals: per symbol/tier summaries, the equity curve in R,
win rate by quality band and the calibration of ``confidence``. Pure: plain rows in, plain records out.

The math is spec 9.1's, from :mod:`tapewatch.metrics` (the same definitions as the daily reports):

- **win rate** = triggered signals with P&L > 0 R after fees ÷ triggered signals;
- **total / average R** over the group's finished signals (average per signal);
- **Sharpe** = mean ÷ sample stdev of the group's daily R series over the period × √365 (days without a
  signal count 0; none with fewer than 2 days or no variation);
- **max drawdown** = the largest fall of the cumulative R curve (signals in the order they ended);
- **calibration**: ``confidence`` predicts the chance a triggered signal reaches TP1 before its stop, so per
  confidence decile the observed TP1 rate among triggered signals is set against the mean confidence.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from tapewatch.adapters.dashboard_queries import FinishedSignal
from tapewatch.metrics import DAY_MS, EPOCH, day_of, max_drawdown, sharpe_ratio

#: Quality bands of the Quality page (lower bounds; signals start at 50).
QUALITY_BANDS = (50, 60, 70, 80, 90)


@dataclass(frozen=True, slots=True)
class GroupStats:
    """Performance of one group (a symbol, a tier, or everything) over a period."""

    key: str
    signals: int
    triggered: int
    wins: int
    win_rate: float | None
    total_r: float
    avg_r: float | None
    pnl_pct: float
    sharpe: float | None
    max_drawdown_r: float
    avg_hold_min: float | None


def _daily_series(rows: Sequence[FinishedSignal], first: date, last: date) -> list[float]:
    # days as integers (epoch days): the same days as metrics.day_of, without a date object per row
    start = (first - EPOCH).days
    series = [0.0] * ((last - first).days + 1)
    for row in rows:
        i = row.created_ms // DAY_MS - start
        if 0 <= i < len(series):
            series[i] += row.pnl_r
    return series


def summarize_group(key: str, rows: Sequence[FinishedSignal], first: date, last: date) -> GroupStats:
    """The stats of ``rows`` (finished signals in the order they ended), Sharpe over ``first``..``last``."""
    triggered = [r for r in rows if r.trigger_ms is not None]
    wins = sum(1 for r in triggered if r.pnl_r > 0)
    holds = [
        r.exit_ms - r.trigger_ms for r in triggered if r.exit_ms is not None and r.trigger_ms is not None
    ]
    total = math.fsum(r.pnl_r for r in rows)
    return GroupStats(
        key=key,
        signals=len(rows),
        triggered=len(triggered),
        wins=wins,
        win_rate=wins / len(triggered) if triggered else None,
        total_r=total,
        avg_r=total / len(rows) if rows else None,
        pnl_pct=math.fsum(r.pnl_pct for r in rows),
        sharpe=sharpe_ratio(_daily_series(rows, first, last)) if first <= last else None,
        max_drawdown_r=max_drawdown(r.pnl_r for r in rows),
        avg_hold_min=statistics.fmean(holds) / 60_000 if holds else None,
    )


def period_days(rows: Sequence[FinishedSignal], since_ms: int, until_ms: int) -> tuple[date, date]:
    """The days a Sharpe ratio runs over: the period's, narrowed to the days that have signals when the
    period is open-ended ("all time" starts at 0)."""
    first, last = day_of(since_ms), day_of(max(since_ms, until_ms - 1))
    if rows:
        created = [r.created_ms for r in rows]
        first = max(first, day_of(min(created)))
        last = min(last, day_of(max(created)))
    return first, last


def group_by(
    rows: Sequence[FinishedSignal], key: Callable[[FinishedSignal], str], first: date, last: date
) -> list[GroupStats]:
    """One :class:`GroupStats` per distinct ``key`` of the rows (order of rows kept within each group),
    best total R first."""
    groups: dict[str, list[FinishedSignal]] = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    stats = [summarize_group(k, members, first, last) for k, members in groups.items()]
    return sorted(stats, key=lambda s: (-s.total_r, s.key))


def equity_curve(rows: Iterable[FinishedSignal], max_points: int = 1500) -> list[tuple[int, float]]:
    """Cumulative R after each finished signal, at its exit time (ms), thinned to at most ``max_points``
    points (evenly, always keeping the last, so the curve's end is exact)."""
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2; got {max_points}")
    points: list[tuple[int, float]] = []
    total = 0.0
    for row in rows:
        total += row.pnl_r
        points.append((row.exit_ms if row.exit_ms is not None else row.created_ms, total))
    if len(points) <= max_points:
        return points
    step = len(points) / (max_points - 1)
    thinned = [points[int(i * step)] for i in range(max_points - 1)]
    thinned.append(points[-1])
    return thinned


@dataclass(frozen=True, slots=True)
class Band:
    """Win rate and R of the finished signals whose value falls in ``[low, high)``."""

    label: str
    low: float
    high: float
    signals: int
    triggered: int
    win_rate: float | None
    avg_r: float | None
    tp1_rate: float | None
    mean_confidence: float | None


def _band(label: str, low: float, high: float, members: Sequence[FinishedSignal]) -> Band:
    triggered = [r for r in members if r.trigger_ms is not None]
    return Band(
        label=label,
        low=low,
        high=high,
        signals=len(members),
        triggered=len(triggered),
        win_rate=sum(1 for r in triggered if r.pnl_r > 0) / len(triggered) if triggered else None,
        avg_r=math.fsum(r.pnl_r for r in members) / len(members) if members else None,
        tp1_rate=sum(1 for r in triggered if r.tp1_ms is not None) / len(triggered) if triggered else None,
        mean_confidence=statistics.fmean(r.confidence for r in members) if members else None,
    )


def quality_bands(rows: Sequence[FinishedSignal]) -> list[Band]:
    """Per quality band (50–59, …, 90–100), the win rate and average R of its finished signals."""
    bands: list[Band] = []
    for i, low in enumerate(QUALITY_BANDS):
        high = QUALITY_BANDS[i + 1] if i + 1 < len(QUALITY_BANDS) else 101
        members = [r for r in rows if low <= r.quality_score < high]
        bands.append(_band(f"{low}–{high - 1}", low, high, members))
    return bands


def calibration(rows: Sequence[FinishedSignal]) -> list[Band]:
    """Per confidence decile that has signals: mean confidence against the observed TP1 rate of its
    triggered signals (a calibrated confidence lies on the diagonal)."""
    deciles: dict[int, list[FinishedSignal]] = defaultdict(list)
    for row in rows:
        deciles[min(9, max(0, int(row.confidence * 10)))].append(row)
    return [
        _band(f"{d / 10:.1f}–{(d + 1) / 10:.1f}", d / 10, (d + 1) / 10, deciles[d]) for d in sorted(deciles)
    ]


__all__ = [
    "QUALITY_BANDS",
    "Band",
    "GroupStats",
    "calibration",
    "equity_curve",
    "group_by",
    "period_days",
    "quality_bands",
    "summarize_group",
]
