"""``tapewatch status``: is the platform up? Gathered from Redis and PostgreSQL, never starting anything.

Redis says which components run (every component that ever sent a heartbeat is remembered; an expired
heartbeat means it is down), the realtime metrics, the per-symbol feed states, the control values in force
and the newest signal and universe rescan. PostgreSQL says which feed incidents are open, and which applied
tuning is in force: against the one each live realtime instance started with (its heartbeat says), a restart
is pending when they differ (:mod:`tapewatch.tuning_use`; shown, never a problem). With no URL
configured, the embedded servers are used when they are running (``find_redis``/``find_database``); they are
never started here.

:func:`gather_status` collects a :class:`Status`; ``status.problems`` lists what is down (no signal can be
issued, or a part is missing), ``status.degraded`` the control values in force that limit the platform
(signalling paused, backup feed, universe cap); ``status.exit_code`` is the command's exit code (``EXIT_*``).
:func:`tapewatch.adapters.status_format.format_status` renders the operator's table and ``Status.to_json`` the ``--json`` object.

Each realtime instance that beats (the single service, or every shard: :func:`tapewatch.health.realtime_instances`)
is judged as the connectivity sensor judges it (:func:`tapewatch.health.judge_connectivity`, without the REST
ping and the websocket probe): its heartbeat older than ``heartbeat_max_age``, or its websockets silent longer
while the backup feed is off, is a problem. So are its metrics when they were last published more than
``heartbeat_max_age`` before its heartbeat (both stamped by the service's clock: its publishing is stuck past
the heartbeat, so its figures and silence are old).

The Dagster sensors of :data:`~tapewatch.adapters.redis_keys.SENSORS` record each tick in Redis
(``orchestration.sensor_ticks``); while the ``dagster`` component beats, one whose last tick is older than
:data:`STALE_INTERVALS` times its interval (switched off, hung, not evaluated) or whose last
:data:`FAILED_TICKS` ticks raised is a problem (:func:`judge_sensors`): its automatic reactions have stopped.
Without a live ``dagster`` heartbeat they are shown, not judged (a deployment without Dagster is not broken).
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tapewatch.adapters.db import Database
from tapewatch.adapters.embedded import find_database, find_redis
from tapewatch.adapters.health_store import HealthIncident, open_health_incidents
from tapewatch.adapters.incidents import IncidentRow, incident_counts, open_incidents
from tapewatch.adapters.redis_keys import DAGSTER, DASHBOARD, REALTIME, SENSORS, Keyspace
from tapewatch.adapters.redis_state import LastEvent, RedisState, SensorTick, realtime_shards
from tapewatch.adapters.redis_values import ControlEvent, ControlState, Heartbeat
from tapewatch.adapters.status_format import age_text, http_url, tapewatch_command
from tapewatch.adapters.tuning_store import started_by_instance, tuning_use
from tapewatch.errors import TapewatchError
from tapewatch.health import judge_connectivity, realtime_instances, worst_silence
from tapewatch.settings import Settings, mask_url
from tapewatch.tuning_use import TuningUse


def start_hint() -> str:
    """How to start the platform, as the operator can type it here (:func:`tapewatch_command`)."""
    return f"start `{tapewatch_command()} run` or `make demo`"


def no_realtime() -> str:
    """The problem when no realtime instance ever beat in this Redis."""
    return f"no realtime heartbeat yet: {start_hint()}"


#: Who the health sensors are in the control events (``orchestration.health_control.SOURCE``): a universe cap they
#: set is an overload, one an operator set is a choice.
HEALTH_SOURCE = "dagster:health"
#: ``tapewatch status`` exit codes (README): all well; something down (``problems``); up but degraded (a
#: control value in force limits the platform: ``degraded``). 2 stays the CLI's configuration error.
EXIT_OK, EXIT_DOWN, EXIT_DEGRADED = 0, 1, 3
#: The control values that limit the platform while in force, with their short label.
LIMITING = {"paused": "signalling paused", "backup_feed": "backup feed on", "max_universe": "universe capped"}
#: A sensor whose last tick is older than this many of its intervals is stale (not ticking).
STALE_INTERVALS = 3
#: A sensor whose last ticks raised this many times in a row is failing.
FAILED_TICKS = 3


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    """One component that ever sent a heartbeat: up (with its heartbeat's age, pid and host) or down."""

    name: str
    up: bool
    age_s: float | None = None
    pid: int | None = None
    host: str | None = None
    # the heartbeat's details (a web component's real ``port`` and maybe ``host``); not in ``--json``
    info: dict[str, str | int | float | bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """A web server of the platform probed over HTTP: the Dagster webserver, the dashboard."""

    name: str
    url: str
    reachable: bool


@dataclass(frozen=True, slots=True)
class ControlInForce:
    """A control value in force that limits the platform (``command``: a key of :data:`LIMITING`), and who set
    it when: the newest control event of ``command`` when it set this value (``by``: its source, such as
    ``dagster:health`` or ``dashboard:alice``; ``since_ms``: its time), else None (the event was trimmed from
    the stream, or Redis lost it)."""

    command: str
    value: str
    by: str | None = None
    since_ms: int | None = None

    def degrades(self, overload: bool | None) -> bool:
        """Whether it makes the platform degraded (exit 3): a pause and the backup feed always; a universe cap
        only while it answers an overload: ``overload`` says whether the system performance sensor's incident
        is open (None: PostgreSQL unread; then the cap's last setter decides: the health sensors, or unknown).
        An operator's standing cap is a deployment choice, shown but not alerted on forever — also once the
        sensor has written it back after an overload, in its own name."""
        if self.command != "max_universe":
            return True
        if overload is not None:
            return overload
        return self.by is None or self.by.startswith(HEALTH_SOURCE)

    @property
    def label(self) -> str:
        """Short: ``signalling paused``, ``backup feed on``, ``universe capped at 10``."""
        cap = f" at {self.value}" if self.command == "max_universe" else ""
        return LIMITING[self.command] + cap

    def describe(self, now_ms: int) -> str:
        """One line for an operator: what, since when, by whom, and why (a pause's reason)."""
        if self.since_ms is None:
            who = " (who and when unknown: no control event of it in Redis)"
        else:
            at = datetime.fromtimestamp(self.since_ms / 1000, UTC)
            age = age_text(max(0, now_ms - self.since_ms) / 1000)
            who = f" since {at:%Y-%m-%d %H:%M:%S} UTC ({age} ago) by {self.by or '?'}"
        what = {
            "paused": "signalling paused",
            "backup_feed": "backup feed on (REST polling instead of the websockets)",
            "max_universe": f"universe capped at {self.value} symbols",
        }[self.command]
        return what + who + (f": {self.value}" if self.command == "paused" else "")

    def to_json(self) -> dict[str, Any]:
        """``value`` (the pause's reason, ``1``, the cap), ``by`` and ``since`` (ISO 8601), null when unknown."""
        since = (
            None if self.since_ms is None else datetime.fromtimestamp(self.since_ms / 1000, UTC).isoformat()
        )
        return {"value": self.value, "by": self.by, "since": since}


@dataclass(frozen=True, slots=True)
class SensorStatus:
    """A Dagster sensor as its last recorded tick shows it (``tick`` None: none recorded yet): ``state`` is
    ``ok``, ``stale`` (not ticking), ``failing`` (raising), ``no tick yet`` or ``not judged`` (Dagster is not
    running); ``problem`` says why its automatic reactions have stopped (None: they have not)."""

    name: str
    tick: SensorTick | None
    state: str
    problem: str | None = None

    def to_json(self, now_ms: int) -> dict[str, Any]:
        """The state, the tick's time (ISO 8601), age (s), outcome, reason, the sensor's interval, the errors in
        a row, and the problem; null tick fields without a tick."""
        tick = self.tick
        return {
            "state": self.state,
            "last_tick": None if tick is None else datetime.fromtimestamp(tick.ts / 1000, UTC).isoformat(),
            "age_s": None if tick is None else tick.age(now_ms),
            "outcome": None if tick is None else tick.outcome,
            "reason": None if tick is None else tick.reason,
            "interval_s": None if tick is None else tick.interval_s,
            "errors_in_a_row": None if tick is None else tick.errors,
            "problem": self.problem,
        }


def judge_sensor(
    name: str, tick: SensorTick | None, now_ms: int, since_ms: int | None = None
) -> SensorStatus:
    """Sensor ``name`` judged on its last tick: stale when older than :data:`STALE_INTERVALS` intervals,
    failing after :data:`FAILED_TICKS` errors in a row (both problems). ``since_ms``: when the running Dagster
    started (None: unknown): a tick from before is an earlier run's, so the sensor is judged from that start
    (it has its intervals to tick again). A sensor with no tick at all is judged the same way, on its interval
    in :data:`SENSORS`: "no tick yet" while it may have just started, stale once Dagster has run longer than
    that without one (switched off before its first tick, or never evaluated) — unknown when ``since_ms`` is."""
    interval = tick.interval_s if tick is not None else SENSORS.get(name)
    if tick is None and (since_ms is None or interval is None):
        return SensorStatus(name, None, "no tick yet")
    assert interval is not None
    before = tick is None or (since_ms is not None and tick.ts < since_ms)
    age = max(0, now_ms - max(tick.ts if tick is not None else 0, since_ms or 0)) / 1000
    if age > STALE_INTERVALS * interval:
        last = (
            f"has not ticked since Dagster started {age_text(age)} ago"
            + ("" if tick is not None else " (no tick ever recorded)")
            if before
            else f"last ticked {age_text(age)} ago"
        )
        return SensorStatus(
            name,
            tick,
            "stale",
            f"sensor {name} {last} (> {STALE_INTERVALS} × its {interval:g} s interval): switched off in "
            f"the Dagster UI, hung, or not evaluated by the daemon; its automatic reactions have stopped",
        )
    if before or tick is None:
        return SensorStatus(name, tick, "no tick yet")
    if tick.errors >= FAILED_TICKS:
        return SensorStatus(
            name,
            tick,
            "failing",
            f"sensor {name} failed its last {tick.errors} ticks ({tick.reason}): its automatic reactions have "
            f"stopped; see its ticks in the Dagster UI",
        )
    return SensorStatus(name, tick, "ok")


def judge_sensors(
    ticks: Mapping[str, SensorTick], *, judged: bool, now_ms: int, since_ms: int | None = None
) -> list[SensorStatus]:
    """Each sensor of :data:`SENSORS` with its last tick in ``ticks``, judged (:func:`judge_sensor`, Dagster
    running since ``since_ms``) only when ``judged`` (Dagster is running), else ``not judged``."""
    return [
        judge_sensor(name, ticks.get(name), now_ms, since_ms)
        if judged
        else SensorStatus(name, ticks.get(name), "not judged")
        for name in SENSORS
    ]


def read_sensors(state: RedisState, now_ms: int) -> tuple[bool, list[SensorStatus]]:
    """Whether Dagster runs (a live ``dagster`` heartbeat) and every sensor judged on its recorded ticks
    (only while it runs). Raises StorageUnavailable when Redis is down."""
    beat = state.heartbeat(DAGSTER)
    started = beat.info.get("started_ms") if beat is not None else None
    since = started if isinstance(started, int) and not isinstance(started, bool) else None
    ticks = state.sensor_ticks()
    return beat is not None, judge_sensors(ticks, judged=beat is not None, now_ms=now_ms, since_ms=since)


@dataclass(slots=True)
class Status:
    """Everything ``tapewatch status`` reports. ``None`` fields could not be read (see ``problems``)."""

    checked_at: datetime
    redis: str | None = None
    database: str | None = None
    redis_ok: bool = False
    database_ok: bool = False
    components: list[ComponentStatus] = field(default_factory=list)
    services: list[ServiceStatus] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    feeds: dict[str, int] = field(default_factory=dict)
    last_signal: LastEvent | None = None
    last_rescan: LastEvent | None = None
    open_incidents: int | None = None
    incidents: list[IncidentRow] = field(default_factory=list)
    recent_incidents: dict[str, int] = field(default_factory=dict)
    # open actions of the health sensors (backup feed, pause, shrink): table health_incidents
    health_incidents: list[HealthIncident] = field(default_factory=list)
    # the control values in force that limit the platform (read from Redis; empty: none)
    controls: list[ControlInForce] = field(default_factory=list)
    # the Dagster sensors' last ticks; judged only while Dagster runs (a live ``dagster`` heartbeat)
    dagster_running: bool = False
    sensors: list[SensorStatus] = field(default_factory=list)
    # the applied tuning in force against the one each live realtime instance started with (None: unread);
    # ``tuning_started``: each live instance's row id as its heartbeat says (0: none, None: it does not say)
    tuning: TuningUse | None = None
    tuning_started: dict[str, int | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is down: every component up, both servers answered, the realtime service's
        websockets and metrics live. A degraded platform is ``ok`` (see ``exit_code``)."""
        return not self.problems

    @property
    def degrading(self) -> list[ControlInForce]:
        """The control values in force that make the platform degraded (:meth:`ControlInForce.degrades`)."""
        overload = (
            any(row.kind == "system_performance" for row in self.health_incidents)
            if self.database_ok
            else None
        )
        return [control for control in self.controls if control.degrades(overload)]

    @property
    def degraded(self) -> list[str]:
        """The control values in force that limit the platform, one line each (empty: none)."""
        now_ms = int(self.checked_at.timestamp() * 1000)
        return [control.describe(now_ms) for control in self.degrading]

    @property
    def verdict(self) -> str:
        """``down`` (problems), ``degraded`` (only control values in force) or ``ok``."""
        return "down" if self.problems else "degraded" if self.degraded else "ok"

    @property
    def exit_code(self) -> int:
        """``EXIT_DOWN`` with problems, else ``EXIT_DEGRADED`` with a control value in force, else ``EXIT_OK``."""
        return {"down": EXIT_DOWN, "degraded": EXIT_DEGRADED, "ok": EXIT_OK}[self.verdict]

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object: every field, times as ISO 8601 / epoch ms, ages in seconds."""
        now_ms = int(self.checked_at.timestamp() * 1000)
        return {
            "ok": self.ok,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "checked_at": self.checked_at.isoformat(),
            "redis": self.redis,
            "redis_ok": self.redis_ok,
            "database": self.database,
            "database_ok": self.database_ok,
            "components": {
                c.name: {"up": c.up, "heartbeat_age_s": c.age_s, "pid": c.pid, "host": c.host}
                for c in self.components
            },
            "services": {s.name: {"url": s.url, "reachable": s.reachable} for s in self.services},
            "metrics": self.metrics,
            "feeds": self.feeds,
            "last_signal": _last_json(self.last_signal, now_ms),
            "last_rescan": _last_json(self.last_rescan, now_ms),
            "incidents": {
                "open": self.open_incidents,
                "newest_open": [row.to_json() for row in self.incidents],
                "last_hour": self.recent_incidents,
                "health_open": [row.to_json() for row in self.health_incidents],
            },
            "controls": self._controls_json(),
            "sensors": self._sensors_json(now_ms),
            "tuning": None if self.tuning is None else self.tuning.to_json(),
            "degraded": self.degraded,
            "problems": self.problems,
        }

    def _sensors_json(self, now_ms: int) -> dict[str, Any] | None:
        """``judged`` (Dagster running) and each sensor's ``SensorStatus.to_json``; null when Redis was not
        readable."""
        if not self.redis_ok:
            return None
        return {
            "judged": self.dagster_running,
            "ticks": {sensor.name: sensor.to_json(now_ms) for sensor in self.sensors},
        }

    def _controls_json(self) -> dict[str, Any] | None:
        """Each limiting control value: its ``ControlInForce.to_json`` or null when not in force; null as a
        whole when Redis was not readable."""
        if not self.redis_ok:
            return None
        found = {control.command: control.to_json() for control in self.controls}
        return {command: found.get(command) for command in LIMITING}


def _last_json(event: LastEvent | None, now_ms: int) -> dict[str, Any] | None:
    if event is None:
        return None
    return {"ts": event.ts, "age_s": event.age(now_ms), "info": event.info}


def gather_status(
    settings: Settings, *, clock: Callable[[], float] = time.time, incident_limit: int = 20
) -> Status:
    """Read the platform's state; every failure becomes a line of ``problems`` rather than an exception."""
    status = Status(checked_at=datetime.fromtimestamp(clock(), UTC))
    _from_redis(status, settings, clock)
    _from_http(status, settings)
    _from_database(status, settings, incident_limit)
    return status


def _from_redis(status: Status, settings: Settings, clock: Callable[[], float]) -> None:
    url = find_redis(settings)
    if url is None:
        # the embedded servers stop with the demo that started them: nothing of the platform runs here
        status.problems.append(
            f"Redis is not running: TAPEWATCH_REDIS_URL is not set and no embedded Redis runs under "
            f"{settings.var_dir / 'redis'}, so no component of the platform runs here; {start_hint()} "
            f"(or set TAPEWATCH_REDIS_URL)"
        )
        return
    status.redis = f"{mask_url(url)} (prefix {settings.redis_prefix})"
    try:
        state = RedisState.from_url(url, keys=Keyspace(prefix=settings.redis_prefix), clock=clock)
    except TapewatchError as exc:
        status.problems.append(str(exc))
        return
    try:
        beats = state.heartbeats()
        shards = realtime_shards(beats)  # `tapewatch run --shard I/N`: realtime-IofN each
        status.metrics = state.realtime_metrics()
        # each realtime instance that beats, with its own metrics, judged as the health sensors judge it
        instances = realtime_instances(beats, REALTIME, shards)
        own = {name: state.metrics(name) for name, beat in instances.items() if beat is not None}
        feeds = state.feeds()
        status.last_signal = state.last_signal()
        status.last_rescan = state.last_rescan()
        control = state.read_control()
        status.controls = controls_in_force(
            control, state.newest_control_events() if _limits(control) else {}
        )
        status.dagster_running, status.sensors = read_sensors(state, int(clock() * 1000))
    except TapewatchError as exc:
        status.problems.append(str(exc))
        return
    finally:
        state.close()
    status.redis_ok = True
    now_ms = int(clock() * 1000)
    for name, beat in sorted(beats.items()):
        if beat is None:
            status.components.append(ComponentStatus(name, up=False))
            status.problems.append(f"component {name} is down (its heartbeat expired)")
        else:
            status.components.append(
                ComponentStatus(name, True, beat.age(now_ms), beat.pid, beat.host, dict(beat.info))
            )
    if REALTIME not in beats and not shards:
        status.problems.append(no_realtime())
    live = {name: beat for name, beat in instances.items() if beat is not None}
    status.tuning_started = started_by_instance(beats)
    status.problems += judge_realtime(
        live, own, backup_on=control.backup_feed, max_age_s=settings.heartbeat_max_age, now_ms=now_ms
    )
    status.problems += [sensor.problem for sensor in status.sensors if sensor.problem is not None]
    counts = Counter(feed.state or "unknown" for feed in feeds.values())
    status.feeds = {"total": len(feeds), **dict(sorted(counts.items()))}


#: Seconds a signal may wait unwritten (PostgreSQL failing, or slow) before status reports it: the trader gets
#: no signal until it is stored, and a restart would lose it.
HELD_SIGNAL_PROBLEM_S = 10


#: What to check when a notifier's deliveries fail, by notifier name.
_NOTIFIER_FIX = {
    "telegram": "check TAPEWATCH_TELEGRAM_BOT_TOKEN / TAPEWATCH_TELEGRAM_CHAT_ID (the bot must be able to post "
    "to the chat), the network to TAPEWATCH_TELEGRAM_API_URL and the service's log",
    "webhook": "check TAPEWATCH_WEBHOOK_URL, that the receiver is up and accepts the signed request, and the "
    "service's log",
}
_FAILING = re.compile(r"notify_(.+)_failing")


def _notifier_problems(name: str, values: Mapping[str, float]) -> list[str]:
    """A notifier whose last deliveries all failed (``notify_<notifier>_failing``: failed since the last one
    sent; 0 again at the next success, so a healthy notifier never shows)."""
    problems: list[str] = []
    for key, value in sorted(values.items()):
        found = _FAILING.fullmatch(key)
        if found is None or value <= 0:
            continue
        notifier = found.group(1)
        sent = int(values.get(f"notify_{notifier}_sent", 0))
        since = "none was sent since start" if sent == 0 else f"none sent since ({sent} sent before)"
        fix = _NOTIFIER_FIX.get(notifier, "check its settings and the service's log")
        problems.append(
            f"{name}'s {notifier} notifier failed its last {int(value)} deliver{'y' if value == 1 else 'ies'} "
            f"and {since}: traders get no {notifier} messages — {fix} (failed deliveries of the last "
            "notify_max_age are re-sent once at the next start)"
        )
    return problems


def _dispatch_problems(name: str, values: Mapping[str, float]) -> list[str]:
    """The signal dispatch's figures of one realtime instance (``pending_*``, ``relay_*``, ``notify_*``: see
    :meth:`tapewatch.adapters.dispatch.Dispatch.metrics`) that say signals are not reaching the trader."""
    problems: list[str] = _notifier_problems(name, values)
    held_s = values.get("pending_oldest_held_s", 0)
    if held_s > HELD_SIGNAL_PROBLEM_S:
        held = int(values.get("pending_held_signals", 0))
        problems.append(
            f"{name} holds {held} signal(s) not yet written to PostgreSQL, the oldest for {age_text(held_s)} "
            f"(> {HELD_SIGNAL_PROBLEM_S} s): they reach no trader until written (kept in memory and retried; "
            "a restart now would lose them) — check PostgreSQL (TAPEWATCH_DATABASE_URL) and the service's log"
        )
    if values.get("relay_healthy", 1) == 0:
        problems.append(
            f"{name}'s outbox relay failed its last pass (Redis errors {int(values.get('relay_redis_errors', 0))}, "
            f"PostgreSQL errors {int(values.get('relay_storage_errors', 0))} since start): stored signals are not "
            "reaching the Redis stream until it succeeds — check Redis (TAPEWATCH_REDIS_URL) and the service's log"
        )
    return problems


def judge_realtime(
    beats: Mapping[str, Heartbeat],
    metrics: Mapping[str, Mapping[str, float]],
    *,
    backup_on: bool,
    max_age_s: float,
    now_ms: int,
) -> list[str]:
    """What stops signals in the realtime instances that beat (``beats``, by name, with their own ``metrics``):
    per instance, what the connectivity sensor finds without its REST ping and websocket probe — its
    heartbeat older than ``max_age_s``, its websockets silent longer than that on some route while the backup
    feed is off (``backup_on``; the service's websockets are then off and not judged) — and its metrics
    published more than ``max_age_s`` before its heartbeat (stuck publishing: its figures are old); and what
    keeps its signals from the trader while it runs: a signal held unwritten (PostgreSQL failing) for more than
    :data:`HELD_SIGNAL_PROBLEM_S`, or an outbox relay whose last pass failed (stored signals not reaching the
    Redis stream)."""
    problems: list[str] = []
    for name, beat in sorted(beats.items()):
        values = metrics.get(name, {})
        silent_s, where = worst_silence({name: values})
        found = judge_connectivity(
            rest_error=None,
            heartbeat_age_s=beat.age(now_ms),
            ws_silent_s=silent_s,
            probe_error=None,
            backup_on=backup_on,
            backup_ours=False,
            max_age_s=max_age_s,
            component=name,
            running=True,
            silent_where=where,
        )
        problems += found.problems
        problems += _dispatch_problems(name, values)
        updated = values.get("updated_ms")
        if updated is not None and beat.ts - updated > max_age_s * 1000:
            problems.append(
                f"{name} metrics are stale: last published {age_text((beat.ts - updated) / 1000)} before its "
                f"heartbeat (> {max_age_s:g} s): it beats but no longer publishes its figures and websocket "
                f"silence (see its log for Redis errors)"
            )
    return problems


def _limits(control: ControlState) -> bool:
    return control.paused or control.backup_feed or control.max_universe is not None


def controls_in_force(control: ControlState, events: Mapping[str, ControlEvent]) -> list[ControlInForce]:
    """The limiting control values in force (:data:`LIMITING` order), each with who set it when: the newest
    control event of its command (``events``) when that event set this value."""
    live = {
        "paused": control.paused_reason,
        "backup_feed": "1" if control.backup_feed else None,
        "max_universe": None if control.max_universe is None else str(control.max_universe),
    }
    found: list[ControlInForce] = []
    for command, value in live.items():
        if value is None:
            continue
        event = events.get(command)
        # a set backup feed may be written as 1, true, on...: any non-empty value of its event set it
        sets = event is not None and event.value != "" and (command == "backup_feed" or event.value == value)
        if event is not None and sets:
            found.append(ControlInForce(command, value, event.source, event.ts))
        else:
            found.append(ControlInForce(command, value))
    return found


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when ``url`` answers HTTP with a status below 500 (401 counts: the server is up behind a login)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # a configured local URL
            return int(response.status) < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (urllib.error.URLError, OSError, ValueError):
        return False


#: Bind addresses that are no address to connect to: the settings' host is probed instead.
_ANY_HOST = frozenset({"", "0.0.0.0", "::", "[::]"})


def service_urls(
    settings: Settings, beats: Mapping[str, Mapping[str, str | int | float | bool]] | None = None
) -> dict[str, str]:
    """The URL each web component answers on when it is up (what ``tapewatch status`` probes): the settings'
    host and port, or the ``port`` (and ``host``) its live heartbeat's details in ``beats`` name. Every web
    component publishes the port it serves on (``tapewatch dagster --port`` and ``tapewatch dashboard --port``
    override the settings)."""
    beats = beats or {}
    dagster = _where(settings.dagster_host, settings.dagster_port, beats.get(DAGSTER, {}))
    dashboard = _where(settings.dashboard_host, settings.dashboard_port, beats.get(DASHBOARD, {}))
    return {DAGSTER: f"{dagster}/server_info", DASHBOARD: f"{dashboard}/"}


def _where(host: str, port: int, info: Mapping[str, str | int | float | bool]) -> str:
    """``http://host:port`` from a heartbeat's ``host``/``port`` details where they are usable, else the given
    ones (an IPv6 address in brackets)."""
    beat_port, beat_host = info.get("port"), info.get("host")
    if isinstance(beat_port, int) and not isinstance(beat_port, bool) and 0 < beat_port < 65536:
        port = beat_port
    if isinstance(beat_host, str) and beat_host.strip() not in _ANY_HOST:
        host = beat_host.strip()
    return http_url(host, port)


def _from_http(status: Status, settings: Settings) -> None:
    """Probe the web servers. One that does not answer is a problem when its component's heartbeat is up (the
    process lives but its server does not answer); an expired heartbeat is reported already, and a component
    that never sent one is not part of this deployment (running without Dagster or the dashboard is fine)."""
    beating = {c.name: c.info for c in status.components if c.up}
    for name, url in service_urls(settings, beating).items():
        reachable = http_ok(url)
        status.services.append(ServiceStatus(name, url, reachable))
        if not reachable and name in beating:
            status.problems.append(
                f"{name} does not answer on {url}: start it with `{tapewatch_command()} {name}` (or `make demo`), "
                f"or set TAPEWATCH_{name.upper()}_HOST/PORT to where it runs"
            )


def _from_database(status: Status, settings: Settings, limit: int) -> None:
    url = find_database(settings)
    if url is None:
        status.problems.append(
            f"PostgreSQL is not running: TAPEWATCH_DATABASE_URL is not set and no embedded PostgreSQL runs "
            f"under {settings.var_dir / 'pg'}; {start_hint()} (or set TAPEWATCH_DATABASE_URL)"
        )
        return
    status.database = mask_url(url)  # named even when it cannot be opened ("not running" is for no server)
    try:
        db = Database(url, connect_timeout=3, application_name="tapewatch-status")
    except TapewatchError as exc:
        status.problems.append(str(exc))
        return
    status.database = db.engine.url.render_as_string(hide_password=True)
    try:
        found = open_incidents(db, limit)
        status.open_incidents, status.incidents = found.total, found.newest
        status.recent_incidents = incident_counts(db, status.checked_at - timedelta(hours=1))
        status.health_incidents = open_health_incidents(db)
        status.database_ok = True
        if status.redis_ok:  # which realtime instances run is known: is a restart pending?
            status.tuning = tuning_use(db, status.tuning_started)
    except TapewatchError as exc:
        status.problems.append(str(exc))
    finally:
        db.dispose()
