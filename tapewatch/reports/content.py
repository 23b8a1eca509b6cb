"""What a report says, as data: its period, its inputs, and the tables and series derived from them. Pure.

A report covers the signals **created** in its period (UTC days, ``first_day`` inclusive to ``end_day``
exclusive): daily (one day), weekly (Monday to Sunday), monthly (a calendar month). Only finished outcomes
count in the numbers; signals still open at report time are counted apart. The inputs may hold outcomes
from before the period (the look-back of the daily Sharpe ratio and of the weekly trends): see
:func:`lookback_start`.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Literal

import msgspec

from tapewatch.metrics import (
    Summary,
    SymbolTotal,
    best_and_worst,
    daily_metrics,
    day_of,
    period_metrics,
    sharpe_signal_days,
    summarize,
    symbol_totals,
    weekly_metrics,
)
from tapewatch.outcome import Outcome
from tapewatch.quality import TIERS, Tier
from tapewatch.signal_stats import band_bounds, band_label, quality_band, shown_bands

ReportKind = Literal["daily", "weekly", "monthly"]
REPORT_KINDS: tuple[ReportKind, ...] = ("daily", "weekly", "monthly")


class Incident(msgspec.Struct, frozen=True, kw_only=True):
    """A system incident overlapping the period: ``source`` is ``feed`` (market data) or ``health``
    (sensors). ``started`` / ``ended`` are wall-clock (when the service saw it), unlike the signals, which are
    dated by exchange event time; ``event_time`` is the event time of the frame that revealed a feed incident,
    when there was one (in the demo the simulator's clock runs ahead of the wall clock)."""

    source: str
    kind: str
    started: datetime
    ended: datetime | None = None
    symbol: str | None = None
    detail: str = ""
    event_time: datetime | None = None


class OperatorEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A change an operator made during the period (wall clock, UTC): an ``operator_actions`` row (``pause``,
    ``resume``, ``rescan``, ...; ``ok`` False when it failed) or a ``tuning_applications`` row (``action``
    ``tuning apply`` / ``tuning rollback``). A pause or a new tuning changes how many signals a period has, so
    the report says so."""

    at: datetime
    action: str
    detail: str = ""
    actor: str = ""
    ok: bool = True


class ReportInput(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a report is built from. ``outcomes`` are finished outcomes of signals created from
    :func:`lookback_start` to the period's end; ``open_signals`` the period's signals not finished yet, of
    which ``overdue_signals`` are past their last possible end (no outcome: neither the live tracker nor the
    outcome batch finished them);
    ``fates`` the period's candidates per fate (``signal`` or the rejection reason); ``operator_events`` the
    operators' changes during the period, oldest first, and ``paused_at_start`` whether an operator's pause
    was in force when it began."""

    kind: ReportKind
    first_day: date
    end_day: date
    generated_at: datetime
    outcomes: tuple[Outcome, ...] = ()
    open_signals: int = 0
    overdue_signals: int = 0
    fates: dict[str, int] = msgspec.field(default_factory=dict)
    incidents: tuple[Incident, ...] = ()
    operator_events: tuple[OperatorEvent, ...] = ()
    paused_at_start: bool = False
    disagreements: int = 0
    sharpe_days: int = 30
    trend_weeks: int = 8
    top_symbols: int = 3

    def __post_init__(self) -> None:
        if self.kind not in REPORT_KINDS:
            raise ValueError(f"report kind must be one of {', '.join(REPORT_KINDS)}; got {self.kind!r}")
        if self.end_day <= self.first_day:
            raise ValueError(f"report period is empty: {self.first_day} .. {self.end_day}")


class SymbolRow(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    signals: int
    triggered: int
    win_rate: float | None
    total_r: float


class QualityRow(msgspec.Struct, frozen=True, kw_only=True):
    """A quality band of the "quality vs outcome" table (the Quality page's bands): ``[low, high)``, the top
    one ``[90, 100]``; ``label`` like ``50–59`` or ``<50``."""

    label: str
    low: int
    high: int
    signals: int
    win_rate: float | None
    mean_r: float | None


class ReportContent(msgspec.Struct, frozen=True, kw_only=True):
    """The derived report: summaries, the series of each chart and the tables."""

    kind: ReportKind
    period: str
    title: str
    first_day: date
    last_day: date
    generated_at: datetime
    signals: int
    open_signals: int
    overdue_signals: int
    overall: Summary
    by_tier: dict[Tier, Summary]
    equity_r: list[float]
    by_symbol: list[SymbolRow]
    quality: list[QualityRow]
    quality_points: list[tuple[float, float]]
    best_symbols: list[SymbolTotal]
    worst_symbols: list[SymbolTotal]
    strategy_efficiency: float | None
    win_rate_trend: float | None
    quality_trend: float | None
    fates: list[tuple[str, int]]
    incidents: list[Incident]
    incident_counts: list[tuple[str, int]]
    operator_events: list[OperatorEvent]
    paused_at_start: bool
    disagreements: int
    sharpe_days: int
    #: UTC days with at least one signal in the overall Sharpe window (the ratio needs
    #: ``tapewatch.metrics.MIN_SHARPE_SIGNAL_DAYS`` of them).
    signal_days: int = 0


def period_of(kind: ReportKind, day: date) -> tuple[date, date]:
    """The period (first day, exclusive end day) of ``kind`` that holds ``day``."""
    if kind == "daily":
        return day, day + timedelta(days=1)
    if kind == "weekly":
        monday = day - timedelta(days=day.weekday())
        return monday, monday + timedelta(days=7)
    if kind == "monthly":
        first = day.replace(day=1)
        return first, (first + timedelta(days=32)).replace(day=1)
    raise ValueError(f"report kind must be one of {', '.join(REPORT_KINDS)}; got {kind!r}")


def lookback_start(kind: ReportKind, first_day: date, *, sharpe_days: int = 30, trend_weeks: int = 8) -> date:
    """The first day whose outcomes a report needs: the daily Sharpe window, the weekly trend window."""
    if kind == "daily":
        return first_day - timedelta(days=sharpe_days - 1)
    if kind == "weekly":
        return first_day - timedelta(weeks=trend_weeks - 1)
    return first_day


def _win_rate(outcomes: Sequence[Outcome]) -> float | None:
    # the spec 9.1 definition (wins / triggered), from tapewatch.metrics: one definition everywhere
    return summarize(outcomes).win_rate


def _symbol_rows(members: Sequence[Outcome]) -> list[SymbolRow]:
    grouped: dict[str, list[Outcome]] = defaultdict(list)
    for o in members:
        grouped[o.signal.symbol].append(o)
    rows = [
        SymbolRow(
            symbol=symbol,
            signals=len(mine),
            triggered=sum(1 for o in mine if o.triggered),
            win_rate=_win_rate(mine),
            total_r=math.fsum(o.pnl_r for o in mine),
        )
        for symbol, mine in grouped.items()
    ]
    return sorted(rows, key=lambda r: (-r.signals, -r.total_r, r.symbol))


def _quality_rows(members: Sequence[Outcome]) -> list[QualityRow]:
    by_band: dict[int, list[Outcome]] = defaultdict(list)
    for o in members:
        by_band[quality_band(o.signal.quality_score)].append(o)
    rows = []
    for band in shown_bands({i: len(mine) for i, mine in by_band.items()}):
        mine = by_band.get(band, [])
        low, high = band_bounds(band)
        rows.append(
            QualityRow(
                label=band_label(band),
                low=low,
                high=min(high, 100),
                signals=len(mine),
                win_rate=_win_rate(mine),
                mean_r=statistics.fmean(o.pnl_r for o in mine) if mine else None,
            )
        )
    return rows


def _summaries(data: ReportInput, last_day: date) -> tuple[Summary, dict[Tier, Summary]]:
    if data.kind == "daily":
        daily = daily_metrics(data.outcomes, data.first_day, sharpe_days=data.sharpe_days)
        return daily.overall, daily.by_tier
    return period_metrics(data.outcomes, data.first_day, last_day)


def _signal_days(data: ReportInput, members: Sequence[Outcome]) -> int:
    """Days with a triggered signal in the overall Sharpe window (:func:`sharpe_signal_days`, the days the
    Sharpe guard counts): the ``sharpe_days`` ending at a daily report's day, else the period."""
    if data.kind != "daily":
        return sharpe_signal_days(members)
    since = data.first_day - timedelta(days=data.sharpe_days - 1)
    return sharpe_signal_days(o for o in data.outcomes if since <= day_of(o.signal.created) <= data.first_day)


def build_content(data: ReportInput) -> ReportContent:
    """Derive every table and chart series of the report of ``data`` (ValueError on unfinished outcomes)."""
    last_day = data.end_day - timedelta(days=1)
    members = [o for o in data.outcomes if data.first_day <= day_of(o.signal.created) <= last_day]
    overall, by_tier = _summaries(data, last_day)
    ended = sorted(members, key=lambda o: (o.exit_time or 0, o.signal.created, o.signal.signal_id))
    equity = list(itertools.accumulate(o.pnl_r for o in ended))
    efficiency = overall.total_pnl_r / len(members) if members else None
    win_trend = quality_trend = None
    if data.kind == "weekly":
        weekly = weekly_metrics(
            data.outcomes, data.first_day, trend_weeks=data.trend_weeks, top_n=data.top_symbols
        )
        best, worst = list(weekly.best_symbols), list(weekly.worst_symbols)
        efficiency, win_trend, quality_trend = (
            weekly.strategy_efficiency,
            weekly.win_rate_trend,
            weekly.quality_trend,
        )
    else:
        best, worst = best_and_worst(symbol_totals(members), data.top_symbols)
    counts: dict[str, int] = defaultdict(int)
    for incident in data.incidents:
        counts[f"{incident.source}: {incident.kind}"] += 1
    return ReportContent(
        kind=data.kind,
        period=data.first_day.isoformat(),
        title=_title(data.kind, data.first_day, last_day),
        first_day=data.first_day,
        last_day=last_day,
        generated_at=data.generated_at,
        signals=len(members),
        open_signals=data.open_signals,
        overdue_signals=data.overdue_signals,
        overall=overall,
        by_tier={tier: by_tier[tier] for tier in TIERS},
        equity_r=equity,
        by_symbol=_symbol_rows(members),
        quality=_quality_rows(members),
        quality_points=[(float(o.signal.quality_score), o.pnl_r) for o in members if o.triggered],
        best_symbols=best,
        worst_symbols=worst,
        strategy_efficiency=efficiency,
        win_rate_trend=win_trend,
        quality_trend=quality_trend,
        fates=sorted(data.fates.items(), key=lambda kv: (kv[0] != "signal", -kv[1], kv[0])),
        incidents=sorted(data.incidents, key=lambda i: i.started),
        incident_counts=sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])),
        operator_events=sorted(data.operator_events, key=lambda e: e.at),
        paused_at_start=data.paused_at_start,
        disagreements=data.disagreements,
        sharpe_days=data.sharpe_days,
        signal_days=_signal_days(data, members),
    )


def _title(kind: ReportKind, first: date, last: date) -> str:
    if kind == "daily":
        return f"Daily report — {first.isoformat()} (UTC)"
    if kind == "weekly":
        iso = first.isocalendar()
        return f"Weekly report — {iso.year}-W{iso.week:02d} ({first.isoformat()} to {last.isoformat()}, UTC)"
    return f"Monthly report — {first.strftime('%Y-%m')} (UTC)"


__all__ = [
    "REPORT_KINDS",
    "Incident",
    "OperatorEvent",
    "QualityRow",
    "ReportContent",
    "ReportInput",
    "ReportKind",
    "SymbolRow",
    "build_content",
    "lookback_start",
    "period_of",
]
