"""``tapewatch dagster``'s instance and ``tapewatch rescan``: the home and environment, the error paths, and a
rescan launched in a running webserver + daemon (e2e), then one that fails and says why."""

from __future__ import annotations

import io
import os
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import sqlalchemy as sa

from tapewatch.adapters.dagster_home import (
    RESCAN_JOB,
    ROOT,
    dagster_commands,
    dagster_database_url,
    dagster_env,
    prepare_dagster_home,
    run_dagster,
    settings_env,
    start_instance,
)
from tapewatch.adapters.dagster_runs import (
    DagsterRuns,
    DagsterUnavailable,
    RunAhead,
    job_available,
    launch_and_wait,
    wait_for_run,
)
from tapewatch.adapters.db import Database
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import RedisState
from tapewatch.adapters.supervisor import Supervisor
from tapewatch.adapters.universe_store import current_universe
from tapewatch.cli import main
from tapewatch.cli_admin import RESCAN_TIMED_OUT, timeout_advice
from tapewatch.errors import ConfigError
from tapewatch.settings import Settings, load_settings
from tests.orchestration.universe_support import sim_in_thread


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_dagster_database_is_a_sibling_with_the_psycopg2_driver() -> None:
    socket_url = "postgresql://postgres@/tapewatch?host=/tmp/x/pg&port=5432"
    assert dagster_database_url(socket_url) == (
        "postgresql+psycopg2://postgres@/tapewatch_dagster?host=%2Ftmp%2Fx%2Fpg&port=5432"
    )
    assert dagster_database_url("postgresql+psycopg://u:p@db:5433/prod") == (
        "postgresql+psycopg2://u:p@db:5433/prod_dagster"
    )


def test_the_environment_rebuilds_the_same_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(
        var_dir=tmp_path / "var",
        symbols="BTCUSDT,ETHUSDT",
        capture_enabled=False,
        universe_size=7,
        webhook_url="http://127.0.0.1:1/hook",
        webhook_secret="s3cret",
        redis_prefix="twx:",
    )
    env = dagster_env(settings, "postgresql://u@db/tw", "redis://r:6379/0")
    assert env["DAGSTER_HOME"] == str((tmp_path / "var" / "dagster").resolve())
    assert env["TAPEWATCH_DATABASE_URL"] == "postgresql://u@db/tw"
    assert env["TAPEWATCH_REDIS_URL"] == "redis://r:6379/0"
    assert env["TAPEWATCH_REDIS_PREFIX"] == "twx:"
    assert env["TAPEWATCH_BINANCE_REST_URL"] == "https://fapi.binance.com"
    assert "PATH" in env  # the rest of this process's environment is kept
    exported = settings_env(settings)
    for key in [k for k in os.environ if k.startswith("TAPEWATCH_")]:
        monkeypatch.delenv(key)
    for key, value in exported.items():
        monkeypatch.setenv(key, value)
    again = load_settings()
    assert again == settings.model_copy(update={"var_dir": (tmp_path / "var").resolve()})


def test_commands_name_the_workspace_and_port() -> None:
    commands = dagster_commands(load_settings(dagster_port=3456))
    web, daemon = commands["dagster-web"], commands["dagster-daemon"]
    assert web[0].endswith("dagster-webserver") and web[1:] == [
        "-w",
        str(ROOT / "workspace.yaml"),
        "-h",
        "127.0.0.1",
        "-p",
        "3456",
    ]
    assert daemon[0].endswith("dagster-daemon") and daemon[1:] == ["run", "-w", str(ROOT / "workspace.yaml")]
    assert dagster_commands(load_settings(), port=4000)["dagster-web"][-1] == "4000"


def test_a_taken_port_names_the_setting(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ConfigError, match="TAPEWATCH_DAGSTER_PORT \\(setting dagster_port\\)"):
            run_dagster(load_settings(var_dir=tmp_path, dagster_port=port))


def test_rescan_without_an_instance_says_how_to_start_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TAPEWATCH_DAGSTER_PORT", str(free_port()))
    assert main(["rescan"]) == 1
    err = capsys.readouterr().err
    assert "no Dagster instance answers" in err and "start it with `tapewatch dagster` or `make demo`" in err
    assert not job_available("127.0.0.1", free_port(), RESCAN_JOB)


def _drop(database_url: str) -> None:
    url = sa.make_url(database_url)
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')


@pytest.fixture
def instance_settings(
    migrated_database_url: str, redis_url: str, redis_keys: Keyspace, server_tmp_path: Path
) -> Iterator[Settings]:
    """Settings of a Dagster instance on this test's database and Redis prefix; its database dropped after."""
    with sim_in_thread(seed=6, symbols=12, speed=1.0) as sim:
        settings = load_settings(
            database_url=migrated_database_url,
            redis_url=redis_url,
            redis_prefix=redis_keys.prefix,
            var_dir=server_tmp_path / "var",
            binance_rest_url=sim.rest_url,
            dagster_port=free_port(),
            universe_size=4,
        )
        try:
            yield settings
        finally:
            _drop(dagster_database_url(migrated_database_url))


@pytest.mark.e2e
@pytest.mark.slow
def test_rescan_runs_the_job_in_a_running_instance(
    instance_settings: Settings,
    migrated_database_url: str,
    redis_url: str,
    redis_keys: Keyspace,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = instance_settings
    port = settings.dagster_port
    home = prepare_dagster_home(settings, migrated_database_url)
    assert "QueuedRunCoordinator" in (home / "dagster.yaml").read_text()
    assert oct((home / "dagster.yaml").stat().st_mode & 0o777) == "0o600"
    env = dagster_env(settings, migrated_database_url, redis_url)
    log = io.StringIO()
    with Supervisor(run_dir=settings.var_dir / "run", name="dagster", out=log, handle_signals=False) as sup:
        start_instance(sup, settings, port, env, timeout=240)
        for key, value in {
            "TAPEWATCH_DATABASE_URL": migrated_database_url,
            "TAPEWATCH_REDIS_URL": redis_url,
            "TAPEWATCH_REDIS_PREFIX": redis_keys.prefix,
            "TAPEWATCH_DAGSTER_PORT": str(port),
        }.items():
            monkeypatch.setenv(key, value)
        code = main(["rescan", "--timeout", "400"])
        out = capsys.readouterr().out
        assert code == 0, out + "\n--- dagster output ---\n" + log.getvalue()[-5000:]
        # an unknown job is refused with Dagster's reason
        with pytest.raises(DagsterUnavailable, match="refused to launch no_such_job"):
            launch_and_wait("127.0.0.1", port, "no_such_job", timeout=5)
        # a failed run says why on stderr: every exchangeInfo answers 500 now, so its first step fails
        fault = "/sim/faults?action=rest_error&status=500&count=1000&path=/fapi/v1/exchangeInfo"
        post = urllib.request.Request(settings.binance_rest_url + fault, method="POST")
        urllib.request.urlopen(post, timeout=10).close()
        failed_code = main(["rescan", "--timeout", "400"])
        failed = capsys.readouterr()
        assert failed_code == 1, (
            failed.out + failed.err + "\n--- dagster output ---\n" + log.getvalue()[-5000:]
        )
        # a rescan we stop waiting for says so, and that it goes on; its own exit code
        timed_out_code = main(["rescan", "--timeout", "0"])
        timed_out = capsys.readouterr()
        pids = [c.pid for c in sup.children]
    assert timed_out_code == RESCAN_TIMED_OUT, timed_out.out + timed_out.err
    assert "timed out after 0 s waiting for run" in timed_out.err and "the run continues" in timed_out.err
    failed_run = (
        next(line for line in failed.out.splitlines() if line.startswith("run ")).split()[1].rstrip(":")
    )
    assert (
        f"run {failed_run}: FAILURE" in failed.out
        and f"http://127.0.0.1:{port}/runs/{failed_run}" in failed.out
    )
    assert (
        "step exchange_symbols failed: tapewatch.errors.FeedError: GET /fapi/v1/exchangeInfo: HTTP 500 on all 6"
        in failed.err
    ), failed.err
    assert "the run failed" not in failed.err  # the run's failure event repeats the step's error: said once
    assert "QUEUED" in out and "SUCCESS" in out
    run_line = next(line for line in out.splitlines() if line.startswith("run "))
    run_id = run_line.split()[1].rstrip(":")
    db = Database(migrated_database_url)
    try:
        current = current_universe(db)
    finally:
        db.dispose()
    assert current is not None and current.run_id == run_id and len(current.symbols) == 4
    assert f"universe (rescan {current.rescan_id}, 4 symbols): {' '.join(current.symbols)}" in out
    assert f"added: {' '.join(current.symbols)}" in out and "removed: -" in out
    state = RedisState.from_url(redis_url, keys=redis_keys)
    try:
        assert state.read_control().universe == current.symbols
    finally:
        state.close()
    # every process of the instance is gone (webserver, its code server, daemon)
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    leftovers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(port) in " ".join(p.info["cmdline"] or []) and "dagster" in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == []


def test_a_queued_rescan_that_timed_out_says_what_queued_means() -> None:
    text = timeout_advice("r1", "QUEUED", 50.4, "http://127.0.0.1:3000/runs/r1")
    assert text.startswith("timed out after 50 s waiting for run r1 (still QUEUED); the run continues")
    assert "http://127.0.0.1:3000/runs/r1" in text
    assert "daemon is not running" in text and "queue is full" in text
    assert "daemon" not in timeout_advice("r1", "STARTED", 50, "u")


def test_the_runs_ahead_query_is_valid_for_this_dagster() -> None:
    """The query :meth:`DagsterRuns.runs_ahead` sends, checked against the installed webserver's schema."""
    from dagster_graphql.schema import create_schema
    from graphql import parse, validate

    from tapewatch.adapters.dagster_runs import _AHEAD_QUERY

    assert validate(create_schema().graphql_schema, parse(_AHEAD_QUERY)) == []


class _ScriptedRuns(DagsterRuns):
    """Run statuses and the runs going on, in the order a webserver would answer them (no Dagster here)."""

    statuses: Iterator[str]
    ahead: Iterator[list[RunAhead]]

    def __init__(self, statuses: list[str], ahead: list[list[RunAhead]]) -> None:
        super().__init__("127.0.0.1", 1)
        object.__setattr__(self, "statuses", iter(statuses))  # a frozen dataclass's subclass
        object.__setattr__(self, "ahead", iter(ahead))

    def status(self, run_id: str) -> str:
        return next(self.statuses)

    def runs_ahead(self, job_name: str, run_id: str) -> list[RunAhead]:
        return next(self.ahead)


def test_a_queued_rescan_names_the_run_it_waits_behind_once_per_change() -> None:
    first = RunAhead("661aa01e", "STARTED", since=1000.0)
    retry = RunAhead("7b2c0d11", "STARTING", since=1090.0)
    runs = _ScriptedRuns(
        ["QUEUED"] * 4 + ["STARTING", "STARTED", "SUCCESS"],
        [[first], [first], [retry], []],
    )
    said: list[str] = []
    ticks = iter(range(0, 1000, 5))  # each look at the clock is 5 s later: every poll may look again
    outcome = wait_for_run(
        runs,
        RESCAN_JOB,
        "ours",
        on_status=said.append,
        sleep=lambda _: None,
        clock=lambda: float(next(ticks)),
        wall=lambda: 1040.0,
    )
    assert outcome.ok
    assert said == [
        "QUEUED",
        "QUEUED behind run 661aa01e (STARTED 40 s ago): universe_rescan_job runs one at a time, this one "
        "starts when that ends",
        "QUEUED behind run 7b2c0d11 (STARTING 0 s ago): universe_rescan_job runs one at a time, this one "
        "starts when that ends",
        "STARTING",
        "STARTED",
        "SUCCESS",
    ]
