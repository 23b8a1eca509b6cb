"""How ``tapewatch status`` shows a :class:`~tapewatch.adapters.status.Status`: the operator's table
(:func:`format_status`) and the one line a running platform's console prints (:func:`format_status_line`)."""

from __future__ import annotations

import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tapewatch.adapters.health_store import HealthIncident
    from tapewatch.adapters.redis_state import LastEvent
    from tapewatch.adapters.status import ControlInForce, SensorStatus, Status

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


def tapewatch_command() -> str:
    """``tapewatch`` as the operator can type it here, for the hints printed to them: ``tapewatch`` when that
    name on PATH is this installation's script; else the script beside this interpreter, relative to the
    working directory when under it (``.venv/bin/tapewatch``: ``make`` installs into a venv it never puts on
    PATH; another ``tapewatch`` on PATH is another installation); ``<python> -m tapewatch.cli`` when this
    installation has no script."""
    script = Path(sys.executable).parent / "tapewatch"
    if not script.is_file():  # not installed as a script: the module, with this interpreter
        return f"{sys.executable} -m tapewatch.cli"
    found = shutil.which("tapewatch")
    if found is not None and Path(found).resolve() == script.resolve():
        return "tapewatch"
    here = Path.cwd()
    if here != Path(here.anchor) and script.is_relative_to(here):
        return str(script.relative_to(here))
    return str(script)


def format_status(status: Status) -> str:
    """The operator's view: servers, components, realtime summary, newest signal/rescan, open incidents."""
    now_ms = int(status.checked_at.timestamp() * 1000)
    if status.problems:
        verdict = f"{len(status.problems)} PROBLEM{'S' if len(status.problems) > 1 else ''}"
    elif status.degraded:
        verdict = "DEGRADED: " + ", ".join(control.label for control in status.degrading)
    else:
        verdict = "OK"
    lines = [
        f"tapewatch status at {status.checked_at:%Y-%m-%d %H:%M:%S} UTC: {verdict}",
        # None: no URL set and no embedded server running (a configured one that fails is named, with why)
        f"  redis     {status.redis or 'not running'}",
        f"  postgres  {status.database or 'not running'}",
    ]
    if status.components:
        lines += ["", f"{'component':<14}{'state':<7}{'heartbeat':>12}  {'pid':<8}host"]
        for c in status.components:
            age = f"{age_text(c.age_s)} ago" if c.age_s is not None else "-"
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
            shown.append(f"updated {age_text(max(0, now_ms - updated) / 1000)} ago")
        lines += ["", "realtime: " + " · ".join(shown)]
    if status.feeds:
        states = ", ".join(f"{state} {n}" for state, n in status.feeds.items() if state != "total")
        lines.append(f"feeds:    {status.feeds['total']} symbols ({states or 'none'})")
    if not (status.metrics or status.feeds):
        lines.append("")
    if status.redis_ok:
        lines += [
            f"controls: {_controls_line(status.controls)}",
            f"tuning:   {_tuning_line(status)}",
            "",
            f"last_signal: {_last(status.last_signal, now_ms)}",
            f"last_rescan: {_last(status.last_rescan, now_ms)}",
            "",
            *_sensor_lines(status.sensors, status.dagster_running, now_ms),
        ]
    else:
        lines += [
            "controls: unknown (Redis not readable)",
            "tuning:   unknown (Redis not readable: which tuning the realtime service runs)",
            "",
            "last_signal: unknown (Redis not readable)",
            "last_rescan: unknown (Redis not readable)",
            "",
            "sensors: unknown (Redis not readable)",
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
    if status.degraded:
        lines += ["", "degraded:", *(f"  - {line}" for line in status.degraded)]
    if status.problems:
        lines += ["", "problems:", *(f"  - {problem}" for problem in status.problems)]
    return "\n".join(lines)


def _tuning_line(status: Status) -> str:
    """The applied tuning in force and whether the running realtime uses it (``…, restart pending: …``)."""
    if status.tuning is None:
        return "unknown (PostgreSQL not readable)"
    return status.tuning.line()


def _controls_line(controls: list[ControlInForce]) -> str:
    """The limiting controls at a glance: each one's label when in force, else its normal state."""
    found = {control.command: control.label.upper() for control in controls}
    normal = {"paused": "signalling on", "backup_feed": "primary feed", "max_universe": "no universe cap"}
    return " · ".join(found.get(command, text) for command, text in normal.items())


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
            parts.append(f"last signal {age_text(last.age(now_ms))} ago ({what.strip()})")
    if status.open_incidents is not None:
        parts.append(f"open incidents {status.open_incidents}")
    if status.degraded:
        parts.append("degraded: " + ", ".join(control.label for control in status.degrading))
    if status.tuning is not None and status.tuning.pending:
        parts.append(f"tuning {status.tuning.in_force.describe()}: restart pending")
    if status.problems:
        parts.append(f"{len(status.problems)} problem(s): {status.problems[0]}")
    return "status: " + " · ".join(parts)


def _sensor_lines(sensors: list[SensorStatus], dagster_running: bool, now_ms: int) -> list[str]:
    """The Dagster sensors' last ticks, one line each (``STALE``/``FAILING`` stand out); only a note when
    Dagster is not running and no sensor ever ticked (a deployment without Dagster)."""
    if not dagster_running and all(sensor.tick is None for sensor in sensors):
        return ["sensors: dagster not running"]
    title = "sensors" if dagster_running else "sensors (dagster not running: not judged)"
    lines = [f"{title}:", f"  {'sensor':<28}{'state':<13}{'last tick':>12}  outcome"]
    for sensor in sensors:
        tick = sensor.tick
        state = sensor.state.upper() if sensor.problem else sensor.state
        if tick is None:
            age, outcome = "-", "-"
        else:
            age = f"{age_text(tick.age(now_ms))} ago"
            outcome = tick.outcome + (f": {_cut(tick.reason, 90)}" if tick.reason else "")
        lines.append(f"  {sensor.name:<28}{state:<13}{age:>12}  {outcome}")
    return lines


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
    return f"{at:%Y-%m-%d %H:%M:%S} UTC ({age_text(event.age(now_ms))} ago)" + (
        f": {details}" if details else ""
    )


def age_text(seconds: float) -> str:
    """A duration as the table shows it: ``4.2 s``, ``3.5 min``, ``2.0 h``, ``1.5 d``."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def http_url(host: str, port: int) -> str:
    """``http://host:port``, an IPv6 address in brackets (``http://[::1]:8050``)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
