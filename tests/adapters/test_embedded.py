"""Embedded PostgreSQL and Redis: started once, shared between processes, robust to kill -9, stopped cleanly.

Each test runs its own servers in its own var dir; the session's servers are never touched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from tapewatch.adapters.embedded import (
    ensure_embedded,
    redis_socket_path,
    start_redis,
    stop_embedded,
    stop_redis,
)
from tapewatch.settings import Settings

pytestmark = [pytest.mark.db, pytest.mark.slow]


@pytest.fixture
def var_dir(server_tmp_path: Path) -> Iterator[Path]:
    var = server_tmp_path / "var"
    yield var
    stop_embedded(var)


def embedded(var_dir: Path) -> Settings:
    """Settings with no server URL (the TAPEWATCH_*_URL a CI run exports must not apply here)."""
    return Settings(var_dir=var_dir, database_url=None, redis_url=None)


def _pids(var: Path) -> tuple[int, int]:
    postmaster = int((var / "pg" / "postmaster.pid").read_text().splitlines()[0])
    return postmaster, int((var / "redis" / "redis.pid").read_text())


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _use(urls: tuple[str, str]) -> tuple[str, bool]:
    database_url, redis_url = urls
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT current_database()").fetchone()
    client = redis.Redis.from_url(redis_url)
    try:
        return str(row[0] if row else None), client.ping() is True
    finally:
        client.close()


def test_configured_urls_are_used_as_they_are(tmp_path: Path) -> None:
    settings = Settings(
        database_url="postgresql://tw@db.example:5432/tapewatch",
        redis_url="redis://cache.example:6379/2",
        var_dir=tmp_path,
    )
    assert ensure_embedded(settings) == (settings.database_url, settings.redis_url)
    assert list(tmp_path.iterdir()) == []  # nothing was started


def test_servers_start_once_and_are_reused(var_dir: Path) -> None:
    settings = embedded(var_dir)
    urls = ensure_embedded(settings)
    assert urls[0].startswith("postgresql://") and urls[1].startswith("unix://")
    assert _use(urls) == ("tapewatch", True)
    pids = _pids(var_dir)
    assert ensure_embedded(settings) == urls
    assert _pids(var_dir) == pids


def test_servers_outlive_the_process_that_started_them_and_are_shared(var_dir: Path) -> None:
    script = (
        "import json, sys; from pathlib import Path\n"
        "from tapewatch.adapters.embedded import ensure_embedded\n"
        "from tapewatch.settings import Settings\n"
        "settings = Settings(var_dir=Path(sys.argv[1]), database_url=None, redis_url=None)\n"
        "print(json.dumps(ensure_embedded(settings)))\n"
    )
    run = [sys.executable, "-c", script, str(var_dir)]
    first = json.loads(subprocess.run(run, check=True, capture_output=True, text=True, timeout=120).stdout)
    pids = _pids(var_dir)
    assert all(_alive(pid) for pid in pids)  # the starting process has exited; the servers have not
    assert _use((first[0], first[1])) == ("tapewatch", True)
    second = json.loads(subprocess.run(run, check=True, capture_output=True, text=True, timeout=120).stdout)
    assert second == first and _pids(var_dir) == pids
    assert ensure_embedded(embedded(var_dir)) == tuple(first)


def test_kill_9_leaves_nothing_that_blocks_the_next_start(var_dir: Path) -> None:
    settings = embedded(var_dir)
    database_url, redis_url = ensure_embedded(settings)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE survives (id int)")
    old = _pids(var_dir)
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    assert (var_dir / "pg" / "postmaster.pid").exists() and (var_dir / "redis" / "redis.pid").exists()
    urls = ensure_embedded(settings)
    assert urls == (database_url, redis_url)
    assert _use(urls) == ("tapewatch", True)
    assert all(new != before for new, before in zip(_pids(var_dir), old, strict=True))
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT to_regclass('survives')").fetchone() == ("survives",)


def test_a_stale_pid_now_used_by_another_program_is_not_mistaken_for_the_server(var_dir: Path) -> None:
    settings = embedded(var_dir)
    urls = ensure_embedded(settings)
    stop_embedded(var_dir)
    # What a kill -9 followed by pid reuse looks like: pid files naming a live process that is not the server.
    me = str(os.getpid())
    (var_dir / "redis" / "redis.pid").write_text(me)
    (var_dir / "pg" / "postmaster.pid").write_text(
        f"{me}\n{var_dir / 'pg'}\n0\n5432\n{var_dir / 'pg'}\n\n0 0\nready\n"
    )
    assert ensure_embedded(settings) == urls
    assert _use(urls) == ("tapewatch", True)
    assert os.getpid() not in _pids(var_dir)


def test_stop_embedded_stops_both_and_is_idempotent(var_dir: Path, server_tmp_path: Path) -> None:
    urls = ensure_embedded(embedded(var_dir))
    pids = _pids(var_dir)
    stop_embedded(var_dir)
    assert not any(_alive(pid) for pid in pids)
    assert not (var_dir / "pg" / "postmaster.pid").exists()
    assert not redis_socket_path(var_dir / "redis").exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(urls[0], connect_timeout=2)
    stop_embedded(var_dir)  # nothing running: nothing to do
    stop_embedded(server_tmp_path / "never-used")
    assert not (server_tmp_path / "never-used").exists()


def test_redis_data_survives_a_clean_restart(server_tmp_path: Path) -> None:
    redis_dir = server_tmp_path / "redis"
    client = redis.Redis.from_url(start_redis(redis_dir))
    try:
        client.set("tw:control:paused", "maintenance")
        assert stop_redis(redis_dir)
        assert not stop_redis(redis_dir)
        start_redis(redis_dir)
        assert client.get("tw:control:paused") == b"maintenance"
    finally:
        client.close()
        stop_redis(redis_dir)


def test_a_var_dir_too_deep_for_a_unix_socket_still_works(server_tmp_path: Path) -> None:
    redis_dir = server_tmp_path.joinpath(*["deep" * 8] * 4, "redis")
    socket_path = redis_socket_path(redis_dir)
    assert len(str(redis_dir / "redis.sock")) > 108 and len(str(socket_path)) <= 100
    try:
        client = redis.Redis.from_url(start_redis(redis_dir))
        assert client.ping() is True
        client.close()
    finally:
        stop_redis(redis_dir)
    assert not socket_path.exists()


def test_concurrent_starts_share_one_server(server_tmp_path: Path) -> None:
    redis_dir = server_tmp_path / "redis"
    urls: list[str] = []
    threads = [threading.Thread(target=lambda: urls.append(start_redis(redis_dir))) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(urls) == 4 and len(set(urls)) == 1
        servers = [
            p for p in psutil.process_iter(["name", "cwd"]) if p.info["cwd"] == str(redis_dir.resolve())
        ]
        assert len([p for p in servers if p.info["name"] == "redis-server" and _alive(p.pid)]) == 1
    finally:
        stop_redis(redis_dir)
