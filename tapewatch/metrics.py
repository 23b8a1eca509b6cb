"""Performance metrics of finished signals (spec 9.1), daily and weekly, per tier and overall. Pure.

Definitions (the README repeats them for operators):

- A signal belongs to the **UTC day (and week) of its creation** event time.
- ``signals_generated``: signals issued; ``signals_triggered``: those whose entry traded within the response
  window. A **win** is a triggered signal whose P&L in R after fees is above 0; ``win_rate = wins /
  triggered`` (None when none triggered). A TP1-then-entry "break-even" is a win only when the half closed at
  TP1 covers the fees of both halves (+0.30 R at a 0.5 % stop with 0.05 % a side, −0.0003 R at 0.2 %).
- ``average_hold_minutes``: mean time from trigger to end over triggered signals.
- ``total_pnl_r`` / ``total_pnl_pct``: sums of the signals' P&L in R and in % of capital (no compounding).
- **Sharpe ratio**: of the daily R series (the sum of ``pnl_r`` of each UTC day's signals, a day without
  signals counting 0): ``mean / sample stdev (n-1) × sqrt(365)`` — crypto trades every day of the year, and the
  risk-free rate is 0 (R is already excess over flat). None with no variation, or with fewer than
  ``MIN_SHARPE_SIGNAL_DAYS`` (5) days *with a triggered signal* in the window: one day of v among N empty
  ones always gives sign(v)·sqrt(365/N) (−3.49 for a single losing day in 30), a number that says nothing,
  and a day whose signals never triggered adds exactly 0 R, as an empty one does. The daily
  block uses the trailing ``sharpe_days`` (30) days ending at its day, the weekly block its 7 days,
  :func:`summarize` the days from the first to the last signal (or the range given).
- **From SQL**: a consumer that aggregates in the database (the dashboard) computes a :class:`Tally` (counts
  and sums) per group and the daily R moments, and derives the same :class:`Summary` through
  :func:`summary_of` and :func:`sharpe_from_sums`; row-level code passes any :class:`Finished` to :func:`tally`.
- **Max drawdown**: the largest fall of the cumulative R curve (starting at 0, signals in the order they
  ended) below an earlier peak, as a positive number of R.
- Weekly: ``best_symbols`` / ``worst_symbols``: the ``top_n`` (3) symbols with the highest positive / lowest
  negative total R (ties by name); a symbol at exactly 0 R is in neither, no symbol is in both, and either
  list may be short or empty (a week of losses has no best symbol). ``strategy_efficiency``: total R
  per signal generated. Trends: least-squares slope, per week, of the weekly win rate and of the weekly mean
  quality score over the ``trend_weeks`` (8) weeks ending with this one (weeks without data are left out;
  None with fewer than 2 points).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date, timedelta

from tapewatch.metrics_series import (
    DAY_MS,
    DAYS_PER_YEAR,
    EPOCH,
    MIN_SHARPE_SIGNAL_DAYS,
    daily_r,
    day_of,
    max_drawdown,
    sharpe_from_sums,
    sharpe_ratio,
    sharpe_signal_days,
    slope,
    window_sharpe,
)
from tapewatch.metrics_tally import Finished, Tally, finished_view, summary_of, tally
from tapewatch.metrics_types import DailyMetrics, Summary, SymbolTotal, WeeklyMetrics
from tapewatch.outcome import Outcome
from tapewatch.quality import TIERS, Tier

# the records, tallies and series statistics live in metrics_types, metrics_tally and metrics_series and are
# re-exported here
__all__ = [
    "DAYS_PER_YEAR",
    "DAY_MS",
    "EPOCH",
    "MIN_SHARPE_SIGNAL_DAYS",
    "DailyMetrics",
    "Finished",
    "Summary",
    "SymbolTotal",
    "Tally",
    "WeeklyMetrics",
    "best_and_worst",
    "daily_metrics",
    "daily_r",
    "day_of",
    "finished_view",
    "max_drawdown",
    "period_metrics",
    "sharpe_from_sums",
    "sharpe_ratio",
    "sharpe_signal_days",
    "slope",
    "summarize",
    "summary_of",
    "symbol_totals",
    "tally",
    "weekly_metrics",
    "window_sharpe",
]


def _finished(outcomes: Iterable[Outcome]) -> list[Outcome]:
    result = list(outcomes)
    for o in result:
        if not o.finished:
            raise ValueError(
                f"signal {o.signal.signal_id} ({o.signal.symbol}) is still {o.state}: metrics need finished"
                " outcomes"
            )
    return result


def _between(outcomes: Iterable[Outcome], first: date, last: date) -> list[Outcome]:
    return _finished(o for o in outcomes if first <= day_of(o.signal.created) <= last)


def _summary(members: Sequence[Outcome], sharpe: float | None) -> Summary:
    ended = sorted(members, key=lambda o: (o.exit_time or 0, o.signal.created, o.signal.signal_id))
    return summary_of(
        tally(finished_view(o) for o in members),
        sharpe=sharpe,
        max_drawdown_r=max_drawdown(o.pnl_r for o in ended),
    )


def summarize(
    outcomes: Iterable[Outcome], first_day: date | None = None, last_day: date | None = None
) -> Summary:
    """The summary of all ``outcomes`` (all must be finished; ValueError otherwise), Sharpe over the days
    ``first_day``..``last_day`` (default: the first and last day with a signal)."""
    members = _finished(outcomes)
    days = [day_of(o.signal.created) for o in members]
    first = first_day or (min(days) if days else None)
    last = last_day or (max(days) if days else None)
    sharpe = (
        window_sharpe([o for o in members if first <= day_of(o.signal.created) <= last], first, last)
        if first and last
        else None
    )
    return _summary(members, sharpe)


def _by_tier(
    members: Sequence[Outcome], window: Sequence[Outcome], first: date, last: date
) -> tuple[Summary, dict[Tier, Summary]]:
    overall = _summary(members, window_sharpe(window, first, last))
    by_tier = {
        tier: _summary(
            [o for o in members if o.signal.tier == tier],
            window_sharpe([o for o in window if o.signal.tier == tier], first, last),
        )
        for tier in TIERS
    }
    return overall, by_tier


def symbol_totals(outcomes: Iterable[Outcome]) -> list[SymbolTotal]:
    """Signals and total R per symbol, by symbol name."""
    totals: dict[str, list[float]] = defaultdict(list)
    for o in outcomes:
        totals[o.signal.symbol].append(o.pnl_r)
    return [SymbolTotal(symbol=s, signals=len(rs), total_r=math.fsum(rs)) for s, rs in sorted(totals.items())]


def best_and_worst(totals: Sequence[SymbolTotal], top_n: int) -> tuple[list[SymbolTotal], list[SymbolTotal]]:
    """Up to ``top_n`` symbols with the highest total R above 0 (best first) and up to ``top_n`` with the lowest
    below 0 (worst first), ties by name. Disjoint by construction: with few symbols a losing one is never
    listed as "best" nor a winning one as "worst"; a list is empty when no symbol qualifies."""
    best = sorted((t for t in totals if t.total_r > 0), key=lambda t: (-t.total_r, t.symbol))[:top_n]
    worst = sorted((t for t in totals if t.total_r < 0), key=lambda t: (t.total_r, t.symbol))[:top_n]
    return best, worst


def period_metrics(
    outcomes: Iterable[Outcome], first_day: date, last_day: date
) -> tuple[Summary, dict[Tier, Summary]]:
    """Overall and per-tier summaries of the signals created from ``first_day`` to ``last_day`` (inclusive),
    the Sharpe ratio over those days. Outcomes outside are ignored; those inside must be finished."""
    if last_day < first_day:
        raise ValueError(f"last_day {last_day} is before first_day {first_day}")
    members = _between(outcomes, first_day, last_day)
    return _by_tier(members, members, first_day, last_day)


def daily_metrics(outcomes: Iterable[Outcome], day: date, *, sharpe_days: int = 30) -> DailyMetrics:
    """The daily block of ``day`` (signals created that UTC day), overall and per tier; the Sharpe ratio over
    the ``sharpe_days`` days ending at ``day``. Outcomes outside that window are ignored; those inside must
    be finished (ValueError otherwise)."""
    if sharpe_days < 2:
        raise ValueError(f"sharpe_days must be >= 2; got {sharpe_days}")
    first = day - timedelta(days=sharpe_days - 1)
    window = _between(outcomes, first, day)
    members = [o for o in window if day_of(o.signal.created) == day]
    overall, by_tier = _by_tier(members, window, first, day)
    return DailyMetrics(day=day, overall=overall, by_tier=by_tier)


def weekly_metrics(
    outcomes: Iterable[Outcome], week_start: date, *, trend_weeks: int = 8, top_n: int = 3
) -> WeeklyMetrics:
    """The weekly block of the 7 days from ``week_start`` (see the module docstring); the trends look back
    ``trend_weeks`` weeks. Outcomes in that span must be finished (ValueError otherwise)."""
    if trend_weeks < 2 or top_n < 1:
        raise ValueError(f"need trend_weeks >= 2 and top_n >= 1; got {trend_weeks}, {top_n}")
    week_end = week_start + timedelta(days=6)
    span = _between(outcomes, week_start - timedelta(weeks=trend_weeks - 1), week_end)
    members = [o for o in span if week_start <= day_of(o.signal.created)]
    overall, by_tier = _by_tier(members, members, week_start, week_end)

    best, worst = best_and_worst(symbol_totals(members), top_n)

    win_points: list[tuple[float, float]] = []
    quality_points: list[tuple[float, float]] = []
    for k in range(-(trend_weeks - 1), 1):
        start = week_start + timedelta(weeks=k)
        week = [o for o in span if start <= day_of(o.signal.created) < start + timedelta(weeks=1)]
        summary = _summary(week, None)
        if summary.win_rate is not None:
            win_points.append((k, summary.win_rate))
        if summary.mean_quality is not None:
            quality_points.append((k, summary.mean_quality))

    return WeeklyMetrics(
        week_start=week_start,
        overall=overall,
        by_tier=by_tier,
        best_symbols=tuple(best),
        worst_symbols=tuple(worst),
        strategy_efficiency=overall.total_pnl_r / len(members) if members else None,
        win_rate_trend=slope(win_points),
        quality_trend=slope(quality_points),
    )
