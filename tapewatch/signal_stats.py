"""Statistics of finished signals by group, as the dashboard shows them: the days a period's Sharpe ratio
runs over, drawdowns per group, the equity curve, win rate by quality band and the calibration of
``confidence``. Pure: the counts and sums come in (from SQL or from :func:`tapewatch.metrics.tally`), the
definitions are :mod:`tapewatch.metrics`'s.

- **Sharpe days**: a chosen period (24 h, 7 days, ...) runs over every UTC day it touches, days without a
  signal counting 0 R; only an open-ended period ("all") is narrowed to the first and last day with a signal.
- **Calibration**: ``confidence`` is the chance that a *triggered* signal reaches TP1 before its stop
  (:func:`tapewatch.trade_plan.confidence`), so each confidence decile is measured over its triggered signals
  only: mean confidence (x) against the share that reached TP1 (y), with their count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from tapewatch.metrics import DAY_MS, Tally, max_drawdown

#: Quality bands of the Quality page and the reports (lower bounds; the last band ends at 100). Signals start
#: at 50 unless ``quality_low_min`` is lowered: the first band holds what is below 50, and is shown only then.
QUALITY_BANDS = (0, 50, 60, 70, 80, 90)
#: Confidence deciles: 0 holds [0, 0.1), ..., 9 holds [0.9, 1.0].
DECILES = 10


def sharpe_day_count(since_ms: int, until_ms: int, *, open_ended: bool, first_ms: int, last_ms: int) -> int:
    """How many daily R values the Sharpe ratio of signals created in ``[since_ms, until_ms)`` runs over.

    A chosen period counts every UTC day it touches; an open-ended one (``open_ended``: "all time") only the
    days from the first (``first_ms``) to the last (``last_ms``) signal's creation. ValueError for an empty
    period."""
    if until_ms <= since_ms:
        raise ValueError(f"empty period: until ({until_ms}) must be after since ({since_ms})")
    if open_ended:
        if last_ms < first_ms:
            raise ValueError(f"last signal ({last_ms}) before the first ({first_ms})")
        return last_ms // DAY_MS - first_ms // DAY_MS + 1
    return (until_ms - 1) // DAY_MS - since_ms // DAY_MS + 1


@dataclass(frozen=True, slots=True)
class Drawdowns:
    """Max drawdown in R overall, per symbol and per tier (signals in the order they ended)."""

    overall: float = 0.0
    by_symbol: dict[str, float] = field(default_factory=dict)
    by_tier: dict[str, float] = field(default_factory=dict)


def drawdowns(rows: Iterable[tuple[str, str, float]]) -> Drawdowns:
    """The drawdowns of ``(symbol, tier, pnl_r)`` rows given in the order the signals ended."""
    everything: list[float] = []
    symbols: dict[str, list[float]] = {}
    tiers: dict[str, list[float]] = {}
    for symbol, tier, r in rows:
        everything.append(r)
        symbols.setdefault(symbol, []).append(r)
        tiers.setdefault(tier, []).append(r)
    return Drawdowns(
        overall=max_drawdown(everything),
        by_symbol={k: max_drawdown(v) for k, v in symbols.items()},
        by_tier={k: max_drawdown(v) for k, v in tiers.items()},
    )


def equity_runs(n: int, max_points: int) -> int:
    """Into how many runs :func:`equity_curve` splits the points of an ``n``-point curve that lie between its
    first and its last: ``n`` when ``n <= max_points`` (a point each: every point is kept), else
    ``(max_points - 2) // 2`` (two points kept of each, the first and the last besides). ValueError below 2."""
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2; got {max_points}")
    return n if n <= max_points else (max_points - 2) // 2


def equity_curve(points: Iterable[tuple[int, float]], max_points: int = 1500) -> list[tuple[int, float]]:
    """Cumulative R after each ``(time ms, pnl_r)`` point (given in the order the signals ended), thinned to
    at most ``max_points`` points so that its shape survives: the first and the last point (the curve's end is
    exact), and of the points between them, split by position into :func:`equity_runs` runs (point ``i`` of
    ``n`` is in run ``i * runs // n``), each run's lowest and highest, the earliest on ties. Peaks and troughs
    stay: a drawdown whose peak and trough fall in different runs is drawn to its full depth (one within a
    run shows as that run's range)."""
    curve: list[tuple[int, float]] = []
    total = 0.0
    for t, r in points:
        total += r
        curve.append((t, total))
    n = len(curve)
    runs = equity_runs(n, max_points)
    if n <= max_points:
        return curve
    lowest: dict[int, int] = {}
    highest: dict[int, int] = {}
    for i in range(1, n - 1) if runs else ():
        run, equity = i * runs // n, curve[i][1]
        if run not in lowest or equity < curve[lowest[run]][1]:
            lowest[run] = i
        if run not in highest or equity > curve[highest[run]][1]:
            highest[run] = i
    kept = {0, n - 1, *lowest.values(), *highest.values()}
    return [curve[i] for i in sorted(kept)]


@dataclass(frozen=True, slots=True)
class Band:
    """A group of finished signals whose value (quality, or confidence) falls in ``[low, high)``: its
    :class:`Tally`, and among its triggered signals how many reached TP1 and their summed confidence."""

    label: str
    low: float
    high: float
    tally: Tally
    tp1_hits: int = 0
    confidence_total: float = 0.0

    @property
    def tp1_rate(self) -> float | None:
        """Share of the triggered signals that reached TP1 before their stop."""
        return self.tp1_hits / self.tally.triggered if self.tally.triggered else None

    @property
    def mean_confidence(self) -> float | None:
        """Mean confidence of the triggered signals."""
        return self.confidence_total / self.tally.triggered if self.tally.triggered else None


def quality_band(score: float) -> int:
    """The index in :data:`QUALITY_BANDS` of a quality score (0: below 50)."""
    index = 0
    for i, low in enumerate(QUALITY_BANDS):
        if score >= low:
            index = i
    return index


def band_bounds(index: int) -> tuple[int, int]:
    """``[low, high)`` of a quality band (the last one's high is 101: a score of 100 is in it)."""
    low = QUALITY_BANDS[index]
    return low, (QUALITY_BANDS[index + 1] if index + 1 < len(QUALITY_BANDS) else 101)


def band_label(index: int) -> str:
    """``<50``, ``50–59``, ..., ``90–100``: labels that do not overlap."""
    low, high = band_bounds(index)
    return f"<{high}" if index == 0 else f"{low}–{high - 1}"


def shown_bands(counts: dict[int, int]) -> list[int]:
    """The band indexes to show, given the signals in each: every band, but "<50" only when it holds some."""
    return [i for i in range(len(QUALITY_BANDS)) if i > 0 or counts.get(i, 0)]


def _merged(groups: Iterable[tuple[int, Tally, int, float]]) -> dict[int, tuple[Tally, int, float]]:
    merged: dict[int, tuple[Tally, int, float]] = {}
    for key, t, tp1, conf in groups:
        old = merged.get(key, (Tally(), 0, 0.0))
        merged[key] = (old[0] + t, old[1] + tp1, old[2] + conf)
    return merged


def quality_bands(groups: Iterable[tuple[int, Tally, int, float]]) -> list[Band]:
    """Every quality band (50–59, ..., 90–100, empty ones included; <50 when it holds signals) from groups of
    finished signals given as ``(quality score, tally, TP1 hits of the triggered, confidence total of the
    triggered)``."""
    found = _merged((quality_band(score), t, tp1, conf) for score, t, tp1, conf in groups)
    bands: list[Band] = []
    for i in shown_bands({i: t.signals for i, (t, _, _) in found.items()}):
        t, tp1, conf = found.get(i, (Tally(), 0, 0.0))
        bands.append(Band(band_label(i), *band_bounds(i), t, tp1, conf))
    return bands


def decile(bucket: int) -> int:
    """The confidence decile (0..9) of ``floor(confidence × 10)`` (a confidence of 1.0 is in the top one)."""
    return min(DECILES - 1, max(0, bucket))


def calibration(groups: Iterable[tuple[int, Tally, int, float]]) -> list[Band]:
    """The confidence deciles that have triggered signals, lowest first, from groups of *triggered* signals
    given as ``(floor(confidence × 10), tally, TP1 hits, confidence total)``. ValueError for a group holding
    untriggered signals: the calibration must not mix them in."""
    found = _merged((decile(bucket), t, tp1, conf) for bucket, t, tp1, conf in groups)
    bands: list[Band] = []
    for d in sorted(found):
        t, tp1, conf = found[d]
        if t.triggered != t.signals:
            raise ValueError(f"decile {d}: calibration is over triggered signals only; got {t}")
        if t.triggered:
            bands.append(Band(f"{d / 10:.1f}–{(d + 1) / 10:.1f}", d / 10, (d + 1) / 10, t, tp1, conf))
    return bands


__all__ = [
    "DECILES",
    "QUALITY_BANDS",
    "Band",
    "Drawdowns",
    "band_bounds",
    "band_label",
    "calibration",
    "decile",
    "drawdowns",
    "equity_curve",
    "equity_runs",
    "quality_band",
    "quality_bands",
    "sharpe_day_count",
    "shown_bands",
]
