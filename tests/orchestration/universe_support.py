"""Helpers for the universe tests: the simulated exchange on a thread of its own, resources, live feeds."""

from __future__ import annotations

import asyncio
import threading
import time
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


def publish_feeds(redis_url: str, keys: Keyspace, feeds: dict[str, SymbolFeed], age_s: float = 0.0) -> None:
    """Publish live feed stats as the realtime service does (``age_s`` seconds ago: a service that stopped)."""

    async def main() -> None:
        state = AsyncRedisState.from_url(redis_url, keys=keys, clock=lambda: time.time() - age_s)
        try:
            for symbol, feed in feeds.items():
                await state.publish_feed(symbol, feed)
        finally:
            await state.aclose()

    asyncio.run(main())


@contextmanager
def publishing_feeds(redis_url: str, keys: Keyspace, feeds: dict[str, SymbolFeed]) -> Iterator[None]:
    """Republish ``feeds`` every half second until exit, as a running realtime service keeps them fresh (a
    run that waits for request weight must not find them stale)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            publish_feeds(redis_url, keys, feeds)
            stop.wait(0.5)

    publish_feeds(redis_url, keys, feeds)
    thread = threading.Thread(target=loop, name="feeds", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
