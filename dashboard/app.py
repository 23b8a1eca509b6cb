"""The Dash app: the shell (navigation, live status pills, outage banner) around the pages, basic auth when
bound beyond loopback, and the process heartbeat. ``tapewatch dashboard`` calls :func:`serve`.
"""

from __future__ import annotations

import errno
import importlib
import logging
import os
import secrets
import socket
import threading
from pathlib import Path

import dash
from dash import Input, Output, dcc, html

from dashboard import backend as be
from dashboard import ui
from dashboard.process_usage import MB, ProcessSampler
from tapewatch.adapters.redis_keys import DASHBOARD, REALTIME
from tapewatch.adapters.redis_state import realtime_shards
from tapewatch.adapters.status_format import http_url
from tapewatch.errors import ConfigError, StorageUnavailable
from tapewatch.health import realtime_instances
from tapewatch.settings import Settings

log = logging.getLogger(__name__)

#: The page modules, in navigation order.
PAGES = ("live", "performance", "quality", "system", "universe", "health", "reports")
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
HEARTBEAT_EVERY = 10.0
ASSETS = Path(__file__).resolve().parent / "assets"


def check_bind(host: str, password: str | None) -> None:
    """Refuse (ConfigError) to serve beyond loopback without a password: the dashboard can pause signalling."""
    if host not in LOOPBACK and not password:
        raise ConfigError(
            f"the dashboard is bound to {host}, beyond this machine: set TAPEWATCH_DASHBOARD_PASSWORD (and "
            "optionally TAPEWATCH_DASHBOARD_USER) to require basic auth, or bind to 127.0.0.1"
        )


def check_port(host: str, port: int) -> None:
    """ConfigError, naming the setting, unless the dashboard can listen on ``host:port`` (a port taken, an
    address not of this machine): checked before anything starts, instead of Werkzeug's "Address already in
    use" and exit 1 after the start-up banner. Binds as Werkzeug will (its address family, SO_REUSEADDR)."""
    from werkzeug.serving import get_sockaddr, select_address_family

    family = select_address_family(host, port)
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(get_sockaddr(host, port, family))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {host}:{port} for the dashboard is taken; use --port or set TAPEWATCH_DASHBOARD_PORT "
                    "(setting dashboard_port) to a free port, or stop what holds it"
                ) from exc
            raise ConfigError(
                f"the dashboard cannot listen on {host}:{port} ({exc.strerror}); use --host/--port or set "
                "TAPEWATCH_DASHBOARD_HOST / TAPEWATCH_DASHBOARD_PORT (settings dashboard_host, dashboard_port)"
            ) from exc


def status_pills(backend: be.Backend, problems: list[str]) -> list[html.Span]:
    """PostgreSQL, Redis and realtime up/down (realtime: every shard up, with shards; the title names the ones
    down), and whether signalling is paused, as coloured pills."""
    pills: list[html.Span] = []
    pg_down = any(p.startswith("PostgreSQL") for p in problems)
    redis_down = any(p.startswith("Redis") for p in problems)
    pills.append(html.Span("PostgreSQL", className=f"tw-pill {'bad' if pg_down else 'ok'}"))
    pills.append(html.Span("Redis", className=f"tw-pill {'bad' if redis_down else 'ok'}"))
    if not redis_down:
        try:
            beats = backend.redis.heartbeats()
            control = backend.redis.read_control()
        except StorageUnavailable:
            return pills
        # the single service, or every shard of `tapewatch run --shard I/N`: red while any is down
        instances = realtime_instances(beats, REALTIME, realtime_shards(beats))
        down = sorted(name for name, beat in instances.items() if beat is None)
        title = f"down: {', '.join(down)}" if down else ", ".join(sorted(instances))
        pills.append(html.Span("realtime", className=f"tw-pill {'bad' if down else 'ok'}", title=title))
        if control.paused:
            pills.append(html.Span("PAUSED", className="tw-pill warn", title=control.paused_reason or ""))
        if control.backup_feed:
            pills.append(html.Span("backup feed", className="tw-pill warn"))
    return pills


def shell_status() -> tuple[list[html.Span], html.Div]:
    """The shell's pills and outage banner (callback body, also called by tests)."""
    backend = be.current()
    problems = be.storage_problems(backend)
    return status_pills(backend, problems), ui.banner(problems)


def _layout() -> html.Div:
    links = [
        dcc.Link(page["name"], href=page["relative_path"], id=f"nav-{page['module'].rsplit('.', 1)[-1]}")
        for page in dash.page_registry.values()
    ]
    return html.Div(
        [
            html.Nav(
                [
                    html.Span("tapewatch", className="tw-brand"),
                    *links,
                    html.Span(id="shell-status", className="tw-nav-right"),
                ],
                className="tw-nav",
            ),
            html.Div(id="shell-banner"),
            dcc.Interval(id="shell-interval", interval=2000),
            html.Main(dash.page_container, className="tw-page"),
        ]
    )


def create_app(backend: be.Backend, *, password: str | None = None) -> dash.Dash:
    """The Dash app on ``backend`` (installed for every callback); basic auth when ``password`` is set."""
    be.use(backend)
    app = dash.Dash(
        __name__,
        use_pages=True,
        pages_folder="",
        assets_folder=str(ASSETS),
        title="tapewatch",
        update_title="",
        suppress_callback_exceptions=True,
    )
    for name in PAGES:
        importlib.import_module(f"dashboard.pages.{name}")
    app.layout = _layout

    @app.callback(
        Output("shell-status", "children"),
        Output("shell-banner", "children"),
        Input("shell-interval", "n_intervals"),
    )
    def _shell(_: int | None) -> tuple[list[html.Span], html.Div]:
        return shell_status()

    credentials = (backend.settings.dashboard_user, password) if password else None
    if credentials:  # before set_up: Flask takes no new request hook once the app has served a request
        import dash_auth

        # dash_auth keeps the user in Flask's session: without a key every request logs "Session is not
        # available"; one per process (a restart asks the browser for the password again, as basic auth does)
        app.server.secret_key = secrets.token_hex(32)
        dash_auth.BasicAuth(app, {credentials[0]: credentials[1]})
    set_up(app, credentials)
    return app


def set_up(app: dash.Dash, credentials: tuple[str, str] | None = None) -> None:
    """Finish the app's setup now, in this one thread, before it serves anyone.

    Dash completes an app on its first request (hooks that merge the pages' callbacks into the app and add
    the page router), each hook setting its "done" flag *before* doing the work and without a lock: concurrent
    first requests then see a half-built app — a dependency list without the pages' callbacks (seen: 1 KB
    instead of 7 KB), or a callback Dash does not know yet, a 500. One request through Flask's test client
    runs those hooks before the server opens, as ``credentials`` (user, password) when basic auth is on;
    ValueError if it does not answer 200."""
    response = app.server.test_client().get(app.config.requests_pathname_prefix, auth=credentials)
    if response.status_code != 200:
        raise ValueError(f"the dashboard failed its set-up request: HTTP {response.status_code}")


def heartbeat_info(backend: be.Backend, sampler: ProcessSampler) -> dict[str, int | float]:
    """What the dashboard publishes in its heartbeat: its port, and its own CPU % (since the previous beat;
    left out on the first) and resident memory in bytes (``cpu``, ``rss``: what the System page reads)."""
    info: dict[str, int | float] = {"port": backend.settings.dashboard_port}
    cpu, rss_mb = sampler.sample(os.getpid())
    if cpu is not None:
        info["cpu"] = round(cpu, 1)
    if rss_mb is not None:
        info["rss"] = int(rss_mb * MB)
    return info


def _heartbeat(backend: be.Backend, stop: threading.Event) -> None:
    sampler = ProcessSampler()
    while not stop.is_set():
        try:
            backend.redis.beat(DASHBOARD, ttl_s=HEARTBEAT_EVERY * 3, info=heartbeat_info(backend, sampler))
        except StorageUnavailable as exc:
            log.warning("dashboard heartbeat failed (will retry): %s", exc)
        stop.wait(HEARTBEAT_EVERY)


def serve(settings: Settings, *, database_url: str, redis_url: str, host: str, port: int) -> None:
    """Run the dashboard until interrupted (ConfigError when bound beyond loopback without a password)."""
    from tapewatch.adapters.dagster_runs import DagsterRuns
    from tapewatch.adapters.db import Database
    from tapewatch.adapters.redis_keys import Keyspace
    from tapewatch.adapters.redis_state import RedisState

    password = settings.dashboard_password.get_secret_value() if settings.dashboard_password else None
    check_bind(host, password)
    backend = be.Backend(
        settings=settings.model_copy(update={"dashboard_port": port}),
        db=Database(database_url, application_name="tapewatch-dashboard"),
        redis=RedisState.from_url(redis_url, keys=Keyspace(settings.redis_prefix)),
        dagster=DagsterRuns(settings.dagster_host, settings.dagster_port),
    )
    app = create_app(backend, password=password)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(backend, stop), name="dashboard-heartbeat", daemon=True)
    beat.start()
    print(
        f">> tapewatch dashboard on {http_url(host, port)}/" + (" (basic auth)" if password else ""),
        flush=True,
    )
    try:
        app.run(host=host, port=port, debug=False)
    finally:
        stop.set()
        backend.close()
