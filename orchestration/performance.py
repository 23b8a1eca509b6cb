"""Outcomes, metrics and reports (spec 9.1, 13.2): assets, jobs and the three report schedules.

- ``daily_performance_job`` (daily partitions): ``signal_outcomes`` → ``daily_metrics`` → ``daily_report``.
  ``daily_report_schedule`` runs it at 00:10 UTC for yesterday, and again for the day before yesterday:
  a LOW signal created late in the evening can stay open until about 03:15, so the second run is the one
  with every outcome final.
- ``weekly_performance_job`` (weeks from Monday): ``weekly_metrics`` → ``weekly_report``;
  ``weekly_report_schedule`` runs it on Tuesdays at 01:30 UTC for the week that ended on Sunday.
- ``monthly_report_job``: ``monthly_report``; ``monthly_report_schedule`` on the 2nd at 01:50 UTC for the
  month before.

Why not Monday and the 1st: the weekly and monthly numbers read the stored outcomes, and the outcomes of
the period's last day are final only after its second daily pass (00:10 UTC two days later: Tuesday for a
Sunday, the 2nd for the last day of a month). Run earlier, they would miss the late signals' outcomes; the
hour and more after 00:10 leaves the daily runs time to finish.

Backfills of any past partition run from the UI (asset graph → select → Materialize → partitions).
"""

from __future__ import annotations

from collections.abc import Callable
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


def _period_schedule(
    name: str,
    cron_schedule: str,
    job: dg.UnresolvedAssetJobDefinition,
    description: str,
    key_at: Callable[[datetime], str | None],
    period: str,
) -> dg.ScheduleDefinition:
    """A schedule running ``job`` for the partition ``key_at(tick time)``, skipping (naming the ``period``)
    while there is none yet."""

    @dg.schedule(
        name=name,
        cron_schedule=cron_schedule,
        execution_timezone="UTC",
        job=job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=description,
    )
    def period_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        key = key_at(context.scheduled_execution_time)
        if key is None:
            return dg.SkipReason(f"no full {period} since {PARTITIONS_START} yet")
        return dg.RunRequest(run_key=key, partition_key=key)

    return period_schedule


weekly_report_schedule = _period_schedule(
    "weekly_report_schedule",
    "30 1 * * 2",
    weekly_performance_job,
    "Tuesdays 01:30 UTC (after the final daily pass of Sunday): the week that just ended.",
    weekly_key,
    "week",
)
monthly_report_schedule = _period_schedule(
    "monthly_report_schedule",
    "50 1 2 * *",
    monthly_report_job,
    "The 2nd, 01:50 UTC (after the final daily pass of the month's last day): the month before.",
    monthly_key,
    "month",
)


defs = dg.Definitions(
    assets=[signal_outcomes, daily_metrics, weekly_metrics, daily_report, weekly_report, monthly_report],
    jobs=[daily_performance_job, weekly_performance_job, monthly_report_job],
    schedules=[daily_report_schedule, weekly_report_schedule, monthly_report_schedule],
)
