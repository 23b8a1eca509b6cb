"""PostgreSQL outages that are not a dead server: a read-only database, a missing table, a lock held by
another session, a statement that runs too long. Each must hold what is being written and retry it (never
skip it as a refused row, never hang), while a genuinely bad row is still refused and counted. Against real
PostgreSQL: read-only and renamed tables only on this test's own scratch database (dropped afterwards)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from realtime.incidents import IncidentRecorder
from tapewatch.adapters.db import Database, SessionLimits, upgrade
from tapewatch.adapters.db_errors import is_outage, is_refused_row, sqlstate
from tapewatch.adapters.incidents import list_incidents
from tapewatch.adapters.pending_writes import PendingWrites
from tapewatch.adapters.signal_store import _OUTBOX_LOCK_KEY, SignalStore
from tapewatch.signal import Signal
from tests.adapters.signal_builders import T0, candidate, entries, entry, exit_of, triggered

#: Short limits, so that a test waits well under a second for each timeout.
LOCK_LIMIT = SessionLimits(statement=0, lock=0.5, idle_in_transaction=60)
STATEMENT_LIMIT = SessionLimits(statement=0.5, lock=0, idle_in_transaction=60)


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@contextmanager
def _admin(url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    # a startup option outranks the database's setting: this session can undo what it set
    with psycopg.connect(
        _libpq(url), autocommit=True, options="-c default_transaction_read_only=off"
    ) as conn:
        yield conn


def _set_read_only(url: str, on: bool) -> None:
    """Make this test's own database read-only for the sessions that start from now on (or writable again)."""
    name = sa.make_url(url).database
    setting = "SET default_transaction_read_only = on" if on else "RESET default_transaction_read_only"
    with _admin(url) as conn:
        conn.execute(f'ALTER DATABASE "{name}" {setting}')


def _ids(engine: Engine, table: str, column: str) -> list[str]:
    with engine.connect() as conn:
        return sorted(str(v) for v in conn.execute(sa.text(f"SELECT {column} FROM {table}")).scalars())


def _signal_ids(signals: list[Signal]) -> list[str]:
    return sorted(s.signal_id for s in signals)


def _release(locker: psycopg.Connection[tuple[object, ...]]) -> None:
    """End the locker's transaction (its table lock) and drop its session's advisory locks."""
    locker.rollback()
    locker.execute("SELECT pg_advisory_unlock_all()")
    locker.commit()


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- the classification, on real errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("statements", "code", "refused"),
    [
        (["SELECT 'x'::int"], "22P02", True),  # a data exception
        (["INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (1)"], "23505", True),  # a constraint
        (["SET TRANSACTION READ ONLY", "INSERT INTO t VALUES (2)"], "25006", False),  # read-only
        (["SET LOCAL statement_timeout = 50", "SELECT pg_sleep(2)"], "57014", False),  # statement timeout
        (["SELECT * FROM no_such_table"], "42P01", False),  # a missing table (or grant): the schema's fault
    ],
)
def test_only_data_and_constraint_errors_refuse_a_row(
    db: Database, statements: list[str], code: str, refused: bool
) -> None:
    with db.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (a int PRIMARY KEY)"))
    with pytest.raises(sa.exc.DBAPIError) as caught, db.engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))
    assert sqlstate(caught.value) == code
    assert is_refused_row(caught.value) is refused
    assert is_outage(caught.value) is not refused


def test_a_value_the_driver_refuses_before_sending_is_a_refused_row(db: Database) -> None:
    with pytest.raises(sa.exc.DBAPIError) as caught, db.engine.begin() as conn:
        conn.execute(sa.text("SELECT CAST(:v AS text)"), {"v": "nul \x00 inside"})
    assert sqlstate(caught.value) is None  # psycopg's own DataError: PostgreSQL never saw it
    assert is_refused_row(caught.value) and not is_outage(caught.value)
    assert not is_outage(ValueError("a bug")) and not is_refused_row(ValueError("a bug"))


# --- A: a read-only or broken database holds the rows ----------------------------------------------------


def test_a_read_only_database_holds_signals_until_it_is_writable_and_still_refuses_a_bad_row(
    migrated_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(migrated_database_url, application_name="tapewatch-realtime")
    store = SignalStore(db)
    first = entry()
    orphan = exit_of(entry("ETHUSDT"), "STOP")  # its ENTRY was never stored: the foreign key refuses it
    later = entries(3, start=T0 + 1_000_000)
    kept = candidate("SOLUSDT")
    woken: list[Signal] = []

    async def service() -> PendingWrites:
        pending = PendingWrites(store, on_signals=woken.extend)
        pending.add_signals([first])
        assert await pending.flush() is True
        # a failover to a standby, or default_transaction_read_only: every new session is read-only
        _set_read_only(migrated_database_url, True)
        db.engine.dispose()
        pending.add_signals([*later, orphan])
        pending.add_candidates([kept])
        pending.add_outcome(triggered(first))
        for _ in range(3):  # retried, and held every time
            assert await pending.flush() is False
        assert (pending.held_signals, pending.held_candidates, pending.held_outcomes) == (4, 1, 1)
        assert pending.stats.rejected == 0 and not pending.storage_up and pending.stats.outages == 1
        _set_read_only(migrated_database_url, False)
        assert await pending.flush() is True  # the failed sessions were dropped: new ones can write
        return pending

    try:
        with caplog.at_level(logging.WARNING, logger="tapewatch.adapters.pending_writes"):
            pending = asyncio.run(service())
        assert _ids(db.engine, "signals", "signal_id") == _signal_ids([first, *later])
        assert _ids(db.engine, "outbox", "signal_id") == _signal_ids([first, *later])
        assert _ids(db.engine, "candidates", "candidate_id") == [kept.candidate_id]
        assert store.get_outcome(first.signal_id) == (triggered(first), "live")
    finally:
        db.dispose()
    assert _signal_ids(woken) == _signal_ids([first, *later])
    # the orphan is a bad row: refused and counted once the database could judge it, never before
    assert pending.stats.rejected == 1 and pending.held == 0 and pending.stats.oldest_held_s == 0
    refused = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(refused) == 1 and f"signal {orphan.signal_id}" in refused[0]
    assert "read-only" in caplog.text and "25006" in caplog.text


def test_a_missing_table_holds_signals_instead_of_refusing_them(
    db: Database, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """Not the data's fault (a table renamed away by a migration gone wrong, a grant revoked): every row would
    be refused the same way, so skipping them would lose them all."""
    signals = entries(3)

    def rename(old: str, new: str) -> None:
        with engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE {old} RENAME TO {new}"))

    async def service() -> PendingWrites:
        pending = PendingWrites(SignalStore(db))
        rename("outbox", "outbox_away")
        pending.add_signals(signals)
        assert await pending.flush() is False
        assert pending.held_signals == 3 and pending.stats.rejected == 0
        rename("outbox_away", "outbox")
        assert await pending.flush() is True
        return pending

    with caplog.at_level(logging.WARNING, logger="tapewatch.adapters.pending_writes"):
        pending = asyncio.run(service())
    assert pending.stats.written_signals == 3 and pending.stats.rejected == 0
    assert _ids(engine, "outbox", "signal_id") == _signal_ids(signals)
    assert "42P01" in caplog.text and "outbox" in caplog.text


def test_incidents_stay_queued_while_the_database_is_read_only(migrated_database_url: str) -> None:
    db = Database(migrated_database_url, application_name="tapewatch-realtime")

    async def main() -> IncidentRecorder:
        recorder = IncidentRecorder(db, close_leftovers=False)
        _set_read_only(migrated_database_url, True)
        recorder.open("stale", symbol="BTCUSDT", stream="btcusdt@depth@100ms", detail="while read-only")
        assert await recorder.close(within=0.5) == 1  # tried, failed, kept
        _set_read_only(migrated_database_url, False)
        assert await recorder.close(within=5) == 0
        return recorder

    try:
        recorder = asyncio.run(main())
        rows = list_incidents(db, limit=10)
    finally:
        db.dispose()
    assert [r.detail for r in rows] == ["while read-only"]
    assert recorder.stats.refused == 0 and recorder.stats.write_errors >= 1 and recorder.stats.written == 1


# --- B: time limits: a lock or a slow statement is an outage, not a hang --------------------------------


@pytest.mark.parametrize(
    ("limits", "lock", "condition"),
    [
        (LOCK_LIMIT, "LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE", "lock wait timeout [55P03]"),
        (
            STATEMENT_LIMIT,
            "LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE",
            "statement timeout or cancel [57014]",
        ),
        (LOCK_LIMIT, f"SELECT pg_advisory_lock({_OUTBOX_LOCK_KEY})", "lock wait timeout [55P03]"),
    ],
    ids=["lock_timeout", "statement_timeout", "outbox_advisory_lock"],
)
def test_a_lock_held_elsewhere_times_the_write_out_and_the_signals_wait(
    migrated_database_url: str,
    limits: SessionLimits,
    lock: str,
    condition: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = Database(migrated_database_url, application_name="tapewatch-realtime", limits=limits)
    store = SignalStore(db)
    signals = entries(2)
    clock = Clock()

    async def service(locker: psycopg.Connection[tuple[object, ...]]) -> PendingWrites:
        pending = PendingWrites(store, clock=clock)
        locker.execute(lock)  # held until the locker's transaction ends (the advisory lock: its session)
        pending.add_signals(signals[:1])
        clock.now += 10
        pending.add_signals(signals[1:])
        started = time.monotonic()
        try:
            async with asyncio.timeout(15):  # without a limit the write would wait for the lock forever
                assert await pending.flush() is False
        except TimeoutError:
            _release(locker)  # so that the stuck write ends and the test fails instead of hanging
            raise
        assert time.monotonic() - started < 5  # the 0.5 s limit, plus a connection, not an endless wait
        assert pending.held_signals == 2 and pending.stats.rejected == 0 and not pending.storage_up
        clock.now += 32.5  # the oldest was added 42.5 s ago, the other 32.5 s ago
        assert pending.oldest_held_s == 42.5
        assert dataclasses.asdict(pending.stats)["oldest_held_s"] == 42  # published as pending_oldest_held_s
        _release(locker)
        assert await pending.flush() is True
        assert pending.stats.oldest_held_s == 0
        return pending

    try:
        with (
            psycopg.connect(_libpq(migrated_database_url)) as locker,
            caplog.at_level(logging.WARNING, logger="tapewatch.adapters.pending_writes"),
        ):
            pending = asyncio.run(service(locker))
        assert _ids(db.engine, "outbox", "signal_id") == _signal_ids(signals)
    finally:
        db.dispose()
    assert pending.stats.written_signals == 2 and pending.stats.outages == 1
    outage = next(r.getMessage() for r in caplog.records if "PostgreSQL unavailable" in r.getMessage())
    assert condition in outage and "timed out" in outage
    assert "in: INSERT INTO outbox" in outage or "in: SELECT pg_advisory_xact_lock" in outage


@pytest.mark.parametrize(
    ("application_name", "statement", "lock", "idle"),
    [
        ("tapewatch-realtime", "10s", "5s", "1min"),
        ("tapewatch-dashboard", "30s", "5s", "1min"),
        ("tapewatch-dagster", "30min", "1min", "30min"),
        ("tapewatch", "5min", "30s", "10min"),
    ],
)
def test_every_session_is_bounded_by_its_process_role(
    migrated_database_url: str, application_name: str, statement: str, lock: str, idle: str
) -> None:
    db = Database(migrated_database_url, application_name=application_name)
    try:
        with db.begin() as conn:
            shown = [
                conn.execute(sa.text(f"SHOW {name}")).scalar()
                for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
            ]
            params = conn.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
    finally:
        db.dispose()
    assert shown == [statement, lock, idle]
    assert params["keepalives"] == "1" and params["tcp_user_timeout"] == "30000"
    assert (params["keepalives_idle"], params["keepalives_interval"], params["keepalives_count"]) == (
        "10",
        "5",
        "3",
    )


def test_options_in_the_url_win_over_the_role_limits(migrated_database_url: str) -> None:
    url = sa.make_url(migrated_database_url).update_query_dict({"options": "-c statement_timeout=42s"})
    db = Database(url.render_as_string(hide_password=False), application_name="tapewatch-realtime")
    try:
        with db.begin() as conn:
            assert conn.execute(sa.text("SHOW statement_timeout")).scalar() == "42s"
            assert conn.execute(sa.text("SHOW lock_timeout")).scalar() == "5s"
    finally:
        db.dispose()


def test_migrations_are_not_cut_by_the_statement_limit(empty_database_url: str, tmp_path: Path) -> None:
    (tmp_path / "0001_slow.sql").write_text("SELECT pg_sleep(0.8);\nCREATE TABLE slow (a int);\n")
    db = Database(empty_database_url, limits=STATEMENT_LIMIT)
    try:
        assert upgrade(db.engine, tmp_path) == ["0001_slow"]
        with db.begin() as conn:  # and the session's own limit is back afterwards
            assert conn.execute(sa.text("SHOW statement_timeout")).scalar() == "500ms"
    finally:
        db.dispose()


def test_a_write_cancelled_while_it_waits_holds_its_signals_again(migrated_database_url: str) -> None:
    """A stop cancels the writer while its thread waits on PostgreSQL: the batch was neither held nor written,
    so the last flush found nothing to retry and the stop reported "0 signals not written" (a CI run of
    test_service_crash saw it). It is held again, and written once the lock is gone."""
    db = Database(migrated_database_url, application_name="tapewatch-realtime")
    store = SignalStore(db)
    signals = entries(2)

    async def service(locker: psycopg.Connection[tuple[object, ...]]) -> PendingWrites:
        pending = PendingWrites(store)
        locker.execute("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
        pending.add_signals(signals)
        writing = asyncio.create_task(pending.flush())
        await asyncio.sleep(0.5)  # the thread now waits for the lock
        writing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writing
        assert pending.held_signals == 2
        _release(locker)
        assert await pending.flush() is True
        return pending

    try:
        with psycopg.connect(_libpq(migrated_database_url)) as locker:
            pending = asyncio.run(service(locker))
        assert _ids(db.engine, "outbox", "signal_id") == _signal_ids(signals)
    finally:
        db.dispose()
    # the cancelled thread's own write may have committed first: then the retry finds them as duplicates
    assert pending.stats.written_signals + pending.stats.duplicate_signals == 2
