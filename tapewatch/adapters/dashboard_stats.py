"""The dashboard's statistics over finished signals, aggregated in PostgreSQL: performance per symbol, per
tier and overall with the equity curve; win rate by quality band and the calibration of ``confidence``.

The database returns counts and sums per group (a :class:`tapewatch.metrics.Tally` and the moments of the
daily R series), a few hundred rows whatever the period, so a page stays fast with 100,000 signals stored;
the definitions (win rate, Sharpe, drawdown, bands, calibration) are the pure ones of
:mod:`tapewatch.metrics` and :mod:`tapewatch.signal_stats`. What SQL counts mirrors :func:`metrics.tally`:
a signal is *triggered* when it has a trigger time, a *win* when triggered with ``pnl_r > 0``; a test checks
both give the same numbers. Every function raises :class:`~tapewatch.errors.StorageUnavailable` when
PostgreSQL cannot be reached.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tapewatch.adapters.db import Database
from tapewatch.metrics import DAY_MS, Summary, Tally, sharpe_from_sums, summary_of
from tapewatch.quality import TIERS
from tapewatch.signal_stats import Band, calibration, drawdowns, equity_curve, quality_bands, sharpe_day_count

# Sorting and hashing 100,000 rows needs more than PostgreSQL's default 4 MB (it spills to disk): for this
# transaction only.
_WORK_MEM = "SET LOCAL work_mem = '64MB'"
# The finished ENTRY signals of a period (and tier): what every query here aggregates.
_FINISHED = """
    FROM signals s JOIN signal_outcomes o ON o.signal_id = s.signal_id
    WHERE s.signal_type = 'ENTRY' AND o.finished AND s.event_time >= :since AND s.event_time < :until
      AND (CAST(:tier AS text) IS NULL OR s.priority = CAST(:tier AS text))
"""
_TALLY = """
    count(*), count(o.trigger_time),
    count(*) FILTER (WHERE o.trigger_time IS NOT NULL AND o.pnl_r > 0),
    count(o.exit_time - o.trigger_time), sum(o.exit_time - o.trigger_time),
    sum(o.pnl_r), sum(o.pnl_pct), sum(s.quality_score)
"""
# Per group (level 1: a symbol, 2: a tier, 3: everything) the tally summed over its days, and the moments
# of its daily R series (sum of squares, first and last day) for the Sharpe ratio.
_PERFORMANCE = f"""
WITH days AS (
    SELECT GROUPING(s.symbol, s.priority) AS level, s.symbol, s.priority AS tier, s.event_time / {DAY_MS} AS day,
        count(*) AS n, count(o.trigger_time) AS triggered,
        count(*) FILTER (WHERE o.trigger_time IS NOT NULL AND o.pnl_r > 0) AS wins,
        count(o.exit_time - o.trigger_time) AS holds, sum(o.exit_time - o.trigger_time) AS hold_ms,
        sum(o.pnl_r) AS r, sum(o.pnl_pct) AS pct, sum(s.quality_score) AS quality
    {_FINISHED}
    GROUP BY GROUPING SETS ((s.symbol, day), (s.priority, day), (day))
)
SELECT level, symbol, tier, sum(n), sum(triggered), sum(wins), sum(holds), sum(hold_ms), sum(r), sum(pct),
    sum(quality), sum(r * r), min(day), max(day), count(*)
FROM days GROUP BY level, symbol, tier
"""
# (symbol, tier, time, R) in the order the signals ended: the drawdowns and the equity curve walk it.
_ENDED = f"""
SELECT s.symbol, s.priority, coalesce(o.exit_time, s.event_time), o.pnl_r
{_FINISHED}
ORDER BY o.exit_time NULLS FIRST, s.event_time, s.signal_id
"""
# Per quality score (GROUPING level 3), and per confidence bucket of the triggered or untriggered (level 4): a tally,
# the TP1 hits and the summed confidence of the triggered signals.
_CONF_BUCKET = "floor(s.confidence * 10)::int"
_QUALITY = f"""
SELECT GROUPING(s.quality_score, {_CONF_BUCKET}, o.trigger_time IS NOT NULL) AS level, s.quality_score,
    {_CONF_BUCKET}, o.trigger_time IS NOT NULL, {_TALLY},
    count(o.tp1_time) FILTER (WHERE o.trigger_time IS NOT NULL),
    coalesce(sum(s.confidence) FILTER (WHERE o.trigger_time IS NOT NULL), 0)
{_FINISHED}
GROUP BY GROUPING SETS ((s.quality_score), ({_CONF_BUCKET}, o.trigger_time IS NOT NULL))
"""
_POINTS = f"""
SELECT s.priority, s.quality_score, o.pnl_r
{_FINISHED}
ORDER BY o.exit_time DESC NULLS LAST, s.event_time DESC, s.signal_id DESC
LIMIT :limit
"""


@dataclass(frozen=True, slots=True)
class GroupSummary:
    """The spec 9.1 summary of one group (a symbol or a tier)."""

    key: str
    summary: Summary


@dataclass(frozen=True, slots=True)
class Performance:
    """A period's performance: overall, per symbol and per tier (best total R first), the equity curve in
    cumulative R by exit time (thinned), and how many days the Sharpe ratios run over."""

    overall: Summary
    by_symbol: list[GroupSummary]
    by_tier: list[GroupSummary]
    curve: list[tuple[int, float]]
    sharpe_days: int


def _params(since_ms: int, until_ms: int, tier: str | None) -> dict[str, Any]:
    if tier is not None and tier not in TIERS:
        raise ValueError(f"tier must be one of {', '.join(TIERS)}; got {tier!r}")
    if until_ms <= since_ms:
        raise ValueError(f"empty period: until ({until_ms}) must be after since ({since_ms})")
    return {"since": since_ms, "until": until_ms, "tier": tier}


def _tally(values: Sequence[Any]) -> Tally:
    """A tally from the 8 columns of :data:`_TALLY` (sums of nothing are NULL)."""
    n, triggered, wins, holds, hold_ms, r, pct, quality = values
    return Tally(
        signals=int(n),
        triggered=int(triggered),
        wins=int(wins),
        holds=int(holds),
        hold_ms_total=float(hold_ms or 0),
        total_r=float(r or 0),
        total_pct=float(pct or 0),
        quality_total=float(quality or 0),
    )


def performance(
    db: Database,
    since_ms: int,
    until_ms: int,
    *,
    open_ended: bool = False,
    tier: str | None = None,
    max_points: int = 1500,
) -> Performance:
    """The performance of the finished ENTRY signals created in ``[since_ms, until_ms)`` (of ``tier`` only
    when given). Sharpe ratios run over every UTC day of the period (days without signals count 0 R), or,
    when ``open_ended`` ("all time"), from the first to the last day with a signal. ValueError for an unknown
    tier or an empty period."""
    params = _params(since_ms, until_ms, tier)
    with db.begin() as conn:
        conn.execute(sa.text(_WORK_MEM))
        groups = conn.execute(sa.text(_PERFORMANCE), params).all()
        ended = conn.execute(sa.text(_ENDED), params).all()
    overall_row = next((g for g in groups if g[0] == 3), None)
    if overall_row is None:  # no finished signal in the period
        return Performance(Summary(), [], [], [], 0)
    first_day, last_day = int(overall_row[12]), int(overall_row[13])
    days = sharpe_day_count(
        since_ms, until_ms, open_ended=open_ended, first_ms=first_day * DAY_MS, last_ms=last_day * DAY_MS
    )
    dd = drawdowns((symbol, t, r) for symbol, t, _, r in ended)

    def summary(row: Sequence[Any], drawdown: float) -> Summary:
        t = _tally(row[3:11])
        sharpe = sharpe_from_sums(days, t.total_r, float(row[11] or 0), int(row[14]))
        return summary_of(t, sharpe=sharpe, max_drawdown_r=drawdown)

    by_symbol = [GroupSummary(g[1], summary(g, dd.by_symbol.get(g[1], 0.0))) for g in groups if g[0] == 1]
    by_tier = [GroupSummary(g[2], summary(g, dd.by_tier.get(g[2], 0.0))) for g in groups if g[0] == 2]
    return Performance(
        overall=summary(overall_row, dd.overall),
        by_symbol=_best_first(by_symbol),
        by_tier=_best_first(by_tier),
        curve=equity_curve(((t, r) for _, _, t, r in ended), max_points),
        sharpe_days=days,
    )


def _best_first(groups: list[GroupSummary]) -> list[GroupSummary]:
    return sorted(groups, key=lambda g: (-g.summary.total_pnl_r, g.key))


def quality(db: Database, since_ms: int, until_ms: int) -> tuple[list[Band], list[Band]]:
    """Win rate by quality band (every band, empty ones included) and the calibration of ``confidence``
    (the deciles with triggered signals, measured over those only) of the finished ENTRY signals created in
    ``[since_ms, until_ms)``."""
    params = _params(since_ms, until_ms, None)
    with db.begin() as conn:
        conn.execute(sa.text(_WORK_MEM))
        rows = conn.execute(sa.text(_QUALITY), params).all()
    by_score = [(int(r[1]), _tally(r[4:12]), int(r[12]), float(r[13])) for r in rows if r[0] == 3]
    by_confidence = [
        (int(r[2]), _tally(r[4:12]), int(r[12]), float(r[13])) for r in rows if r[0] == 4 and r[3]
    ]
    return quality_bands(by_score), calibration(by_confidence)


def quality_points(
    db: Database, since_ms: int, until_ms: int, limit: int = 2000
) -> list[tuple[str, int, float]]:
    """``(tier, quality score, pnl_r)`` of the last ``limit`` finished ENTRY signals of the period to end."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1; got {limit}")
    with db.begin() as conn:
        rows = conn.execute(sa.text(_POINTS), {**_params(since_ms, until_ms, None), "limit": limit})
        return [(str(t), int(q), float(r)) for t, q, r in rows]


__all__ = ["GroupSummary", "Performance", "performance", "quality", "quality_points"]
