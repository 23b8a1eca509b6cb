"""Health sensors (spec 11.1) and the hourly market-data archive.

Sensors (running by default; each keeps its memory in its cursor, JSON):

- ``api_connectivity_sensor`` (30 s): the Binance REST ping, the realtime heartbeat and what the websockets
  deliver (``ws_silent_ms`` in the metrics hash; while the backup feed is on, the sensor's own websocket probe).
  ``timeout_threshold`` checks in a row with the websockets silent while REST answers → the service switches
  to its backup feed; ``api_recovery_checks`` with the probe receiving, and at least ``backup_min_dwell`` s on
  the backup feed → back (with REST down, back at once: the backup feed polls it). The probe is not the
  service: a switch back followed within the probation by a new switch on (the service's websockets silent
  again) failed, and doubles the next dwell, up to ``backup_max_dwell`` (``tapewatch.health.FeedDwell``).
  REST down or the service down is an incident reported, never a switch (``judge_connectivity``).
- ``data_quality_sensor`` (60 s): anomalies beyond ``anomaly_threshold`` standard deviations in price jumps,
  spreads and message rates per symbol, and overall message and resync rates (``tapewatch.anomaly``) →
  signalling paused; ``data_quality_clean_checks`` clean checks → resumed.
- ``system_performance_sensor`` (30 s): CPU above ``cpu_threshold`` % or memory above ``memory_threshold`` %
  (psutil, on the machine running the sensor) → the universe is capped at half its size (again while the
  overload lasts, never below ``min_universe_under_load``); ``performance_clear_checks`` healthy checks → the
  cap the operator had before is restored.

Every action opens a health incident and every recovery closes it (``tapewatch.adapters.health_store``).
Sensors launch no runs: each tick ends with a skip reason saying what it saw and did.

Failures: a Redis action that fails did not take effect, so the streak is kept one check short and the action
is retried at the next tick. Once a Redis action succeeded, the transition (and the cap) is committed to the
cursor at once; an incident write PostgreSQL refuses is kept in the cursor as pending and only that write is
retried, in order, at later ticks (with the time the action took effect).

Ownership: a sensor undoes only what it did. A pause, a backup feed or a universe cap found in force that
this sensor did not set is left as it is (the incident says so), and on recovery it is not lifted; a cap the
operator changed while the sensor held its own is not overwritten by the restore.

A Redis that comes back empty (restarted without persistence) loses the pause and the cap with everything
else, and the realtime service, which keeps what it applied, writes them back with control events from
``realtime (restored)`` (``ControlLoop``): in either order with the sensor's recovery. So the pause reason and
the cap a sensor set are its claim, kept in its cursor, and ``tapewatch.health.held`` decides: the same value
in force, written last by the sensor or by the service's restore, is still the sensor's to lift; an absent
key with no control event of anyone else's was lost, not lifted, and the claim outlives the recovery until the
value is back (then lifted) or someone else's (a different value, or a dashboard/CLI event after the
sensor's: theirs). A lost cap with an operator's cap to restore is restored at once (the service's restore
writes only absent keys).

A cursor that is lost (reset from the UI, unreadable) would forget what the sensor did and leave its action in
force for good, so a sensor whose cursor has not yet been checked (``recovered`` false) first reads what it
did from durable state: its open incident in PostgreSQL (the action "backup feed on"; the ``cap`` and
``previous_cap`` of a shrink) and, for the pause, the ``data quality: `` prefix of the pause reason in Redis.
What is still in force is taken back as its own, and an open incident as an alarm in force, so the recovery
lifts it and closes the incident as if the cursor had never been lost. While PostgreSQL cannot be read the
check is retried at the next tick (the pause is recovered from its prefix meanwhile).
"""

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import dagster as dg
import msgspec
import psutil
from msgspec.structs import replace
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect as ws_connect

from assets.archive import market_data_archive
from orchestration.resources import BinanceRestResource, DatabaseResource, RedisResource, TapewatchSettings
from tapewatch.adapters.health_store import (
    HealthIncident,
    close_incident,
    open_health_incidents,
    open_incident,
)
from tapewatch.adapters.redis_keys import REALTIME
from tapewatch.adapters.redis_state import RedisState
from tapewatch.adapters.redis_values import ControlEvent
from tapewatch.anomaly import FeedSample, QualityConfig, QualityState, TotalsSample, assess
from tapewatch.errors import StorageUnavailable, TapewatchError
from tapewatch.health import (
    Connectivity,
    FeedDwell,
    Held,
    PendingIncident,
    Streak,
    Transition,
    decode_state,
    encode_state,
    held,
    judge_connectivity,
    overload,
    queued,
    shrunk_universe,
)
from tapewatch.streams import combined_url

SOURCE = "dagster:health"
PAUSE_PREFIX = "data quality: "
#: How the source of the realtime service's restore ends (``realtime (restored)``, ``realtime-IofN (restored)``:
#: ``realtime.control``): it writes back what the service had applied, so a value of this sensor's it wrote
#: back is still this sensor's.
RESTORED_SUFFIX = " (restored)"
_RUNNING = dg.DefaultSensorStatus.RUNNING
#: Seconds between two connectivity checks (at least): the dwell's probation counts in them.
CONNECTIVITY_INTERVAL_S = 30
_Pending = tuple[PendingIncident, ...]


class ConnectivityState(msgspec.Struct, frozen=True, kw_only=True):
    """``streak``: checks with any problem (the incident); ``feed``: checks the backup feed would answer
    (its switch); ``backup_ours``: the backup feed in force is this sensor's (it switches off only its own);
    ``switched_ms``: when this sensor last switched the feed, either way (wall clock, ms; None: never);
    ``relapses``: switch backs in a row that failed (the dwell doubles with each);
    ``pending``: incident changes not recorded yet."""

    streak: Streak = msgspec.field(default_factory=Streak)
    feed: Streak = msgspec.field(default_factory=Streak)
    backup_ours: bool = False
    switched_ms: int | None = None
    relapses: int = 0
    pending: _Pending = ()
    recovered: bool = False


class DataQualityState(QualityState, frozen=True, kw_only=True):
    """The anomaly statistics and streak, ``pause`` (the reason of the pause this sensor set and has not
    lifted, None: none; it resumes only its own; kept past the recovery while the pause is lost with Redis's
    data), ``pending`` incident changes not recorded yet and ``recovered`` (what it did before its cursor was
    lost has been read back from durable state). ``paused_ours`` is only read, from cursors written before
    ``pause``: the pause in force was this sensor's (its prefix then tells its reason)."""

    pause: str | None = None
    paused_ours: bool = False
    pending: _Pending = ()
    recovered: bool = False


class PerformanceState(msgspec.Struct, frozen=True, kw_only=True):
    """``cap``: the universe cap this sensor set and holds (None: none; kept past the recovery while it is
    lost with Redis's data); ``previous_cap``: the one to restore on recovery (the operator's); ``pending``:
    incident changes not recorded yet; ``recovered``: what it did before its cursor was lost has been read
    back from durable state."""

    streak: Streak = msgspec.field(default_factory=Streak)
    cap: int | None = None
    previous_cap: int | None = None
    pending: _Pending = ()
    recovered: bool = False


def _retry_next_tick(
    kept: msgspec.Struct,
    old: Streak,
    move: Transition,
    thresholds: tuple[int, int],
    exc: TapewatchError,
    warning: str | None,
    field: str = "streak",
) -> dg.SensorResult:
    """The result when the Redis action of ``move`` failed (it did not take effect): the state ``kept``
    with its streak ``field`` one check short of taking it again (``thresholds``: trip after, clear after)."""
    trip_after, clear_after = thresholds
    if move is Transition.RECOVER:
        streak = Streak(passes=clear_after - 1, tripped=True)
    else:
        streak = Streak(failures=trip_after - 1, tripped=old.tripped)
    return _result(
        f"could not {move.value} ({exc}); retrying next tick", replace(kept, **{field: streak}), warning
    )


def _change(
    kind: str, op: Literal["open", "close"], text: str, values: dict[str, Any], action: str = ""
) -> PendingIncident:
    return PendingIncident(
        kind=kind, op=op, text=text, action=action, values=values, at_ms=int(time.time() * 1000)
    )


def _record(database: DatabaseResource, pending: _Pending) -> tuple[_Pending, str]:
    """Write ``pending`` incident changes in order; the ones left (from the first that failed) and a note
    for the skip reason (empty when all were written)."""
    if not pending:
        return (), ""
    done = 0
    try:
        with database.open() as db:
            for change in pending:
                at = datetime.fromtimestamp(change.at_ms / 1000, UTC)
                if change.op == "open":
                    open_incident(
                        db, change.kind, reason=change.text, action=change.action, values=change.values, at=at
                    )
                else:
                    close_incident(db, change.kind, recovery=change.text, values=change.values, at=at)
                done += 1
    except TapewatchError as exc:
        left = pending[done:]
        return left, f"; incident not recorded yet ({exc}); {len(left)} change(s) kept, retried next tick"
    return (), ""


def _open_incident(database: DatabaseResource, kind: str, pending: _Pending) -> HealthIncident | None:
    """The open health incident of ``kind`` as recorded in PostgreSQL (None: none, or a change of that kind
    still waits in ``pending``: the cursor knows better). Raises TapewatchError when PostgreSQL is down."""
    if any(change.kind == kind for change in pending):
        return None
    with database.open() as db:
        return next((i for i in open_health_incidents(db) if i.kind == kind), None)


def _unrecovered(exc: TapewatchError) -> str:
    return f"; what this sensor did before its cursor was lost not read yet ({exc}), retried next tick"


def _last_event(rs: RedisState, command: str) -> ControlEvent | None:
    """The newest control event of ``command`` (None: none in the stream)."""
    last, after = None, "0-0"
    while events := rs.control_events(after, count=500):
        last = next((e for e in reversed(events) if e.command == command), last)
        after = events[-1].id
    return last


def _holder(rs: RedisState, command: str, mine: str | None, live: str | None) -> Held:
    """Whose the value ``mine`` this sensor set for ``command`` (None: none) is, ``live`` being in force
    (``tapewatch.health.held``); the control events are read only when the values leave it open."""
    if mine is None or live not in (mine, None):
        return Held.GONE
    last = _last_event(rs, command)
    if last is None:
        return held(mine=mine, live=live, last_value=None, last_ours=False)
    ours = last.source == SOURCE or last.source.endswith(RESTORED_SUFFIX)
    return held(mine=mine, live=live, last_value=last.value, last_ours=ours)


def _text(cap: int | None) -> str | None:
    """A universe cap as its control key holds it (None: absent)."""
    return None if cap is None else str(cap)


_Recovering = TypeVar("_Recovering", ConnectivityState, PerformanceState)


def _taken_back(
    state: _Recovering, kind: str, database: DatabaseResource
) -> tuple[_Recovering, HealthIncident | None, str]:
    """The common first step after a lost cursor: the sensor's open incident of ``kind`` (None when it was
    done before, there is none, or the alarm is already in force), ``state`` marked ``recovered`` and with its
    alarm in force while that incident is open, and a note when PostgreSQL could not be read (retried)."""
    if state.recovered:
        return state, None, ""
    try:
        incident = _open_incident(database, kind, state.pending)
    except TapewatchError as exc:
        return state, None, _unrecovered(exc)
    state = replace(state, recovered=True)
    if incident is None or state.streak.tripped:
        return state, None, ""
    return replace(state, streak=Streak(tripped=True)), incident, ""


def _recover_feed(
    state: ConnectivityState, backup_on: bool, database: DatabaseResource
) -> tuple[ConnectivityState, str]:
    """``state`` with the backup feed taken back as this sensor's when its open incident says it switched it
    on (action ``backup feed on``) and it is still on, and the alarm in force while that incident is open;
    and a note for the skip reason. Done once per cursor (``recovered``)."""
    state, incident, note = _taken_back(state, "api_connectivity", database)
    if incident is None:
        return state, note
    if backup_on:  # the feed's switch was in force too: its recovery says whose backup feed it is
        state = replace(state, feed=Streak(tripped=True))
    if backup_on and incident.action == "backup feed on" and not state.backup_ours:
        started = int(incident.started_at.timestamp() * 1000)
        state = replace(state, backup_ours=True, switched_ms=started)
        return state, f"; backup feed taken back as this sensor's (incident {incident.id})"
    return state, f"; open incident {incident.id} taken back"


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
        incident = _open_incident(database, "data_quality", state.pending)
        state = replace(state, recovered=True)
    except TapewatchError as exc:
        incident, note = None, _unrecovered(exc)
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


def _recover_cap(
    state: PerformanceState, rs: RedisState, database: DatabaseResource
) -> tuple[PerformanceState, str]:
    """``state`` with the universe cap of this sensor's open incident (its ``cap`` and ``previous_cap``) taken
    back when that cap is still this sensor's (in force, or lost with Redis's data), and the alarm in force
    while the incident is open; and a note. Done once per cursor (``recovered``)."""
    state, incident, note = _taken_back(state, "system_performance", database)
    if incident is None:
        return state, note
    cap, previous = incident.values.get("cap"), incident.values.get("previous_cap")
    live = _text(rs.read_control().max_universe)
    if isinstance(cap, int) and _holder(rs, "max_universe", str(cap), live) is not Held.GONE:
        previous = previous if isinstance(previous, int) else None
        state = replace(state, cap=cap, previous_cap=previous)
        return state, f"; universe cap {cap} taken back as this sensor's (to restore: {previous})"
    return state, f"; open incident {incident.id} taken back"


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


def _probe(base_url: str, symbols: Sequence[str], timeout: float) -> str | None:
    """None when a websocket on ``base_url`` (the public route) delivers a bookTicker frame of one of
    ``symbols`` within ``timeout`` s, else why not: the primary feed judged while the service's are off."""
    streams = [f"{sym.lower()}@bookTicker" for sym in symbols]
    try:
        with ws_connect(combined_url(base_url, streams), open_timeout=timeout, close_timeout=1) as ws:
            ws.recv(timeout=timeout)
    except TimeoutError:
        return f"no frame within {timeout:g} s"
    except (OSError, WebSocketException) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _probe_symbols(rs: RedisState) -> list[str]:
    """Up to three symbols of the live universe to probe (BTCUSDT when none is known)."""
    universe = rs.read_control().universe or tuple(sorted(rs.feeds()))
    return list(universe[:3]) or ["BTCUSDT"]


def _feed_move(rs: RedisState, state: ConnectivityState, move: Transition) -> tuple[str | None, bool]:
    """Take the backup feed's transition; what was done (None: nothing) and whether the feed is ours."""
    if move is Transition.TRIP:
        if rs.read_control().backup_feed and not state.backup_ours:
            return "backup feed already on (not switched on by this sensor), left as is", False
        rs.set_backup_feed(True, source=SOURCE)
        return "backup feed on", True
    if move is Transition.RECOVER:
        if state.backup_ours:
            rs.set_backup_feed(False, source=SOURCE)
            return "primary feed", False
        return "backup feed left on: not switched on by this sensor", False
    return None, state.backup_ours


def _incident_changes(
    alarm: Transition,
    was_open: bool,
    feed_done: str | None,
    found: Connectivity,
    values: dict[str, Any],
    trip_after: int,
    why: str = "",
) -> list[PendingIncident]:
    """The incident changes of one check: opened on the alarm's trip, closed on its recovery; a feed switch
    while problems keep it open closes it and opens the next with the new action (every action has its
    incident; a switch back with nothing wrong left is closed by the alarm's recovery). ``why``: what the
    switch adds to the reason (a failed switch back)."""
    reason = "; ".join(found.problems) + why
    if alarm is Transition.TRIP:
        reason = f"{trip_after} failed checks in a row: {reason}"
        return [_change("api_connectivity", "open", reason, values, feed_done or found.report)]
    if alarm is Transition.RECOVER:
        return [_change("api_connectivity", "close", feed_done or "connectivity restored", values)]
    if feed_done is not None and was_open and found.problems:
        action = found.report if feed_done == "primary feed" else feed_done
        return [
            _change("api_connectivity", "close", feed_done, values),
            _change("api_connectivity", "open", reason, values, action),
        ]
    return []


def _held_back(
    state: ConnectivityState,
    feed: Streak,
    move: Transition,
    rest_ok: bool,
    dwell: FeedDwell,
    now_ms: int,
    clear_after: int,
) -> tuple[Streak, Transition, str]:
    """The feed's streak and move once the minimum dwell is applied, and a note: a switch back of this
    sensor's backup feed before its dwell is over waits, one passing check short of it (the first passing
    check after the dwell takes it). Not with REST down: the backup feed then polls a dead API."""
    if move is not Transition.RECOVER or not state.backup_ours or not rest_ok:
        return feed, move, ""
    switched = now_ms if state.switched_ms is None else state.switched_ms  # a cursor from before the dwell
    wait = dwell.wait_s(switched_ms=switched, relapses=state.relapses, now_ms=now_ms)
    if wait <= 0:
        return feed, move, ""
    required = dwell.required_s(state.relapses)
    note = f"switch back in {wait:.0f} s (minimum dwell {required:.0f} s on the backup feed)"
    return Streak(passes=clear_after - 1, tripped=True), Transition.NONE, note


def _switched(
    state: ConnectivityState, feed_done: str | None, dwell: FeedDwell, now_ms: int
) -> tuple[ConnectivityState, str]:
    """``state`` after this check's switch (``feed_done``; none: as it was): when it happened and the failed
    switch backs in a row; and what a switch on adds to the incident's reason (a failed switch back)."""
    if feed_done == "primary feed":
        return replace(state, switched_ms=now_ms), ""
    if feed_done != "backup feed on":
        return state, ""
    back_ms = None if state.backup_ours else state.switched_ms
    if not dwell.relapsed(switched_back_ms=back_ms, now_ms=now_ms):
        return replace(state, switched_ms=now_ms, relapses=0), ""
    relapses = state.relapses + 1
    ago = (now_ms - (back_ms or now_ms)) / 1000
    why = (
        f"; switch back failed: the service's websockets were silent again {ago:.0f} s after it"
        f" (the probe received, the service did not); the backup feed stays on at least"
        f" {dwell.required_s(relapses):.0f} s (failed switch backs in a row: {relapses})"
    )
    return replace(state, switched_ms=now_ms, relapses=relapses), why


@dg.sensor(
    minimum_interval_seconds=CONNECTIVITY_INTERVAL_S,
    default_status=_RUNNING,
    description="Binance REST and websockets.",
)
def api_connectivity_sensor(
    context: dg.SensorEvaluationContext,
    settings: TapewatchSettings,
    redis: RedisResource,
    database: DatabaseResource,
    binance: BinanceRestResource,
) -> dg.SensorResult:
    s = settings.settings()
    state, warning = decode_state(context.cursor, ConnectivityState)
    if state.backup_ours and not state.feed.tripped:  # a cursor from before the feed had its own streak
        state = replace(state, feed=Streak(tripped=True))
    timeout = min(s.rest_timeout, 5.0)
    rest_error = _ping(binance, timeout)
    with redis.open() as rs:
        age, silent, backup_on, probe_error, redis_down = None, None, False, None, False
        try:
            beat = rs.heartbeat(REALTIME)
            age = None if beat is None else beat.age(int(time.time() * 1000))
            silent = _seconds(rs.realtime_metrics().get("ws_silent_ms"))
            backup_on = rs.read_control().backup_feed
            if backup_on:
                probe_error = _probe(s.binance_ws_public_url, _probe_symbols(rs), timeout)
        except StorageUnavailable:
            redis_down = True  # judged as a missing heartbeat
        recovered = ""
        if not redis_down:  # the backup feed's owner is judged on a real reading of it
            state, recovered = _recover_feed(state, backup_on, database)
        found = judge_connectivity(
            rest_error=rest_error,
            heartbeat_age_s=age,
            ws_silent_s=silent,
            probe_error=probe_error,
            backup_on=backup_on,
            backup_ours=state.backup_ours,
            max_age_s=s.heartbeat_max_age,
        )
        steps = {"trip_after": s.timeout_threshold, "clear_after": s.api_recovery_checks}
        alarm, alarm_move = state.streak.step(bool(found.problems), **steps)
        # unread control state says nothing about the feed: the backup feed's streak waits for a real reading
        feed, feed_move = (
            (state.feed, Transition.NONE) if redis_down else state.feed.step(found.backup_failing, **steps)
        )
        now_ms = int(time.time() * 1000)
        dwell = FeedDwell.of(
            min_s=s.backup_min_dwell,
            max_s=s.backup_max_dwell,
            max_age_s=s.heartbeat_max_age,
            trip_after=s.timeout_threshold,
            interval_s=CONNECTIVITY_INTERVAL_S,
        )
        feed, feed_move, held = _held_back(
            state, feed, feed_move, rest_error is None, dwell, now_ms, s.api_recovery_checks
        )
        values = {
            "problems": found.problems,
            "heartbeat_age_s": age,
            "rest_error": rest_error,
            "ws_silent_s": silent,
            "probe_error": probe_error,
        }
        try:
            feed_done, ours = _feed_move(rs, state, feed_move)
        except TapewatchError as exc:
            thresholds = (s.timeout_threshold, s.api_recovery_checks)
            return _retry_next_tick(state, state.feed, feed_move, thresholds, exc, warning, field="feed")
    switched, why = _switched(state, feed_done, dwell, now_ms)
    if alarm_move is Transition.RECOVER and ours:
        # nothing wrong is seen, but this sensor's backup feed is still on (its dwell): the incident stays open
        alarm, alarm_move = Streak(passes=s.api_recovery_checks - 1, tripped=True), Transition.NONE
    changes = _incident_changes(
        alarm_move, state.streak.tripped, feed_done, found, values, s.timeout_threshold, why
    )
    pending = state.pending
    for change in changes:
        pending = queued(pending, change)
    new = replace(switched, streak=alarm, feed=feed, backup_ours=ours, pending=pending)
    pending, note = _record(database, new.pending)
    summary = "; ".join(found.problems) if found.problems else "REST and websockets fine"
    done = (
        f" -> {feed_done}{why}"
        if feed_done
        else (f" -> {found.report}" if alarm_move is Transition.TRIP else (f" -> {held}" if held else ""))
    )
    tail = f"failures {alarm.failures}, passes {alarm.passes}, backup {'on' if backup_on else 'off'}"
    return _result(f"{summary}{done} ({tail}){recovered}{note}", replace(new, pending=pending), warning)


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000.0


@dg.sensor(minimum_interval_seconds=60, default_status=_RUNNING, description="Feed anomalies > k sd.")
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
            paused_now = rs.read_control().paused_reason
        except StorageUnavailable as exc:
            return _result(f"Redis unavailable, nothing judged: {exc}", state, warning)
        state = _migrated(state, paused_now)
        state, recovered = _recover_pause(state, paused_now, database)
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
        judged, found = assess(state, samples, totals, config)
        streak, move = judged.streak.step(found.dirty, trip_after=1, clear_after=s.data_quality_clean_checks)
        # every field assess() judged, plus what only this sensor keeps
        new = replace(state, **{**msgspec.structs.asdict(judged), "streak": streak})
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
                if paused is not None and _holder(rs, "paused", state.pause, paused) is not Held.OURS:
                    # someone else's pause is in force: ours would overwrite its reason, then lift it
                    action, mine = f"signalling already paused ({paused}), left as is", None
                else:
                    rs.pause(reason, source=SOURCE)
                    action, mine = "signalling paused", reason
                change = _change("data_quality", "open", reason, values, action)
                new = replace(new, pause=mine, pending=queued(state.pending, change))
                done = " -> paused" if mine else f" -> {action}"
            elif move is Transition.RECOVER:
                recovery, mine = _resume(rs, state.pause)
                change = _change("data_quality", "close", recovery, values)
                new = replace(new, pause=mine, pending=queued(state.pending, change))
                done = " -> resumed" if recovery == "signalling resumed" else f" -> {recovery}"
        except TapewatchError as exc:
            thresholds = (1, s.data_quality_clean_checks)
            return _retry_next_tick(new, judged.streak, move, thresholds, exc, warning)
        if move is Transition.NONE and new.pause is not None and not new.streak.tripped:
            new, done = _lift_lost_pause(rs, new)
    pending, note = _record(database, new.pending)
    head = (
        f"{len(found.anomalies)} anomalies ({found.details['anomalous_symbols']} symbols): "
        + "; ".join(a.describe() for a in found.anomalies[:3])
        if found.anomalies
        else "no anomaly"
    )
    tail = f"{found.symbols} symbols, {found.judged} values judged, {found.unknown} unknown"
    return _result(f"{head}{done} ({tail}){recovered}{note}", replace(new, pending=pending), warning)


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
    holder = _holder(rs, "paused", pause, paused)
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
        holder = _holder(rs, "paused", state.pause, rs.read_control().paused_reason)
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


def _shrink(
    rs: RedisState,
    state: PerformanceState,
    streak: Streak,
    move: Transition,
    values: dict[str, Any],
    fallback: int,
    floor: int,
) -> tuple[PerformanceState, str]:
    """Halve the universe (a trip, or an escalation while the overload lasts); the new state and a note."""
    live = rs.read_control().max_universe
    ours = _holder(rs, "max_universe", _text(state.cap), _text(live)) is not Held.GONE
    if state.cap is not None and ours:
        # this sensor's cap, in force or lost with Redis's data (the service still applies it): the one to
        # restore stays the operator's
        previous, current = state.previous_cap, state.cap
    else:
        # the cap to restore: the one in force at the trip, or one the operator set while we held ours
        previous = live
        current = live if live is not None else _universe_size(rs, fallback)
    target = shrunk_universe(current, floor)
    if target is not None:
        rs.set_max_universe(target, source=SOURCE)
        note = f" -> universe capped at {target} (was {current})"
    else:
        note = f" -> universe of {current} is at the floor, not shrunk"
    cap = target if target is not None else (state.cap if ours else None)
    change = _change(
        "system_performance",
        "open",
        "; ".join(values["problems"]),
        {**values, "cap": cap, "previous_cap": previous},
        note.removeprefix(" -> "),
    )
    return PerformanceState(
        streak=streak, cap=cap, previous_cap=previous, pending=queued(state.pending, change), recovered=True
    ), note


def _restore(
    rs: RedisState, state: PerformanceState, streak: Streak, values: dict[str, Any]
) -> tuple[PerformanceState, str]:
    """Put back the cap the universe had before the overload, unless someone changed ours since. A cap of
    this sensor's lost with Redis's data is claimed on (the realtime service writes it back) when there is no
    operator's cap to put back at once."""
    live = rs.read_control().max_universe
    holder = _holder(rs, "max_universe", _text(state.cap), _text(live))
    kept: tuple[int | None, int | None] = (None, None)  # the claim kept: cap, previous cap
    if state.cap is None:
        recovery = "universe cap unchanged (it was never shrunk)"
    elif holder is Held.OURS or (holder is Held.LOST and state.previous_cap is not None):
        rs.set_max_universe(state.previous_cap, source=SOURCE)
        recovery = "universe cap " + (
            "lifted" if state.previous_cap is None else f"back to {state.previous_cap}"
        )
        if holder is Held.LOST:
            recovery += f" (this sensor's cap {state.cap} was lost with Redis's data)"
    elif holder is Held.LOST:
        recovery = (
            f"universe cap {state.cap} lost with Redis's data (the realtime service keeps it): lifted once"
            " written back"
        )
        kept = (state.cap, None)
    else:
        recovery = f"universe cap {live} set by someone else since the shrink, left as is"
    change = _change("system_performance", "close", recovery, values)
    cap, previous = kept
    state = PerformanceState(
        streak=streak, cap=cap, previous_cap=previous, pending=queued(state.pending, change), recovered=True
    )
    return state, f" -> {recovery}"


def _lift_lost_cap(rs: RedisState, state: PerformanceState) -> tuple[PerformanceState, str]:
    """After a recovery that found this sensor's cap lost with Redis's data: lift it once the realtime
    service wrote it back; forget it once it is someone else's. The state and a note."""
    try:
        holder = _holder(rs, "max_universe", _text(state.cap), _text(rs.read_control().max_universe))
        if holder is Held.LOST:
            return state, f" (its cap {state.cap} lost with Redis's data is lifted once written back)"
        if holder is Held.OURS:
            rs.set_max_universe(state.previous_cap, source=SOURCE)
    except TapewatchError as exc:
        return state, f" (its universe cap lost with Redis's data not checked: {exc}; retried next tick)"
    forgotten = replace(state, cap=None, previous_cap=None)
    if holder is Held.OURS:
        back = "lifted" if state.previous_cap is None else f"back to {state.previous_cap}"
        return forgotten, f" -> universe cap {back} (its cap {state.cap} was lost with Redis's data)"
    return forgotten, ""


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
        recovered = ""
        if not state.recovered:
            try:
                with redis.open() as rs:
                    state, recovered = _recover_cap(state, rs, database)
            except TapewatchError as exc:  # Redis down: read back at the next tick
                recovered = _unrecovered(exc)
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
        new = replace(state, streak=streak)
        values = {"cpu_percent": cpu, "memory_percent": memory, "problems": problems}
        note = ""
        try:
            with redis.open() as rs:
                if move in (Transition.TRIP, Transition.ESCALATE):
                    new, note = _shrink(
                        rs, state, streak, move, values, s.universe_size, s.min_universe_under_load
                    )
                elif move is Transition.RECOVER:
                    new, note = _restore(rs, state, streak, values)
                elif state.cap is not None and not streak.tripped:
                    new, note = _lift_lost_cap(rs, new)
        except TapewatchError as exc:  # Redis: the action did not take effect
            thresholds = (s.performance_trip_checks, s.performance_clear_checks)
            return _retry_next_tick(state, state.streak, move, thresholds, exc, warning)
        pending, unrecorded = _record(database, new.pending)
        head = "; ".join(problems) if problems else f"CPU {cpu:.0f} %, memory {memory:.0f} %: fine"
        return _result(f"{head}{note}{recovered}{unrecorded}", replace(new, pending=pending), warning)

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
