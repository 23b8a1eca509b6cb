"""``api_connectivity_sensor`` (30 s): the Binance REST ping, the realtime heartbeat and what the websockets
deliver; the backup feed switched on and back (with its minimum dwell), incidents opened and closed. With
shards (``tapewatch run --shard I/N``) the worst shard is judged: the oldest or missing heartbeat, the longest
silence of any route; the backup feed flag is global, so a silent shard switches every shard to it. See
``orchestration.health`` for what the health sensors share."""

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
from msgspec.structs import replace
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect as ws_connect

from orchestration.health_control import SOURCE
from orchestration.health_cursor import ConnectivityState, retry_next_tick, sensor_result
from orchestration.health_incidents import incident_change, record_incidents, taken_back
from orchestration.resources import BinanceRestResource, DatabaseResource, RedisResource, TapewatchSettings
from orchestration.sensor_ticks import recorded_sensor
from tapewatch.adapters.redis_keys import REALTIME, SENSORS
from tapewatch.adapters.redis_state import RedisState, realtime_shards
from tapewatch.errors import StorageUnavailable, TapewatchError
from tapewatch.health import (
    Connectivity,
    FeedDwell,
    PendingIncident,
    Streak,
    Transition,
    decode_state,
    judge_connectivity,
    queued,
    realtime_instances,
    worst_heartbeat,
    worst_silence,
)
from tapewatch.streams import combined_url

#: Seconds between two connectivity checks (at least): the dwell's probation counts in them.
CONNECTIVITY_INTERVAL_S = SENSORS["api_connectivity_sensor"]
_RUNNING = dg.DefaultSensorStatus.RUNNING


def _recover_feed(
    state: ConnectivityState, backup_on: bool, database: DatabaseResource
) -> tuple[ConnectivityState, str]:
    """``state`` with the backup feed taken back as this sensor's when its open incident says it switched it
    on (action ``backup feed on``) and it is still on, and the alarm in force while that incident is open;
    and a note for the skip reason. Done once per cursor (``recovered``)."""
    state, incident, note = taken_back(state, "api_connectivity", database)
    if incident is None:
        return state, note
    if backup_on:  # the feed's switch was in force too: its recovery says whose backup feed it is
        state = replace(state, feed=Streak(tripped=True))
    if backup_on and incident.action == "backup feed on" and not state.backup_ours:
        started = int(incident.started_at.timestamp() * 1000)
        state = replace(state, backup_ours=True, switched_ms=started)
        return state, f"; backup feed taken back as this sensor's (incident {incident.id})"
    return state, f"; open incident {incident.id} taken back"


def _ping(binance: BinanceRestResource, timeout: float) -> str | None:
    """None when ``/fapi/v1/ping`` answers, else why not. No retries: the streak is the retry."""
    quick = BinanceRestResource(base_url=binance.base_url, timeout=timeout, max_retries=0)
    try:
        quick.run(lambda client: client.ping())
    except (TapewatchError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _probe_routes(public_url: str, market_url: str, symbols: Sequence[str], timeout: float) -> str | None:
    """None when both routes deliver (within ``timeout`` s each): ``/public`` a bookTicker frame and
    ``/market`` an aggTrade or kline frame of one of ``symbols``; else which route failed and why. A switch
    back judged on ``/public`` alone would follow a dead ``/market`` (trades, klines) straight back into
    silence."""
    routes = (
        ("/public", public_url, [f"{sym.lower()}@bookTicker" for sym in symbols]),
        (
            "/market",
            market_url,
            [f"{sym.lower()}@{kind}" for sym in symbols for kind in ("aggTrade", "kline_1m")],
        ),
    )
    for route, url, streams in routes:
        error = _probe(url, streams, timeout)
        if error is not None:
            return f"{route}: {error}"
    return None


def _probe(base_url: str, streams: Sequence[str], timeout: float) -> str | None:
    """None when a websocket on ``base_url`` subscribed to ``streams`` delivers a frame within ``timeout`` s,
    else why not: the primary feed judged while the service's are off."""
    try:
        with ws_connect(combined_url(base_url, streams), open_timeout=timeout, close_timeout=1) as ws:
            ws.recv(timeout=timeout)
    except TimeoutError:
        return f"no frame within {timeout:g} s"
    except (OSError, WebSocketException) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@dataclass(frozen=True, slots=True)
class Realtime:
    """The realtime service as one check sees it: the worst instance's heartbeat (``component``: its name, or
    the names of those without one; ``age_s``: None when missing), whether some instance beats within the
    maximum age (``running``: it can run the backup feed), and the longest websocket silence of the instances
    that beat (``silent_s``; None: not published) and where (``silent_where``: route and instance)."""

    component: str = REALTIME
    age_s: float | None = None
    running: bool = False
    silent_s: float | None = None
    silent_where: str = ""


def _realtime(rs: RedisState, max_age_s: float) -> Realtime:
    """Read the realtime instances (the single service, or every shard of ``tapewatch run --shard I/N``:
    :func:`realtime_instances`) and judge the worst: the oldest or missing heartbeat, the longest silence of
    any route of any instance that beats (its own metrics, read per instance to name it)."""
    beats = rs.heartbeats()
    instances = realtime_instances(beats, REALTIME, realtime_shards(beats))
    now_ms = int(time.time() * 1000)
    ages = {name: None if beat is None else beat.age(now_ms) for name, beat in instances.items()}
    component, age = worst_heartbeat(ages)
    live = {name: rs.metrics(name) for name, beat in instances.items() if beat is not None}
    silent, where = worst_silence(live)
    running = any(a is not None and a <= max_age_s for a in ages.values())
    return Realtime(component=component, age_s=age, running=running, silent_s=silent, silent_where=where)


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
        return [incident_change("api_connectivity", "open", reason, values, feed_done or found.report)]
    if alarm is Transition.RECOVER:
        return [incident_change("api_connectivity", "close", feed_done or "connectivity restored", values)]
    if feed_done is not None and was_open and found.problems:
        action = found.report if feed_done == "primary feed" else feed_done
        return [
            incident_change("api_connectivity", "close", feed_done, values),
            incident_change("api_connectivity", "open", reason, values, action),
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


@recorded_sensor(
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
        seen, backup_on, probe_error, redis_down = Realtime(), False, None, False
        try:
            seen = _realtime(rs, s.heartbeat_max_age)
            backup_on = rs.read_control().backup_feed
            if backup_on:
                probe_error = _probe_routes(
                    s.binance_ws_public_url, s.binance_ws_market_url, _probe_symbols(rs), timeout
                )
        except StorageUnavailable:
            redis_down = True  # judged as a missing heartbeat
        recovered = ""
        if not redis_down:  # the backup feed's owner is judged on a real reading of it
            state, recovered = _recover_feed(state, backup_on, database)
        found = judge_connectivity(
            rest_error=rest_error,
            heartbeat_age_s=seen.age_s,
            ws_silent_s=seen.silent_s,
            probe_error=probe_error,
            backup_on=backup_on,
            backup_ours=state.backup_ours,
            max_age_s=s.heartbeat_max_age,
            component=seen.component,
            running=seen.running,
            silent_where=seen.silent_where,
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
            "realtime": seen.component,
            "heartbeat_age_s": seen.age_s,
            "rest_error": rest_error,
            "ws_silent_s": seen.silent_s,
            "ws_silent_where": seen.silent_where,
            "probe_error": probe_error,
        }
        try:
            feed_done, ours = _feed_move(rs, state, feed_move)
        except TapewatchError as exc:
            thresholds = (s.timeout_threshold, s.api_recovery_checks)
            return retry_next_tick(state, state.feed, feed_move, thresholds, exc, warning, field="feed")
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
    pending, note = record_incidents(database, new.pending)
    summary = "; ".join(found.problems) if found.problems else "REST and websockets fine"
    done = (
        f" -> {feed_done}{why}"
        if feed_done
        else (f" -> {found.report}" if alarm_move is Transition.TRIP else (f" -> {held}" if held else ""))
    )
    tail = f"failures {alarm.failures}, passes {alarm.passes}, backup {'on' if backup_on else 'off'}"
    return sensor_result(f"{summary}{done} ({tail}){recovered}{note}", replace(new, pending=pending), warning)
