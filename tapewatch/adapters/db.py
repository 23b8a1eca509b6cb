"""PostgreSQL: the engine every process uses, its connectivity check, and the migration runner for sql/.

Migrations are plain SQL files named ``NNNN_name.sql`` in ``sql/`` at the repository root. ``upgrade``
applies the ones a database lacks, in order, each in its own transaction, and records them in
``schema_migrations``. A PostgreSQL advisory lock makes concurrent upgrades (every process upgrades at
start-up) wait for each other instead of applying a migration twice.

Every session is bounded (:class:`SessionLimits`, by process role): a statement, a lock wait and a transaction
left idle are cut by the server, and TCP keepalives with ``tcp_user_timeout`` find a dead network path, so
a stalled server surfaces as StorageUnavailable instead of hanging the caller. Migrations run unbounded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

import tapewatch
from tapewatch.adapters.db_errors import CONDITIONS, describe, sqlstate
from tapewatch.adapters.embedded import ensure_database
from tapewatch.errors import ConfigError, MigrationError, StorageUnavailable
from tapewatch.settings import Settings

log = logging.getLogger(__name__)

#: The migrations shipped with tapewatch (the repository is installed editable, so sql/ sits beside it).
SQL_DIR = Path(tapewatch.__file__).resolve().parent.parent / "sql"

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant works as long as every process uses the same one; this is "tapewatc" in ASCII.
_LOCK_KEY = 0x7461706577617463
_LOCK_NOT_AVAILABLE = "55P03"
_MIGRATION_LOCK_WAIT_MS = 120_000
_DRIVER_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
# Errors that mean "the server is unreachable or went away", from SQLAlchemy or from the driver used directly.
_DISCONNECTS = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    """One file of sql/: its number, name, text and the sha256 of its bytes."""

    version: int
    name: str
    path: Path
    sql: str
    checksum: str

    @property
    def label(self) -> str:
        """``0001_market_data``: what ``upgrade`` reports and ``schema_migrations`` identifies."""
        return f"{self.version:04d}_{self.name}"


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    """One row of ``schema_migrations``."""

    version: int
    name: str
    checksum: str
    applied_at: datetime


def normalize_url(url: str) -> str:
    """The URL with the psycopg 3 driver: ``postgres://`` and ``postgresql://`` become ``postgresql+psycopg://``.

    Raises ConfigError for anything that is not a PostgreSQL URL (another driver included)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _DRIVER_SCHEMES:
        raise ConfigError(
            f"database URL must start with postgresql:// (or postgres://, postgresql+psycopg://); got {scheme!r}"
        )
    return f"postgresql+psycopg://{rest}"


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Server-side time limits of every session of an engine (seconds; 0 = none), and how soon a dead
    network path is noticed.

    ``statement`` (``statement_timeout``) cuts a statement that runs longer, ``lock`` (``lock_timeout``) a
    wait for a lock (table, row or advisory) — both raise SQLSTATE 57014/55P03, which callers count as an
    outage; ``idle_in_transaction`` ends a session that leaves a transaction open and idle (its locks with
    it). A server that stops answering altogether cannot enforce any of them: TCP keepalives (a probe after
    ``keepalives_idle`` s of silence, every ``keepalives_interval`` s, ``keepalives_count`` unanswered ones
    end the connection) and ``tcp_user_timeout`` (sent data unacknowledged that long ends it) do that on our
    side, so a dead path fails in about 30 s instead of the kernel's 2 hours or more."""

    statement: float
    lock: float
    idle_in_transaction: float
    keepalives_idle: int = 10
    keepalives_interval: int = 5
    keepalives_count: int = 3
    tcp_user_timeout: float = 30.0

    def options(self) -> str:
        """The libpq ``options`` that set the three server limits at connection start."""
        return " ".join(
            f"-c {name}={_ms(seconds)}"
            for name, seconds in (
                ("statement_timeout", self.statement),
                ("lock_timeout", self.lock),
                ("idle_in_transaction_session_timeout", self.idle_in_transaction),
            )
        )

    def connect_args(self) -> dict[str, Any]:
        """The libpq connection parameters: ``options`` and the keepalive/user-timeout parameters."""
        return {
            "options": self.options(),
            "keepalives": 1,
            "keepalives_idle": self.keepalives_idle,
            "keepalives_interval": self.keepalives_interval,
            "keepalives_count": self.keepalives_count,
            "tcp_user_timeout": _ms(self.tcp_user_timeout),
        }


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


#: The realtime service and ``tapewatch status``: their statements are single-row writes and small reads
#: (milliseconds). Held for 10 s, a statement is stuck (a lock, a dying server), not slow: the storage buffer
#: holds the signals and retries, rather than wait behind it with the outbox relay, notifiers and incidents.
INTERACTIVE = SessionLimits(statement=10, lock=5, idle_in_transaction=60)
#: The dashboard: its heaviest statement, Performance over every finished signal, takes about 1 s at 100,000
#: signals (README, *Speed*); 30 s leaves room for far more while a page worker is still freed.
DASHBOARD = SessionLimits(statement=30, lock=5, idle_in_transaction=60)
#: Dagster assets and sensors: tuning reads weeks of candidates in one statement, the outcome batch and the
#: archive write many rows; minutes at worst. 30 min still ends a run that would otherwise hang for good.
BATCH = SessionLimits(statement=1800, lock=60, idle_in_transaction=1800)
#: Anything else (the CLI's one-off commands, tools, tests): generous, but bounded.
DEFAULT = SessionLimits(statement=300, lock=30, idle_in_transaction=600)
#: The limits of each process, by the ``application_name`` it gives its engine.
ROLE_LIMITS = {
    "tapewatch-realtime": INTERACTIVE,
    "tapewatch-status": INTERACTIVE,
    "tapewatch-dashboard": DASHBOARD,
    "tapewatch-dagster": BATCH,
}
#: A read-only server is probably a standby after a failover: errors in this set invalidate the pool, so the
#: next attempt reconnects (and finds the new primary) instead of reusing sessions on the old server.
_RECONNECT_STATES = frozenset({"25006"})


def limits_for(application_name: str) -> SessionLimits:
    """The session limits of the process that calls itself ``application_name`` (see ROLE_LIMITS)."""
    return ROLE_LIMITS.get(application_name, DEFAULT)


def create_engine(
    url: str,
    *,
    connect_timeout: int = 5,
    application_name: str = "tapewatch",
    limits: SessionLimits | None = None,
) -> Engine:
    """An engine on the psycopg 3 driver that checks a pooled connection before using it.

    ``connect_timeout`` (seconds, libpq's minimum is 2) bounds how long an unreachable server blocks a call.
    ``limits`` (default: :func:`limits_for` the ``application_name``) bound every session; ``options`` of the
    URL or of ``PGOPTIONS`` come after them, so an operator's ``-c statement_timeout=...`` wins.
    Every session is in UTC, whatever the server's, database's, role's or client's (``PGTZ``) default: a
    ``timestamptz`` read back is a UTC datetime, so what reports and pages label UTC is UTC."""
    normalized = normalize_url(url)
    bounds = limits if limits is not None else limits_for(application_name)
    args = bounds.connect_args()
    own = [sa.make_url(normalized).query.get("options"), os.environ.get("PGOPTIONS")]
    args["options"] = " ".join([args["options"], *(o for o in own if isinstance(o, str) and o.strip())])
    engine = sa.create_engine(
        normalized,
        pool_pre_ping=True,
        connect_args={"connect_timeout": connect_timeout, "application_name": application_name, **args},
    )
    sa.event.listen(engine, "connect", _session_in_utc)
    sa.event.listen(engine, "handle_error", _reconnect_after_failover)
    return engine


def _session_in_utc(dbapi_connection: psycopg.Connection[object], _record: object) -> None:
    # a SET, not the startup option ``-c timezone=UTC``: libpq sends PGTZ after the options, so PGTZ would win;
    # committed, as SET is transactional and the pool's first rollback would undo it
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'UTC'")
    dbapi_connection.commit()


def _reconnect_after_failover(context: sa.engine.ExceptionContext) -> None:
    # treated as a disconnect: SQLAlchemy invalidates the pool and marks the error ``connection_invalidated``,
    # which storage_errors turns into StorageUnavailable (held and retried, not a refused row)
    if sqlstate(context.original_exception) in _RECONNECT_STATES:
        context.is_disconnect = True


@contextmanager
def storage_errors(engine: Engine) -> Iterator[None]:
    """Turn "the server is gone" errors raised inside the block into StorageUnavailable with advice: the
    server unreachable or lost, a statement or lock wait cut by the session limits, a read-only server.

    Statement errors (a constraint violated, bad SQL) pass through unchanged: retrying cannot fix them."""
    try:
        yield
    except _DISCONNECTS as exc:
        raise StorageUnavailable(unavailable_message(engine, exc)) from exc
    except sa_exc.DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        raise StorageUnavailable(unavailable_message(engine, exc)) from exc


def unavailable_message(engine: Engine, exc: BaseException) -> str:
    """What to tell an operator when PostgreSQL cannot be used: for a timeout or a read-only server, which
    one and in which statement; otherwise how to check the server and the URL."""
    url = engine.url.render_as_string(hide_password=True)
    code = sqlstate(exc)
    if code == "25006":
        return (
            f"PostgreSQL at {url} is read-only ({describe(exc)}): a standby after a failover, or "
            "default_transaction_read_only is on. Point TAPEWATCH_DATABASE_URL at the primary."
        )
    if code in CONDITIONS:
        return (
            f"PostgreSQL at {url} timed out ({describe(exc)}): another session holds a lock this needs "
            "(see pg_locks), the statement is slow, or the server or the network stalled."
        )
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return (
        f"PostgreSQL at {url} is unavailable ({reason[0] if reason else type(exc).__name__}). "
        "Check that the server is running and that TAPEWATCH_DATABASE_URL points to it "
        "(leave it unset to use the embedded server under the var dir)."
    )


def check_connection(engine: Engine) -> None:
    """Return when PostgreSQL answers ``SELECT 1``; raise StorageUnavailable with advice otherwise."""
    with storage_errors(engine), engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


def load_migrations(sql_dir: Path | None = None) -> list[Migration]:
    """The migrations of ``sql_dir`` (default: the repository's sql/), ordered by number.

    Raises MigrationError for a missing directory, a ``.sql`` file not named ``NNNN_name.sql``, an empty
    or non-UTF-8 file, or two files with the same number."""
    directory = sql_dir if sql_dir is not None else SQL_DIR
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist")
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(
                f"{path}: migration files are named NNNN_name.sql (4 digits, lower-case name)"
            )
        raw = path.read_bytes()
        try:
            sql = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MigrationError(f"{path}: not UTF-8 text ({exc})") from None
        if not sql.strip():
            raise MigrationError(f"{path}: the migration is empty")
        migration = Migration(int(match[1]), match[2], path, sql, hashlib.sha256(raw).hexdigest())
        if migration.version in found:
            raise MigrationError(f"{path} and {found[migration.version].path} have the same number")
        found[migration.version] = migration
    return [found[version] for version in sorted(found)]


def applied_migrations(engine: Engine) -> list[AppliedMigration]:
    """The rows of ``schema_migrations`` by version; empty when the database was never migrated."""
    with storage_errors(engine), engine.connect() as conn:
        if conn.execute(sa.text("SELECT to_regclass('schema_migrations')")).scalar() is None:
            return []
        return [AppliedMigration(*row) for row in conn.execute(_SELECT_APPLIED)]


_SELECT_APPLIED = sa.text(
    "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
)


def upgrade(engine: Engine, sql_dir: Path | None = None, *, lock_timeout: float = 120.0) -> list[str]:
    """Apply the migrations the database lacks, in order, each in its own transaction; return their labels.

    Idempotent: a second call returns []. Two processes upgrading at once serialise on an advisory lock; the
    second waits up to ``lock_timeout`` seconds, then sees the work done. Raises MigrationError when an
    applied migration's file has changed (nothing is applied then), when a migration fails (it is rolled
    back; earlier ones stay applied), or when the lock is not obtained in time; StorageUnavailable when
    PostgreSQL cannot be reached."""
    migrations = load_migrations(sql_dir)
    with storage_errors(engine), engine.connect() as conn:
        _lock(conn, lock_timeout)
        try:
            with conn.begin():
                conn.execute(sa.text(_CREATE_TABLE))
            applied = {
                row.version: row for row in (AppliedMigration(*r) for r in conn.execute(_SELECT_APPLIED))
            }
            conn.commit()
            _verify(migrations, applied)
            done: list[str] = []
            for migration in migrations:
                if migration.version not in applied:
                    _apply(conn, migration)
                    done.append(migration.label)
            return done
        finally:
            _unlock(conn)


def _lock(conn: Connection, timeout: float) -> None:
    # A session lock outlives the per-migration transactions and is released by the server if we die.
    # the wait is bounded by ``timeout`` alone, not by the session's statement limit (RESET below restores it)
    conn.execute(
        sa.text("SELECT set_config('lock_timeout', :t, false), set_config('statement_timeout', '0', false)"),
        {"t": f"{max(1, int(timeout * 1000))}ms"},
    )
    try:
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
    except sa_exc.OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
            raise
        conn.rollback()
        raise MigrationError(
            f"another process has held the migration lock for over {timeout:g} s; "
            "find it with: SELECT pid, query FROM pg_stat_activity JOIN pg_locks USING (pid) "
            "WHERE locktype = 'advisory'"
        ) from None
    conn.execute(sa.text("RESET lock_timeout"))
    conn.execute(sa.text("RESET statement_timeout"))
    conn.commit()


def _unlock(conn: Connection) -> None:
    if conn.invalidated or conn.closed:
        return  # the server dropped the session, and the lock with it
    try:
        conn.rollback()
        conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
        conn.commit()
    except sa_exc.DBAPIError:
        # A pooled session would keep the lock and block every later upgrade: end the session instead.
        log.warning("could not release the migration lock; closing the session to release it")
        conn.invalidate()


def _verify(migrations: list[Migration], applied: dict[int, AppliedMigration]) -> None:
    known = {m.version: m for m in migrations}
    for version, row in applied.items():
        migration = known.get(version)
        if migration is None:
            log.warning(
                "the database has migration %04d_%s, which this version of tapewatch does not ship; "
                "is an older version running against a newer database?",
                version,
                row.name,
            )
        elif migration.checksum != row.checksum:
            raise MigrationError(
                f"{migration.path} was changed after it was applied to this database "
                f"(applied checksum {row.checksum[:12]}, file now {migration.checksum[:12]}). Applied "
                "migrations must never change: restore the file and put the change in a new migration."
            )


def _apply(conn: Connection, migration: Migration) -> None:
    log.info("applying migration %s", migration.label, extra={"migration": migration.label})
    try:
        with conn.begin():
            # a migration may rewrite a large table: no statement limit, and it waits for its locks as long
            # as upgrade() waits for its own (the session was started with the role's shorter limits)
            conn.execute(sa.text("SET LOCAL statement_timeout = 0"))
            conn.execute(sa.text(f"SET LOCAL lock_timeout = {_MIGRATION_LOCK_WAIT_MS}"))
            # Through the driver's own cursor: a script holds several statements and may contain '%'.
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(migration.sql)
            finally:
                cursor.close()
            conn.execute(
                sa.text("INSERT INTO schema_migrations (version, name, checksum) VALUES (:v, :n, :c)"),
                {"v": migration.version, "n": migration.name, "c": migration.checksum},
            )
    except _DISCONNECTS:
        raise  # the server went away: storage_errors reports that
    except (sa_exc.DBAPIError, psycopg.Error) as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip()
        raise MigrationError(f"migration {migration.path} failed and was rolled back: {detail}") from exc


class Database:
    """The PostgreSQL of tapewatch: one engine, its connectivity check and its migrations.

    Queries elsewhere run inside ``begin()`` (or ``storage_errors(db.engine)``) so that an unreachable
    server surfaces as StorageUnavailable, which callers can count and retry. ``limits`` bound each session
    (default: those of the ``application_name``'s role, see :data:`ROLE_LIMITS`)."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: int = 5,
        application_name: str = "tapewatch",
        limits: SessionLimits | None = None,
    ) -> None:
        self.engine = create_engine(
            url, connect_timeout=connect_timeout, application_name=application_name, limits=limits
        )

    def __repr__(self) -> str:
        return f"Database({self.engine.url.render_as_string(hide_password=True)!r})"

    def check(self) -> None:
        """Return when PostgreSQL answers; raise StorageUnavailable with advice otherwise."""
        check_connection(self.engine)

    def upgrade(self, sql_dir: Path | None = None) -> list[str]:
        """Apply pending migrations (see :func:`upgrade`); return their labels."""
        return upgrade(self.engine, sql_dir)

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A connection in a transaction, committed on success; disconnects raise StorageUnavailable."""
        with storage_errors(self.engine), self.engine.begin() as conn:
            yield conn

    def dispose(self) -> None:
        """Close the pooled connections (before a fork, and at exit)."""
        self.engine.dispose()


def open_database(settings: Settings, *, migrate: bool = True) -> Database:
    """The database of ``settings`` (starting the embedded server when no URL is set), checked and migrated.

    What every process calls at start-up. Raises StorageUnavailable or MigrationError."""
    db = Database(ensure_database(settings))
    try:
        db.check()
        if migrate:
            db.upgrade()
    except BaseException:
        db.dispose()
        raise
    return db


def cli_upgrade(settings: Settings) -> list[str]:
    """``tapewatch db upgrade``: apply pending migrations and return what was applied (empty: up to date)."""
    db = open_database(settings, migrate=False)
    try:
        return db.upgrade()
    finally:
        db.dispose()
