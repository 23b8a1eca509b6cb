"""``daily_metrics`` and ``weekly_metrics`` declare the outcomes they read in the asset graph.

The daily Sharpe ratio reads the ``metrics_sharpe_days`` (30) days of outcomes ending at its day, the weekly
trends the ``metrics_trend_weeks`` (8) weeks ending with its week. With only the same period's
``signal_outcomes`` as their dependency, outcomes settled later for an earlier day (a backfill, a catch-up
run) left the metrics that read them fresh in the UI, and a backfill of outcomes and metrics together could
compute a day's Sharpe before the outcomes of the days before it. Here: the graph maps each metrics partition
to its whole look-back, the first partitions (whose look-back starts before 2024-01-01) still run, and a later
outcome of an earlier day marks the metrics that read it stale (Dagster's own stale-status resolver, on a real
instance and real PostgreSQL).
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.definitions.data_version import (  # what the UI shows as "stale"
    CachingStaleStatusResolver,
    StaleStatus,
)
from dagster._core.loader import LoadingContextForTest

from assets.metrics import SHARPE_DAYS, TREND_WEEKS, daily_metrics, lookback_lengths, weekly_metrics
from assets.outcomes import signal_outcomes
from orchestration import performance
from orchestration.definitions import defs
from orchestration.resources import BinanceRestResource, DatabaseResource, TapewatchSettings
from tapewatch.errors import ConfigError
from tapewatch.settings import load_settings

OUTCOMES = dg.AssetKey("signal_outcomes")


def upstream(child: str, key: str) -> list[str]:
    """The ``signal_outcomes`` partitions the ``child`` partition ``key`` depends on, in the code location.

    Asserts that none of them is "required but nonexistent": an asset backfill raises on such a partition
    (``depends on non-existent partitions``, dagster/_core/execution/asset_backfill.py), which would stop a
    backfill over the first 29 days (or 7 weeks)."""
    graph = defs.resolve_asset_graph()
    result = graph.get_parent_partition_keys_for_child(key, OUTCOMES, dg.AssetKey(child))
    assert result.required_but_nonexistent_subset.is_empty
    return sorted(result.partitions_subset.get_partition_keys())


def days(first: str, last: str) -> list[str]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def test_the_look_backs_are_the_settings() -> None:
    assert (SHARPE_DAYS, TREND_WEEKS) == (30, 8)  # the defaults (the test environment sets neither)
    assert lookback_lengths(lambda: load_settings(metrics_sharpe_days=60, metrics_trend_weeks=4)) == (60, 4)

    def broken() -> Any:
        raise ConfigError("invalid settings: metrics_sharpe_days (TAPEWATCH_METRICS_SHARPE_DAYS) = 'x'")

    assert lookback_lengths(broken) == (30, 8)  # the code location still loads


def test_each_metrics_partition_depends_on_the_outcomes_of_its_whole_look_back() -> None:
    # the 30 days ending at the day (its Sharpe window)
    assert upstream("daily_metrics", "2024-03-05") == days("2024-02-05", "2024-03-05")
    # the 8 weeks ending with the week (its trends), Monday 2024-01-15 .. Sunday 2024-03-10
    assert upstream("weekly_metrics", "2024-03-04") == days("2024-01-15", "2024-03-10")
    # the first partitions: the days before 2024-01-01 do not exist and are left out, not an error
    assert upstream("daily_metrics", "2024-01-01") == ["2024-01-01"]
    assert upstream("daily_metrics", "2024-01-10") == days("2024-01-01", "2024-01-10")
    assert upstream("weekly_metrics", "2024-01-01") == days("2024-01-01", "2024-01-07")


def resources(database_url: str, var_dir: Path) -> dict[str, Any]:
    return {
        "settings": TapewatchSettings(overrides={"var_dir": str(var_dir)}),
        "database": DatabaseResource(url=database_url),
        "binance": BinanceRestResource(base_url="http://127.0.0.1:1", max_retries=0, timeout=1),  # no signals
    }


def test_the_scheduled_jobs_run_the_first_partitions(migrated_database_url: str, tmp_path: Path) -> None:
    """The jobs the schedules launch, for the first day and week: their look-back reaches before 2024-01-01."""
    repo = dg.Definitions.merge(
        performance.defs, dg.Definitions(resources=resources(migrated_database_url, tmp_path))
    ).get_repository_def()
    instance = dg.DagsterInstance.ephemeral()
    for job, key in (("daily_performance_job", "2024-01-01"), ("weekly_performance_job", "2024-01-01")):
        result = repo.get_job(job).execute_in_process(partition_key=key, instance=instance)
        assert result.success, job
    for asset in ("signal_outcomes", "daily_metrics", "daily_report", "weekly_metrics", "weekly_report"):
        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
        assert event is not None and event.dagster_event is not None, asset
        assert event.dagster_event.partition == "2024-01-01"


def test_outcomes_settled_later_make_the_metrics_that_read_them_stale(
    migrated_database_url: str, tmp_path: Path
) -> None:
    res = resources(migrated_database_url, tmp_path)
    graph = dg.Definitions(
        assets=[signal_outcomes, daily_metrics, weekly_metrics], resources=res
    ).resolve_asset_graph()
    instance = dg.DagsterInstance.ephemeral()

    def run(asset: dg.AssetsDefinition, key: str) -> None:
        assert dg.materialize([asset], partition_key=key, resources=res, instance=instance).success

    def status(asset: str, key: str) -> StaleStatus:
        resolver = CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance))
        return resolver.get_status(dg.AssetKey(asset), key)

    for key in ("2024-03-04", "2024-03-05"):
        run(signal_outcomes, key)
    run(daily_metrics, "2024-03-04")
    run(daily_metrics, "2024-03-05")
    run(weekly_metrics, "2024-03-04")
    assert status("daily_metrics", "2024-03-05") is StaleStatus.FRESH
    assert status("weekly_metrics", "2024-03-04") is StaleStatus.FRESH

    run(signal_outcomes, "2024-02-20")  # a backfill settles a signal of a day two weeks back
    # inside the 30 days of both daily partitions and the 8 weeks of the week: all three stale
    assert status("daily_metrics", "2024-03-05") is StaleStatus.STALE
    assert status("daily_metrics", "2024-03-04") is StaleStatus.STALE
    assert status("weekly_metrics", "2024-03-04") is StaleStatus.STALE

    run(daily_metrics, "2024-03-05")  # what the operator does: re-materialise the stale partitions
    assert status("daily_metrics", "2024-03-05") is StaleStatus.FRESH
    run(signal_outcomes, "2024-03-06")  # a later day: outside 2024-03-05's look-back
    assert status("daily_metrics", "2024-03-05") is StaleStatus.FRESH
