"""Outcomes, metrics and reports (spec 9.1, 13.2): assets, jobs and the three report schedules.

- ``daily_performance_job`` (daily partitions): ``signal_outcomes`` → ``daily_metrics`` → ``daily_report``, and
  ``candidate_outcomes`` beside them (the would-be outcomes of the day's candidates turned away, for tuning).
  ``daily_report_schedule`` runs it twice for each day: the **first** pass at 00:10 UTC for yesterday, and
  the **final** pass once every outcome of the day can be final: the latest last possible end of a signal
  created in the day's last millisecond (``tapewatch.outcome_batch.last_end`` over the tiers: response
  window + upper hold bound, from ``response_window_*`` and ``hold_time_*_max``) + 10 min for its last candle
  to close and be served, rounded up to the minute. With the defaults (LOW: 15 min + 180 min) that is 03:25
  UTC the next day; longer settings move it later, by whole days when it exceeds one. One schedule, two
  crons: the tick's time of day says which pass it is (both when the two times coincide).
- ``weekly_performance_job`` (weeks from Monday): ``weekly_metrics`` → ``weekly_report``;
  ``weekly_report_schedule`` runs it 30 min after the final pass of the week's Sunday (defaults: Monday
  03:55 UTC) for the week that just ended.
- ``monthly_report_job``: ``monthly_report``; ``monthly_report_schedule`` 50 min after the final pass of the
  month's last day (defaults: the 1st, 04:15 UTC) for the month before.
- ``outcomes_catch_up_schedule``: at each final pass's tick, ``daily_performance_job`` again (tag
  ``tapewatch/pass=catch-up``) for each of the :data:`CATCH_UP_DAYS` days before the final pass's day that
  still holds ENTRY signals without a batch outcome (klines that could not be fetched, a run that failed):
  their final passes are over, so nothing else would ask again. Older days stay failing in the
  ``klines_fetched`` check until a run by hand. Catch-up runs carry ``dagster/max_retries=0`` (the job's
  retries are for its scheduled passes): the next tick is their retry, and a day whose signals cannot be
  fetched (a delisted symbol) makes one run a day, not three.

Why after the final pass: the weekly and monthly numbers read the stored outcomes, and those of the period's
last day are all final only after its final pass; the 30/50 min leave the daily runs time to finish (and
keep the two reports from starting together). When the final pass lands ``d`` days after the day, the
weekly and monthly ticks move by the same ``d`` days (weekday Monday + d, day of month 1 + d), and their key
functions pick the period that ended that long before the tick.

The times are derived from the settings when the code location loads (like the rescan interval's cron): a
changed response window or hold bound needs a reload (the UI's "Reload" button). Settings that cannot be
read give the defaults' times, a logged warning and a note in the schedules' descriptions.

Backfills of any past partition run from the UI (asset graph → select → Materialize → partitions).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import dagster as dg

from assets.metrics import daily_metrics, weekly_metrics
from assets.outcomes import PARTITIONS_START, candidate_outcomes, day_ms, signal_outcomes
from assets.reports import daily_report, monthly_report, weekly_report
from orchestration.resources import DatabaseResource
from tapewatch.adapters.candidate_outcome_store import candidates_to_settle
from tapewatch.adapters.dagster_runs import RETRY_TAGS
from tapewatch.adapters.db import Database
from tapewatch.adapters.performance_store import entries_to_settle
from tapewatch.errors import ConfigError, TapewatchError
from tapewatch.metrics import day_of
from tapewatch.outcome import OpenSignal, OutcomeParams
from tapewatch.outcome_batch import last_end
from tapewatch.quality import Tier
from tapewatch.settings import Settings, load_settings

log = logging.getLogger(__name__)

_FIRST_DAY = date.fromisoformat(PARTITIONS_START)
_DAY = timedelta(days=1)
_MINUTE = timedelta(minutes=1)
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

#: The first pass for yesterday, after midnight UTC (most of its outcomes are final by then).
FIRST_PASS = timedelta(minutes=10)
#: After the last possible end of a day's latest signal: its last 1-minute candle is closed and served.
FINAL_MARGIN = timedelta(minutes=10)
#: After the final pass of a period's last day: the daily runs' time to finish before the reports read it.
WEEKLY_DELAY = timedelta(minutes=30)
MONTHLY_DELAY = timedelta(minutes=50)
#: Days before a final pass's day whose signals still without a batch outcome its tick runs again.
CATCH_UP_DAYS = 7
#: The tags of a catch-up run: its pass, and no retry by the daemon (the job's RETRY_TAGS set to 0).
CATCH_UP_TAGS = {"tapewatch/pass": "catch-up", **{tag: "0" for tag in RETRY_TAGS}}

daily_performance_job = dg.define_asset_job(
    "daily_performance_job",
    selection=[signal_outcomes, candidate_outcomes, daily_metrics, daily_report],
    description="Outcomes from klines (signals', and the would-be ones of the candidates turned away), spec 9.1 "
    "daily metrics and the daily report of one UTC day.",
    tags=RETRY_TAGS,  # a failed report run is re-executed by the daemon (dagster.yaml run_retries)
)
weekly_performance_job = dg.define_asset_job(
    "weekly_performance_job",
    selection=[weekly_metrics, weekly_report],
    description="Spec 9.1 weekly metrics and the weekly report of one week (Monday to Sunday).",
    tags=RETRY_TAGS,  # a failed report run is re-executed by the daemon (dagster.yaml run_retries)
)
monthly_report_job = dg.define_asset_job(
    "monthly_report_job",
    selection=[monthly_report],
    description="The monthly report of one calendar month.",
    tags=RETRY_TAGS,  # a failed report run is re-executed by the daemon (dagster.yaml run_retries)
)


def latest_end(params: OutcomeParams) -> timedelta:
    """How long after a day's end (UTC midnight) a signal of that day can still be open: the latest
    ``last_end`` over the tiers of a signal created in the day's last millisecond. Asks the outcome module's
    own last-possible-end function, so the schedule cannot drift from what ``signal_outcomes`` waits for."""
    day_end = 86_400_000  # the end of 1970-01-01: any day's end gives the same duration
    ends = [last_end(_probe(tier, day_end - 1), params) for tier in params.response_ms]
    return timedelta(milliseconds=max(ends) - day_end)


def _probe(tier: Tier, created: int) -> OpenSignal:
    """A signal of ``tier`` created at ``created``; only its tier and creation time matter to ``last_end``."""
    return OpenSignal(
        signal_id="latest-end-probe",
        symbol="PROBEUSDT",
        direction="LONG",
        tier=tier,
        created=created,
        entry=100.0,
        stop=99.0,
        tp1=101.0,
        tp2=102.0,
    )


def _ceil_minute(offset: timedelta) -> timedelta:
    return -(-offset // _MINUTE) * _MINUTE


def _clock(offset: timedelta) -> tuple[int, int, int]:
    """``(whole days, hour, minute)`` of a whole-minute ``offset`` after midnight."""
    days, minutes = divmod(offset // _MINUTE, 24 * 60)
    return days, minutes // 60, minutes % 60


@dataclass(frozen=True)
class ReportTimes:
    """When the report schedules tick, each as the time after the end (UTC midnight) of the period it runs
    for: ``final`` the daily final pass (after the day), ``weekly`` the weekly report (after the week's
    Sunday), ``monthly`` the monthly report (after the month's last day). Whole minutes (cron precision)."""

    final: timedelta
    weekly: timedelta
    monthly: timedelta

    @classmethod
    def from_params(cls, params: OutcomeParams) -> ReportTimes:
        """The final pass at the day's latest possible end + :data:`FINAL_MARGIN`, rounded up to the minute;
        the weekly and monthly reports :data:`WEEKLY_DELAY` / :data:`MONTHLY_DELAY` after it."""
        final = _ceil_minute(latest_end(params) + FINAL_MARGIN)
        return cls(final=final, weekly=final + WEEKLY_DELAY, monthly=final + MONTHLY_DELAY)

    def daily_crons(self) -> list[str]:
        """00:10 (first pass) and the final pass's time of day (one cron when the two coincide)."""
        _, hour, minute = _clock(self.final)
        crons = [_daily_cron(FIRST_PASS), f"{minute} {hour} * * *"]
        return crons[:1] if crons[0] == crons[1] else crons

    def weekly_cron(self) -> str:
        """Monday, shifted by the whole days of ``weekly`` (cron weekdays: 0 = Sunday)."""
        days, hour, minute = _clock(self.weekly)
        return f"{minute} {hour} * * {(1 + days) % 7}"

    def monthly_cron(self, later: timedelta = timedelta(0)) -> str:
        """The 1st, shifted by the whole days of ``monthly`` + ``later`` (at most the 9th: hold bounds are <= 7
        days and response windows <= 1 day, so every month has that day)."""
        days, hour, minute = _clock(self.monthly + later)
        return f"{minute} {hour} {1 + days} * *"


def _daily_cron(offset: timedelta) -> str:
    _, hour, minute = _clock(offset)
    return f"{minute} {hour} * * *"


def report_times(load: Callable[[], Settings] = load_settings) -> tuple[ReportTimes, str]:
    """The schedules' times from the settings' response windows and hold bounds, and a note for their
    descriptions (empty when the settings were read).

    Never raises: settings that cannot be read give the defaults' times, a logged warning and a note saying
    why, so the code location still loads (the runs themselves then fail on the same ConfigError)."""
    try:
        settings = load()
    except ConfigError as exc:
        problem = str(exc).replace("\n", " ")
        log.warning("report schedules use the default response windows and hold bounds: %s", problem)
        times = ReportTimes.from_params(OutcomeParams.from_settings(Settings.model_construct()))
        return times, (
            " The settings could not be read, so these times come from the default response windows and "
            f"hold bounds until they are fixed and the code location reloaded ({problem})."
        )
    return ReportTimes.from_params(OutcomeParams.from_settings(settings)), ""


REPORT_TIMES, _TIMES_NOTE = report_times()


def daily_keys(now: datetime, times: ReportTimes = REPORT_TIMES) -> list[tuple[str, str]]:
    """(partition key, pass) to run at tick ``now``: at 00:10 yesterday ``first``; at the final pass's time
    of day the day that ended ``times.final`` before ``now``, ``final`` (both when the two times coincide).
    Days before the first partition are left out."""
    now = now.astimezone(UTC)
    wanted: list[tuple[date, str]] = []
    if now - _midnight(now) == FIRST_PASS:
        wanted.append((now.date() - _DAY, "first"))
    ended = now - times.final
    if ended == _midnight(ended):
        wanted.append((ended.date() - _DAY, "final"))
    return [(day.isoformat(), label) for day, label in wanted if day >= _FIRST_DAY]


def _midnight(at: datetime) -> datetime:
    return datetime.combine(at.date(), time(), UTC)


def weekly_key(now: datetime, times: ReportTimes = REPORT_TIMES) -> str | None:
    """The Monday of the last full week that ended at least ``times.weekly`` before ``now`` (None before the
    first partition)."""
    ended = (now.astimezone(UTC) - times.weekly).date()  # at the tick itself: the Monday after the week
    monday = ended - timedelta(days=ended.weekday()) - timedelta(weeks=1)
    return monday.isoformat() if monday >= _FIRST_DAY else None


def monthly_key(now: datetime, times: ReportTimes = REPORT_TIMES) -> str | None:
    """The first day of the last full month that ended at least ``times.monthly`` before ``now`` (None before
    the first partition)."""
    ended = (now.astimezone(UTC) - times.monthly).date()  # at the tick itself: the 1st after the month
    first = (ended.replace(day=1) - _DAY).replace(day=1)
    return first.isoformat() if first >= _FIRST_DAY else None


def catch_up_window(now: datetime, times: ReportTimes = REPORT_TIMES) -> tuple[date, date] | None:
    """``[first, end)``: the :data:`CATCH_UP_DAYS` days before the day whose final pass runs at tick ``now``
    (from the first partition on); None when ``now`` is no final pass's time or no such day exists yet."""
    ended = now.astimezone(UTC) - times.final
    if ended != _midnight(ended):
        return None
    end = ended.date() - _DAY  # the final pass's own day: its pass runs at this tick
    first = max(end - timedelta(days=CATCH_UP_DAYS), _FIRST_DAY)
    return (first, end) if first < end else None


def unsettled_days(db: Database, first: date, end: date) -> list[date]:
    """The days of ``[first, end)`` with ENTRY signals that have no finished batch outcome, or with candidates
    turned away that have a plan and no would-be outcome yet (``candidate_outcomes``), oldest first."""
    start_ms, end_ms = day_ms(first), day_ms(end)
    times = [p.signal.event_time for p in entries_to_settle(db, start_ms, end_ms)]
    times += [c.created for c in candidates_to_settle(db, start_ms, end_ms)]
    return sorted({day_of(t) for t in times})


def catch_up_schedule(times: ReportTimes, note: str = "") -> dg.ScheduleDefinition:
    """``outcomes_catch_up_schedule``: at the final pass's time, the days before it still holding signals
    without a batch outcome or candidates without a would-be outcome (read from PostgreSQL), each run again."""
    _, hour, minute = _clock(times.final)

    @dg.schedule(
        name="outcomes_catch_up_schedule",
        cron_schedule=f"{minute} {hour} * * *",
        execution_timezone="UTC",
        job=daily_performance_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            f"At each final pass ({_hhmm(times.final)}): outcomes, metrics and report again for each of the "
            f"{CATCH_UP_DAYS} days before the final pass's day that still holds ENTRY signals without a batch "
            f"outcome, or candidates turned away without a would-be outcome (klines not fetched, a failed run)."
            f"{note}"
        ),
    )
    def outcomes_catch_up_schedule(
        context: dg.ScheduleEvaluationContext, database: DatabaseResource
    ) -> list[dg.RunRequest] | dg.SkipReason:
        now = context.scheduled_execution_time
        window = catch_up_window(now, times)
        if window is None:
            return dg.SkipReason(f"no day to catch up on at {now:%Y-%m-%d %H:%M}")
        first, end = window
        try:
            with database.open() as db:
                days = unsettled_days(db, first, end)
        except TapewatchError as exc:
            return dg.SkipReason(f"days {first} .. {end - _DAY} not checked: {exc}")
        if not days:
            return dg.SkipReason(
                f"every signal of {first} .. {end - _DAY} has its batch outcome (and every candidate turned "
                "away its would-be outcome)"
            )
        return [
            dg.RunRequest(
                run_key=f"{day}:catch-up:{end}",  # one a tick: a day still unsettled runs again the next one
                partition_key=day.isoformat(),
                tags=CATCH_UP_TAGS,
            )
            for day in days
        ]

    return outcomes_catch_up_schedule


def _hhmm(offset: timedelta) -> str:
    _, hour, minute = _clock(offset)
    return f"{hour:02}:{minute:02} UTC"


def _days_later(offset: timedelta) -> str:
    """When ``offset`` after a day's end falls: ``the next day``, ``2 days later``, ..."""
    days = _clock(offset)[0] + 1
    return "the next day" if days == 1 else f"{days} days later"


def _weekday(offset: timedelta) -> str:
    """The weekday and time ``offset`` after a week's end (Monday 00:00)."""
    days = _clock(offset)[0]
    shifted = f" ({days} days after the week's end)" if days else ""
    return f"{_WEEKDAYS[days % 7]} {_hhmm(offset)}{shifted}"


def _day_of_month(offset: timedelta) -> str:
    """The day of the month and time ``offset`` after a month's end (the 1st, 00:00)."""
    day = _clock(offset)[0] + 1
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(day, "th")
    return f"The {day}{suffix}, {_hhmm(offset)}"


def daily_schedule(times: ReportTimes, note: str = "") -> dg.ScheduleDefinition:
    """``daily_report_schedule``: the first pass at 00:10 and the final pass at ``times.final``."""

    @dg.schedule(
        name="daily_report_schedule",
        cron_schedule=times.daily_crons(),
        execution_timezone="UTC",
        job=daily_performance_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            f"A day's first pass at {_hhmm(FIRST_PASS)} the next day; its final pass (every outcome final: "
            f"the day's latest possible signal end + 10 min) at {_hhmm(times.final)} "
            f"{_days_later(times.final)}.{note}"
        ),
    )
    def daily_report_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
        now = context.scheduled_execution_time
        keys = daily_keys(now, times)
        if not keys:
            return dg.SkipReason(
                f"nothing to run at {now:%Y-%m-%d %H:%M}: the passes run at {_hhmm(FIRST_PASS)} (first) and "
                f"{_hhmm(times.final)} (final), for days from {PARTITIONS_START}"
            )
        return [
            dg.RunRequest(run_key=f"{key}:{label}", partition_key=key, tags={"tapewatch/pass": label})
            for key, label in keys
        ]

    return daily_report_schedule


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


def report_schedules(
    times: ReportTimes, note: str = ""
) -> tuple[dg.ScheduleDefinition, dg.ScheduleDefinition, dg.ScheduleDefinition]:
    """The daily, weekly and monthly report schedules at ``times``."""
    weekly = _period_schedule(
        "weekly_report_schedule",
        times.weekly_cron(),
        weekly_performance_job,
        f"{_weekday(times.weekly)}, after the final daily pass of the week's Sunday: the week that just "
        f"ended.{note}",
        lambda now: weekly_key(now, times),
        "week",
    )
    monthly = _period_schedule(
        "monthly_report_schedule",
        times.monthly_cron(),
        monthly_report_job,
        f"{_day_of_month(times.monthly)}, after the final daily pass of the month's last day: the month "
        f"before.{note}",
        lambda now: monthly_key(now, times),
        "month",
    )
    return daily_schedule(times, note), weekly, monthly


# read when the code location loads: changed response windows or hold bounds need a reload
daily_report_schedule, weekly_report_schedule, monthly_report_schedule = report_schedules(
    REPORT_TIMES, _TIMES_NOTE
)
outcomes_catch_up_schedule = catch_up_schedule(REPORT_TIMES, _TIMES_NOTE)


defs = dg.Definitions(
    assets=[
        signal_outcomes,
        candidate_outcomes,
        daily_metrics,
        weekly_metrics,
        daily_report,
        weekly_report,
        monthly_report,
    ],
    jobs=[daily_performance_job, weekly_performance_job, monthly_report_job],
    schedules=[
        daily_report_schedule,
        weekly_report_schedule,
        monthly_report_schedule,
        outcomes_catch_up_schedule,
    ],
)
