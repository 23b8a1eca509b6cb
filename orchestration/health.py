"""Health sensors (spec 11.1) and the hourly market-data archive.

Sensors (running by default; each keeps its memory in its cursor, JSON):

- ``api_connectivity_sensor`` (30 s): Binance REST ping and the realtime heartbeat. ``timeout_threshold``
  failing checks in a row → the service switches to its backup feed; ``api_recovery_checks`` good ones → back.
- ``data_quality_sensor`` (60 s): anomalies beyond ``anomaly_threshold`` standard deviations in price jumps,
  spreads and message rates per symbol, and overall message and resync rates (``tapewatch.anomaly``) →
  signalling paused; ``data_quality_clean_checks`` clean checks → resumed.
- ``system_performance_sensor`` (30 s): CPU above ``cpu_threshold`` % or memory above ``memory_threshold`` %
  (psutil, on the machine running the sensor) → the universe is capped at half its size (again while the
  overload lasts, never below ``min_universe_under_load``); ``performance_clear_checks`` healthy checks → the
  cap the operator had before is restored.

Every action opens a health incident and every recovery closes it (``tapewatch.adapters.health_store``).
Sensors launch no runs: each tick ends with a skip reason saying what it saw and did. An action that fails
(Redis or PostgreSQL down) is retried at the next tick; a repeated action is harmless (idempotent).
"""

import time
from collections.abc import Callable

import dagster as dg
import msgspec
import psutil

from assets.archive import market_data_archive
from orchestration.resources import BinanceRestResource, DatabaseResource, RedisResource, TapewatchSettings
from tapewatch.adapters.health_store import close_incident, open_incident
from tapewatch.adapters.redis_keys import REALTIME
from tapewatch.adapters.redis_state import RedisState
from tapewatch.anomaly import FeedSample, QualityConfig, QualityState, TotalsSample, assess
from tapewatch.errors import StorageUnavailable, TapewatchError
from tapewatch.health import (
    Streak,
    Transition,
    connectivity_problems,
    decode_state,
    encode_state,
    overload,
    shrunk_universe,
)

SOURCE = "dagster:health"
PAUSE_PREFIX = "data quality: "
_RUNNING = dg.DefaultSensorStatus.RUNNING


class ConnectivityState(msgspec.Struct, frozen=True, kw_only=True):
    streak: Streak = msgspec.field(default_factory=Streak)


class PerformanceState(msgspec.Struct, frozen=True, kw_only=True):
    """``cap``: the universe cap this sensor set (None: none); ``previous_cap``: the one it replaced."""

    streak: Streak = msgspec.field(default_factory=Streak)
    cap: int | None = None
    previous_cap: int | None = None


def _retry(old: Streak, move: Transition, trip_after: int, clear_after: int) -> Streak:
    """The streak to keep when the action of ``move`` failed: one check short of taking it again."""
    if move is Transition.RECOVER:
        return Streak(passes=clear_after - 1, tripped=True)
    return Streak(failures=trip_after - 1, tripped=old.tripped)


def _result(message: str, cursor: msgspec.Struct, warning: str | None) -> dg.SensorResult:
    return dg.SensorResult(
        skip_reason=f"{message}{f' ({warning})' if warning else ''}", cursor=encode_state(cursor)
    )


def _ping(binance: BinanceRestResource, timeout: float) -> str | None:
    """None when ``/fapi/v1/ping`` answers, else why not. No retries: the streak is the retry."""
    quick = BinanceRestResource(base_url=binance.base_url, timeout=timeout, max_retries=0)
    try:
        quick.run(lambda client: client.ping())
    except (TapewatchError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@dg.sensor(minimum_interval_seconds=30, default_status=_RUNNING, description="Binance REST and heartbeat.")
def api_connectivity_sensor(
    context: dg.SensorEvaluationContext,
    settings: TapewatchSettings,
    redis: RedisResource,
    database: DatabaseResource,
    binance: BinanceRestResource,
) -> dg.SensorResult:
    s = settings.settings()
    state, warning = decode_state(context.cursor, ConnectivityState)
    rest_error = _ping(binance, min(s.rest_timeout, 5.0))
    with redis.open() as rs:
        try:
            beat = rs.heartbeat(REALTIME)
            age = None if beat is None else beat.age(int(time.time() * 1000))
        except StorageUnavailable:
            age = None
        problems = connectivity_problems(
            rest_error=rest_error, heartbeat_age_s=age, heartbeat_max_age_s=s.heartbeat_max_age
        )
        streak, move = state.streak.step(
            bool(problems), trip_after=s.timeout_threshold, clear_after=s.api_recovery_checks
        )
        values = {"problems": problems, "heartbeat_age_s": age, "rest_error": rest_error}
        try:
            if move is Transition.TRIP:
                rs.set_backup_feed(True, source=SOURCE)
                with database.open() as db:
                    open_incident(
                        db,
                        "api_connectivity",
                        reason=f"{s.timeout_threshold} failed checks in a row: " + "; ".join(problems),
                        action="backup feed on",
                        values=values,
                    )
            elif move is Transition.RECOVER:
                rs.set_backup_feed(False, source=SOURCE)
                with database.open() as db:
                    close_incident(db, "api_connectivity", recovery="primary feed", values=values)
        except TapewatchError as exc:
            kept = ConnectivityState(
                streak=_retry(state.streak, move, s.timeout_threshold, s.api_recovery_checks)
            )
            return _result(f"could not {move.value} ({exc}); retrying next tick", kept, warning)
    summary = "; ".join(problems) if problems else "REST and heartbeat fine"
    done = {Transition.TRIP: " -> backup feed on", Transition.RECOVER: " -> primary feed"}.get(move, "")
    tail = f"failures {streak.failures}, passes {streak.passes}, backup {'on' if streak.tripped else 'off'}"
    return _result(f"{summary}{done} ({tail})", ConnectivityState(streak=streak), warning)


@dg.sensor(minimum_interval_seconds=60, default_status=_RUNNING, description="Feed anomalies > k sd.")
def data_quality_sensor(
    context: dg.SensorEvaluationContext,
    settings: TapewatchSettings,
    redis: RedisResource,
    database: DatabaseResource,
) -> dg.SensorResult:
    s = settings.settings()
    state, warning = decode_state(context.cursor, QualityState)
    config = QualityConfig(
        k=s.anomaly_threshold, window=s.anomaly_window, min_samples=s.anomaly_min_samples, min_symbols=3
    )
    with redis.open() as rs:
        try:
            feeds = rs.feeds()
            metrics = rs.metrics(REALTIME)
        except StorageUnavailable as exc:
            return _result(f"Redis unavailable, nothing judged: {exc}", state, warning)
        samples = {
            sym: FeedSample(sym, f.updated_ms, f.last_price, f.spread, f.messages) for sym, f in feeds.items()
        }
        totals = None
        if metrics.get("updated_ms"):
            totals = TotalsSample(
                int(metrics["updated_ms"]),
                _count(metrics.get("messages")),
                _count(metrics.get("resyncs")),
            )
        new, found = assess(state, samples, totals, config)
        streak, move = new.streak.step(found.dirty, trip_after=1, clear_after=s.data_quality_clean_checks)
        values = {
            "anomalies": [a.describe() for a in found.anomalies[:20]],
            "anomalous_symbols": found.details["anomalous_symbols"],
            "judged": found.judged,
            "unknown": found.unknown,
        }
        try:
            if move is Transition.TRIP:
                reason = PAUSE_PREFIX + "; ".join(a.describe() for a in found.anomalies[:3])
                rs.pause(reason, source=SOURCE)
                with database.open() as db:
                    open_incident(
                        db, "data_quality", reason=reason, action="signalling paused", values=values
                    )
            elif move is Transition.RECOVER:
                # an operator's own pause is not ours to lift
                paused = rs.read_control().paused_reason
                if paused is not None and paused.startswith(PAUSE_PREFIX):
                    rs.resume(source=SOURCE)
                with database.open() as db:
                    close_incident(db, "data_quality", recovery="signalling resumed", values=values)
        except TapewatchError as exc:
            kept = msgspec.structs.replace(
                new, streak=_retry(new.streak, move, 1, s.data_quality_clean_checks)
            )
            return _result(f"could not {move.value} ({exc}); retrying next tick", kept, warning)
    head = (
        f"{len(found.anomalies)} anomalies ({found.details['anomalous_symbols']} symbols): "
        + "; ".join(a.describe() for a in found.anomalies[:3])
        if found.anomalies
        else "no anomaly"
    )
    done = {Transition.TRIP: " -> paused", Transition.RECOVER: " -> resumed"}.get(move, "")
    tail = f"{found.symbols} symbols, {found.judged} values judged, {found.unknown} unknown"
    return _result(f"{head}{done} ({tail})", msgspec.structs.replace(new, streak=streak), warning)


def _count(value: float | None) -> int | None:
    return None if value is None else int(value)


def measure_load() -> tuple[float, float]:
    """CPU use over one second and memory use, both in % of the machine."""
    return psutil.cpu_percent(interval=1.0), psutil.virtual_memory().percent


def _universe_size(rs: RedisState, fallback: int) -> int:
    control = rs.read_control()
    if control.max_universe is not None:
        return control.max_universe
    feeds = len(rs.feeds())
    if feeds:
        return feeds
    return len(control.universe) if control.universe else fallback


def performance_sensor(measure: Callable[[], tuple[float, float]]) -> dg.SensorDefinition:
    """The system performance sensor with its load measurement (tests pass their own)."""

    @dg.sensor(
        name="system_performance_sensor",
        minimum_interval_seconds=30,
        default_status=_RUNNING,
        description="CPU/memory overload shrinks the universe.",
    )
    def system_performance_sensor(
        context: dg.SensorEvaluationContext,
        settings: TapewatchSettings,
        redis: RedisResource,
        database: DatabaseResource,
    ) -> dg.SensorResult:
        s = settings.settings()
        state, warning = decode_state(context.cursor, PerformanceState)
        cpu, memory = measure()
        problems = overload(
            cpu_percent=cpu,
            memory_percent=memory,
            cpu_threshold=s.cpu_threshold,
            memory_threshold=s.memory_threshold,
        )
        streak, move = state.streak.step(
            bool(problems), trip_after=s.performance_trip_checks, clear_after=s.performance_clear_checks
        )
        new = msgspec.structs.replace(state, streak=streak)
        values = {"cpu_percent": cpu, "memory_percent": memory, "problems": problems}
        note = ""
        try:
            with redis.open() as rs:
                if move in (Transition.TRIP, Transition.ESCALATE):
                    current = state.cap if state.cap is not None else _universe_size(rs, s.universe_size)
                    target = shrunk_universe(current, s.min_universe_under_load)
                    previous = (
                        rs.read_control().max_universe if move is Transition.TRIP else state.previous_cap
                    )
                    if target is not None:
                        rs.set_max_universe(target, source=SOURCE)
                        note = f" -> universe capped at {target} (was {current})"
                    else:
                        note = f" -> universe of {current} is at the floor, not shrunk"
                    new = PerformanceState(
                        streak=streak, cap=target if target is not None else current, previous_cap=previous
                    )
                    with database.open() as db:
                        open_incident(
                            db,
                            "system_performance",
                            reason="; ".join(problems),
                            action=note.removeprefix(" -> "),
                            values={**values, "cap": new.cap, "previous_cap": previous},
                        )
                elif move is Transition.RECOVER:
                    rs.set_max_universe(state.previous_cap, source=SOURCE)
                    restored = "lifted" if state.previous_cap is None else f"back to {state.previous_cap}"
                    note = f" -> universe cap {restored}"
                    new = PerformanceState(streak=streak)
                    with database.open() as db:
                        close_incident(
                            db, "system_performance", recovery=f"universe cap {restored}", values=values
                        )
        except TapewatchError as exc:
            kept = msgspec.structs.replace(
                state,
                streak=_retry(state.streak, move, s.performance_trip_checks, s.performance_clear_checks),
            )
            return _result(f"could not {move.value} ({exc}); retrying next tick", kept, warning)
        head = "; ".join(problems) if problems else f"CPU {cpu:.0f} %, memory {memory:.0f} %: fine"
        return _result(f"{head}{note}", new, warning)

    return system_performance_sensor


system_performance_sensor = performance_sensor(measure_load)

archive_job = dg.define_asset_job("market_data_archive_job", selection=[market_data_archive])
# 10 minutes past the hour: the capture writer has rolled the previous hour's file by then
archive_schedule = dg.build_schedule_from_partitioned_job(
    archive_job, minute_of_hour=10, default_status=dg.DefaultScheduleStatus.RUNNING
)

defs = dg.Definitions(
    assets=[market_data_archive],
    jobs=[archive_job],
    schedules=[archive_schedule],
    sensors=[api_connectivity_sensor, data_quality_sensor, system_performance_sensor],
)
