"""``tapewatch status``: is the platform up? Gathered from Redis and PostgreSQL, never starting anything.

Redis says which components run (every component that ever sent a heartbeat is remembered; an expired
heartbeat means it is down), the realtime metrics, the per-symbol feed states and the newest signal and
universe rescan. PostgreSQL says which feed incidents are open. With no URL configured, the embedded
servers are used when they are running (``find_redis``/``find_database``); they are never started here.

:func:`gather_status` collects a :class:`Status`; ``status.problems`` lists what is wrong (empty = healthy),
:func:`format_status` renders the operator's table and ``Status.to_json`` the ``--json`` object.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tapewatch.adapters.db import Database
from tapewatch.adapters.embedded import find_database, find_redis
from tapewatch.adapters.health_store import HealthIncident, open_health_incidents
from tapewatch.adapters.incidents import IncidentRow, incident_counts, open_incidents
from tapewatch.adapters.redis_keys import DAGSTER, DASHBOARD, REALTIME, Keyspace
from tapewatch.adapters.redis_state import LastEvent, RedisState, realtime_shards
from tapewatch.errors import TapewatchError
from tapewatch.settings import Settings

#: Metrics shown in the table (all of them are in ``--json``), with their labels.
SHOWN_METRICS = (
    ("symbols", "symbols"),
    ("synced", "synced"),
    ("messages", "messages"),
    ("gaps", "gaps"),
    ("resyncs", "resyncs"),
    ("reconnects", "reconnects"),
    ("malformed", "malformed"),
    ("book_mismatches", "book mismatches"),
    ("queue_drops", "queue drops"),
    ("redis_errors", "redis errors"),
    ("incidents_queued", "incidents queued"),
    ("incidents_dropped", "incidents dropped"),
    ("retained_symbols", "retained"),
    ("control_state_lost", "redis data lost"),
    ("snapshot_failed", "snapshots failed"),
    ("late_snapshots", "late snapshots"),
    ("kline_fill_failed", "kline refills failed"),
    ("trade_too_old", "trades too old"),
)
NO_REALTIME = "no realtime heartbeat yet: start `tapewatch run` or `make demo`"


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
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every component is up and both servers answered."""
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object: every field, times as ISO 8601 / epoch ms, ages in seconds."""
        now_ms = int(self.checked_at.timestamp() * 1000)
        return {
            "ok": self.ok,
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
            "problems": self.problems,
        }


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
        status.problems.append(
            f"Redis is not running: TAPEWATCH_REDIS_URL is not set and no embedded Redis runs under "
            f"{settings.var_dir / 'redis'}; {NO_REALTIME} (or set TAPEWATCH_REDIS_URL)"
        )
        return
    status.redis = f"{_hide_password(url)} (prefix {settings.redis_prefix})"
    try:
        state = RedisState.from_url(url, keys=Keyspace(prefix=settings.redis_prefix), clock=clock)
    except TapewatchError as exc:
        status.problems.append(str(exc))
        return
    try:
        beats = state.heartbeats()
        shards = realtime_shards(beats)  # `tapewatch run --shard I/N`: realtime-IofN each
        status.metrics = state.realtime_metrics()
        feeds = state.feeds()
        status.last_signal = state.last_signal()
        status.last_rescan = state.last_rescan()
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
        status.problems.append(NO_REALTIME)
    counts = Counter(feed.state or "unknown" for feed in feeds.values())
    status.feeds = {"total": len(feeds), **dict(sorted(counts.items()))}


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
    return {DAGSTER: f"http://{dagster}/server_info", DASHBOARD: f"http://{dashboard}/"}


def _where(host: str, port: int, info: Mapping[str, str | int | float | bool]) -> str:
    """``host:port`` from a heartbeat's ``host``/``port`` details where they are usable, else the given ones."""
    beat_port, beat_host = info.get("port"), info.get("host")
    if isinstance(beat_port, int) and not isinstance(beat_port, bool) and 0 < beat_port < 65536:
        port = beat_port
    if isinstance(beat_host, str) and beat_host.strip() not in _ANY_HOST:
        host = beat_host.strip()
    return f"{host}:{port}"


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
                f"{name} does not answer on {url}: start it with `tapewatch {name}` (or `make demo`), "
                f"or set TAPEWATCH_{name.upper()}_HOST/PORT to where it runs"
            )


def _from_database(status: Status, settings: Settings, limit: int) -> None:
    url = find_database(settings)
    if url is None:
        status.problems.append(
            f"PostgreSQL is not running: TAPEWATCH_DATABASE_URL is not set and no embedded PostgreSQL runs "
            f"under {settings.var_dir / 'pg'}; start `tapewatch run` or `make demo` (or set TAPEWATCH_DATABASE_URL)"
        )
        return
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
    except TapewatchError as exc:
        status.problems.append(str(exc))
    finally:
        db.dispose()


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


# --- the table ------------------------------------------------------------------------------------------


def format_status(status: Status) -> str:
    """The operator's view: servers, components, realtime summary, newest signal/rescan, open incidents."""
    now_ms = int(status.checked_at.timestamp() * 1000)
    verdict = (
        "OK" if status.ok else f"{len(status.problems)} PROBLEM{'S' if len(status.problems) > 1 else ''}"
    )
    lines = [
        f"tapewatch status at {status.checked_at:%Y-%m-%d %H:%M:%S} UTC: {verdict}",
        f"  redis     {status.redis or 'unreachable'}",
        f"  postgres  {status.database or 'unreachable'}",
    ]
    if status.components:
        lines += ["", f"{'component':<14}{'state':<7}{'heartbeat':>12}  {'pid':<8}host"]
        for c in status.components:
            age = f"{_age(c.age_s)} ago" if c.age_s is not None else "-"
            lines.append(
                f"{c.name:<14}{'up' if c.up else 'DOWN':<7}{age:>12}  {c.pid or '-'!s:<8}{c.host or '-'}"
            )
    if status.services:
        lines.append("")
        for svc in status.services:
            lines.append(f"{svc.name + ' web':<14}{'up' if svc.reachable else 'no answer':<10} {svc.url}")
    if status.metrics:
        shown = [
            f"{label} {status.metrics[key]:,.0f}" for key, label in SHOWN_METRICS if key in status.metrics
        ]
        updated = status.metrics.get("updated_ms")
        if updated:
            shown.append(f"updated {_age(max(0, now_ms - updated) / 1000)} ago")
        lines += ["", "realtime: " + " · ".join(shown)]
    if status.feeds:
        states = ", ".join(f"{state} {n}" for state, n in status.feeds.items() if state != "total")
        lines.append(f"feeds:    {status.feeds['total']} symbols ({states or 'none'})")
    if status.redis_ok:
        lines += [
            "",
            f"last_signal: {_last(status.last_signal, now_ms)}",
            f"last_rescan: {_last(status.last_rescan, now_ms)}",
        ]
    else:
        lines += [
            "",
            "last_signal: unknown (Redis not readable)",
            "last_rescan: unknown (Redis not readable)",
        ]
    if status.open_incidents is not None:
        lines += ["", _incidents_title(status)]
        if status.incidents:
            lines.append(f"  {'recorded (UTC)':<21}{'kind':<13}{'symbol':<14}{'stream':<26}detail")
            for row in status.incidents:
                lines.append(
                    f"  {row.recorded_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}  {row.kind:<13}"
                    f"{row.symbol or '-':<14}{_cut(row.stream or '-', 25):<26}{_cut(row.detail, 90)}"
                )
        if status.recent_incidents:
            recent = ", ".join(f"{kind} {n}" for kind, n in status.recent_incidents.items())
            lines.append(f"  recorded in the last hour: {recent}")
        lines += _health_lines(status.health_incidents)
    if status.problems:
        lines += ["", "problems:", *(f"  - {problem}" for problem in status.problems)]
    return "\n".join(lines)


def format_status_line(status: Status) -> str:
    """One line for a running platform's console: components, newest signal, open incidents, problems."""
    now_ms = int(status.checked_at.timestamp() * 1000)
    parts = [
        ", ".join(f"{c.name} {'up' if c.up else 'DOWN'}" for c in status.components) or "no component yet"
    ]
    web = [f"{s.name} web {'up' if s.reachable else 'down'}" for s in status.services]
    if web:
        parts.append(", ".join(web))
    if status.redis_ok:
        last = status.last_signal
        if last is None:
            parts.append("no signal yet")
        else:
            what = " ".join(str(last.info.get(k, "")) for k in ("signal_type", "symbol", "direction"))
            parts.append(f"last signal {_age(last.age(now_ms))} ago ({what.strip()})")
    if status.open_incidents is not None:
        parts.append(f"open incidents {status.open_incidents}")
    if status.problems:
        parts.append(f"{len(status.problems)} problem(s): {status.problems[0]}")
    return "status: " + " · ".join(parts)


def _health_lines(incidents: list[HealthIncident]) -> list[str]:
    """The open health incidents (what the health sensors did and why), or "none"."""
    if not incidents:
        return ["  health actions in force: none"]
    lines = [f"  health actions in force: {len(incidents)}"]
    for row in incidents:
        lines.append(
            f"  {row.started_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}  {row.kind:<19}{_cut(row.action, 30):<31}"
            f"{_cut(row.reason, 90)}"
        )
    return lines


def _incidents_title(status: Status) -> str:
    total = status.open_incidents or 0
    if total == 0:
        return "open incidents: none"
    shown = len(status.incidents)
    return f"open incidents: {total}" + (f" (the newest {shown} shown)" if shown < total else "")


def _last(event: LastEvent | None, now_ms: int) -> str:
    if event is None:
        return "none yet"
    at = datetime.fromtimestamp(event.ts / 1000, UTC)
    details = ", ".join(f"{k}={v}" for k, v in event.info.items())
    return f"{at:%Y-%m-%d %H:%M:%S} UTC ({_age(event.age(now_ms))} ago)" + (f": {details}" if details else "")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
