"""``tapewatch db stop``: the embedded PostgreSQL and Redis that a one-shot command left running are stopped for
real, and never under a running demo, a component that beats, or an open PostgreSQL session."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import psycopg
import pytest

from tapewatch.adapters.demo_lock import demo_lock, demo_lock_holder
from tapewatch.adapters.embedded import find_database, find_redis, start_redis, stop_embedded
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import RedisState
from tapewatch.cli import main
from tapewatch.settings import Settings


def gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie nobody reaped yet counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def stop(capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["db", "stop"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_db_stop_stops_what_a_one_shot_command_left_and_refuses_while_the_platform_uses_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], server_tmp_path: Path
) -> None:
    var = server_tmp_path / "var"
    for name in ("TAPEWATCH_CONFIG_FILE", "TAPEWATCH_DATABASE_URL", "TAPEWATCH_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TAPEWATCH_VAR_DIR", str(var))
    settings = Settings(var_dir=var, database_url=None, redis_url=None)
    try:
        # a one-shot command starts the embedded PostgreSQL and leaves it running (by design: the next one
        # finds it); a Redis is left too (a demo killed with kill -9, say)
        assert main(["tuning", "list"]) == 0
        database_url = find_database(settings)
        assert database_url is not None
        pg_pid = int((var / "pg" / "postmaster.pid").read_text().split()[0])
        redis_url = start_redis(var / "redis")
        redis_pid = int((var / "redis" / "redis.pid").read_text())
        capsys.readouterr()

        with demo_lock(var):
            assert demo_lock_holder(var) == str(os.getpid())
            code, _, err = stop(capsys)
        assert code == 1 and f"a tapewatch demo (pid {os.getpid()}) runs on" in err
        assert demo_lock_holder(var) is None  # released, and looking did not take it

        state = RedisState.from_url(redis_url, keys=Keyspace(prefix=settings.redis_prefix))
        try:
            state.beat("realtime", ttl_s=60)
            code, _, err = stop(capsys)
            assert code == 1 and f"realtime (pid {os.getpid()} on " in err
            state.forget_component("realtime")
        finally:
            state.close()

        with psycopg.connect(database_url, application_name="a-report-tool"):
            code, _, err = stop(capsys)
        assert code == 1 and "1 PostgreSQL session(s): a-report-tool on tapewatch" in err
        assert not gone(pg_pid) and not gone(redis_pid)  # every refusal left them running

        code, out, _ = stop(capsys)
        assert code == 0
        assert f"stopped the embedded PostgreSQL in {(var / 'pg').resolve()}" in out
        assert f"stopped the embedded Redis in {(var / 'redis').resolve()}" in out
        assert gone(pg_pid) and gone(redis_pid)
        assert find_database(settings) is None and find_redis(settings) is None

        code, out, _ = stop(capsys)  # nothing left: says so, still 0
        assert (
            code == 0
            and "no embedded PostgreSQL was running" in out
            and "no embedded Redis was running" in out
        )
    finally:
        stop_embedded(var)
