"""The dashboard's statistics over finished signals, aggregated in PostgreSQL: performance per symbol, per
tier and overall with the equity curve; win rate by quality band and the calibration of ``confidence``.

The database returns counts and sums per group (a :class:`tapewatch.metrics.Tally` and the moments of the
daily R series), the max drawdown per group (window functions over the signals in the order they ended) and
the equity curve already thinned: a few hundred rows, and at most ``max_points`` curve points, whatever the
period, so a page stays fast with 100,000 signals stored. The definitions (win rate, Sharpe, drawdown, the
curve's thinning, bands, calibration) are the pure ones of :mod:`tapewatch.metrics` and
:mod:`tapewatch.signal_stats`, and tests check that SQL gives the same numbers. What SQL counts mirrors
:func:`metrics.tally`: a signal is *triggered* when it has a trigger time, a *win* when triggered with
``pnl_r > 0``. Every function raises :class:`~tapewatch.errors.StorageUnavailable` when
PostgreSQL cannot be reached.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import sqlalchemy as sa

from tapewatch.adapters.db import Database
from tapewatch.metrics import DAY_MS, Summary, Tally, sharpe_from_sums, summary_of
from tapewatch.quality import TIERS
from tapewatch.signal_stats import (
    Band,
    Drawdowns,
    calibration,
    equity_runs,
    quality_bands,
    sharpe_day_count,
)

# Sorting and hashing 100,000 rows needs more than PostgreSQL's default 4 MB (it spills to disk): for this
# transaction only.
_WORK_MEM = "SET LOCAL work_mem = '64MB'"
# One snapshot for all the statements of :func:`performance`: the curve is split by the count of signals the
# first one found, and the drawdowns must be those of the signals counted.
_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
# The finished ENTRY signals of a period (and tier): what every query here aggregates.
_FINISHED = """
    FROM signals s JOIN signal_outcomes o ON o.signal_id = s.signal_id
    WHERE s.signal_type = 'ENTRY' AND o.finished AND s.event_time >= :since AND s.event_time < :until
      AND (CAST(:tier AS text) IS NULL OR s.priority = CAST(:tier AS text))
"""
# The first and last UTC day with a finished signal in the period, whatever the tier filter: an "all time"
# Sharpe ratio runs over those days for every tier, so a tier's figure is the same in the tier grid and filtered.
_SPAN = f"SELECT min(s.event_time) / {DAY_MS}, max(s.event_time) / {DAY_MS} {_FINISHED}"
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
    sum(quality), sum(r * r), min(day), max(day), count(*) FILTER (WHERE triggered > 0)
FROM days GROUP BY level, symbol, tier
"""
# The order the signals ended, which the drawdowns and the equity curve walk (the pure definitions in
# tapewatch.signal_stats take their rows in this order; a test checks that both give the same results).
_ENDED_ORDER = "o.exit_time NULLS FIRST, s.event_time, s.signal_id"
# Cumulative R per tier, a column each: a running sum in the overall order that only the tier's own signals
# add to (FILTER). It stays put between them, so its largest gap below its peak is the tier's own drawdown,
# without a sort per tier (the tiers are few).
_TIER_R = ", ".join(
    f"sum(o.pnl_r) FILTER (WHERE s.priority = '{tier}') OVER w AS r_{k}" for k, tier in enumerate(TIERS)
)
_TIER_GAPS = ", ".join(f"greatest(max(r_{k}) OVER w, 0) - r_{k} AS gap_{k}" for k in range(len(TIERS)))
# The max drawdown overall, per tier (in TIERS order) and per symbol, as :func:`metrics.max_drawdown` defines
# it: cumulative R in the order the signals ended, its running peak (from 0), the largest gap between them.
# One sort in that order serves everything but the symbols (``overall`` reads ``ended`` as sorted), one sort
# by symbol serves theirs (compared as bytes: only the grouping matters). GROUPING 0: a symbol, 1: the rest.
_DRAWDOWNS = f"""
WITH ended AS (
    SELECT s.symbol COLLATE "C" AS symbol, o.exit_time, s.event_time, s.signal_id, row_number() OVER w AS i,
        o.pnl_r AS r, sum(o.pnl_r) OVER w AS r_all, {_TIER_R}
    {_FINISHED}
    WINDOW w AS (ORDER BY {_ENDED_ORDER} ROWS UNBOUNDED PRECEDING)
), overall AS (
    SELECT symbol, i, r, greatest(max(r_all) OVER w, 0) - r_all AS gap_all, {_TIER_GAPS}
    FROM ended WINDOW w AS (ORDER BY exit_time NULLS FIRST, event_time, signal_id ROWS UNBOUNDED PRECEDING)
), by_symbol AS (
    SELECT *, sum(r) OVER (PARTITION BY symbol ORDER BY i ROWS UNBOUNDED PRECEDING) AS r_symbol FROM overall
), gaps AS (
    SELECT *,
        greatest(max(r_symbol) OVER (PARTITION BY symbol ORDER BY i ROWS UNBOUNDED PRECEDING), 0) - r_symbol
            AS gap_symbol
    FROM by_symbol
)
SELECT GROUPING(symbol), symbol, max(gap_symbol), max(gap_all),
    {", ".join(f"max(gap_{k})" for k in range(len(TIERS)))}
FROM gaps GROUP BY GROUPING SETS ((symbol), ())
"""
# The equity curve thinned as :func:`signal_stats.equity_curve` thins it, as ``[equity, i, time]`` arrays
# (i: 0 to :n - 1 in the order the signals ended): the first and the last point (groups of their own), and
# the lowest and the highest of each of :runs runs of the points between them (``low``: the lowest i of the
# lowest equity; ``high`` carries -i so that the highest equity's earliest point wins). The arrays are float8,
# exact for these times and indexes.
_CURVE = f"""
WITH curve AS (
    SELECT sum(o.pnl_r) OVER w AS equity, row_number() OVER w - 1 AS i, coalesce(o.exit_time, s.event_time) AS t
    {_FINISHED}
    WINDOW w AS (ORDER BY {_ENDED_ORDER} ROWS UNBOUNDED PRECEDING)
)
SELECT min(ARRAY[equity, i, t]) AS low, max(ARRAY[equity, -i, t]) AS high
FROM curve WHERE :runs > 0 OR i = 0 OR i = :n - 1
GROUP BY CASE WHEN i = 0 OR i = :n - 1 THEN -1 - i ELSE i * :runs / :n END
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
    when ``open_ended`` ("all time"), from the first to the last day with a signal of any tier (so a tier's ratio
    is the same filtered and in the tier grid). The equity curve is thinned
    to at most ``max_points`` points as :func:`signal_stats.equity_curve` does. ValueError for an unknown tier,
    an empty period or ``max_points`` below 2."""
    params = _params(since_ms, until_ms, tier)
    equity_runs(0, max_points)  # ValueError for a bad max_points, before any query
    with db.begin() as conn:
        conn.execute(sa.text(_SNAPSHOT))
        conn.execute(sa.text(_WORK_MEM))
        groups = conn.execute(sa.text(_PERFORMANCE), params).all()
        overall_row = next((g for g in groups if g[0] == 3), None)
        if overall_row is None:  # no finished signal in the period
            return Performance(Summary(), [], [], [], 0)
        dd = _drawdowns(conn.execute(sa.text(_DRAWDOWNS), params).all())
        n = int(overall_row[3])
        curve = _curve(conn.execute(sa.text(_CURVE), {**params, "n": n, "runs": equity_runs(n, max_points)}))
        first_day, last_day = int(overall_row[12]), int(overall_row[13])
        if open_ended and tier is not None:
            first_day, last_day = map(int, conn.execute(sa.text(_SPAN), {**params, "tier": None}).one())
    days = sharpe_day_count(
        since_ms, until_ms, open_ended=open_ended, first_ms=first_day * DAY_MS, last_ms=last_day * DAY_MS
    )

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
        curve=curve,
        sharpe_days=days,
    )


def _drawdowns(rows: Iterable[Sequence[Any]]) -> Drawdowns:
    """The drawdowns from the rows of :data:`_DRAWDOWNS`: one per symbol, then overall and per tier."""
    by_symbol: dict[str, float] = {}
    by_tier: dict[str, float] = {}
    overall = 0.0
    for row in rows:
        if row[0] == 0:
            by_symbol[str(row[1])] = float(row[2])
        else:
            overall = float(row[3] or 0)
            by_tier = {tier: float(gap or 0) for tier, gap in zip(TIERS, row[4:], strict=True)}
    return Drawdowns(overall=overall, by_symbol=by_symbol, by_tier=by_tier)


def _curve(rows: Iterable[Sequence[Any]]) -> list[tuple[int, float]]:
    """``(time, cumulative R)`` in the order the signals ended from the ``[equity, ±i, time]`` arrays of
    :data:`_CURVE` (a run's lowest and highest may be one point)."""
    kept: dict[int, tuple[int, float]] = {}
    for point in chain.from_iterable(rows):
        if point is not None:
            equity, i, t = point
            kept[abs(int(i))] = (int(t), float(equity))
    return [kept[i] for i in sorted(kept)]


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
