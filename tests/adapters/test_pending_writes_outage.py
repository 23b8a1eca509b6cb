"""PendingWrites in store trouble: an outcome is never tried before its signal, and held signals go out within
seconds of PostgreSQL's return.

Real PostgreSQL: a slow write is a candidate INSERT waiting on a table lock another session holds; a server
that is down is a closed port, and its return a forwarder to the test server opening on that port
(:mod:`tests.tcp_proxy`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tapewatch.adapters.db import Database
from tapewatch.adapters.pending_writes import PendingWrites
from tapewatch.adapters.signal_store import SignalStore
from tapewatch.settings import load_settings
from tests.adapters.signal_builders import T0, candidate, entries, entry, win
from tests.tcp_proxy import forwarder, free_port, pg_upstream, pg_url_via


@pytest.fixture
def store(migrated_database_url: str) -> Iterator[SignalStore]:
    db = Database(migrated_database_url)
    yield SignalStore(db)
    db.dispose()


def _waiting_on_candidates(engine: Engine) -> bool:
    query = "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'candidates'::regclass"
    with engine.connect() as conn:
        return bool(conn.execute(sa.text(query)).scalar_one())


def test_an_outcome_added_while_candidates_are_written_is_written_after_its_signal(
    store: SignalStore, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """An ENTRY and its finished outcome arrive while the writer waits on a candidate INSERT: the outcome was
    tried before the signal, refused (foreign key) as a bad row and skipped for good, and after a restart the
    finished signal came back as open (the audit's race_outcome.py)."""
    sig = entry("ZZZUSDT", T0 + 5_000)

    async def service() -> PendingWrites:
        pending = PendingWrites(store)
        task = asyncio.create_task(pending.run())
        locker = engine.connect()
        try:
            with locker.begin():
                locker.execute(sa.text("LOCK TABLE candidates IN SHARE MODE"))  # a slow server: INSERTs wait
                pending.add_candidates([candidate("ZZZUSDT")])
                async with asyncio.timeout(20):
                    while not await asyncio.to_thread(_waiting_on_candidates, engine):  # noqa: ASYNC110
                        await asyncio.sleep(0.02)  # PostgreSQL has no event to await
                pending.add_signals([sig])  # the engine's next step: an ENTRY ...
                pending.add_outcome(win(sig))  # ... that finishes before the writer gets to it
            # the lock is gone with the transaction: the writer goes on
            async with asyncio.timeout(20):
                while pending.held or pending.held_outcomes:  # noqa: ASYNC110 - another task writes
                    await asyncio.sleep(0.02)
            return pending
        finally:
            locker.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    pending = asyncio.run(service())
    assert pending.stats.rejected == 0, caplog.text
    assert (pending.stats.written_signals, pending.stats.written_outcomes) == (1, 1)
    assert store.get_outcome(sig.signal_id) == (win(sig), "live")
    # a restart resumes only the open ones: this one is finished
    assert not [e for e in store.open_signals() if e.signal.signal_id == sig.signal_id]
    assert "refused by PostgreSQL" not in caplog.text


@pytest.mark.slow
def test_held_signals_go_out_within_seconds_of_postgresqls_return(
    migrated_database_url: str, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """The writer as the service builds it: its pause between attempts doubled up to 30 s and a new write did
    not cut it short, so after five failed attempts the next came 8 s later, then 16, then 30, whenever
    PostgreSQL came back. Now it retries every 2 s at most, logging the outage once and its end once."""
    port = free_port()
    db = Database(pg_url_via(port, migrated_database_url), connect_timeout=2)
    held = entries(3, symbol="ETHUSDT")

    async def service() -> tuple[PendingWrites, float]:
        pending = PendingWrites.from_settings(SignalStore(db), load_settings())
        task = asyncio.create_task(pending.run())
        try:
            pending.add_signals(held)
            async with asyncio.timeout(60):  # nothing listens: every attempt fails at once
                while pending.stats.storage_errors < 5:  # noqa: ASYNC110 - another task writes
                    await asyncio.sleep(0.02)
            # five failed attempts: the pause has doubled 0.5, 1, 2, 4 and the next was 8 s (it went on to 30)
            assert pending.held_signals == 3 and not pending.storage_up
            async with forwarder(port, pg_upstream(migrated_database_url)):
                back = time.monotonic()
                async with asyncio.timeout(30):
                    while pending.held:  # noqa: ASYNC110 - another task writes
                        await asyncio.sleep(0.02)
                return pending, time.monotonic() - back
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            db.dispose()

    with caplog.at_level(logging.WARNING, logger="tapewatch.adapters.pending_writes"):
        pending, took = asyncio.run(service())
    assert took < 4.0, f"held signals written {took:.1f} s after PostgreSQL was back"
    assert pending.stats.written_signals == 3 and pending.stats.outages == 1
    assert pending.stats.storage_errors == 5
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM signals")).scalar_one() == 3
    messages = [r.getMessage() for r in caplog.records]
    assert sum("PostgreSQL unavailable" in m for m in messages) == 1  # no flood
    assert sum("PostgreSQL is back" in m for m in messages) == 1
