"""Performance metrics of finished signals (spec 9.1), daily and weekly, per tier and overall. Pure.

Definitions (the README repeats them for operators):

- A signal belongs to the **UTC day (and week) of its creation** event time.
- ``signals_generated``: signals issued; ``signals_triggered``: those whose entry traded within the response
  window. A **win** is a triggered signal whose P&L in R after fees is above 0; ``win_rate = wins /
  triggered`` (None when none triggered). A TP1-then-entry "break-even" is a win (half closed at +1 R).
- ``average_hold_minutes``: mean time from trigger to end over triggered signals.
- ``total_pnl_r`` / ``total_pnl_pct``: sums of the signals' P&L in R and in % of capital (no compounding).
- **Sharpe ratio**: of the daily R series (the sum of ``pnl_r`` of each UTC day's signals, a day without
  signals counting 0): ``mean / sample stdev (n-1) × sqrt(365)`` — crypto trades every day of the year, and the
  risk-free rate is 0 (R is already excess over flat). None with no variation, or with fewer than
  ``MIN_SHARPE_SIGNAL_DAYS`` (5) days *with signals* in the window: one day of v among N empty ones always
  gives sign(v)·sqrt(365/N) (−3.49 for a single losing day in 30), a number that says nothing. The daily
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
import operator
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import accumulate
from typing import Protocol

import msgspec

from tapewatch.outcome import Outcome
from tapewatch.quality import TIERS, Tier

DAY_MS = 86_400_000
EPOCH = date(1970, 1, 1)
#: Periods per year of the daily series, for the Sharpe ratio.
DAYS_PER_YEAR = 365
#: Fewest UTC days with at least one signal in a Sharpe window for the ratio to be given (None below): with
#: k active days among N the ratio is a function of those k values and N, an artefact for small k.
MIN_SHARPE_SIGNAL_DAYS = 5


class Finished(Protocol):
    """A finished signal as the metrics see it (an :class:`Outcome` through :func:`finished_view`, or a row
    read by the dashboard): times in ms of event time, P&L after fees."""

    @property
    def created_ms(self) -> int: ...
    @property
    def trigger_ms(self) -> int | None: ...
    @property
    def exit_ms(self) -> int | None: ...
    @property
    def pnl_r(self) -> float: ...
    @property
    def pnl_pct(self) -> float: ...
    @property
    def quality_score(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Tally:
    """Counts and sums over a group of finished signals: everything a :class:`Summary` derives from except
    the Sharpe ratio and the drawdown (which need the daily series and the order the signals ended).

    ``triggered``: signals with a trigger time; ``wins``: triggered with ``pnl_r > 0``; ``holds`` /
    ``hold_ms_total``: triggered signals with an exit time and the sum of their trigger→exit times."""

    signals: int = 0
    triggered: int = 0
    wins: int = 0
    holds: int = 0
    hold_ms_total: float = 0.0
    total_r: float = 0.0
    total_pct: float = 0.0
    quality_total: float = 0.0

    def __add__(self, other: Tally) -> Tally:
        """The tally of both groups together (they must not share signals)."""
        return Tally(
            signals=self.signals + other.signals,
            triggered=self.triggered + other.triggered,
            wins=self.wins + other.wins,
            holds=self.holds + other.holds,
            hold_ms_total=self.hold_ms_total + other.hold_ms_total,
            total_r=self.total_r + other.total_r,
            total_pct=self.total_pct + other.total_pct,
            quality_total=self.quality_total + other.quality_total,
        )

    @property
    def win_rate(self) -> float | None:
        """``wins / triggered``; None when none triggered."""
        return self.wins / self.triggered if self.triggered else None

    @property
    def average_r(self) -> float | None:
        """Total R per signal (None without signals)."""
        return self.total_r / self.signals if self.signals else None

    @property
    def average_hold_minutes(self) -> float | None:
        return self.hold_ms_total / self.holds / 60_000 if self.holds else None

    @property
    def mean_quality(self) -> float | None:
        return self.quality_total / self.signals if self.signals else None


class _OutcomeView:
    """An :class:`Outcome` seen as a :class:`Finished`."""

    __slots__ = ("_o",)

    def __init__(self, outcome: Outcome) -> None:
        self._o = outcome

    @property
    def created_ms(self) -> int:
        return self._o.signal.created

    @property
    def trigger_ms(self) -> int | None:
        return self._o.trigger_time

    @property
    def exit_ms(self) -> int | None:
        return self._o.exit_time

    @property
    def pnl_r(self) -> float:
        return self._o.pnl_r

    @property
    def pnl_pct(self) -> float:
        return self._o.pnl_pct

    @property
    def quality_score(self) -> float:
        return self._o.signal.quality_score


def finished_view(outcome: Outcome) -> Finished:
    """``outcome`` as a :class:`Finished` (no copy)."""
    return _OutcomeView(outcome)


def tally(rows: Iterable[Finished]) -> Tally:
    """The :class:`Tally` of ``rows`` (each counted once; the caller decides which rows belong)."""
    signals = triggered = wins = holds = 0
    hold_total = 0.0
    r: list[float] = []
    pct: list[float] = []
    quality = 0.0
    for row in rows:
        signals += 1
        r.append(row.pnl_r)
        pct.append(row.pnl_pct)
        quality += row.quality_score
        if row.trigger_ms is not None:
            triggered += 1
            wins += row.pnl_r > 0
            if row.exit_ms is not None:
                holds += 1
                hold_total += row.exit_ms - row.trigger_ms
    return Tally(
        signals=signals,
        triggered=triggered,
        wins=wins,
        holds=holds,
        hold_ms_total=hold_total,
        total_r=math.fsum(r),
        total_pct=math.fsum(pct),
        quality_total=quality,
    )


def summary_of(t: Tally, *, sharpe: float | None, max_drawdown_r: float) -> Summary:
    """The :class:`Summary` of a tallied group, with its Sharpe ratio and drawdown computed by the caller."""
    return Summary(
        signals_generated=t.signals,
        signals_triggered=t.triggered,
        wins=t.wins,
        win_rate=t.win_rate,
        average_hold_minutes=t.average_hold_minutes,
        total_pnl_r=t.total_r,
        total_pnl_pct=t.total_pct,
        sharpe_ratio=sharpe,
        max_drawdown_r=max_drawdown_r,
        mean_quality=t.mean_quality,
    )


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    """Spec 9.1 daily block for a set of signals (see the module docstring for each definition)."""

    signals_generated: int = 0
    signals_triggered: int = 0
    wins: int = 0
    win_rate: float | None = None
    average_hold_minutes: float | None = None
    total_pnl_r: float = 0.0
    total_pnl_pct: float = 0.0
    sharpe_ratio: float | None = None
    max_drawdown_r: float = 0.0
    mean_quality: float | None = None

    @property
    def average_r(self) -> float | None:
        """Total R per signal generated (None without signals)."""
        return self.total_pnl_r / self.signals_generated if self.signals_generated else None

    def to_spec(self) -> dict[str, float | int | None]:
        """The keys of spec 9.1 ``PERFORMANCE_METRICS['daily']`` (hold in minutes, P&L and drawdown in R),
        plus ``total_pnl_pct``."""
        return {
            "signals_generated": self.signals_generated,
            "signals_triggered": self.signals_triggered,
            "win_rate": self.win_rate,
            "average_hold_time": self.average_hold_minutes,
            "total_pnl": self.total_pnl_r,
            "total_pnl_pct": self.total_pnl_pct,
            "sharpe_ratio": self.sharpe_ratio,
            "max_drawdown": self.max_drawdown_r,
        }


class DailyMetrics(msgspec.Struct, frozen=True, kw_only=True):
    day: date
    overall: Summary
    by_tier: dict[Tier, Summary]


class SymbolTotal(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    signals: int
    total_r: float


class WeeklyMetrics(msgspec.Struct, frozen=True, kw_only=True):
    week_start: date
    overall: Summary
    by_tier: dict[Tier, Summary]
    best_symbols: tuple[SymbolTotal, ...]
    worst_symbols: tuple[SymbolTotal, ...]
    strategy_efficiency: float | None
    win_rate_trend: float | None
    quality_trend: float | None


def day_of(event_time: int) -> date:
    """The UTC date of an event time in ms."""
    return EPOCH + timedelta(days=event_time // DAY_MS)


def sharpe_ratio(daily_r: Sequence[float]) -> float | None:
    """``mean / sample stdev × sqrt(365)`` of a daily R series; None below 2 days or without variation."""
    if len(daily_r) < 2:
        return None
    spread = statistics.stdev(daily_r)
    if spread == 0 or not math.isfinite(spread):
        return None
    return statistics.fmean(daily_r) / spread * math.sqrt(DAYS_PER_YEAR)


def sharpe_from_sums(days: int, total: float, total_sq: float, signal_days: int) -> float | None:
    """:func:`sharpe_ratio` of a daily R series given only its length, its sum and its sum of squares (days
    without signals add 0 to both): what a database can aggregate. None below 2 days, without variation, or
    with fewer than :data:`MIN_SHARPE_SIGNAL_DAYS` of the days having a signal (``signal_days``), as
    :func:`window_sharpe`."""
    if days < 2 or signal_days < MIN_SHARPE_SIGNAL_DAYS:
        return None
    mean = total / days
    variance = (total_sq - days * mean * mean) / (days - 1)
    # the sums lose the exact zero of a constant series: a variance at rounding level is none
    if not math.isfinite(variance) or variance <= 1e-12 * max(total_sq / days, 1e-300):
        return None
    return mean / math.sqrt(variance) * math.sqrt(DAYS_PER_YEAR)


def max_drawdown(pnl_r: Iterable[float]) -> float:
    """Largest fall of the cumulative sum of ``pnl_r`` (from 0) below its running peak, >= 0."""
    # C-level loops (the dashboard runs this over 100,000 signals): the curve from 0, its running peak, the
    # largest gap between them
    curve = list(accumulate(pnl_r, initial=0.0))
    return float(max(map(operator.sub, accumulate(curve, max), curve)))


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(x, y)`` points; None with fewer than 2 distinct x."""
    if len(points) < 2:
        return None
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def daily_r(outcomes: Iterable[Outcome], first: date, last: date) -> list[float]:
    """R per UTC day from ``first`` to ``last`` inclusive (0 for a day without signals)."""
    by_day: dict[date, float] = defaultdict(float)
    for o in outcomes:
        by_day[day_of(o.signal.created)] += o.pnl_r
    return [by_day[first + timedelta(days=i)] for i in range((last - first).days + 1)]


def window_sharpe(outcomes: Sequence[Outcome], first: date, last: date) -> float | None:
    """:func:`sharpe_ratio` of the daily R of ``outcomes`` from ``first`` to ``last``; None when fewer than
    :data:`MIN_SHARPE_SIGNAL_DAYS` of those days have a signal (see the module docstring)."""
    if len({day_of(o.signal.created) for o in outcomes}) < MIN_SHARPE_SIGNAL_DAYS:
        return None
    return sharpe_ratio(daily_r(outcomes, first, last))


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
