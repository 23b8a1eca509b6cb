"""Universe selection in Dagster (spec 4.2): the full rescan, the hourly quick check, emergency exclusion.

- ``universe_rescan_job`` materializes the universe assets (``assets.universe``); launched by
  ``universe_rescan_schedule`` every ``universe_rescan_interval`` hours (the cron is built from the setting
  when the code location loads; unreadable settings give the default 6 h and a warning, never a code location
  that fails to load), from the UI, and by ``tapewatch rescan``.
- ``universe_quick_check_job`` (``universe_quick_check_schedule``, hourly): the minimums only, measured now for
  the symbols of the current universe; failing ones leave at once (a new version, kind ``quick``). A spread
  above the maximum in the REST snapshot must be confirmed by the fresh live spread in Redis.
- ``emergency_exclusion_sensor`` (every 30 s): the live spread, depth and volume the realtime service keeps
  in Redis; a symbol breaking the minimums for ``emergency_strikes`` checks in a row is excluded by a run of
  ``universe_exclusion_job`` (one run per symbol, so each exclusion shows in the UI with its reason). Silence
  (no event for longer than the trade window: $0 volume) counts only while another symbol of the same
  realtime shard flows: a shard that lost the exchange excludes nobody. While no universe is stored (a fresh
  deployment) it requests the first ``universe_rescan_job`` instead of waiting up to
  ``universe_rescan_interval`` hours for the schedule: once (the run key), unless a rescan is already queued
  or running, and again an hour later should that one have failed for good.

Both exclude nobody when more than ``max_exclusion_share`` of the universe breaks a minimum at once (a
market-wide condition: logged as a warning, shown in the run's metadata or the sensor's skip reason).

Schedules and the sensor run by default. Exclusions last until the next full rescan re-measures everything.
The quick check and the exclusion publish the newest version whenever Redis does not record it as published
yet, even with nothing new to exclude: a run retried after Redis refused its publish hands the version its
first try stored to the service.
"""

import json
import logging
import time
from collections.abc import Callable

import dagster as dg
import msgspec

from assets.universe import UNIVERSE_ASSETS
from orchestration.resources import BinanceRestResource, DatabaseResource, RedisResource, TapewatchSettings
from orchestration.sensor_ticks import recorded_sensor
from tapewatch.adapters.dagster_runs import EXCLUSIVE_TAG, RESCAN_EXCLUSIVE, RESCAN_JOB, RETRY_TAGS
from tapewatch.adapters.universe_fetch import fetch_statistics
from tapewatch.adapters.universe_store import (
    current_universe,
    exclude,
    live_liquidity,
    live_spreads,
    publish_pending,
)
from tapewatch.errors import ConfigError, StorageUnavailable
from tapewatch.settings import Settings, load_settings
from tapewatch.universe import Reason, minimums_from, rescan_cron
from tapewatch.universe_checks import (
    EmergencyCheck,
    Exclusion,
    emergency_check,
    emergency_rules_from,
    quick_check,
)

log = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


universe_rescan_job = dg.define_asset_job(
    RESCAN_JOB,
    selection=dg.AssetSelection.assets(*UNIVERSE_ASSETS),
    description="Full universe rescan (spec 4): statistics, scores, minimums, top universe_size; stored and published.",
    # one rescan at a time (the run coordinator's tag limit), retried when it fails
    tags={EXCLUSIVE_TAG: RESCAN_EXCLUSIVE, **RETRY_TAGS},
)


@dg.op(description="Minimums only, measured now, on the current universe; failing symbols leave at once.")
def universe_quick_check(
    context: dg.OpExecutionContext,
    settings: TapewatchSettings,
    database: DatabaseResource,
    redis: RedisResource,
    binance: BinanceRestResource,
) -> None:
    config = settings.settings()
    with database.open() as db:
        current = current_universe(db)
        if current is None or not current.symbols:
            context.log.info(
                "no universe stored yet: nothing to check (emergency_exclusion_sensor requests the first "
                "universe_rescan_job)"
            )
            return
        report = binance.run(lambda c: fetch_statistics(c, current.symbols, config, full=False), config)
        # the REST spread is one snapshot: a spread failure stands only if the live spread confirms it
        try:
            with redis.open() as state:
                spreads = live_spreads(state, _now_ms(), config.universe_live_stale_after)
        except StorageUnavailable as exc:
            context.log.warning(
                f"no live spreads ({exc}): spread failures cannot be confirmed, none excludes"
            )
            spreads = {}
        result = quick_check(
            current.symbols,
            {s.symbol: s for s in report.stats},
            minimums_from(config),
            live_spread=spreads,
            max_share=config.max_exclusion_share,
        )
        rescan = exclude(db, result.excluded, source="quick_check", run_id=context.run_id)
        # also when nothing new was excluded: a version an earlier try stored but could not publish (Redis
        # down) is published now, else the service would follow the symbols it excluded until the next rescan
        with redis.open() as state:
            published = publish_pending(db, state, source="universe_quick_check")
    if published is not None and (rescan is None or published.rescan_id != rescan.rescan_id):
        context.log.warning(
            f"published universe version {published.rescan_id}, stored but not published before"
        )
    if result.market_wide is not None:
        context.log.warning(result.market_wide)
    for e in result.excluded:
        context.log.warning(f"excluded {e.symbol}: {e.detail}")
    context.add_output_metadata(
        {
            "checked": len(current.symbols),
            "excluded": dg.MetadataValue.json({e.symbol: e.detail for e in result.excluded}),
            "unknown (kept)": dg.MetadataValue.json(list(result.unknown)),
            "spread not confirmed live (kept unless another minimum fails)": dg.MetadataValue.json(
                list(result.unconfirmed)
            ),
            "market-wide (nobody excluded)": result.market_wide or "no",
            "held back": dg.MetadataValue.json({e.symbol: e.detail for e in result.held}),
            "published version": "none (already published)" if published is None else published.rescan_id,
        }
    )


@dg.job(description="Hourly quick check of the universe against the minimums (spec 4.2).")
def universe_quick_check_job() -> None:
    universe_quick_check()


class ExclusionConfig(dg.Config):
    """One emergency exclusion, as the sensor decided it."""

    symbol: str
    reason: str
    detail: str
    values_json: str = "{}"


@dg.op(description="Remove one symbol from the universe at once (emergency exclusion), with its reason.")
def universe_exclusion(
    context: dg.OpExecutionContext, config: ExclusionConfig, database: DatabaseResource, redis: RedisResource
) -> None:
    exclusion = Exclusion(config.symbol, Reason(config.reason), config.detail, json.loads(config.values_json))
    with database.open() as db:
        # EmptyUniverseRefused (the last symbol) fails the run: it shows in the UI, the universe stays
        rescan = exclude(db, [exclusion], source="emergency", run_id=context.run_id)
        # also when the symbol is already out: a retry of a run whose publish failed (Redis down) stored the
        # exclusion the first time and must still hand it to the service
        with redis.open() as state:
            published = publish_pending(db, state, source="emergency_exclusion")
    if rescan is None:
        done = "" if published is None else f"; published universe version {published.rescan_id}"
        context.log.info(f"{config.symbol} is no longer in the universe: nothing to exclude{done}")
        return
    context.log.warning(f"excluded {config.symbol}: {config.detail}")


@dg.job(
    description="Emergency exclusion of one symbol (launched by emergency_exclusion_sensor).",
    # the sensor never re-requests a run key it used: the daemon's retries are what repeat a failed one
    tags=RETRY_TAGS,
)
def universe_exclusion_job() -> None:
    universe_exclusion()


def rescan_schedule_cron(load: Callable[[], Settings] = load_settings) -> tuple[str, str]:
    """The cron and the description of ``universe_rescan_schedule``, from ``universe_rescan_interval``.

    Never raises: settings that cannot be read (a bad ``TAPEWATCH_*`` value, a missing config file) give the
    default interval, a logged warning and a description saying why, so the code location still loads (the
    runs themselves then fail on the same ConfigError, with its message)."""
    default = float(Settings.model_fields["universe_rescan_interval"].default)
    try:
        hours = load().universe_rescan_interval
    except ConfigError as exc:
        problem = str(exc).replace("\n", " ")
        log.warning("universe_rescan_schedule uses the default %g h: %s", default, problem)
        return rescan_cron(default), (
            f"Full universe rescan every {default:g} h: the settings could not be read, so the default "
            f"{default:g} h is used until they are fixed and the code location reloaded ({problem})"
        )
    return rescan_cron(hours), f"Full universe rescan every {hours:g} h (universe_rescan_interval)."


_RESCAN_CRON, _RESCAN_DESCRIPTION = rescan_schedule_cron()
universe_rescan_schedule = dg.ScheduleDefinition(
    name="universe_rescan_schedule",
    job=universe_rescan_job,
    # read when the code location loads: a changed interval needs a reload (the UI's "Reload" button)
    cron_schedule=_RESCAN_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=_RESCAN_DESCRIPTION,
)

universe_quick_check_schedule = dg.ScheduleDefinition(
    name="universe_quick_check_schedule",
    job=universe_quick_check_job,
    cron_schedule="30 * * * *",  # half past: never at the same minute as a full rescan
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly: minimums only on the current universe; failing symbols leave at once.",
)


#: While no universe is stored, the emergency sensor requests a first rescan at most once per this many
#: seconds (its run key changes that often): a first rescan that failed for good (its retries spent) is asked
#: again after it, not on every tick.
FIRST_RESCAN_EVERY_S = 3600
#: The tag of the rescan the sensor requests itself while no universe is stored.
FIRST_RESCAN_TAG = "tapewatch/first_rescan"
#: Run statuses of a rescan that is still to come or going on.
_IN_FLIGHT = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def first_rescan(context: dg.SensorEvaluationContext, now_ms: int) -> dg.SensorResult:
    """No universe is stored yet: request ``universe_rescan_job`` unless one is queued or running (the
    schedule's, ``tapewatch rescan``'s, the dashboard's, or the one requested before), so the quick check and
    the emergency check get a universe to check minutes after a deployment instead of hours."""
    in_flight = context.instance.get_runs(
        filters=dg.RunsFilter(job_name=RESCAN_JOB, statuses=_IN_FLIGHT), limit=20
    )
    if in_flight:
        # the one it requested itself, else the one that runs first (get_runs lists the newest first): not a
        # `tapewatch rescan` queued behind it, which a plain newest-first pick named as "the first rescan"
        own = [run for run in in_flight if run.tags.get(FIRST_RESCAN_TAG) == "true"]
        run = (own or in_flight)[-1]
        return dg.SensorResult(
            skip_reason=f"no universe stored yet; the first rescan is {run.status.value} (run {run.run_id})"
        )
    slot = now_ms // (FIRST_RESCAN_EVERY_S * 1000)
    context.log.info("no universe stored yet: requesting the first universe rescan")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"first-rescan:{slot}", job_name=RESCAN_JOB, tags={FIRST_RESCAN_TAG: "true"}
            )
        ]
    )


class _Cursor(msgspec.Struct, frozen=True):
    strikes: dict[str, int] = {}


def emergency_requests(check: EmergencyCheck, rescan_id: int) -> list[dg.RunRequest]:
    """One run of ``universe_exclusion_job`` per exclusion; the run key makes a repeat a no-op."""
    return [
        dg.RunRequest(
            run_key=f"emergency:{e.symbol}:{rescan_id}",
            job_name=universe_exclusion_job.name,
            run_config={
                "ops": {
                    "universe_exclusion": {
                        "config": {
                            "symbol": e.symbol,
                            "reason": e.reason.value,
                            "detail": e.detail,
                            "values_json": json.dumps(e.values),
                        }
                    }
                }
            },
            tags={"tapewatch/symbol": e.symbol, "tapewatch/reason": e.reason.value},
        )
        for e in check.exclusions
    ]


@recorded_sensor(
    jobs=[universe_exclusion_job, universe_rescan_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Live spread/depth/volume from Redis; excludes a symbol breaking the minimums (spec 4.2). "
    "Requests the first universe rescan while none is stored.",
)
def emergency_exclusion_sensor(
    context: dg.SensorEvaluationContext,
    settings: TapewatchSettings,
    database: DatabaseResource,
    redis: RedisResource,
) -> dg.SensorResult:
    cursor = msgspec.json.decode(context.cursor, type=_Cursor) if context.cursor else _Cursor()
    try:
        with database.open() as db:
            current = current_universe(db)
        with redis.open() as state:
            feeds = state.feeds()
    except StorageUnavailable as exc:
        return dg.SensorResult(skip_reason=f"storage unavailable, retrying next tick: {exc}")
    if current is None:
        return first_rescan(context, _now_ms())
    rules = emergency_rules_from(settings.settings())
    check = emergency_check(
        current.symbols,
        live_liquidity(feeds),
        rules,
        cursor.strikes,
        now_ms=_now_ms(),
    )
    new_cursor = msgspec.json.encode(_Cursor(check.strikes)).decode()
    requests = emergency_requests(check, current.rescan_id)
    if check.stale:
        context.log.warning(
            f"{len(check.stale)} symbols' live values are older than {rules.stale_after_s:g} s (is the realtime "
            f"service publishing?): ignored: {', '.join(check.stale[:10])}"
        )
    silent = ""
    if check.silent_shards:
        silent = (
            f"no event for over {rules.window_seconds:g} s from realtime shard {', '.join(check.silent_shards)} "
            "(its feed is down, not its symbols: silence excludes none of them)"
        )
        context.log.warning(silent)
    if check.market_wide is not None:
        context.log.warning(check.market_wide)
    if not requests:
        struck = ", ".join(f"{s}×{n}" for s, n in sorted(check.strikes.items())) or "none"
        skip = (
            f"{len(current.symbols)} symbols checked, {len(check.unknown)} unknown, {len(check.stale)} stale; "
            f"strikes: {struck}"
        )
        if check.market_wide is not None:
            skip = f"{check.market_wide}. {skip}"
        if silent:
            skip = f"{skip}; {silent}"
        return dg.SensorResult(skip_reason=skip, cursor=new_cursor)
    return dg.SensorResult(run_requests=requests, cursor=new_cursor)


defs = dg.Definitions(
    assets=UNIVERSE_ASSETS,
    jobs=[universe_rescan_job, universe_quick_check_job, universe_exclusion_job],
    schedules=[universe_rescan_schedule, universe_quick_check_schedule],
    sensors=[emergency_exclusion_sensor],
)
