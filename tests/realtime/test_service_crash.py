"""A service that crashes still shuts down: the signals its dispatch holds and the incidents it queued are
written (or said lost when PostgreSQL cannot take them), and the crash is still what the process exits with.

They used to be dropped without a word: the service's error was raised before the shutdown steps ran."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from realtime.main import run_service
from realtime.service import FeedService
from realtime.sim.server import SimExchange
from tapewatch.adapters.db import Database, create_engine, upgrade
from tapewatch.adapters.dispatch import Dispatch
from tapewatch.adapters.embedded import start_postgres, stop_postgres
from tapewatch.adapters.incidents import list_incidents
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.signal import Signal
from tests.adapters.signal_builders import entry
from tests.realtime.test_service_sim import settings_for

STREAM = "btcusdt@depth@100ms"


class Crash(RuntimeError):
    """The service's bug."""


def crash_with_work_queued(
    monkeypatch: pytest.MonkeyPatch, signal: Signal, before: float = 0.0, pgdata: Path | None = None
) -> None:
    """Make the service's run queue ``signal`` in its dispatch and a gap incident, then crash in the same step
    (after stopping the PostgreSQL in ``pgdata``, when given, and waiting ``before`` s for the dispatch's
    writer to fail on it)."""

    async def run(self: FeedService, symbols: list[str] | None = None) -> None:
        if pgdata is not None:
            await asyncio.to_thread(stop_postgres, pgdata)
        assert isinstance(self.sink, Dispatch) and self.incidents is not None
        self.sink.add([signal])
        if before:
            await asyncio.sleep(before)
        self.incidents.open("gap", symbol="BTCUSDT", stream=STREAM, detail="gap: queued at the crash")
        raise Crash("a bug in the service")

    monkeypatch.setattr(FeedService, "run", run)


async def run_until_it_crashes(
    sim: SimExchange, tmp_path: Path, redis_url: str, database_url: str, prefix: str
) -> float:
    """Run the service against ``sim`` until it crashes: the seconds it took to stop (the crash is raised)."""
    settings = settings_for(sim, tmp_path, prefix)
    stop = asyncio.Event()
    timer = asyncio.get_running_loop().call_later(60, stop.set)  # the test's own limit
    t0 = time.monotonic()
    try:
        with pytest.raises(Crash, match="a bug in the service"):  # `tapewatch run` exits with status 1
            await run_service(settings, redis_url=redis_url, database_url=database_url, stop=stop)
    finally:
        timer.cancel()
    return time.monotonic() - t0


@pytest.mark.e2e
def test_a_crashed_service_writes_and_publishes_what_it_held_and_still_fails(
    tmp_path: Path,
    migrated_database_url: str,
    redis_url: str,
    redis_keys: Keyspace,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signal = entry()
    crash_with_work_queued(monkeypatch, signal)

    async def scenario() -> float:
        async with SimExchange(port=0, seed=7, symbols=6, speed=1.0) as sim:
            return await run_until_it_crashes(
                sim, tmp_path, redis_url, migrated_database_url, redis_keys.prefix
            )

    assert asyncio.run(scenario()) < 30
    db = Database(migrated_database_url)
    try:
        incidents = list_incidents(db, kind="gap")
        with db.begin() as conn:
            published = conn.execute(
                sa.text("SELECT published_at IS NOT NULL FROM outbox WHERE signal_id = CAST(:s AS uuid)"),
                {"s": signal.signal_id},
            ).scalar()
    finally:
        db.dispose()
    assert [(i.symbol, i.stream, i.detail) for i in incidents] == [
        ("BTCUSDT", STREAM, "gap: queued at the crash")
    ]
    assert published is True  # written to PostgreSQL and published to the Redis stream


@pytest.mark.e2e
@pytest.mark.slow
def test_a_crashed_service_says_what_it_could_not_write_when_postgresql_is_down(
    tmp_path: Path,
    server_tmp_path: Path,
    redis_url: str,
    redis_keys: Keyspace,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pgdata = server_tmp_path / "pg"
    url = start_postgres(pgdata)
    migrator = create_engine(url)
    upgrade(migrator)
    migrator.dispose()
    crash_with_work_queued(monkeypatch, entry(), before=0.5, pgdata=pgdata)

    async def scenario() -> float:
        async with SimExchange(port=0, seed=7, symbols=6, speed=1.0) as sim:
            return await run_until_it_crashes(sim, tmp_path, redis_url, url, redis_keys.prefix)

    try:
        with caplog.at_level(logging.WARNING):
            took = asyncio.run(scenario())
    finally:
        stop_postgres(pgdata)
    assert took < 40
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    # the gap and the recorder's own start-up change (closing the incidents a previous run left open)
    assert any("2 feed incidents not written at shutdown" in m for _, m in said)
    assert any("stopping with 1 signals" in m and "not written" in m for _, m in said)
    assert (logging.ERROR, "some signals were not written or published before exit (see above)") in said
