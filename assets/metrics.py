"""``daily_metrics`` and ``weekly_metrics``: spec 9.1 performance from the stored outcomes.

Both read the finished outcomes of ``signal_outcomes`` (``tapewatch.adapters.performance_store``), compute
with ``tapewatch.metrics`` and store the result in PostgreSQL (tables ``daily_metrics``, ``weekly_metrics``)
and as asset metadata. Signals whose outcome is not final yet are left out and counted as
``signals_open``; materialising the partition again later (a backfill) gives the final numbers.

Each reads more than its own period: the daily Sharpe ratio the ``metrics_sharpe_days`` (30) days ending at its
day, the weekly trends the ``metrics_trend_weeks`` (8) weeks ending with its week. Both declare that look-back
as their dependency on ``signal_outcomes`` (:func:`lookback`), so the asset graph knows it: outcomes settled
later for an earlier day mark every partition that reads them stale in the UI, and a backfill of outcomes and
metrics together materialises each metrics partition after all the outcomes it reads. The look-back lengths are
read from the settings when the code location loads (like the schedules' times): a changed setting needs a
reload, and a run whose settings differ from the declared look-back logs a warning.
"""

import logging
import warnings
from collections.abc import Callable, Mapping
from datetime import date, timedelta
from typing import Any

import dagster as dg

from assets.outcomes import DAILY_PARTITIONS, PARTITIONS_START, day_ms, day_of_partition, signal_outcomes
from orchestration.resources import DatabaseResource, TapewatchSettings
from tapewatch import metrics
from tapewatch.adapters.db import Database
from tapewatch.adapters.performance_store import (
    finished_outcomes,
    save_daily,
    save_weekly,
    unfinished_counts,
)
from tapewatch.errors import ConfigError
from tapewatch.metrics import Summary
from tapewatch.outcome import Outcome
from tapewatch.quality import Tier
from tapewatch.settings import Settings, load_settings

log = logging.getLogger(__name__)

#: Weeks from Monday to Sunday (UTC); the key is the Monday.
WEEKLY_PARTITIONS = dg.WeeklyPartitionsDefinition(start_date=PARTITIONS_START, day_offset=1, timezone="UTC")


def lookback_lengths(load: Callable[[], Settings] = load_settings) -> tuple[int, int]:
    """``(metrics_sharpe_days, metrics_trend_weeks)`` of the settings; the defaults, with a logged warning, when
    the settings cannot be read (the code location still loads; the runs then fail on the same ConfigError)."""
    try:
        settings = load()
    except ConfigError as exc:
        log.warning("metrics look-backs use the defaults: %s", str(exc).replace("\n", " "))
        settings = Settings.model_construct()
    return settings.metrics_sharpe_days, settings.metrics_trend_weeks


#: The look-backs declared in the asset graph, read when the code location loads.
SHARPE_DAYS, TREND_WEEKS = lookback_lengths()


def lookback(periods: int) -> dg.TimeWindowPartitionMapping:
    """The dependency of a partition on the ``periods`` upstream partitions' worth of time ending with its own
    (in the downstream's units: days for ``daily_metrics``, weeks for ``weekly_metrics``). Partitions before
    the first one (the look-back of the first days and weeks after 2024-01-01) are left out, never "required
    but nonexistent" (an asset backfill raises on those; Dagster 1.13.27 happens to leave windows before the
    start out even without the flag, which states it)."""
    with warnings.catch_warnings():  # the parameter is "beta" in Dagster 1.13: known, and tested here
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.TimeWindowPartitionMapping(
            start_offset=-(periods - 1), allow_nonexistent_upstream_partitions=True
        )


def _declared(context: dg.AssetExecutionContext, name: str, used: int, declared: int) -> None:
    if used != declared:
        context.log.warning(
            f"{name} is {used} but the asset graph declares a look-back of {declared} (read when the code "
            "location loaded): reload it, or staleness and backfill order follow the old look-back"
        )


def summary_markdown(rows: dict[str, Summary]) -> str:
    """A Markdown table of spec 9.1 summaries, one row per name (``ALL``, ``HIGH``, ...)."""

    def cell(v: float | int | None, fmt: str) -> str:
        return "—" if v is None else format(v, fmt)

    lines = [
        "| | generated | triggered | win rate | avg hold min | total R | total % | Sharpe | max DD R |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in rows.items():
        lines.append(
            f"| {name} | {s.signals_generated} | {s.signals_triggered} | {cell(s.win_rate, '.1%')} "
            f"| {cell(s.average_hold_minutes, '.1f')} | {s.total_pnl_r:+.3f} | {s.total_pnl_pct:+.3f} "
            f"| {cell(s.sharpe_ratio, '.2f')} | {s.max_drawdown_r:.3f} |"
        )
    return "\n".join(lines)


def _rows(overall: Summary, by_tier: Mapping[Tier, Summary]) -> dict[str, Summary]:
    return {"ALL": overall, **{str(t): s for t, s in by_tier.items()}}


def spec_numbers(summary: Summary) -> dict[str, float | int]:
    """The spec 9.1 keys of ``summary`` that have a value (metadata cannot hold None)."""
    return {k: v for k, v in summary.to_spec().items() if v is not None}


def period_outcomes(
    db: Database, since: date, first: date, end: date
) -> tuple[list[Outcome], dict[Tier, int]]:
    """What the metrics of the period ``[first, end)`` (UTC days of signal creation) are computed from: the
    finished outcomes of ``[since, end)`` (``since`` <= ``first``: the look-back of the Sharpe ratio and the
    trends) and, per tier, the signals of the period whose outcome is not final yet."""
    end_ms = day_ms(end)
    return finished_outcomes(db, day_ms(since), end_ms), unfinished_counts(db, day_ms(first), end_ms)


@dg.asset(
    partitions_def=DAILY_PARTITIONS,
    deps=[dg.AssetDep(signal_outcomes, partition_mapping=lookback(SHARPE_DAYS))],
    group_name="performance",
    description="Spec 9.1 daily metrics per tier and overall (UTC day of signal creation).",
)
def daily_metrics(
    context: dg.AssetExecutionContext, settings: TapewatchSettings, database: DatabaseResource
) -> dg.MaterializeResult[Any]:
    cfg = settings.settings()
    _declared(context, "metrics_sharpe_days", cfg.metrics_sharpe_days, SHARPE_DAYS)
    day = day_of_partition(context.partition_key)
    window_start = day - timedelta(days=cfg.metrics_sharpe_days - 1)
    with database.open() as db:
        outcomes, open_by_tier = period_outcomes(db, window_start, day, day + timedelta(days=1))
        result = metrics.daily_metrics(outcomes, day, sharpe_days=cfg.metrics_sharpe_days)
        save_daily(db, result, open_by_tier)
    return dg.MaterializeResult(
        metadata={
            "day": day.isoformat(),
            **spec_numbers(result.overall),
            "signals_open": sum(open_by_tier.values()),
            "by_tier": dg.MetadataValue.md(summary_markdown(_rows(result.overall, result.by_tier))),
            "sharpe_annualisation": f"daily R over {cfg.metrics_sharpe_days} days, mean/stdev x sqrt(365)",
        }
    )


def week_of_partition(key: str) -> date:
    """The Monday of a weekly partition key; ValueError when the key is not a Monday."""
    monday = date.fromisoformat(key)
    if monday.weekday() != 0:
        raise ValueError(f"weekly partition keys are Mondays; {key} is not")
    return monday


@dg.asset(
    partitions_def=WEEKLY_PARTITIONS,
    deps=[dg.AssetDep(signal_outcomes, partition_mapping=lookback(TREND_WEEKS))],
    group_name="performance",
    description="Spec 9.1 weekly metrics: best/worst symbols, strategy efficiency, quality trends.",
)
def weekly_metrics(
    context: dg.AssetExecutionContext, settings: TapewatchSettings, database: DatabaseResource
) -> dg.MaterializeResult[Any]:
    cfg = settings.settings()
    _declared(context, "metrics_trend_weeks", cfg.metrics_trend_weeks, TREND_WEEKS)
    monday = week_of_partition(context.partition_key)
    span_start = monday - timedelta(weeks=cfg.metrics_trend_weeks - 1)
    with database.open() as db:
        outcomes, open_by_tier = period_outcomes(db, span_start, monday, monday + timedelta(days=7))
        still_open = sum(open_by_tier.values())
        result = metrics.weekly_metrics(
            outcomes, monday, trend_weeks=cfg.metrics_trend_weeks, top_n=cfg.metrics_top_symbols
        )
        save_weekly(db, result, still_open)
    symbols = "\n".join(
        [
            "| | symbol | signals | total R |",
            "|---|---|---|---|",
            *(f"| best | {t.symbol} | {t.signals} | {t.total_r:+.3f} |" for t in result.best_symbols),
            *(f"| worst | {t.symbol} | {t.signals} | {t.total_r:+.3f} |" for t in result.worst_symbols),
            # best: total R > 0, worst: < 0 (tapewatch.metrics.best_and_worst); either may be empty
            *(["| best | none | | |"] if not result.best_symbols else []),
            *(["| worst | none | | |"] if not result.worst_symbols else []),
        ]
    )
    trends = {
        k: v
        for k, v in {
            "strategy_efficiency": result.strategy_efficiency,
            "win_rate_trend": result.win_rate_trend,
            "quality_trend": result.quality_trend,
        }.items()
        if v is not None
    }
    return dg.MaterializeResult(
        metadata={
            "week_start": monday.isoformat(),
            **spec_numbers(result.overall),
            **trends,
            "signals_open": still_open,
            "symbols": dg.MetadataValue.md(symbols),
            "by_tier": dg.MetadataValue.md(summary_markdown(_rows(result.overall, result.by_tier))),
        }
    )


__all__ = [
    "SHARPE_DAYS",
    "TREND_WEEKS",
    "WEEKLY_PARTITIONS",
    "daily_metrics",
    "lookback",
    "lookback_lengths",
    "period_outcomes",
    "spec_numbers",
    "summary_markdown",
    "weekly_metrics",
]
