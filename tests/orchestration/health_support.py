"""Helpers for the health sensor tests: the simulated exchange in a thread, a closed port, resources."""

from __future__ import annotations

import asyncio
import functools
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import dagster as dg

from orchestration.resources import BinanceRestResource, DatabaseResource, RedisResource, TapewatchSettings
from realtime.sim.server import SimExchange
from tapewatch.adapters.redis_keys import Keyspace


@contextmanager
def sim_exchange() -> Iterator[str]:
    """A simulated exchange answering REST on 127.0.0.1 (its own event loop, in a thread): its base URL."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        async with SimExchange(port=0, seed=2, symbols=4) as sim:
            holder["url"] = f"http://{sim.host}:{sim.port}"
            holder["stop"] = asyncio.Event()
            ready.set()
            await holder["stop"].wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(20), "the simulated exchange did not start"
    try:
        yield holder["url"]
    finally:
        loop.call_soon_threadsafe(holder["stop"].set)
        thread.join(20)
        loop.close()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def resources(
    database_url: str,
    redis_url: str,
    keys: Keyspace,
    rest_url: str | None = None,
    **overrides: str,
) -> dict[str, Any]:
    """The resources of orchestration.definitions, pointed at the test's servers."""
    found: dict[str, Any] = {
        "settings": TapewatchSettings(overrides=dict(overrides)),
        "database": DatabaseResource(url=database_url),
        "redis": RedisResource(url=redis_url, prefix=keys.prefix),
    }
    if rest_url is not None:
        found["binance"] = BinanceRestResource(base_url=rest_url, max_retries=0, timeout=3)
    return found


@functools.cache
def _instance() -> dg.DagsterInstance:
    """One ephemeral instance for every tick of the process (the health sensors do not use it): Dagster builds
    one per context otherwise, and stamping its in-memory storages took most of a tick's time."""
    return dg.DagsterInstance.ephemeral()


def tick(sensor: dg.SensorDefinition, cursor: str | None, res: Mapping[str, Any]) -> dg.SensorResult:
    """One evaluation of ``sensor`` with ``cursor``; its result (skip reason and new cursor)."""
    with dg.build_sensor_context(cursor=cursor, resources=dict(res), instance=_instance()) as context:
        result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    assert not result.run_requests
    return result
