"""The outbox relay as the service builds it publishes held signals within seconds of Redis's return.

Its pause between failed passes doubled up to ``outbox_retry_max`` (30 s) and a new signal did not cut it short:
after five failed passes the next came 8 s later, then 16, then 30, whenever Redis came back. Real Redis and
PostgreSQL: Redis that is down is a closed port, and its return a forwarder to the test Redis on that port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pytest
import redis

from tapewatch.adapters.db import Database
from tapewatch.adapters.outbox import Outbox, OutboxRelay
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import AsyncRedisState
from tapewatch.adapters.signal_store import SignalStore
from tapewatch.settings import load_settings
from tests.adapters.signal_builders import entries
from tests.tcp_proxy import forwarder, free_port, redis_upstream, redis_url_via


@pytest.mark.slow
def test_signals_held_through_a_redis_outage_are_published_within_seconds_of_its_return(
    db: Database, redis_url: str, redis_keys: Keyspace, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    store = SignalStore(db)

    async def service() -> tuple[OutboxRelay, float]:
        client = AsyncRedisState.from_url(redis_url_via(port, redis_url)).client
        relay = OutboxRelay.from_settings(Outbox(db), client, load_settings(), keys=redis_keys)
        task = asyncio.create_task(relay.run())
        try:
            store.save_signals(entries(2))
            relay.wake()
            async with asyncio.timeout(60):  # nothing listens: every pass fails at once
                while relay.stats.redis_errors < 5:  # noqa: ASYNC110 - the relay is another task
                    await asyncio.sleep(0.02)
            # five failed passes: the pause has doubled 0.5, 1, 2, 4 and the next was 8 s (it went on to 30)
            assert relay.stats.published == 0 and not relay.healthy
            store.save_signals(entries(1, symbol="ETHUSDT"))
            relay.wake()  # a new signal does not cut the pause short: the cap is what bounds the wait
            async with forwarder(port, redis_upstream(redis_url)):
                back = time.monotonic()
                async with asyncio.timeout(30):
                    # published, and the pass over (it logs the recovery once it finds no row left)
                    while relay.stats.published < 3 or not relay.healthy:  # noqa: ASYNC110 - another task
                        await asyncio.sleep(0.02)
                took = time.monotonic() - back
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return relay, took
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await client.aclose()

    with caplog.at_level(logging.WARNING, logger="tapewatch.adapters.outbox"):
        relay, took = asyncio.run(service())
    assert took < 4.0, f"signals published {took:.1f} s after Redis was back"
    assert relay.stats.outages == 1 and relay.stats.redis_errors == 5
    reader = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert reader.xlen(redis_keys.signals_stream) == 3
    finally:
        reader.close()
    assert caplog.text.count("cannot publish signals") == 1  # the outage said once, not per pass
    assert caplog.text.count("publishing again after") == 1
