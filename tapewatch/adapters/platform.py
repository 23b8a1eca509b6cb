"""``tapewatch demo``: the whole platform from one command, on the simulated exchange.

Order of start (each step waits until the previous one answers, and says so):

1. the lock ``<var_dir>/demo.lock`` (a second demo on the same var dir is refused, naming the first's pid);
2. every port the platform will listen on is checked first (a taken port names the setting to change);
3. PostgreSQL and Redis (the configured URLs, or the embedded servers under the var dir) and the migrations;
4. ``tapewatch sim`` (accelerated clock, more planted episodes, clock resumed from ``<var_dir>/demo/``);
5. ``tapewatch run --exchange sim`` (ready when its heartbeat, with its pid, is in Redis);
6. ``tapewatch dagster`` and ``tapewatch dashboard`` when this installation has those commands (ready when
   they answer HTTP).

Every process is a ``tapewatch ...`` child of a :class:`~tapewatch.adapters.supervisor.Supervisor`: their output is
streamed with a prefix, a child that dies stops the platform (with its last lines), and Ctrl-C stops them all
in reverse order. The embedded servers are stopped too when this demo started them (servers that were already
running belong to someone else and are left alone). PostgreSQL and Redis keep the data, so the next demo
resumes it: signal ids are deterministic and the simulator's clock only moves forward (``realtime/demo.py``).
"""

from __future__ import annotations

import functools
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil

from tapewatch.adapters.db import open_database
from tapewatch.adapters.demo_lock import demo_lock
from tapewatch.adapters.embedded import (
    ensure_database,
    ensure_redis,
    find_database,
    find_redis,
    stop_postgres,
    stop_redis,
)
from tapewatch.adapters.ports import Endpoint, check_ports, port_open
from tapewatch.adapters.redis_keys import DAGSTER, DASHBOARD, REALTIME, Keyspace
from tapewatch.adapters.redis_state import RedisState
from tapewatch.adapters.redis_values import Heartbeat
from tapewatch.adapters.status import gather_status, http_ok, service_urls
from tapewatch.adapters.status_format import format_status_line, tapewatch_command
from tapewatch.adapters.supervisor import ChildFailed, ChildSpec, Supervisor
from tapewatch.settings import Settings

#: Seconds each part may take to answer after it started (a cold Dagster start is the slowest).
READY_TIMEOUTS = {"sim": 60.0, "realtime": 120.0, "dagster": 240.0, "dashboard": 120.0}


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """The demo's knobs (``tapewatch demo --help``): the simulated market and what to start."""

    seed: int = 1
    symbols: int = 20
    speed: float = 20.0
    episode_rate: float = 3.0
    daily_cap_scale: int = 10
    duration: float | None = None
    status_every: float = 15.0
    dagster: bool = True
    dashboard: bool = True


def endpoints(settings: Settings, commands: frozenset[str], options: DemoOptions) -> dict[str, Endpoint]:
    """The ports of the parts this demo will start (Dagster/dashboard only when their commands exist)."""
    found = {"sim": Endpoint("the simulated exchange", settings.sim_host, settings.sim_port, "sim_port")}
    if options.dagster and "dagster" in commands:
        found["dagster"] = Endpoint(
            "the Dagster webserver", settings.dagster_host, settings.dagster_port, "dagster_port"
        )
    if options.dashboard and "dashboard" in commands:
        found["dashboard"] = Endpoint(
            "the dashboard", settings.dashboard_host, settings.dashboard_port, "dashboard_port"
        )
    return found


# --- the demo ------------------------------------------------------------------------------------------


def _embedded_record(var_dir: Path) -> Path:
    return var_dir / "run" / "demo.embedded.json"


def owned_servers(settings: Settings, var_dir: Path) -> tuple[bool, bool]:
    """Which embedded servers (PostgreSQL, Redis) this demo owns, i.e. stops when it ends; recorded in
    ``var/run/demo.embedded.json`` until then. Call with the demo lock held.

    Servers running before the demo belong to someone else (a ``tapewatch run`` started by hand) and are left
    alone — unless the record says a demo started them: that demo was killed before it could stop them, and
    its servers are adopted, so they are stopped this time instead of running on forever."""
    record = _embedded_record(var_dir)
    try:
        adopted = set(json.loads(record.read_text()))
    except (OSError, ValueError, TypeError):
        adopted = set()
    pg = settings.database_url is None and ("pg" in adopted or find_database(settings) is None)
    rd = settings.redis_url is None and ("redis" in adopted or find_redis(settings) is None)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps([name for name, own in (("pg", pg), ("redis", rd)) if own]))
    return pg, rd


def child_env(settings: Settings, database_url: str, redis_url: str, config: Path | None) -> dict[str, str]:
    """The environment of every child: this one, plus the servers and var dir resolved here, so every
    process uses the same PostgreSQL, Redis and files whatever its working directory."""
    env = dict(os.environ)
    env.update(
        TAPEWATCH_DATABASE_URL=database_url,
        TAPEWATCH_REDIS_URL=redis_url,
        TAPEWATCH_VAR_DIR=str(settings.var_dir.resolve()),
        PYTHONUNBUFFERED="1",
    )
    if config is not None:
        env["TAPEWATCH_CONFIG_FILE"] = str(config.resolve())
    return env


#: The risk gate's daily caps, scaled up in the demo (see :func:`demo_overrides`).
DAILY_CAPS = ("max_daily_signals", "max_daily_high", "max_daily_medium", "max_daily_low")


def demo_overrides(settings: Settings, options: DemoOptions) -> dict[str, str]:
    """Environment the demo adds for its children: the daily caps times ``options.daily_cap_scale``, and
    the simulator as the exchange.

    Why: the simulator plants ``episode_rate`` times more order-flow episodes than a normal market so the
    first signal comes within a minute or two; with the production caps (20 HIGH a day) the gate would then
    refuse every signal for most of each simulated day. Caps the operator set (environment or YAML) are
    kept as they are; concurrency, cooldown and correlation limits are never changed.

    And the Binance URLs of every child point at the simulator: Dagster's assets and sensors (universe
    statistics, klines for outcomes, the REST ping) must read the same exchange the realtime service follows."""
    host, port = settings.sim_host, settings.sim_port
    env = {
        "TAPEWATCH_BINANCE_REST_URL": f"http://{host}:{port}",
        "TAPEWATCH_BINANCE_WS_PUBLIC_URL": f"ws://{host}:{port}/public",
        "TAPEWATCH_BINANCE_WS_MARKET_URL": f"ws://{host}:{port}/market",
    }
    for name in DAILY_CAPS:
        if name not in settings.model_fields_set:
            value = min(10_000, int(getattr(settings, name)) * options.daily_cap_scale)
            env[f"TAPEWATCH_{name.upper()}"] = str(value)
    return env


def tapewatch_argv(*args: str) -> list[str]:
    """``tapewatch ARGS`` run with this interpreter (works without the venv's bin on PATH)."""
    return [sys.executable, "-m", "tapewatch.cli", *args]


def run_demo(
    settings: Settings,
    options: DemoOptions,
    *,
    commands: frozenset[str],
    config: Path | None = None,
    out: IO[str] | None = None,
) -> int:
    """Start the platform, print its URLs, watch it until Ctrl-C/SIGTERM, ``options.duration`` or a child's
    death, then stop it. Returns the exit code (0 after a requested stop). ``commands`` are the ``tapewatch``
    subcommands this installation has (Dagster and the dashboard are started only when present)."""
    stream = out if out is not None else sys.stdout
    var_dir = settings.var_dir.resolve()

    def say(text: str) -> None:
        stream.write(f">> {text}\n")
        stream.flush()

    with demo_lock(var_dir):
        found = endpoints(settings, commands, options)
        check_ports(found)
        steps = 2 + len(found)  # PostgreSQL+Redis, the realtime service, and one per listening part
        say(
            f"[1/{steps}] PostgreSQL and Redis (embedded under {var_dir} unless TAPEWATCH_DATABASE_URL/REDIS_URL)"
        )
        own_pg, own_redis = owned_servers(settings, var_dir)
        t0 = time.monotonic()
        try:
            database_url, redis_url = ensure_database(settings), ensure_redis(settings)
            open_database(settings).dispose()  # migrations
            say(f"      ready in {time.monotonic() - t0:.1f} s")
            env = child_env(settings, database_url, redis_url, config) | demo_overrides(settings, options)
            for name in forget_absent(redis_url, settings, found):
                say(
                    f"      {name} (left registered by an earlier run) is not part of this demo: no longer listed"
                )
            with Supervisor(run_dir=var_dir / "run", name="demo", out=stream, stop_timeout=30) as sup:
                return _run_children(sup, settings, options, found, env, redis_url, steps)
        finally:
            if own_pg or own_redis:
                say("stopping the embedded PostgreSQL and Redis this demo started")
                if own_pg:
                    stop_postgres(var_dir / "pg")
                if own_redis:
                    stop_redis(var_dir / "redis")
            _embedded_record(var_dir).unlink(missing_ok=True)
            say("stopped")


#: The components the demo may run without (``--no-dagster``, ``--no-dashboard``, or no such command).
OPTIONAL = (DAGSTER, DASHBOARD)


def forget_absent(redis_url: str, settings: Settings, found: Mapping[str, Endpoint]) -> list[str]:
    """Drop from Redis's component registry each optional component this demo does not start that an earlier
    run left: its heartbeat expired, or still live but sent from this host by a process that is gone (a demo
    stopped seconds ago). ``tapewatch status`` would report it down for good, though the running platform does
    not include it. The names dropped.

    One whose process lives is left alone (started by hand beside the demo, or on another host); and any
    component that beats again registers itself again, so one that should run and stops is still reported
    down."""
    state = RedisState.from_url(redis_url, keys=Keyspace(prefix=settings.redis_prefix))
    try:
        beats = state.heartbeats()
        gone = [name for name in OPTIONAL if name not in found and name in beats and _left(beats[name])]
        for name in gone:
            state.forget_component(name)
    finally:
        state.close()
    return gone


def _left(beat: Heartbeat | None) -> bool:
    """True for a heartbeat nobody sends any more: expired, or from a process of this host that is gone."""
    if beat is None:
        return True
    return beat.host == socket.gethostname() and not psutil.pid_exists(beat.pid)


def _run_children(
    sup: Supervisor,
    settings: Settings,
    options: DemoOptions,
    found: Mapping[str, Endpoint],
    env: dict[str, str],
    redis_url: str,
    steps: int,
) -> int:
    sim = found["sim"]
    step = 2
    try:
        sup.say(
            f"[{step}/{steps}] simulated exchange on {sim.url} ({options.symbols} symbols, clock x{options.speed:g}, "
            f"episodes x{options.episode_rate:g})"
        )
        sup.start(ChildSpec("sim", tapewatch_argv(*_sim_args(settings, options)), env))
        _ready(sup, "sim", lambda: port_open(sim.host, sim.port))

        step += 1
        sup.say(f"[{step}/{steps}] realtime service (tapewatch run --exchange sim)")
        realtime = sup.start(
            ChildSpec(
                "realtime",
                tapewatch_argv("run", "--exchange", "sim", "--status-every", f"{options.status_every:g}"),
                env,
            )
        )
        keys = Keyspace(prefix=settings.redis_prefix)
        _ready(sup, "realtime", lambda: _beats(redis_url, keys, REALTIME, realtime.pid))

        web = [name for name in ("dagster", "dashboard") if name in found]
        for name in web:  # both start at once: they take the longest
            step += 1
            sup.say(f"[{step}/{steps}] {found[name].what} on {found[name].url} (tapewatch {name})")
            sup.start(ChildSpec(name, tapewatch_argv(name), env))
        for name in web:
            _ready(sup, name, functools.partial(http_ok, service_urls(settings)[name]))
    except ChildFailed as exc:
        if sup.stopping.is_set() and not any(c.exited() for c in sup.children):
            return 130  # Ctrl-C while starting
        sup.say(f"the platform did not start: {exc}")
        return 1

    _print_urls(sup, settings, found, options)
    return sup.run(
        duration=options.duration, tick=lambda: sup.say(_status_line(settings)), every=options.status_every
    )


def _sim_args(settings: Settings, options: DemoOptions) -> list[str]:
    clock_file = settings.var_dir.resolve() / "demo" / "sim-clock.json"
    return [
        "sim", "--host", settings.sim_host, "--port", str(settings.sim_port), "--seed", str(options.seed),
        "--symbols", str(options.symbols), "--speed", f"{options.speed:g}",
        "--episode-rate", f"{options.episode_rate:g}", "--clock-file", str(clock_file),
    ]  # fmt: skip


def _ready(sup: Supervisor, name: str, probe: Callable[[], bool]) -> None:
    took = sup.wait_until(name, probe, timeout=READY_TIMEOUTS[name])
    sup.say(f"      {name} ready in {took:.1f} s")


def _beats(redis_url: str, keys: Keyspace, component: str, pid: int) -> bool:
    state = RedisState.from_url(redis_url, keys=keys)
    try:
        beat = state.heartbeat(component)
    finally:
        state.close()
    return beat is not None and beat.pid == pid


def _status_line(settings: Settings) -> str:
    return format_status_line(gather_status(settings, incident_limit=0))


def _not_started(name: str, options: DemoOptions) -> str:
    """Why the demo runs without ``name`` (``dagster`` or ``dashboard``): its ``--no-*`` option, or no such
    command in this installation."""
    if not getattr(options, name):
        return f"(not started: disabled by --no-{name})"
    return f"(not started: this installation has no `tapewatch {name}` command)"


def _print_urls(
    sup: Supervisor, settings: Settings, found: Mapping[str, Endpoint], options: DemoOptions
) -> None:
    lines = ["tapewatch is running (Ctrl-C stops everything):"]
    for name, label in (("dashboard", "dashboard        "), ("dagster", "Dagster          ")):
        if name in found:
            lines.append(f"   {label} {found[name].url}")
        else:
            lines.append(f"   {label} {_not_started(name, options)}")
    tapewatch = tapewatch_command()
    lines += [
        f"   simulated exchange {found['sim'].url}/fapi/v1/exchangeInfo",
        f"   health            {tapewatch} status     (in another terminal, in this directory)",
        f"   data              {settings.var_dir.resolve()} (captures, embedded PostgreSQL and Redis)",
        f"   a status line every {options.status_every:g} s; the realtime table below it",
    ]
    for line in lines:
        sup.say(line)
