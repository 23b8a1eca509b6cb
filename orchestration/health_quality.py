"""``data_quality_sensor`` (60 s): anomalies in the feeds (``tapewatch.anomaly``) pause signalling, clean
checks resume it; a pause this sensor set is its own to lift, even after Redis lost it or its cursor was lost.
See ``orchestration.health`` for what the health sensors share."""

import dagster as dg
import msgspec
from msgspec.structs import replace

from orchestration.health_control import SOURCE, whose
from orchestration.health_cursor import DataQualityState, retry_next_tick, sensor_result
from orchestration.health_incidents import incident_change, open_incident_of, record_incidents, unrecovered
from orchestration.resources import DatabaseResource, RedisResource, TapewatchSettings
from orchestration.sensor_ticks import recorded_sensor
from tapewatch.adapters.redis_state import RedisState
from tapewatch.anomaly import FeedSample, QualityConfig, TotalsSample, assess
from tapewatch.errors import StorageUnavailable, TapewatchError
from tapewatch.health import Held, Streak, Transition, decode_state, queued

#: How the reason of every pause this sensor sets starts (it tells its pause after a lost cursor).
PAUSE_PREFIX = "data quality: "
_RUNNING = dg.DefaultSensorStatus.RUNNING


def _recover_pause(
    state: DataQualityState, paused: str | None, database: DatabaseResource
) -> tuple[DataQualityState, str]:
    """``state`` with a pause of this sensor's (its reason starts with :data:`PAUSE_PREFIX`) taken back as its
    own, and the alarm in force while that pause or its open incident lasts; and a note. Done once per cursor
    (``recovered``); without PostgreSQL the pause is still recovered from its prefix and the incident is read
    at the next tick. A pause absent while its incident is open may have been lost with Redis's data: the
    incident's reason (the pause's) is claimed, and lifted if the realtime service writes it back."""
    if state.recovered:
        return state, ""
    ours = paused is not None and paused.startswith(PAUSE_PREFIX) and state.pause is None
    note = ""
    try:
        incident = open_incident_of(database, "data_quality", state.pending)
        state = replace(state, recovered=True)
    except TapewatchError as exc:
        incident, note = None, unrecovered(exc)
    if ours:
        state = replace(state, pause=paused)
        note = f"; pause ({paused}) taken back as this sensor's{note}"
    elif incident is not None and not state.streak.tripped:
        if paused is None and incident.action == "signalling paused" and state.pause is None:
            state = replace(state, pause=incident.reason)  # lost with Redis's data too: lifted once back
        note = f"; open incident {incident.id} taken back{note}"
    if (ours or incident is not None) and not state.streak.tripped:
        state = replace(state, streak=Streak(tripped=True))
    return state, note


@recorded_sensor(default_status=_RUNNING, description="Feed anomalies > k sd.")
def data_quality_sensor(
    context: dg.SensorEvaluationContext,
    settings: TapewatchSettings,
    redis: RedisResource,
    database: DatabaseResource,
) -> dg.SensorResult:
    s = settings.settings()
    state, warning = decode_state(context.cursor, DataQualityState)
    config = QualityConfig(
        k=s.anomaly_threshold, window=s.anomaly_window, min_samples=s.anomaly_min_samples, min_symbols=3
    )
    with redis.open() as rs:
        try:
            feeds = rs.feeds()
            metrics = rs.realtime_metrics()
            control = rs.read_control()
        except StorageUnavailable as exc:
            return sensor_result(f"Redis unavailable, nothing judged: {exc}", state, warning)
        paused_now = control.paused_reason
        state = _migrated(state, paused_now)
        state, recovered = _recover_pause(state, paused_now, database)
        samples = {
            sym: FeedSample(sym, f.updated_ms, f.last_price, f.spread, f.messages) for sym, f in feeds.items()
        }
        totals = None
        if metrics.get("updated_ms"):
            totals = TotalsSample(int(metrics["updated_ms"]), _count(metrics.get("resyncs")))
        # REST polling gives a symbol a fraction of its streamed messages: its rates are no data fault, and
        # must not teach the statistics a rate the streams never have (the interval after a switch back too)
        apart = control.backup_feed or state.backup_feed
        judged, found = assess(state, samples, totals, config, rates_apart=apart)
        streak, move = judged.streak.step(found.dirty, trip_after=1, clear_after=s.data_quality_clean_checks)
        # every field assess() judged, plus what only this sensor keeps
        new = replace(
            state, **{**msgspec.structs.asdict(judged), "streak": streak}, backup_feed=control.backup_feed
        )
        values = {
            "anomalies": [a.describe() for a in found.anomalies[:20]],
            "anomalous_symbols": found.details["anomalous_symbols"],
            "judged": found.judged,
            "unknown": found.unknown,
        }
        done = ""
        try:
            if move is Transition.TRIP:
                reason = PAUSE_PREFIX + "; ".join(a.describe() for a in found.anomalies[:3])
                paused = rs.read_control().paused_reason
                if paused is not None and whose(rs, "paused", state.pause, paused) is not Held.OURS:
                    # someone else's pause is in force: ours would overwrite its reason, then lift it
                    action, mine = f"signalling already paused ({paused}), left as is", None
                else:
                    rs.pause(reason, source=SOURCE)
                    action, mine = "signalling paused", reason
                change = incident_change("data_quality", "open", reason, values, action)
                new = replace(new, pause=mine, pending=queued(state.pending, change))
                done = " -> paused" if mine else f" -> {action}"
            elif move is Transition.RECOVER:
                recovery, mine = _resume(rs, state.pause)
                change = incident_change("data_quality", "close", recovery, values)
                new = replace(new, pause=mine, pending=queued(state.pending, change))
                done = " -> resumed" if recovery == "signalling resumed" else f" -> {recovery}"
        except TapewatchError as exc:
            thresholds = (1, s.data_quality_clean_checks)
            return retry_next_tick(new, judged.streak, move, thresholds, exc, warning)
        if move is Transition.NONE and new.pause is not None and not new.streak.tripped:
            new, done = _lift_lost_pause(rs, new)
    pending, note = record_incidents(database, new.pending)
    head = (
        f"{len(found.anomalies)} anomalies ({found.details['anomalous_symbols']} symbols): "
        + "; ".join(a.describe() for a in found.anomalies[:3])
        if found.anomalies
        else "no anomaly"
    )
    tail = f"{found.symbols} symbols, {found.judged} values judged, {found.unknown} unknown"
    tail += f"; {found.note}" if found.note else ""
    return sensor_result(f"{head}{done} ({tail}){recovered}{note}", replace(new, pending=pending), warning)


def _migrated(state: DataQualityState, paused: str | None) -> DataQualityState:
    """``state`` of a cursor written before ``pause``: its ``paused_ours`` claimed the pause in force when
    that pause has this sensor's prefix."""
    if not state.paused_ours:
        return state
    mine = paused if paused is not None and paused.startswith(PAUSE_PREFIX) else None
    return replace(state, pause=state.pause or mine, paused_ours=False)


def _resume(rs: RedisState, pause: str | None) -> tuple[str, str | None]:
    """Lift the pause this sensor set (``pause``: its reason; None: none) on recovery: the recovery, and the
    claim kept (a pause lost with Redis's data, lifted once the realtime service writes it back)."""
    paused = rs.read_control().paused_reason
    holder = whose(rs, "paused", pause, paused)
    if holder is Held.OURS:
        rs.resume(source=SOURCE)
        return "signalling resumed", None
    if holder is Held.LOST:
        return "pause lost with Redis's data (the realtime service keeps it): lifted once written back", pause
    # an operator's own pause (even one put over ours, or ours set again by hand) is not ours to lift
    recovery = "pause left in force: not this sensor's" if paused else "pause already lifted by someone else"
    return recovery, None


def _lift_lost_pause(rs: RedisState, state: DataQualityState) -> tuple[DataQualityState, str]:
    """After a recovery that found this sensor's pause lost with Redis's data: lift it once the realtime
    service wrote it back; forget it once it is someone else's. The state and a note."""
    try:
        holder = whose(rs, "paused", state.pause, rs.read_control().paused_reason)
        if holder is Held.LOST:
            return state, f" (its pause lost with Redis's data is lifted once written back: {state.pause})"
        if holder is Held.OURS:
            rs.resume(source=SOURCE)
            return replace(state, pause=None), " -> resumed (its pause lost with Redis's data, written back)"
    except TapewatchError as exc:
        return state, f" (its pause lost with Redis's data not checked: {exc}; retried next tick)"
    return replace(state, pause=None), ""


def _count(value: float | None) -> int | None:
    return None if value is None else int(value)
