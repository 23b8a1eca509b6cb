"""Dispatch end to end: engine output -> PostgreSQL -> Redis stream -> webhook, with real servers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tapewatch.adapters.db import Database
from tapewatch.adapters.dispatch import Dispatch, DispatchStopped
from tapewatch.adapters.embedded import start_redis, stop_redis
from tapewatch.adapters.notifiers import verify_signature
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import AsyncRedisState
from tapewatch.engine import EngineOutput
from tapewatch.settings import load_settings
from tests.adapters.http_sink import HttpSink
from tests.adapters.signal_builders import candidate, entry, exit_of, win

SECRET = "dispatch-secret"


def test_engine_output_reaches_postgresql_the_stream_and_the_webhook_once(
    db: Database, engine: Engine, redis_url: str, redis_client: redis.Redis, redis_keys: Keyspace
) -> None:
    opening = entry()
    closing = exit_of(opening, "TP2")
    with HttpSink() as server:
        settings = load_settings(
            webhook_url=server.url + "/signals", webhook_secret=SECRET, outbox_poll_interval=30
        )

        async def service() -> tuple[bool, dict[str, int]]:
            client = AsyncRedisState.from_url(redis_url).client
            dispatch = Dispatch.from_settings(settings, db, client, keys=redis_keys)
            task = asyncio.create_task(dispatch.run())
            try:
                dispatch.accept(
                    EngineOutput(
                        candidates=[candidate(), candidate("ETHUSDT", fate="concurrency")], signals=[opening]
                    )
                )
                dispatch.add([closing, opening], outcomes=[win(opening)])  # a repeat is not a new signal
                async with asyncio.timeout(20):
                    while len(server.requests) < 2:  # noqa: ASYNC110 - woken by the writes, not the 30 s poll
                        await asyncio.sleep(0.01)
                    await dispatch.notifications.join()  # the deliveries are recorded
                metrics = dispatch.metrics()
            finally:
                task.cancel()
                closed = await dispatch.aclose(grace=5)
                await client.aclose()
            return closed, metrics

        closed, metrics = asyncio.run(service())
    assert closed
    stream = redis_client.xrange(redis_keys.signals_stream)
    assert [f["signal_id"] for _, f in stream] == [opening.signal_id, closing.signal_id]
    assert [json.loads(r.body)["signal_id"] for r in server.requests] == [
        opening.signal_id,
        closing.signal_id,
    ]
    assert all(verify_signature(SECRET, r.body, r.headers["x-tapewatch-signature"]) for r in server.requests)
    with engine.connect() as conn:
        counts = conn.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM signals), (SELECT count(*) FROM candidates), "
                "(SELECT count(*) FROM signal_outcomes), (SELECT count(*) FROM notifications WHERE status = 'sent')"
            )
        ).one()
    assert tuple(counts) == (2, 2, 1, 2)
    assert metrics["pending_written_signals"] == 2 and metrics["pending_duplicate_signals"] == 1
    assert metrics["relay_published"] == 2 and metrics["relay_healthy"] == 1
    assert metrics["notify_webhook_sent"] == 2


def test_run_ends_with_an_error_when_the_relay_stops_and_takes_the_writer_with_it(
    db: Database, redis_url: str, redis_keys: Keyspace
) -> None:
    """The relay ending (a bug) used to leave the writer and the notifiers running under ``gather`` and the
    dispatch task pending forever: nothing told the service its signals were no longer published."""

    async def service() -> tuple[BaseException | None, bool]:
        client = AsyncRedisState.from_url(redis_url).client
        dispatch = Dispatch.from_settings(load_settings(), db, client, keys=redis_keys)
        returned = asyncio.Event()

        async def relay_that_returns() -> None:
            await returned.wait()

        dispatch.relay.run = relay_that_returns  # type: ignore[method-assign]
        task = asyncio.create_task(dispatch.run())
        try:
            await asyncio.sleep(0.1)
            assert not task.done()  # writer, relay and notifiers run
            returned.set()
            async with asyncio.timeout(5):
                with contextlib.suppress(BaseException):
                    await task
            writers = [t for t in asyncio.all_tasks() if t.get_name() == "pending-writes"]
            return task.exception(), not writers
        finally:
            task.cancel()
            await dispatch.aclose(grace=1)
            await client.aclose()

    error, writer_gone = asyncio.run(service())
    assert isinstance(error, ExceptionGroup)
    (stopped,) = error.exceptions
    assert isinstance(stopped, DispatchStopped) and "outbox relay returned" in str(stopped)
    assert writer_gone  # the others were cancelled with it


def test_a_signal_held_by_a_redis_outage_is_notified_as_delayed_and_a_prompt_one_is_not(
    db: Database, server_tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Real Redis stopped and started again: the signal produced meanwhile reaches Telegram late and says so;
    one produced while everything is up does not, though its event time (2024, as on the simulator's clock,
    which runs at ``--speed``) is far from the wall clock: the delay is measured from when the service produced
    the signal, in wall-clock time."""
    redis_dir = server_tmp_path / "redis"
    url = start_redis(redis_dir)
    prompt, held = entry(), entry("ETHUSDT")
    with HttpSink() as telegram:
        settings = load_settings(
            telegram_bot_token="123:token",
            telegram_chat_id="42",
            telegram_api_url=telegram.url,
            notify_late_after=1.5,
            outbox_retry_max=0.2,
        )

        async def service() -> dict[str, int]:
            client = AsyncRedisState.from_url(url).client
            dispatch = Dispatch.from_settings(settings, db, client, keys=Keyspace())
            task = asyncio.create_task(dispatch.run())
            try:
                async with asyncio.timeout(30):
                    dispatch.add([prompt])
                    while len(telegram.requests) < 1:  # noqa: ASYNC110 - the notifier is another task
                        await asyncio.sleep(0.01)
                    await asyncio.to_thread(stop_redis, redis_dir)
                    dispatch.add([held])  # stored in PostgreSQL, not published: Redis is down
                    await asyncio.sleep(2.0)
                    assert len(telegram.requests) == 1 and not dispatch.relay.healthy
                    await asyncio.to_thread(start_redis, redis_dir)
                    while len(telegram.requests) < 2:  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
                    await dispatch.notifications.join()
                return dispatch.metrics()
            finally:
                task.cancel()
                await dispatch.aclose(grace=5)
                await client.aclose()

        try:
            with caplog.at_level(logging.WARNING, logger="tapewatch.adapters.notifiers"):
                metrics = asyncio.run(service())
        finally:
            stop_redis(redis_dir)
    prompt_text, held_text = (r.json()["text"] for r in telegram.requests)
    assert "DELAYED" not in prompt_text and prompt_text.startswith("🟢 LONG BTCUSDT")
    first_line = held_text.splitlines()[0]
    assert re.fullmatch(
        r"⚠️ DELAYED \ds: sent late after an outage; check the price before acting", first_line
    )
    assert "LONG ETHUSDT" in held_text.splitlines()[1]
    assert metrics["notify_telegram_sent"] == 2 and metrics["notify_telegram_late"] == 1
    (logged,) = [r for r in caplog.records if "labelled DELAYED" in r.getMessage()]
    assert logged.symbol == "ETHUSDT" and logged.signal_id == held.signal_id  # type: ignore[attr-defined]
    assert logged.delay_s >= 2.0  # type: ignore[attr-defined]
