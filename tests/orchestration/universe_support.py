"""Helpers for the universe tests: the simulated exchange on a thread of its own, resources, live feeds."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from orchestration.resources import BinanceRestResource, DatabaseResource, RedisResource, TapewatchSettings
from realtime.sim.server import SimExchange
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import AsyncRedisState
from tapewatch.adapters.redis_values import SymbolFeed


@contextmanager
def sim_in_thread(**kwargs: Any) -> Iterator[SimExchange]:
    """A running SimExchange (127.0.0.1, free port) whose event loop runs on its own thread, so synchronous
    code (``dg.materialize``, which runs its own event loops) can call it; stopped on exit."""
    loop = asyncio.new_event_loop()
    sim = SimExchange(port=0, **kwargs)
    ready = threading.Event()
    failure: list[BaseException] = []

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(sim.start())
        except BaseException as exc:  # reported to the test below
            failure.append(exc)
            ready.set()
            return
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=main, name="sim", daemon=True)
    thread.start()
    if not ready.wait(60) or failure:
        raise RuntimeError(f"the simulated exchange did not start: {failure}")
    try:
        yield sim
    finally:
        asyncio.run_coroutine_threadsafe(sim.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def resources(
    database_url: str, redis_url: str, keys: Keyspace, rest_url: str = "http://127.0.0.1:9", **overrides: str
) -> dict[str, Any]:
    """The four resources of orchestration.definitions, on the test's servers."""
    return {
        "settings": TapewatchSettings(overrides={"redis_prefix": keys.prefix, **overrides}),
        "database": DatabaseResource(url=database_url),
        "redis": RedisResource(url=redis_url, prefix=keys.prefix),
        "binance": BinanceRestResource(base_url=rest_url, timeout=10.0, max_retries=0),
    }


def publish_feeds(redis_url: str, keys: Keyspace, feeds: dict[str, SymbolFeed]) -> None:
    """Publish live feed stats as the realtime service does."""

    async def main() -> None:
        state = AsyncRedisState.from_url(redis_url, keys=keys)
        try:
            for symbol, feed in feeds.items():
                await state.publish_feed(symbol, feed)
        finally:
            await state.aclose()

    asyncio.run(main())
