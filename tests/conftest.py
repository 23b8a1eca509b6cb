"""Shared fixtures: real PostgreSQL and Redis for the tests that need them.

Servers: ``TAPEWATCH_TEST_DATABASE_URL`` or ``TAPEWATCH_DATABASE_URL`` (resp. ``..._REDIS_URL``) when set (the
CI machine has both on their standard ports); otherwise an embedded PostgreSQL and Redis started once per
test session under a temporary var dir, and stopped at its end. Nothing starts unless a test asks.

Isolation:
- ``engine`` / ``migrated_database_url``: a database of its own per test, copied from a template migrated once
  per session (fast), dropped after the test. ``empty_database_url``: the same, never migrated.
- ``redis_keys``: a key prefix of its own per test (``Keyspace``); every key under it is deleted after the test.
  ``redis_state`` and ``redis_client`` use it. In async tests build the client inside the test's event loop:
  ``AsyncRedisState.from_url(redis_url, keys=redis_keys)``.

Every test using one of these fixtures is marked ``db`` automatically (``pytest -m "not db"`` skips them).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import psycopg
import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tapewatch.adapters.db import Database, create_engine, upgrade
from tapewatch.adapters.embedded import start_postgres, start_redis, stop_embedded
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import RedisState
from tests.helpers import require_native_sides

STORAGE_FIXTURES = frozenset(
    {
        "database_url",
        "migrated_database_url",
        "empty_database_url",
        "engine",
        "redis_url",
        "redis_keys",
        "redis_client",
        "redis_state",
        "server_tmp_path",
    }
)

# Test databases are named twt_<host>_<pid>_<random> so a later session can drop those of dead sessions.
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
_DB_PREFIX = f"twt_{_HOST}_"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if STORAGE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.db)
    # Files with an end-to-end test first, then files with a slow test, then the rest (each file's tests stay
    # together, in their order): `make test` hands whole files to its workers in this order (--dist loadfile),
    # so the files left for the end are short ones and no worker runs a minutes-long file alone at the end.
    rank: dict[Path, int] = {}
    for item in items:
        here = 0 if item.get_closest_marker("e2e") else 1 if item.get_closest_marker("slow") else 2
        rank[item.path] = min(here, rank.get(item.path, 2))
    items.sort(key=lambda item: rank[item.path])


def _configured(name: str) -> str | None:
    return os.environ.get(f"TAPEWATCH_TEST_{name}") or os.environ.get(f"TAPEWATCH_{name}") or None


@contextmanager
def _server_dir(prefix: str) -> Iterator[Path]:
    # Not under pytest's tmp_path: every pytest session on the machine resets /tmp/pytest-of-<user> to 0700,
    # which locks out the unprivileged user pgserver runs PostgreSQL as when we are root.
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def embedded_var_dir() -> Iterator[Path]:
    """The var dir of this session's embedded servers; they are stopped when the session ends."""
    with _server_dir("tapewatch-test-var-") as var_dir:
        yield var_dir
        stop_embedded(var_dir)


@pytest.fixture
def server_tmp_path() -> Iterator[Path]:
    """A temporary directory for servers a test starts itself (stop them before the test ends)."""
    with _server_dir("tapewatch-test-") as path:
        yield path


@pytest.fixture(scope="session")
def database_url(request: pytest.FixtureRequest) -> str:
    """The session's PostgreSQL (configured or embedded). Shared by all tests: create databases, not rows."""
    url = _configured("DATABASE_URL")
    if url is None:
        url = start_postgres(request.getfixturevalue("embedded_var_dir") / "pg")
    _drop_dead_sessions_databases(url)
    return url


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    """The session's Redis (configured or embedded). Shared by all tests: use ``redis_keys`` for isolation."""
    url = _configured("REDIS_URL")
    if url is None:
        url = start_redis(request.getfixturevalue("embedded_var_dir") / "redis")
    return url


@pytest.fixture(scope="session")
def _migrated_template(database_url: str) -> Iterator[str]:
    with _database(database_url) as url:
        engine = create_engine(url)
        try:
            upgrade(engine)
        finally:
            engine.dispose()  # CREATE DATABASE ... TEMPLATE needs the template without sessions
        yield str(sa.make_url(url).database)


@pytest.fixture
def empty_database_url(database_url: str) -> Iterator[str]:
    """URL of a new, empty database of this test's own (dropped afterwards)."""
    with _database(database_url) as url:
        yield url


@pytest.fixture
def migrated_database_url(database_url: str, _migrated_template: str) -> Iterator[str]:
    """URL of a new database of this test's own, with every migration of sql/ applied (dropped afterwards)."""
    with _database(database_url, template=_migrated_template) as url:
        yield url


@pytest.fixture
def db(migrated_database_url: str) -> Iterator[Database]:
    """The storage adapter on this test's own migrated database."""
    database = Database(migrated_database_url)
    yield database
    database.dispose()


@pytest.fixture
def engine(migrated_database_url: str) -> Iterator[Engine]:
    """An engine on this test's own migrated database."""
    engine = create_engine(migrated_database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def redis_keys(redis_url: str) -> Iterator[Keyspace]:
    """A keyspace with a prefix of this test's own; its keys are deleted after the test."""
    keys = Keyspace(prefix=f"twtest:{uuid.uuid4().hex[:12]}:")
    yield keys
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        found = list(client.scan_iter(match=keys.pattern, count=1000))
        if found:
            client.delete(*found)
    finally:
        client.close()


@pytest.fixture
def redis_client(redis_url: str, redis_keys: Keyspace) -> Iterator[redis.Redis]:
    """A synchronous client (decoded responses) on the session's Redis; write only under ``redis_keys``."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def redis_state(redis_url: str, redis_keys: Keyspace) -> Iterator[RedisState]:
    """A synchronous RedisState on the session's Redis, under this test's key prefix."""
    state = RedisState.from_url(redis_url, keys=redis_keys)
    yield state
    state.close()


# --- database helpers ----------------------------------------------------------------------------------


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` (host, port, user and query unchanged)."""
    return sa.make_url(url).set(database=name).render_as_string(hide_password=False)


def _admin(url: str) -> psycopg.Connection[tuple[object, ...]]:
    # libpq takes postgresql:// URLs; SQLAlchemy's driver suffix is not part of them.
    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1), autocommit=True)


@contextmanager
def _database(server_url: str, template: str | None = None) -> Iterator[str]:
    """A new database on the server of ``server_url`` (a copy of ``template``): its URL; dropped afterwards."""
    name = f"{_DB_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:10]}"
    with _admin(server_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield with_database(server_url, name)
    finally:
        _drop_database(server_url, name)


def _drop_database(server_url: str, name: str) -> None:
    with _admin(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _drop_dead_sessions_databases(server_url: str) -> None:
    """Drop the test databases left by sessions of this host that were killed before their teardown."""
    with _admin(server_url) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (_DB_PREFIX,))
        names = [str(row[0]) for row in rows]
    for name in names:
        pid = name.removeprefix(_DB_PREFIX).split("_", 1)[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            _drop_database(server_url, name)


@pytest.fixture(params=["native", "python"])
def both_sides(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a book test once with the native sides (tapewatch/_sides.c) and once with the pure-Python ones:
    every OrderBook built during the test (by the test or by a Market) gets that implementation. Opt in with
    ``pytestmark = pytest.mark.usefixtures("both_sides")``. The native run skips where the extension could not
    be built (no C compiler), and fails under CI, where it must have been built."""
    from tapewatch import book_sides

    if request.param == "native":
        require_native_sides()
        monkeypatch.setattr(book_sides, "new_sides", book_sides.native_sides)
    else:
        monkeypatch.setattr(book_sides, "new_sides", book_sides.py_sides)
    return str(request.param)
