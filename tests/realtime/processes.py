"""Helpers for the tests that run tapewatch as real processes: ``tapewatch sim`` and ``tapewatch run`` started
with ``python -m tapewatch.cli`` against the test PostgreSQL and Redis, polled until a condition holds."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tapewatch.adapters.redis_keys import Keyspace
from tests.helpers import ROOT

# Stops and targets far away: triggered signals stay open (across a kill, or overlapping across shards).
FAR_STOPS = {
    "TAPEWATCH_STOP_ATR_MULTIPLE": "10",
    "TAPEWATCH_MIN_STOP_ATR_MULTIPLE": "10",
    "TAPEWATCH_TP1_R": "5",
    "TAPEWATCH_TP2_R": "10",
}


@contextmanager
def processes(
    log_dir: Path, *log_names: str
) -> Iterator[tuple[list[subprocess.Popen[bytes]], list[IO[bytes]]]]:
    """A list for the processes a test starts and a log file ``log_dir/NAME`` open for each name; on exit
    every process still in the list is killed and waited for, and the logs are closed."""
    procs: list[subprocess.Popen[bytes]] = []
    logs = [open(log_dir / name, "wb") for name in log_names]  # noqa: SIM115 - closed below
    try:
        yield procs, logs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)
        for fh in logs:
            fh.close()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 at the time of the call."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(
    *,
    database_url: str,
    redis_url: str,
    keys: Keyspace,
    var_dir: Path,
    sim_port: int,
    universe_size: int,
    **extra: str,
) -> dict[str, str]:
    """The environment of a ``tapewatch run --exchange sim`` on the test PostgreSQL and Redis (this test's key
    prefix), with far stops (``FAR_STOPS``) and ``extra`` settings on top (``TAPEWATCH_...`` names)."""
    return {
        **os.environ,
        "TAPEWATCH_DATABASE_URL": database_url,
        "TAPEWATCH_REDIS_URL": redis_url,
        "TAPEWATCH_REDIS_PREFIX": keys.prefix,
        "TAPEWATCH_VAR_DIR": str(var_dir),
        "TAPEWATCH_SIM_PORT": str(sim_port),
        "TAPEWATCH_UNIVERSE_SIZE": str(universe_size),
        "TAPEWATCH_WS_CONNECT_INTERVAL": "0.05",
        **FAR_STOPS,
        **extra,
    }


def start_cli(args: list[str], env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """``python -m tapewatch.cli ARGS`` from the repository root, stdout and stderr into ``log``."""
    return subprocess.Popen(
        [sys.executable, "-m", "tapewatch.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_while_running(
    what: str, check: Callable[[], bool], timeout: float, procs: list[subprocess.Popen[bytes]]
) -> bool:
    """Poll ``check`` until it holds (True) or ``timeout`` seconds pass (False); any of ``procs`` exiting
    meanwhile fails the test at once, naming ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"{what}: {proc.args!r} exited with {proc.returncode}")
        if check():
            return True
        time.sleep(0.25)
    return False


def start_sim(
    port: int, env: dict[str, str], log: IO[bytes], procs: list[subprocess.Popen[bytes]], *args: str
) -> subprocess.Popen[bytes]:
    """``tapewatch sim --port PORT ARGS`` started, added to ``procs`` (so the caller's cleanup kills it) and
    answering its REST ping; fails the test if it is not up within 30 s."""
    sim = start_cli(["sim", "--port", str(port), *args], env, log)
    procs.append(sim)
    assert wait_while_running("simulator up", lambda: sim_up(port), 30, procs), "the simulator did not start"
    return sim


def sim_up(port: int) -> bool:
    """Whether the simulator on ``port`` answers its REST ping."""
    try:
        return httpx.get(f"http://127.0.0.1:{port}/fapi/v1/ping", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def count(engine: Engine, sql: str) -> int:
    """The integer a ``SELECT count(*) ...`` returns."""
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())
