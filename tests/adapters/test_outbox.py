"""The outbox relay against real PostgreSQL and Redis: exactly one stream entry per signal, whatever dies."""

from __future__ import annotations

import asyncio
import logging
import os
import signal as signals
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import redis.asyncio
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tapewatch.adapters.cancels import await_chain
from tapewatch.adapters.db import Database
from tapewatch.adapters.embedded import start_redis, stop_redis
from tapewatch.adapters.outbox import Outbox, OutboxRelay, OutboxRow, stream_id_for
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import AsyncRedisState
from tapewatch.adapters.signal_store import SignalStore
from tapewatch.signal import decode_signal
from tests.adapters.signal_builders import entries, entry, exit_of

REPO = Path(__file__).resolve().parents[2]


def _relay(client: redis.asyncio.Redis, db: Database, keys: Keyspace, **kwargs: object) -> OutboxRelay:
    return OutboxRelay(Outbox(db), client, keys=keys, **kwargs)  # type: ignore[arg-type]


def _stream(url: str, keys: Keyspace) -> list[tuple[str, dict[str, str]]]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return [(i, dict(f)) for i, f in client.xrange(keys.signals_stream)]
    finally:
        client.close()


def _outbox_rows(engine: Engine) -> list[sa.Row[tuple[object, ...]]]:
    with engine.connect() as conn:
        query = "SELECT seq, signal_id::text AS signal_id, published_at, stream_id, attempts, last_error FROM outbox"
        return list(conn.execute(sa.text(query + " ORDER BY seq")))


def _async_client(url: str) -> redis.asyncio.Redis:
    return AsyncRedisState.from_url(url).client


def _idle(relay: OutboxRelay) -> bool:
    """The relay has ended its pass and waits for a wake (asyncio.Event keeps its waiters in ``_waiters``)."""
    return bool(relay._wake._waiters)  # type: ignore[attr-defined]


def test_each_signal_is_published_once_in_order(
    db: Database, engine: Engine, redis_url: str, redis_keys: Keyspace
) -> None:
    store = SignalStore(db)
    first = entries(3)
    store.save_signals(first)
    store.save_signal(first[0])  # a replay of the same signal: nothing new
    published: list[OutboxRow] = []

    async def service() -> tuple[int, int]:
        client = _async_client(redis_url)
        relay = _relay(client, db, redis_keys, on_published=published.extend)
        try:
            done = await relay.publish_pending()
            store.save_signal(exit_of(first[0], "TP1"))
            store.save_signal(first[1])
            return done, await relay.publish_pending()
        finally:
            await client.aclose()

    assert asyncio.run(service()) == (3, 1)
    rows = _outbox_rows(engine)
    stream = _stream(redis_url, redis_keys)
    assert [i for i, _ in stream] == [stream_id_for(r.seq) for r in rows] == [r.stream_id for r in rows]
    assert [f["signal_id"] for _, f in stream] == [s.signal_id for s in first] + [
        exit_of(first[0], "TP1").signal_id
    ]
    for (_, fields), row in zip(stream, rows, strict=True):
        assert decode_signal(fields["payload"]).signal_id == fields["signal_id"] == row.signal_id
        assert fields["seq"] == str(row.seq) and row.published_at is not None
    assert [f["signal_type"] for _, f in stream] == ["ENTRY"] * 3 + ["EXIT"]
    assert stream[0][1]["symbol"] == "BTCUSDT"
    assert [r.signal_id for r in published] == [f["signal_id"] for _, f in stream]


def test_a_relay_killed_between_xadd_and_update_publishes_no_duplicate(
    db: Database, engine: Engine, redis_url: str, redis_keys: Keyspace, caplog: pytest.LogCaptureFixture
) -> None:
    SignalStore(db).save_signals(entries(3))

    async def service() -> tuple[int, int]:
        client = _async_client(redis_url)
        try:
            dying = _relay(client, db, redis_keys)
            rows = Outbox(db).unpublished()
            assert [await dying.xadd(row) for row in rows[:2]] == [True, True]  # ... and killed before UPDATE
            fresh = _relay(client, db, redis_keys)
            with caplog.at_level(logging.INFO, logger="tapewatch.adapters.outbox"):
                done = await fresh.publish_pending()
            return done, fresh.stats.already_published
        finally:
            await client.aclose()

    assert asyncio.run(service()) == (3, 2)
    stream = _stream(redis_url, redis_keys)
    assert len(stream) == 3 and len({f["signal_id"] for _, f in stream}) == 3
    assert all(r.published_at is not None for r in _outbox_rows(engine))
    assert "in the stream already" in caplog.text


def test_a_stream_written_from_another_database_stops_publishing_loudly(
    db: Database, engine: Engine, redis_url: str, redis_client: redis.Redis, redis_keys: Keyspace,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    SignalStore(db).save_signals(entries(2))
    seq = _outbox_rows(engine)[0].seq
    redis_client.xadd(redis_keys.signals_stream, {"signal_id": "someone-else"}, id=stream_id_for(seq))

    async def service() -> OutboxRelay:
        client = _async_client(redis_url)
        try:
            relay = _relay(client, db, redis_keys)
            assert await relay.publish_pending() == 0
            return relay
        finally:
            await client.aclose()

    relay = asyncio.run(service())
    assert relay.stats.conflicts == 1 and not relay.healthy
    assert relay.last_error is not None and "another database" in relay.last_error
    rows = _outbox_rows(engine)
    assert all(r.published_at is None for r in rows)  # nothing is marked on a guess
    assert rows[0].attempts == 1 and "DEL " + redis_keys.signals_stream in str(rows[0].last_error)
    assert any(r.levelno == logging.ERROR and "another database" in r.message for r in caplog.records)
    assert len(_stream(redis_url, redis_keys)) == 1


def test_redis_down_keeps_rows_and_publishes_them_once_when_it_returns(
    db: Database, engine: Engine, server_tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    redis_dir = server_tmp_path / "redis"
    url = start_redis(redis_dir)
    keys = Keyspace()
    store = SignalStore(db)
    store.save_signals(entries(2))

    async def service() -> OutboxRelay:
        client = _async_client(url)
        relay = _relay(client, db, keys)
        try:
            assert await relay.publish_pending() == 2
            stop_redis(redis_dir)
            store.save_signals(entries(3, start=10_000_000))
            assert await relay.publish_pending() == 0
            assert await relay.publish_pending() == 0
            assert not relay.healthy and relay.stats.redis_errors == 2 and relay.stats.outages == 1
            start_redis(redis_dir)
            assert await relay.publish_pending() == 3
            assert relay.healthy
            return relay
        finally:
            await client.aclose()

    try:
        with caplog.at_level(logging.INFO, logger="tapewatch.adapters.outbox"):
            relay = asyncio.run(service())
        stream = _stream(url, keys)
    finally:
        stop_redis(redis_dir)
    assert len(stream) == 5 and len({f["signal_id"] for _, f in stream}) == 5
    rows = _outbox_rows(engine)
    assert all(r.published_at is not None for r in rows)
    assert rows[2].attempts == 3 and rows[2].last_error is None  # two failures, then published
    assert relay.stats.published == 5
    assert "3 signals wait in the outbox" in caplog.text
    assert "publishing again after 2 failed passes: 3 signals published" in caplog.text


def test_run_publishes_when_woken_and_retries_with_a_growing_pause(
    db: Database, server_tmp_path: Path
) -> None:
    redis_dir = server_tmp_path / "redis"
    url = start_redis(redis_dir)
    keys = Keyspace(prefix="twrun:")
    store = SignalStore(db)
    pauses: list[float] = []

    async def service() -> None:
        back = asyncio.Event()

        async def sleep(seconds: float) -> None:
            pauses.append(seconds)
            if len(pauses) == 3:
                await asyncio.to_thread(start_redis, redis_dir)
                back.set()
            await asyncio.sleep(0)

        client = _async_client(url)
        relay = _relay(client, db, keys, poll_interval=30.0, retry_base=0.5, retry_max=2.0, sleep=sleep)
        task = asyncio.create_task(relay.run())
        try:
            store.save_signal(entry())
            relay.wake()
            while relay.stats.published < 1:  # noqa: ASYNC110 - the relay is another task; no event to await
                await asyncio.sleep(0.01)
            await asyncio.to_thread(stop_redis, redis_dir)
            store.save_signal(entry("ETHUSDT"))
            relay.wake()
            await asyncio.wait_for(back.wait(), 30)
            while relay.stats.published < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            await client.aclose()

    try:
        t0 = time.monotonic()
        asyncio.run(service())
        elapsed = time.monotonic() - t0
        assert len(_stream(url, keys)) == 2
    finally:
        stop_redis(redis_dir)
    assert pauses == [0.5, 1.0, 2.0]  # doubling, capped at retry_max
    assert elapsed < 25  # woken, not polled: no 30 s poll interval was waited


def test_a_database_error_is_a_failed_pass_and_the_relay_publishes_once_it_is_gone(
    db: Database, engine: Engine, redis_url: str, redis_keys: Keyspace, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a lost connection but an error (here: the table is away; a read-only server after a failover does
    the same): the relay used to end on it, leaving the signals unpublished while the service ran on."""
    store = SignalStore(db)
    pauses: list[float] = []

    def rename(old: str, new: str) -> None:
        with engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE {old} RENAME TO {new}"))

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        await asyncio.sleep(0.01)

    async def until(condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(20):
            while not condition():  # noqa: ASYNC110 - the relay is another task; no event to await
                await asyncio.sleep(0.01)

    async def service() -> OutboxRelay:
        client = _async_client(redis_url)
        relay = _relay(client, db, redis_keys, poll_interval=30.0, retry_base=0.5, retry_max=2.0, sleep=sleep)
        task = asyncio.create_task(relay.run())
        try:
            store.save_signal(entry())
            relay.wake()
            # the pass over: rows saved while it still ran would be published by it, before the rename
            await until(lambda: relay.stats.published == 1 and _idle(relay))
            store.save_signals(entries(2, start=10_000_000))  # not woken: they wait for the next pass
            await asyncio.to_thread(rename, "outbox", "outbox_away")
            relay.wake()
            await until(lambda: relay.stats.storage_errors >= 3)
            assert not task.done(), task
            assert not relay.healthy and relay.stats.outages == 1 and relay.stats.published == 1
            assert relay.last_error is not None and "outbox" in relay.last_error
            await asyncio.to_thread(rename, "outbox_away", "outbox")
            # the pass ends (healthy again) after its last row is published: wait for both
            await until(lambda: relay.stats.published == 3 and relay.healthy)
            assert not task.done()
            return relay
        finally:
            task.cancel()
            await client.aclose()

    with caplog.at_level(logging.INFO, logger="tapewatch.adapters.outbox"):
        relay = asyncio.run(service())
    assert pauses[:3] == [0.5, 1.0, 2.0]  # retried with the usual backoff
    stream = _stream(redis_url, redis_keys)
    assert len(stream) == 3 and len({f["signal_id"] for _, f in stream}) == 3
    assert all(r.published_at is not None for r in _outbox_rows(engine))
    assert 'relation "outbox" does not exist' in caplog.text  # the driver's message, said once
    assert caplog.text.count("cannot publish signals") == 1
    assert f"publishing again after {relay.stats.storage_errors} failed passes: 2 signals" in caplog.text


# --- a real process kill ------------------------------------------------------------------------------

_WRITER = """
import asyncio, sys
from tapewatch.adapters.db import Database
from tapewatch.adapters.outbox import Outbox, OutboxRelay
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import AsyncRedisState
from tapewatch.adapters.signal_store import SignalStore
from tests.adapters.signal_builders import entries

async def main(db_url, redis_url, prefix, n):
    db = Database(db_url)
    store = SignalStore(db)
    client = AsyncRedisState.from_url(redis_url).client
    relay = OutboxRelay(Outbox(db), client, keys=Keyspace(prefix=prefix))
    for signal in entries(n):
        await asyncio.to_thread(store.save_signal, signal)   # a replayed signal writes nothing new
        await relay.publish_pending()
        print(signal.signal_id, flush=True)
    print("done", flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
"""


@pytest.mark.slow
def test_a_killed_writer_and_relay_restarted_leave_one_row_and_one_entry_per_signal(
    migrated_database_url: str, engine: Engine, redis_url: str, redis_keys: Keyspace
) -> None:
    n = 60
    command = [sys.executable, "-c", _WRITER, migrated_database_url, redis_url, redis_keys.prefix, str(n)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    for _ in range(n // 3):  # a third of the way through: kill -9, mid-stream
        assert child.stdout.readline()
    child.send_signal(signals.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signals.SIGKILL
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT count(*) FROM signals")).scalar_one()
    assert n // 3 <= stored < n
    # restart: the same run again (the engine would replay its capture and produce the same ids)
    finished = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.splitlines()[-1] == "done"
    stream = _stream(redis_url, redis_keys)
    ids = [f["signal_id"] for _, f in stream]
    assert len(ids) == n and ids == [s.signal_id for s in entries(n)]  # no duplicate, no loss, in order
    rows = _outbox_rows(engine)
    assert len(rows) == n and all(r.published_at is not None for r in rows)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM signals")).scalar_one() == n


def test_a_cancel_that_arrives_with_a_wake_stops_the_relay(
    db: Database, redis_url: str, redis_keys: Keyspace
) -> None:
    """Cancelled in the same step as it is woken (the service stopping while its last signals are saved), the
    relay ends. With ``asyncio.wait_for`` on Python 3.11 it returned the wake instead, swallowing the cancel,
    and ran on forever: the service's stop hung on it under load."""

    async def scenario() -> tuple[bool, bool]:
        client = _async_client(redis_url)
        relay = _relay(client, db, redis_keys, poll_interval=30.0)
        task = asyncio.create_task(relay.run())
        try:
            while not _idle(relay):  # noqa: ASYNC110 - the relay is another task; no event to await
                await asyncio.sleep(0.01)
            relay.wake()
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=5)
            return task in done, task.cancelled()
        finally:
            task.cancel()
            await client.aclose()

    assert asyncio.run(scenario()) == (True, True)


def test_a_cancel_that_lands_while_redis_py_writes_the_xadd_stops_the_relay(
    db: Database, redis_url: str, redis_keys: Keyspace
) -> None:
    """redis-py writes each command under ``asyncio.wait_for``, which on Python 3.11 swallows a cancel that lands
    once the write is done but before it resumes; the XADD completed and the cancelled relay ran on forever
    (the service's stop hung in the dispatch TaskGroup). Cancelled there, the relay ends."""
    SignalStore(db).save_signals(entries(3))

    async def scenario() -> tuple[bool, bool]:
        client = _async_client(redis_url)
        relay = _relay(client, db, redis_keys, poll_interval=30.0)
        task = asyncio.create_task(relay.run())
        try:
            # step the loop until the relay is inside the write of its first XADD: the window of the swallow
            while "send_packed_command" not in (frame.f_code.co_name for frame in await_chain(task)):
                assert not task.done()
                await asyncio.sleep(0)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=2)
            return task in done, task.cancelled()
        finally:
            task.cancel()
            await client.aclose()

    assert asyncio.run(scenario()) == (True, True)


def test_a_cancel_at_any_step_of_an_xadd_ends_it(redis_url: str, redis_keys: Keyspace) -> None:
    """A cancel accepted at any loop step of one XADD (connecting, writing, reading the reply) ends it with
    CancelledError, never with a result: the cancelled task must not go on to its next command."""

    async def scenario() -> list[tuple[int, str]]:
        client = _async_client(redis_url)
        # the relay's Redis side only: xadd never reads the outbox
        relay = OutboxRelay(None, client, keys=redis_keys, maxlen=None)  # type: ignore[arg-type]
        outcomes: list[tuple[int, str]] = []
        try:
            for attempt in range(32):
                steps, warm = attempt // 2, attempt % 2 == 1
                if warm:  # on an open connection (a cancel mid-command closes it: the next one reconnects)
                    await client.ping()
                row = OutboxRow(attempt + 1, f"signal-{attempt}", "{}")
                task = asyncio.create_task(relay.xadd(row))
                for _ in range(steps):
                    await asyncio.sleep(0)
                accepted = task.cancel()
                await asyncio.wait({task}, timeout=2)
                if not task.done():
                    outcomes.append((attempt, "hung"))
                elif accepted and not task.cancelled():
                    outcomes.append((attempt, f"returned {task.result()} after its cancel"))
        finally:
            await client.aclose()
        return outcomes

    assert asyncio.run(scenario()) == []
