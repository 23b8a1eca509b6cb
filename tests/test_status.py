"""``tapewatch status``: components, realtime metrics, feeds, newest signal/rescan, open incidents, exit codes.

Runs the real command in-process (``tapewatch.cli.main``) against real Redis and PostgreSQL, with the settings
pointed at this test's Redis prefix and database through the environment, as an operator would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tapewatch.adapters.db import Database
from tapewatch.adapters.embedded import find_database, find_redis, start_postgres, start_redis, stop_embedded
from tapewatch.adapters.health_store import close_incident, open_incident
from tapewatch.adapters.incidents import NewIncident, write_changes
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import AsyncRedisState, RedisState, SymbolFeed, TickOutcome
from tapewatch.adapters.status_format import tapewatch_command
from tapewatch.cli import main
from tapewatch.settings import Settings
from tests.adapters.rest_test_server import closed_port

pytestmark = pytest.mark.db


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    # The command configures logging for a process (root handler on stderr); undo it after each test.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    redis_url: str,
    redis_keys: Keyspace,
    migrated_database_url: str,
) -> pytest.MonkeyPatch:
    """The environment of an operator whose settings point at this test's Redis prefix and database."""
    monkeypatch.delenv("TAPEWATCH_CONFIG_FILE", raising=False)
    monkeypatch.setenv("TAPEWATCH_REDIS_URL", redis_url)
    monkeypatch.setenv("TAPEWATCH_REDIS_PREFIX", redis_keys.prefix)
    monkeypatch.setenv("TAPEWATCH_DATABASE_URL", migrated_database_url)
    monkeypatch.setenv("TAPEWATCH_VAR_DIR", str(tmp_path / "var"))
    return monkeypatch


def status(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["status", *args])
    return code, capsys.readouterr().out


def status_json(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code, out = status(capsys, "--json")
    return code, json.loads(out.strip().splitlines()[-1])


def the_problem(capsys: pytest.CaptureFixture[str]) -> str:
    """``tapewatch status --json`` exits 1 naming a single problem: that problem."""
    code, report = status_json(capsys)
    assert code == 1
    (problem,) = report["problems"]
    return str(problem)


def run_realtime(redis_url: str, keys: Keyspace, feeds: dict[str, str]) -> None:
    """What a running realtime service leaves in Redis: heartbeat, metrics, per-symbol feed states."""

    async def publish() -> None:
        state = AsyncRedisState.from_url(redis_url, keys=keys)
        try:
            await state.beat("realtime", ttl_s=30, info={"pid": 4242})
            await state.publish_metrics({"messages": 123_456, "symbols": len(feeds), "synced": 2, "gaps": 1})
            for symbol, feed_state in feeds.items():
                await state.publish_feed(symbol, SymbolFeed(state=feed_state))
        finally:
            await state.aclose()

    asyncio.run(publish())


@pytest.fixture
def realtime_up(redis_url: str, redis_keys: Keyspace) -> None:
    """A realtime service is up (``run_realtime`` without feeds)."""
    run_realtime(redis_url, redis_keys, {})


def test_a_healthy_platform_exits_0_with_every_section(
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    redis_url: str,
    redis_keys: Keyspace,
    redis_state: RedisState,
    migrated_database_url: str,
) -> None:
    run_realtime(redis_url, redis_keys, {"BTCUSDT": "synced", "ETHUSDT": "synced", "SOLUSDT": "stale"})
    now = datetime.now(UTC)
    db = Database(migrated_database_url)
    try:
        write_changes(
            db,
            [NewIncident("stale", now, f"SYM{i}", f"sym{i}@depth@100ms", f"stale #{i}") for i in range(25)]
            + [NewIncident("malformed", now, None, None, "3 malformed frames", resolved_at=now)],
        )
    finally:
        db.dispose()

    code, report = status_json(capsys)
    assert code == 0 and report["ok"] is True and report["problems"] == []
    assert report["redis_ok"] is True and report["database_ok"] is True
    realtime = report["components"]["realtime"]
    assert realtime["up"] is True and realtime["pid"] == os.getpid() and 0 <= realtime["heartbeat_age_s"] < 30
    assert report["metrics"]["messages"] == 123_456 and report["metrics"]["updated_ms"] > 0
    assert report["feeds"] == {"total": 3, "stale": 1, "synced": 2}
    assert report["last_signal"] is None and report["last_rescan"] is None
    incidents = report["incidents"]
    assert incidents["open"] == 25 and len(incidents["newest_open"]) == 20
    assert incidents["newest_open"][0]["detail"] == "stale #24"  # newest first
    assert incidents["last_hour"] == {"malformed": 1, "stale": 25}

    code, table = status(capsys)
    assert code == 0
    assert table.splitlines()[0].endswith(": OK")
    assert "realtime      up" in table and "messages 123,456" in table
    assert "feeds:    3 symbols (stale 1, synced 2)" in table
    assert "last_signal: none yet" in table and "last_rescan: none yet" in table
    assert "open incidents: 25 (the newest 20 shown)" in table and "stale #24" in table
    assert "stale #4" not in table


def test_the_newest_signal_and_rescan_are_shown_once_recorded(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], realtime_up: None, redis_state: RedisState
) -> None:
    redis_state.set_last_signal({"signal_id": "abc", "symbol": "BTCUSDT", "direction": "LONG"})
    redis_state.set_last_rescan({"run_id": "r1", "symbols": 30})
    code, report = status_json(capsys)
    assert code == 0
    assert report["last_signal"]["info"] == {"signal_id": "abc", "symbol": "BTCUSDT", "direction": "LONG"}
    assert report["last_rescan"]["info"] == {"run_id": "r1", "symbols": 30}
    assert abs(report["last_signal"]["ts"] / 1000 - time.time()) < 60
    _, table = status(capsys)
    assert "last_signal: " in table and "signal_id=abc, symbol=BTCUSDT, direction=LONG" in table
    assert "last_rescan: " in table and "run_id=r1, symbols=30" in table


def test_nothing_ever_ran_is_a_failure_that_says_how_to_start(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = status_json(capsys)
    assert code == 1 and report["ok"] is False
    assert report["components"] == {}
    tw = tapewatch_command()  # `tapewatch`, or `.venv/bin/tapewatch` when the venv is not on PATH
    assert report["problems"] == [f"no realtime heartbeat yet: start `{tw} run` or `make demo`"]
    assert report["incidents"]["open"] == 0
    code, table = status(capsys)
    assert code == 1 and "1 PROBLEM" in table.splitlines()[0] and "open incidents: none" in table


def test_a_component_whose_heartbeat_expired_is_down(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], realtime_up: None, redis_state: RedisState
) -> None:
    redis_state.beat("dagster", ttl_s=0.05)
    deadline = time.monotonic() + 5
    while redis_state.heartbeat("dagster") is not None:  # Redis expires it
        assert time.monotonic() < deadline
        time.sleep(0.01)
    code, report = status_json(capsys)
    assert code == 1
    assert report["components"]["dagster"] == {
        "up": False,
        "heartbeat_age_s": None,
        "pid": None,
        "host": None,
    }
    assert report["components"]["realtime"]["up"] is True
    assert report["problems"] == ["component dagster is down (its heartbeat expired)"]
    _, table = status(capsys)
    assert "dagster       DOWN" in table


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:secret@127.0.0.1:{port}/0", "redis://:***@127.0.0.1:{port}/0"),
        # redis-py also reads the password from the query
        ("redis://127.0.0.1:{port}/0?password=secret", "redis://127.0.0.1:{port}/0?password=***"),
    ],
)
def test_an_unreachable_redis_is_a_failure_naming_its_setting_never_its_password(
    url: str, shown: str, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with closed_port() as port:
        env.setenv("TAPEWATCH_REDIS_URL", url.format(port=port))
        code, report = status_json(capsys)
    assert code == 1
    (problem,) = report["problems"]
    assert "TAPEWATCH_REDIS_URL" in problem and str(port) in problem and "secret" not in json.dumps(report)
    assert report["redis"].startswith(shown.format(port=port))
    assert report["redis_ok"] is False and report["database_ok"] is True
    assert report["incidents"]["open"] == 0  # PostgreSQL was still read


def test_an_unreachable_postgresql_is_a_failure_naming_its_setting(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], realtime_up: None
) -> None:
    with closed_port() as port:
        env.setenv("TAPEWATCH_DATABASE_URL", f"postgresql://tw:secret@127.0.0.1:{port}/tapewatch")
        code, report = status_json(capsys)
    assert code == 1
    (problem,) = report["problems"]
    assert "TAPEWATCH_DATABASE_URL" in problem and "secret" not in json.dumps(report)
    assert report["redis_ok"] is True and report["database_ok"] is False
    assert report["incidents"]["open"] is None and report["components"]["realtime"]["up"] is True


def test_without_urls_or_running_servers_nothing_is_started(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("TAPEWATCH_CONFIG_FILE", raising=False)
    monkeypatch.delenv("TAPEWATCH_REDIS_URL", raising=False)
    monkeypatch.delenv("TAPEWATCH_DATABASE_URL", raising=False)
    monkeypatch.setenv("TAPEWATCH_VAR_DIR", str(tmp_path / "var"))
    code, report = status_json(capsys)
    assert code == 1
    redis_problem, pg_problem = report["problems"]
    assert "Redis is not running" in redis_problem and "TAPEWATCH_REDIS_URL" in redis_problem
    # after a demo stopped its embedded servers: nothing runs, said as such (not "unreachable" servers)
    assert "so no component of the platform runs here" in redis_problem
    assert f"start `{tapewatch_command()} run` or `make demo`" in redis_problem
    assert "PostgreSQL is not running" in pg_problem and "TAPEWATCH_DATABASE_URL" in pg_problem
    assert not (tmp_path / "var").exists(), "status must never start the embedded servers"
    _, table = status(capsys)
    assert "  redis     not running\n  postgres  not running" in table and "unreachable" not in table
    assert "last_signal: unknown (Redis not readable)" in table


@pytest.mark.slow
def test_running_embedded_servers_are_found_and_an_unmigrated_database_is_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], server_tmp_path: Path
) -> None:
    var = server_tmp_path / "var"
    settings = Settings(var_dir=var, database_url=None, redis_url=None)
    assert find_redis(settings) is None and find_database(settings) is None
    monkeypatch.delenv("TAPEWATCH_CONFIG_FILE", raising=False)
    monkeypatch.delenv("TAPEWATCH_REDIS_URL", raising=False)
    monkeypatch.delenv("TAPEWATCH_DATABASE_URL", raising=False)
    monkeypatch.setenv("TAPEWATCH_VAR_DIR", str(var))
    try:
        redis_url = start_redis(var / "redis")
        database_url = start_postgres(var / "pg")
        assert find_redis(settings) == redis_url and find_database(settings) == database_url
        code, report = status_json(capsys)
    finally:
        stop_embedded(var)
    assert code == 1
    assert report["redis"].startswith("unix://") and report["database"].startswith("postgresql+psycopg://")
    no_heartbeat, not_migrated = report["problems"]
    assert no_heartbeat.startswith("no realtime heartbeat yet")
    assert "not migrated" in not_migrated and "tapewatch db upgrade" in not_migrated
    assert find_redis(settings) is None and find_database(settings) is None  # stopped again


# --- web servers (Dagster webserver, dashboard) probed over HTTP ----------------------------------------


@contextlib.contextmanager
def http_server(status_code: int = 200) -> Iterator[int]:
    """A real HTTP server on a free port answering every GET with ``status_code``; yields the port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status_code)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_web_servers_are_probed_and_a_silent_one_with_a_live_heartbeat_is_down(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], realtime_up: None, redis_state: RedisState
) -> None:
    redis_state.beat("dashboard", ttl_s=30)  # the dashboard process lives...
    with http_server(200) as dagster_port, closed_port() as dashboard_port:
        env.setenv("TAPEWATCH_DAGSTER_PORT", str(dagster_port))
        env.setenv("TAPEWATCH_DASHBOARD_PORT", str(dashboard_port))  # ...but its server does not answer
        code, report = status_json(capsys)
        _, table = status(capsys)
    assert code == 1
    assert report["services"] == {
        "dagster": {"url": f"http://127.0.0.1:{dagster_port}/server_info", "reachable": True},
        "dashboard": {"url": f"http://127.0.0.1:{dashboard_port}/", "reachable": False},
    }
    (problem,) = report["problems"]
    assert problem.startswith(f"dashboard does not answer on http://127.0.0.1:{dashboard_port}/")
    assert "tapewatch dashboard" in problem and "TAPEWATCH_DASHBOARD_HOST/PORT" in problem
    assert "dagster web   up" in table and "dashboard web no answer" in table


def test_a_web_server_that_never_ran_here_is_not_a_problem(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], realtime_up: None
) -> None:
    with closed_port() as port, http_server(401) as behind_login:
        env.setenv("TAPEWATCH_DAGSTER_PORT", str(port))
        env.setenv("TAPEWATCH_DASHBOARD_PORT", str(behind_login))  # 401: up, behind its password
        code, report = status_json(capsys)
    assert code == 0 and report["problems"] == []
    assert report["services"]["dagster"]["reachable"] is False
    assert report["services"]["dashboard"]["reachable"] is True


def test_the_one_line_status_of_the_demo_console(
    env: pytest.MonkeyPatch, redis_url: str, redis_keys: Keyspace, redis_state: RedisState
) -> None:
    from tapewatch.adapters.status import gather_status
    from tapewatch.adapters.status_format import format_status_line
    from tapewatch.settings import load_settings

    with closed_port() as port:
        env.setenv("TAPEWATCH_DAGSTER_PORT", str(port))
        env.setenv("TAPEWATCH_DASHBOARD_PORT", str(port))
        line = format_status_line(gather_status(load_settings()))
        assert line.startswith("status: no component yet")
        assert "dagster web down, dashboard web down" in line and "no signal yet" in line
        assert "open incidents 0" in line and "1 problem(s): no realtime heartbeat yet" in line

        run_realtime(redis_url, redis_keys, {})
        redis_state.set_last_signal({"signal_type": "ENTRY", "symbol": "BTCUSDT", "direction": "LONG"})
        line = format_status_line(gather_status(load_settings()))
    assert line.startswith("status: realtime up · ")
    assert "last signal " in line and "(ENTRY BTCUSDT LONG)" in line and "problem" not in line


def test_the_dashboard_is_probed_on_the_port_its_heartbeat_names(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], realtime_up: None, redis_state: RedisState
) -> None:
    """`tapewatch dashboard --port` overrides the settings; the dashboard's heartbeat names its real port."""
    with http_server(200) as served, closed_port() as configured:
        env.setenv("TAPEWATCH_DASHBOARD_PORT", str(configured))
        redis_state.beat("dashboard", ttl_s=30, info={"port": served, "host": "0.0.0.0"})
        _, report = status_json(capsys)
    assert report["services"]["dashboard"] == {"url": f"http://127.0.0.1:{served}/", "reachable": True}
    assert not any(p.startswith("dashboard") for p in report["problems"]), report["problems"]


def test_dagster_is_probed_on_the_port_its_heartbeat_names(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], realtime_up: None, redis_url: str
) -> None:
    """`tapewatch dagster --port` overrides the settings: the heartbeat `tapewatch dagster` sends names the
    port its webserver serves on (it named only a `url`, so status probed the configured port and reported a
    running Dagster as not answering)."""
    from tapewatch.adapters.dagster_home import dagster_heartbeat
    from tapewatch.settings import load_settings

    with http_server(200) as served, closed_port() as configured:
        env.setenv("TAPEWATCH_DAGSTER_PORT", str(configured))
        beat = dagster_heartbeat(load_settings(), redis_url, served)  # what `tapewatch dagster --port` sends
        try:
            code, report = status_json(capsys)
            _, table = status(capsys)
        finally:
            beat.close()
    assert report["components"]["dagster"]["up"] is True
    assert report["services"]["dagster"] == {
        "url": f"http://127.0.0.1:{served}/server_info",
        "reachable": True,
    }
    assert code == 0 and report["problems"] == []
    assert "dagster web   up" in table


def test_redis_data_loss_and_rest_and_snapshot_losses_are_shown(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], redis_url: str, redis_keys: Keyspace
) -> None:
    async def publish() -> None:
        state = AsyncRedisState.from_url(redis_url, keys=redis_keys)
        try:
            await state.beat("realtime", ttl_s=30)
            losses = {"retained_symbols": 2, "control_state_lost": 1, "snapshot_failed": 3, "late_snapshots": 4,
                      "kline_fill_failed": 5, "trade_too_old": 6}  # fmt: skip
            await state.publish_metrics(losses)
        finally:
            await state.aclose()

    asyncio.run(publish())
    _, report = status_json(capsys)
    _, table = status(capsys)
    # shown, not a failure: the service restored its control state (a health probe must not fail until the
    # next restart for a loss already handled; the service logged an ERROR saying to enable persistence)
    assert not [p for p in report["problems"] if "Redis" in p]
    assert report["metrics"]["control_state_lost"] == 1
    for shown in (
        "retained 2",
        "redis data lost 1",
        "snapshots failed 3",
        "late snapshots 4",
        "kline refills failed 5",
        "trades too old 6",
    ):
        assert shown in table


# --- what stops signals: silent websockets, stale metrics, control values in force ----------------------


def publish_realtime(
    redis_url: str,
    keys: Keyspace,
    metrics: Mapping[str, float],
    *,
    component: str = "realtime",
    lag_s: float = 0,
) -> None:
    """A realtime instance beating now, whose metrics (``ws_silent_*`` figures included) were published
    ``lag_s`` seconds ago by its own clock."""

    async def publish() -> None:
        then = AsyncRedisState.from_url(redis_url, keys=keys, clock=lambda: time.time() - lag_s)
        now = AsyncRedisState.from_url(redis_url, keys=keys)
        try:
            await then.publish_metrics({"symbols": 2, "synced": 2, **metrics}, component)
            await now.beat(component, ttl_s=30)
        finally:
            await then.aclose()
            await now.aclose()

    asyncio.run(publish())


FLOWING = {"ws_silent_ms": 200, "ws_silent_public_ms": 200, "ws_silent_market_ms": 150}
SILENT_MARKET = {"ws_silent_ms": 3_600_000, "ws_silent_public_ms": 300, "ws_silent_market_ms": 3_600_000}


def test_all_well_exits_0_with_every_control_at_its_normal_state(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], redis_url: str, redis_keys: Keyspace
) -> None:
    publish_realtime(redis_url, redis_keys, FLOWING, lag_s=1.0)  # the previous loop's metrics: fine
    code, report = status_json(capsys)
    assert code == 0 and report["problems"] == [] and report["degraded"] == []
    assert report["ok"] is True and report["verdict"] == "ok" and report["exit_code"] == 0
    assert report["controls"] == {"paused": None, "backup_feed": None, "max_universe": None}
    code, table = status(capsys)
    assert code == 0 and table.splitlines()[0].endswith(": OK")
    assert "controls: signalling on · primary feed · no universe cap" in table and "degraded:" not in table


def test_silent_websockets_with_the_backup_feed_off_are_a_problem(
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    redis_url: str,
    redis_keys: Keyspace,
    redis_state: RedisState,
) -> None:
    """A fresh heartbeat, the /market websocket silent for an hour, no backup feed: no signal can be issued."""
    env.setenv("TAPEWATCH_HEARTBEAT_MAX_AGE", "60")
    publish_realtime(redis_url, redis_keys, SILENT_MARKET)
    code, report = status_json(capsys)
    assert code == 1 and report["ok"] is False and report["verdict"] == "down"
    assert report["components"]["realtime"]["up"] is True
    assert report["problems"] == ["websockets delivered nothing for 3600 s on /market of realtime (> 60 s)"]
    code, table = status(capsys)
    assert code == 1 and table.splitlines()[0].endswith(": 1 PROBLEM")
    assert "  - websockets delivered nothing for 3600 s on /market of realtime" in table

    # the backup feed on: the service's websockets are off by design; up, but degraded
    redis_state.set_backup_feed(True, source="dagster:health")
    code, report = status_json(capsys)
    assert code == 3 and report["problems"] == [] and report["verdict"] == "degraded"
    assert report["controls"]["backup_feed"]["by"] == "dagster:health"
    (line,) = report["degraded"]
    assert line.startswith("backup feed on (REST polling instead of the websockets) since ")
    assert line.endswith(" by dagster:health")
    code, table = status(capsys)
    assert code == 3 and table.splitlines()[0].endswith(": DEGRADED: backup feed on")
    assert "controls: signalling on · BACKUP FEED ON · no universe cap" in table


def test_each_shard_is_judged_and_the_silent_one_named(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], redis_url: str, redis_keys: Keyspace
) -> None:
    publish_realtime(redis_url, redis_keys, FLOWING, component="realtime-0of2")
    silent = {"ws_silent_ms": 90_000, "ws_silent_public_ms": 90_000, "ws_silent_market_ms": 0}
    publish_realtime(redis_url, redis_keys, silent, component="realtime-1of2")
    code, report = status_json(capsys)
    assert code == 1
    assert report["problems"] == [
        "websockets delivered nothing for 90 s on /public of realtime-1of2 (> 30 s)"
    ]
    # combined, the worst shard's figure is shown as before
    assert report["metrics"]["ws_silent_ms"] == 90_000 and report["metrics"]["symbols"] == 4


def test_metrics_published_long_before_the_heartbeat_are_stale(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], redis_url: str, redis_keys: Keyspace
) -> None:
    """The service beats but its metrics (and so its websocket silence) stopped being published."""
    publish_realtime(redis_url, redis_keys, FLOWING, lag_s=600)
    assert the_problem(capsys).startswith(
        "realtime metrics are stale: last published 10.0 min before its heartbeat (> 30 s)"
    )
    publish_realtime(redis_url, redis_keys, FLOWING)
    assert status_json(capsys)[0] == 0


def test_signals_held_unwritten_or_unpublished_are_a_problem(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], redis_url: str, redis_keys: Keyspace
) -> None:
    """The service beats and its feed flows, but its signals reach no trader: held unwritten (PostgreSQL failing)
    or stored and not published (the outbox relay failing). Status must not say OK."""
    held = {"pending_oldest_held_s": 38, "pending_held_signals": 2, "relay_healthy": 1}
    publish_realtime(redis_url, redis_keys, FLOWING | held)
    assert the_problem(capsys).startswith(
        "realtime holds 2 signal(s) not yet written to PostgreSQL, the oldest for 38.0 s (> 10 s)"
    )
    publish_realtime(
        redis_url, redis_keys, FLOWING | held | {"pending_oldest_held_s": 9}
    )  # briefly held: fine
    assert status_json(capsys)[0] == 0
    relay = {"relay_healthy": 0, "relay_redis_errors": 3, "relay_storage_errors": 0}
    publish_realtime(redis_url, redis_keys, FLOWING | relay)
    assert the_problem(capsys).startswith(
        "realtime's outbox relay failed its last pass (Redis errors 3, PostgreSQL errors 0"
    )


def test_a_pause_by_an_operator_is_shown_with_who_and_why_and_exits_3(
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    realtime_up: None,
    redis_state: RedisState,
    db: Database,
) -> None:
    redis_state.pause("exchange maintenance", source="dashboard:alice")
    code, report = status_json(capsys)
    assert code == 3 and report["ok"] is True and report["problems"] == []
    assert report["verdict"] == "degraded" and report["exit_code"] == 3
    paused = report["controls"]["paused"]
    assert paused["value"] == "exchange maintenance" and paused["by"] == "dashboard:alice"
    assert abs(datetime.fromisoformat(paused["since"]).timestamp() - time.time()) < 60
    assert report["controls"]["backup_feed"] is None and report["controls"]["max_universe"] is None
    (line,) = report["degraded"]
    assert line.startswith("signalling paused since ") and line.endswith(
        " by dashboard:alice: exchange maintenance"
    )
    code, table = status(capsys)
    assert code == 3 and table.splitlines()[0].endswith(": DEGRADED: signalling paused")
    assert "controls: SIGNALLING PAUSED · primary feed · no universe cap" in table
    assert f"degraded:\n  - {line[:30]}" in table

    # the performance sensor's cap for an overload too; then a pause whose event is gone (Redis lost it)
    redis_state.set_max_universe(10, source="dagster:health")
    open_incident(db, "system_performance", reason="CPU 95 % > 80 %", action="universe capped at 10")
    redis_state.client.delete(redis_state.keys.control_events)
    code, report = status_json(capsys)
    assert code == 3
    assert report["controls"]["paused"] == {"value": "exchange maintenance", "by": None, "since": None}
    assert report["degraded"] == [
        "signalling paused (who and when unknown: no control event of it in Redis): exchange maintenance",
        "universe capped at 10 symbols (who and when unknown: no control event of it in Redis)",
    ]

    redis_state.resume(source="dashboard:alice")
    redis_state.set_max_universe(None, source="dagster:health")
    close_incident(db, "system_performance", recovery="cap lifted")
    code, report = status_json(capsys)
    assert code == 0 and report["degraded"] == [] and report["controls"]["paused"] is None

    # an operator's standing cap is a deployment choice: shown, not alerted on (exit 0)
    redis_state.set_max_universe(12, source="cli:ops")
    code, report = status_json(capsys)
    assert code == 0 and report["degraded"] == [] and report["controls"]["max_universe"]["by"] == "cli:ops"
    code, table = status(capsys)
    assert code == 0 and "controls: signalling on · primary feed · UNIVERSE CAPPED AT 12" in table
    # an overload shrinks it (degraded), and the sensor writes the operator's cap back in its own name when
    # the overload ends: the operator's choice again, not degraded
    redis_state.set_max_universe(6, source="dagster:health")
    open_incident(db, "system_performance", reason="CPU 95 % > 80 %", action="universe capped at 6")
    assert status_json(capsys)[0] == 3
    redis_state.set_max_universe(12, source="dagster:health")
    close_incident(db, "system_performance", recovery="cap restored to 12")
    code, report = status_json(capsys)
    assert code == 0 and report["controls"]["max_universe"]["by"] == "dagster:health"


def test_down_beats_degraded_and_the_console_line_says_both(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], redis_url: str, redis_keys: Keyspace
) -> None:
    from tapewatch.adapters.status import gather_status
    from tapewatch.adapters.status_format import format_status_line
    from tapewatch.settings import load_settings

    publish_realtime(redis_url, redis_keys, SILENT_MARKET)
    state = RedisState.from_url(redis_url, keys=redis_keys)
    try:
        state.pause("data quality: 3 anomalies", source="dagster:health")
    finally:
        state.close()
    code, report = status_json(capsys)
    assert code == 1 and report["verdict"] == "down" and len(report["degraded"]) == 1
    line = format_status_line(gather_status(load_settings()))
    assert "degraded: signalling paused" in line and "1 problem(s): websockets delivered nothing" in line


def record_ticks(
    redis_url: str,
    keys: Keyspace,
    sensor: str,
    outcome: TickOutcome,
    *,
    ago_s: float,
    interval_s: float = 30,
    times: int = 1,
) -> None:
    """What a Dagster sensor leaves in Redis: ``times`` ticks ending ``ago_s`` seconds ago."""
    state = RedisState.from_url(redis_url, keys=keys, clock=lambda: time.time() - ago_s)
    try:
        for _ in range(times):
            state.record_sensor_tick(sensor, outcome, f"{outcome} tick", interval_s=interval_s)
    finally:
        state.close()


def test_a_sensor_that_stopped_ticking_or_keeps_failing_is_a_problem_while_dagster_beats(
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    realtime_up: None,
    redis_url: str,
    redis_keys: Keyspace,
    redis_state: RedisState,
) -> None:
    record_ticks(
        redis_url, redis_keys, "data_quality_sensor", "skipped", ago_s=200, interval_s=60
    )  # > 3 × 60 s
    record_ticks(redis_url, redis_keys, "api_connectivity_sensor", "skipped", ago_s=80)  # < 3 × 30 s
    record_ticks(redis_url, redis_keys, "system_performance_sensor", "error", ago_s=5, times=3)
    with http_server(200) as dagster_port:
        env.setenv("TAPEWATCH_DAGSTER_PORT", str(dagster_port))
        redis_state.beat("dagster", ttl_s=30)  # Dagster runs (its web server answers)
        code, report = status_json(capsys)
        _, table = status(capsys)
    assert code == 1
    assert report["sensors"]["judged"] is True
    ticks = report["sensors"]["ticks"]
    assert list(ticks) == [
        "api_connectivity_sensor",
        "data_quality_sensor",
        "system_performance_sensor",
        "emergency_exclusion_sensor",
    ]
    stale = ticks["data_quality_sensor"]
    assert stale["state"] == "stale" and 199 < stale["age_s"] < 230 and stale["outcome"] == "skipped"
    assert ticks["api_connectivity_sensor"]["state"] == "ok"
    failing = ticks["system_performance_sensor"]
    assert (
        failing["state"] == "failing"
        and failing["errors_in_a_row"] == 3
        and failing["reason"] == "error tick"
    )
    assert ticks["emergency_exclusion_sensor"] == {
        **ticks["emergency_exclusion_sensor"],
        "state": "no tick yet",
    }
    assert ticks["emergency_exclusion_sensor"]["problem"] is None  # it may have just started
    assert len(report["problems"]) == 2, report["problems"]
    stale_problem, failing_problem = report["problems"]
    assert (
        stale_problem.startswith("sensor data_quality_sensor last ticked 3.")
        and "> 3 × its 60 s" in stale_problem
    )
    assert failing_problem.startswith("sensor system_performance_sensor failed its last 3 ticks (error tick)")
    assert "  data_quality_sensor         STALE" in table and "  api_connectivity_sensor     ok" in table
    assert "  system_performance_sensor   FAILING" in table and "problems:" in table


def test_sensor_ticks_are_not_judged_without_dagster(
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    realtime_up: None,
    redis_url: str,
    redis_keys: Keyspace,
) -> None:
    with closed_port() as port:
        env.setenv("TAPEWATCH_DAGSTER_PORT", str(port))
        _, table = status(capsys)
        assert "sensors: dagster not running" in table  # a deployment without Dagster: a note, no table
        record_ticks(redis_url, redis_keys, "data_quality_sensor", "skipped", ago_s=3600, interval_s=60)
        code, report = status_json(capsys)
        _, table = status(capsys)
    assert code == 0 and report["problems"] == []
    assert report["sensors"]["judged"] is False
    assert report["sensors"]["ticks"]["data_quality_sensor"]["state"] == "not judged"
    assert "sensors (dagster not running: not judged):" in table


def test_ticks_of_an_earlier_dagster_run_are_judged_from_its_restart(
    redis_url: str, redis_keys: Keyspace, redis_state: RedisState
) -> None:
    """Ticks stay in Redis across a Dagster restart: an hour-old tick is no evidence against a daemon that
    started a minute ago (its sensors have their intervals to tick), but is once it has had them."""
    from tapewatch.adapters.status import read_sensors

    record_ticks(redis_url, redis_keys, "data_quality_sensor", "skipped", ago_s=3600, interval_s=60)
    now_ms = int(time.time() * 1000)
    redis_state.beat("dagster", ttl_s=30, info={"started_ms": now_ms - 60_000})  # restarted a minute ago
    running, sensors = read_sensors(redis_state, now_ms)
    quality = next(s for s in sensors if s.name == "data_quality_sensor")
    assert running and (quality.state, quality.problem) == ("no tick yet", None)
    redis_state.beat("dagster", ttl_s=30, info={"started_ms": now_ms - 600_000})  # up 10 min, no new tick
    _, sensors = read_sensors(redis_state, now_ms)
    quality = next(s for s in sensors if s.name == "data_quality_sensor")
    assert quality.state == "stale" and quality.problem is not None
    assert "has not ticked since Dagster started 10.0 min ago" in quality.problem


def test_a_sensor_that_never_ticked_is_stale_once_dagster_has_run_its_intervals(
    redis_state: RedisState,
) -> None:
    """A sensor switched off before its first tick (or never evaluated) leaves nothing in Redis: judged on
    its declared interval from Dagster's start, not forever "no tick yet"."""
    from tapewatch.adapters.redis_keys import SENSORS
    from tapewatch.adapters.status import read_sensors

    now_ms = int(time.time() * 1000)
    redis_state.beat("dagster", ttl_s=30, info={"started_ms": now_ms - 60_000})  # up a minute: may tick yet
    running, sensors = read_sensors(redis_state, now_ms)
    assert running and [(s.state, s.problem) for s in sensors] == [("no tick yet", None)] * len(SENSORS)
    redis_state.beat("dagster", ttl_s=30, info={"started_ms": now_ms - 150_000})  # 2.5 min: 30 s ones late
    states = {s.name: s.state for s in read_sensors(redis_state, now_ms)[1]}
    assert states == {
        "api_connectivity_sensor": "stale",
        "data_quality_sensor": "no tick yet",  # 60 s interval: 3 intervals are 3 min
        "system_performance_sensor": "stale",
        "emergency_exclusion_sensor": "stale",
    }
    quality = next(
        s for s in read_sensors(redis_state, now_ms + 60_000)[1] if s.name == "data_quality_sensor"
    )
    assert quality.state == "stale" and quality.problem is not None
    assert "has not ticked since Dagster started 3.5 min ago (no tick ever recorded)" in quality.problem
    assert "> 3 × its 60 s interval" in quality.problem


def test_web_urls_probed_bracket_an_ipv6_host() -> None:
    from tapewatch.adapters.status import service_urls

    urls = service_urls(Settings(), {"dashboard": {"host": "::1", "port": 8051}})
    assert urls["dashboard"] == "http://[::1]:8051/"
    assert urls["dagster"].startswith("http://127.0.0.1:")


def test_an_applied_tuning_the_running_service_does_not_use_yet_is_said_restart_pending(
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    redis_state: RedisState,
    migrated_database_url: str,
) -> None:
    """`tapewatch tuning apply` takes effect when `tapewatch run` restarts: status compares the row in force
    with the one the realtime heartbeat says it started with (a restart pending is shown, not a problem)."""
    import sqlalchemy as sa

    from tapewatch.adapters.tuning_store import apply_proposal
    from tapewatch.settings import load_settings

    db = Database(migrated_database_url)
    try:
        with db.begin() as conn:
            proposal_id = conn.execute(
                sa.text(
                    "INSERT INTO tuning_proposals (window_start, split_at, window_end, status, parameters, "
                    "current_parameters, in_sample, out_of_sample, current_in_sample, current_out_of_sample, "
                    "note, applied_parameters) VALUES (0, 1, 2, 'proposed', '{\"min_large_trades\": 4}', "
                    "'{\"min_large_trades\": 3}', '{}', '{}', '{}', '{}', 'better', '{}') RETURNING id"
                )
            ).scalar_one()
        row = apply_proposal(db, proposal_id, actor="alice", settings=load_settings())
    finally:
        db.dispose()
    redis_state.beat("realtime", ttl_s=30, info={"pid": 4242, "tuning_record": 0})  # started before the apply

    code, table = status(capsys)
    assert code == 0 and table.splitlines()[0].endswith(": OK")  # pending is not a problem
    assert (
        f"tuning:   applied #{proposal_id} (record {row.id}), restart pending: realtime started with "
        "nothing applied" in table
    )
    _, report = status_json(capsys)
    assert report["tuning"] == {
        "in_force": {"record": row.id, "action": "apply", "proposal": proposal_id},
        "running": {"realtime": 0},
        "restart_pending": ["realtime"],
    }

    redis_state.beat("realtime", ttl_s=30, info={"pid": 4242, "tuning_record": row.id})  # restarted
    _, table = status(capsys)
    assert f"tuning:   applied #{proposal_id} (record {row.id}), in use" in table
    _, report = status_json(capsys)
    assert report["tuning"]["restart_pending"] == []


def test_hints_name_tapewatch_as_it_can_be_typed_here(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`make` installs into .venv without putting it on PATH: a hint saying `tapewatch status` would fail."""
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").touch()
    script = venv_bin / "tapewatch"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the venv is not on PATH
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path)
    assert tapewatch_command() == "venv/bin/tapewatch"  # relative to where the operator is
    monkeypatch.chdir(other := tmp_path / "other")
    assert tapewatch_command() == str(script)  # from elsewhere: the whole path
    monkeypatch.chdir("/")
    assert tapewatch_command() == str(script)
    (other / "tapewatch").write_text("#!/bin/sh\n")
    (other / "tapewatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{other}:/usr/bin")  # another installation's tapewatch comes first
    assert tapewatch_command() == str(script)
    monkeypatch.setenv("PATH", f"{venv_bin}:/usr/bin")  # activated: the name alone is this installation
    assert tapewatch_command() == "tapewatch"
    script.unlink()
    assert tapewatch_command() == f"{venv_bin / 'python'} -m tapewatch.cli"
