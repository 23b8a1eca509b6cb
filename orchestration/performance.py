"""Outcomes, metrics and reports (spec 9.1, 13.2): assets, jobs and the three report schedules.

- ``daily_performance_job`` (daily partitions): ``signal_outcomes`` → ``daily_metrics`` → ``daily_report``.
  ``daily_report_schedule`` runs it at 00:10 UTC for yesterday, and again for the day before yesterday:
  a LOW signal created late in the evening can stay open until about 03:15, so the second run is the one
  with every outcome final.
- ``weekly_performance_job`` (weeks from Monday): ``weekly_metrics`` → ``weekly_report``;
  ``weekly_report_schedule`` runs it on Mondays at 00:30 UTC for the week that just ended.
- ``monthly_report_job``: ``monthly_report``; ``monthly_report_schedule`` on the 1st at 00:50 UTC for the
  month that just ended.

Backfills of any past partition run from the UI (asset graph → select → Materialize → partitions).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import dagster as dg

from assets.metrics import daily_metrics, weekly_metrics
from assets.outcomes import PARTITIONS_START, signal_outcomes
from assets.reports import daily_report, monthly_report, weekly_report

_FIRST_DAY = date.fromisoformat(PARTITIONS_START)

daily_performance_job = dg.define_asset_job(
    "daily_performance_job",
    selection=[signal_outcomes, daily_metrics, daily_report],
    description="Outcomes from klines, spec 9.1 daily metrics and the daily report of one UTC day.",
)
weekly_performance_job = dg.define_asset_job(
    "weekly_performance_job",
    selection=[weekly_metrics, weekly_report],
    description="Spec 9.1 weekly metrics and the weekly report of one week (Monday to Sunday).",
)
monthly_report_job = dg.define_asset_job(
    "monthly_report_job",
    selection=[monthly_report],
    description="The monthly report of one calendar month.",
)


def daily_keys(now: datetime) -> list[tuple[str, str]]:
    """(partition key, pass) to run at ``now``: yesterday ``first``, the day before ``final``."""
    today = now.date()
    wanted = [(today - timedelta(days=1), "first"), (today - timedelta(days=2), "final")]
    return [(day.isoformat(), label) for day, label in wanted if day >= _FIRST_DAY]


def weekly_key(now: datetime) -> str | None:
    """The Monday of the last full week before ``now`` (None before the first partition)."""
    today = now.date()
    monday = today - timedelta(days=today.weekday()) - timedelta(weeks=1)
    return monday.isoformat() if monday >= _FIRST_DAY else None


def monthly_key(now: datetime) -> str | None:
    """The first day of the month before ``now`` (None before the first partition)."""
    first = (now.date().replace(day=1) - timedelta(days=1)).replace(day=1)
    return first.isoformat() if first >= _FIRST_DAY else None


@dg.schedule(
    name="daily_report_schedule",
    cron_schedule="10 0 * * *",
    execution_timezone="UTC",
    job=daily_performance_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="00:10 UTC: yesterday's outcomes, metrics and report; the day before's again, final.",
)
def daily_report_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    return [
        dg.RunRequest(run_key=f"{key}:{label}", partition_key=key, tags={"tapewatch/pass": label})
        for key, label in daily_keys(context.scheduled_execution_time)
    ]


@dg.schedule(
    name="weekly_report_schedule",
    cron_schedule="30 0 * * 1",
    execution_timezone="UTC",
    job=weekly_performance_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Mondays 00:30 UTC: the weekly metrics and report of the week that just ended.",
)
def weekly_report_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    key = weekly_key(context.scheduled_execution_time)
    if key is None:
        return dg.SkipReason(f"no full week since {PARTITIONS_START} yet")
    return dg.RunRequest(run_key=key, partition_key=key)


@dg.schedule(
    name="monthly_report_schedule",
    cron_schedule="50 0 1 * *",
    execution_timezone="UTC",
    job=monthly_report_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The 1st, 00:50 UTC: the report of the month that just ended.",
)
def monthly_report_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    key = monthly_key(context.scheduled_execution_time)
    if key is None:
        return dg.SkipReason(f"no full month since {PARTITIONS_START} yet")
    return dg.RunRequest(run_key=key, partition_key=key)


defs = dg.Definitions(
    assets=[signal_outcomes, daily_metrics, weekly_metrics, daily_report, weekly_report, monthly_report],
    jobs=[daily_performance_job, weekly_performance_job, monthly_report_job],
    schedules=[daily_report_schedule, weekly_report_schedule, monthly_report_schedule],
)
