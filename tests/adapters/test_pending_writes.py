"""PendingWrites: never blocks the engine, holds writes while PostgreSQL is down, drops candidates only."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tapewatch.adapters.db import Database, create_engine, upgrade
from tapewatch.adapters.embedded import start_postgres, stop_postgres
from tapewatch.adapters.pending_writes import PendingWrites
from tapewatch.adapters.signal_store import SignalStore
from tapewatch.signal import Signal
from tests.adapters.signal_builders import T0, candidate, entries, entry, exit_of, triggered, win


@pytest.fixture
def store(migrated_database_url: str) -> Iterator[SignalStore]:
    db = Database(migrated_database_url)
    yield SignalStore(db)
    db.dispose()


@pytest.fixture
def dead_store() -> Iterator[SignalStore]:
    """A store whose PostgreSQL refuses connections (nothing listens on its port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    db = Database(f"postgresql://tw@127.0.0.1:{port}/tapewatch", connect_timeout=2)
    yield SignalStore(db)
    db.dispose()


def _ids(engine: Engine, table: str, column: str) -> list[str]:
    with engine.connect() as conn:
        return [
            str(v) for v in conn.execute(sa.text(f"SELECT {column} FROM {table} ORDER BY {column}")).scalars()
        ]


def test_writes_signals_candidates_and_outcomes_in_order(store: SignalStore, engine: Engine) -> None:
    woken: list[list[Signal]] = []
    first = entry()

    async def service() -> PendingWrites:
        pending = PendingWrites(store, on_signals=woken.append)
        pending.add_outcome(triggered(first))
        pending.add_outcome(win(first))  # replaces the provisional one before it is written
        pending.add_candidates([candidate(), candidate("ETHUSDT", fate="paused")])
        pending.add_signals([first, exit_of(first, "TP1"), first])  # the repeat is a duplicate
        assert pending.held == 5  # queued, nothing written yet: adding never waits for PostgreSQL
        assert await pending.flush() is True
        return pending

    pending = asyncio.run(service())
    assert (pending.held, pending.held_outcomes) == (0, 0)
    assert pending.stats.written_signals == 2 and pending.stats.duplicate_signals == 1
    assert pending.stats.written_candidates == 2 and pending.stats.written_outcomes == 1
    assert [[s.signal_id for s in batch] for batch in woken] == [
        [first.signal_id, exit_of(first, "TP1").signal_id]
    ]
    assert len(_ids(engine, "outbox", "signal_id")) == 2
    assert store.get_outcome(first.signal_id) == (win(first), "live")


def test_run_writes_as_items_are_added(store: SignalStore, engine: Engine) -> None:
    async def service() -> None:
        pending = PendingWrites(store)
        task = asyncio.create_task(pending.run())
        try:
            pending.add_signals(entries(3))
            pending.add_candidates([candidate()])
            while pending.held or pending.stats.written_candidates < 1:  # noqa: ASYNC110 - another task writes
                await asyncio.sleep(0.01)
        finally:
            task.cancel()

    asyncio.run(service())
    assert len(_ids(engine, "signals", "signal_id")) == 3
    assert len(_ids(engine, "candidates", "candidate_id")) == 1


def test_past_the_bound_the_oldest_candidates_go_and_signals_stay(
    dead_store: SignalStore, caplog: pytest.LogCaptureFixture
) -> None:
    old = [candidate("BTCUSDT", T0 + i) for i in range(8)]
    new = [candidate("ETHUSDT", T0 + i) for i in range(4)]
    signals = entries(12)

    async def service() -> PendingWrites:
        pending = PendingWrites(dead_store, max_items=10)
        pending.add_candidates(old)
        assert await pending.flush() is False  # PostgreSQL is down: everything stays
        pending.add_signals(signals[:4])
        pending.add_candidates(new)
        assert (pending.held_signals, list(pending._candidates)) == (4, old[6:] + new)
        pending.add_signals(signals[4:])  # signals alone exceed the bound: every one is kept
        assert (pending.held_signals, pending.held_candidates) == (12, 0)
        return pending

    with caplog.at_level(logging.WARNING, logger="tapewatch.adapters.pending_writes"):
        pending = asyncio.run(service())
    assert pending.stats.dropped_candidates == 12 and pending.stats.storage_errors == 1
    assert "PostgreSQL unavailable: holding 0 signals and 8 candidates in memory (bound 10)" in caplog.text
    assert "dropped the oldest candidates" in caplog.text and "signals are never dropped" in caplog.text
    errors = [r.message for r in caplog.records if r.levelno == logging.ERROR]
    assert any("12 signals held in memory, above the storage buffer bound 10" in m for m in errors)


def test_a_row_postgresql_refuses_is_skipped_and_does_not_block_the_rest(
    store: SignalStore, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    orphan = exit_of(entry("ETHUSDT"), "STOP")  # its ENTRY was never stored: the foreign key refuses it
    good = entry()

    async def service() -> PendingWrites:
        pending = PendingWrites(store)
        pending.add_signals([orphan, good])
        assert await pending.flush() is True
        return pending

    pending = asyncio.run(service())
    assert pending.stats.rejected == 1 and pending.stats.written_signals == 1
    assert _ids(engine, "signals", "signal_id") == [good.signal_id]
    assert f"signal {orphan.signal_id}" in caplog.text and "refused by PostgreSQL" in caplog.text


@pytest.mark.slow
def test_postgresql_down_holds_writes_and_flushes_them_when_it_returns(
    server_tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pgdata = server_tmp_path / "pg"
    url = start_postgres(pgdata)
    migrator = create_engine(url)
    upgrade(migrator)
    migrator.dispose()
    db = Database(url, connect_timeout=2)
    store = SignalStore(db)
    before, during = entries(2), entries(5, start=T0 + 1_000_000)
    kept = [candidate("SOLUSDT", T0 + i) for i in range(3)]

    async def service() -> PendingWrites:
        pending = PendingWrites(store, max_items=8)
        pending.add_signals(before)
        assert await pending.flush() is True
        await asyncio.to_thread(stop_postgres, pgdata)
        pending.add_signals(during)
        pending.add_outcome(triggered(before[0]))
        pending.add_candidates([candidate("BTCUSDT", T0 + i) for i in range(2)])  # the oldest: dropped
        assert await pending.flush() is False
        pending.add_candidates(kept)
        assert await pending.flush() is False
        assert (pending.held_signals, pending.held_candidates, pending.held_outcomes) == (5, 3, 1)
        assert not pending.storage_up
        await asyncio.to_thread(start_postgres, pgdata)
        assert await pending.flush() is True
        return pending

    try:
        with caplog.at_level(logging.WARNING, logger="tapewatch.adapters.pending_writes"):
            pending = asyncio.run(service())
        engine = db.engine
        assert sorted(_ids(engine, "signals", "signal_id")) == sorted(s.signal_id for s in before + during)
        assert sorted(_ids(engine, "outbox", "signal_id")) == sorted(s.signal_id for s in before + during)
        assert sorted(_ids(engine, "candidates", "candidate_id")) == sorted(c.candidate_id for c in kept)
        assert store.get_outcome(before[0].signal_id) == (triggered(before[0]), "live")
    finally:
        db.dispose()
        stop_postgres(pgdata)
    assert pending.storage_up and pending.held == 0
    assert (
        pending.stats.outages == 1
        and pending.stats.storage_errors == 2
        and pending.stats.dropped_candidates == 2
    )
    assert "PostgreSQL unavailable: holding 5 signals" in caplog.text
    assert "PostgreSQL is back after 2 failed attempts: wrote 5 signals and 3 candidates" in caplog.text
    assert "2 candidates were dropped" in caplog.text
