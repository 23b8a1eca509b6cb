"""The service's last words in Redis: the final metrics and its newest signal, written from the finally of its
cancelled run (what `tapewatch status` and the dashboard show after a stop)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from realtime.service import STREAMS_CLOSE_TIMEOUT_S, FeedService
from realtime.service_publish import publish_on_exit
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import AsyncRedisState, RedisState
from tapewatch.settings import load_settings
from tests.realtime.test_service_retained import _Pool, _Rest, _Sink


def test_the_last_signal_is_recorded_from_the_finally_of_a_cancelled_run(
    tmp_path: Path, redis_url: str, redis_keys: Keyspace, redis_state: RedisState
) -> None:
    """The service's run is cancelled at stop, and its finally publishes: a Redis call made there raised
    CancelledError once its command had run (the pending cancel request wins, tapewatch.adapters.cancels), so
    the metrics were written and the last signal never."""

    async def scenario() -> None:
        state = AsyncRedisState.from_url(redis_url, keys=redis_keys)
        settings = load_settings(var_dir=tmp_path)
        service = FeedService(
            settings, rest=cast(Any, _Rest()), pool=cast(Any, _Pool()), sink=_Sink(), redis=state
        )
        service.last_signal = {"signal_id": "s-1", "symbol": "BTCUSDT", "direction": "LONG"}
        service.ws_silent_routes, service.ws_silent_ms = {"public": 0, "market": 42_000}, 42_000

        async def run() -> None:
            try:
                await asyncio.sleep(60)
            finally:
                await publish_on_exit(service)

        task = asyncio.create_task(run())
        await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await state.aclose()

    asyncio.run(scenario())
    last = redis_state.last_signal()
    assert last is not None and last.info["signal_id"] == "s-1"
    # the final metrics keep the silence of each route, as the publish loop measured it last
    metrics = redis_state.metrics()
    assert (metrics["ws_silent_ms"], metrics["ws_silent_public_ms"], metrics["ws_silent_market_ms"]) == (
        42_000,
        0,
        42_000,
    )


def test_a_stopped_service_closes_its_streams_before_the_final_publish(
    tmp_path: Path, redis_url: str, redis_keys: Keyspace, redis_state: RedisState
) -> None:
    """Nothing reads the frames once the run is cancelled: the connections close first. Left open through the
    slower shutdown steps they went on reading and decoding the whole stream into a queue nobody emptied, and on
    a loaded machine the final publish missed its time limit for it (the newest signal never reached Redis)."""
    order: list[str] = []

    class Pool(_Pool):
        async def close(self, *, close_timeout: float | None = None) -> None:
            order.append("streams closed")
            await super().close(close_timeout=close_timeout)

    class State(AsyncRedisState):
        async def set_last_signal(self, info: Mapping[str, str | int | float | bool | None]) -> None:
            order.append("last signal published")
            await super().set_last_signal(info)

    async def scenario() -> bool:
        state = State.from_url(redis_url, keys=redis_keys)
        pool = Pool()
        try:
            settings = load_settings(var_dir=tmp_path)
            service = FeedService(settings, rest=cast(Any, _Rest()), pool=cast(Any, pool), redis=state)
            task = asyncio.create_task(service.run(["ETHUSDT"]))
            await asyncio.sleep(0.2)  # the publish loop's first round: no signal yet
            service.last_signal = {"signal_id": "s-2", "symbol": "ETHUSDT", "direction": "SHORT"}
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            # a peer's late closing handshake is not waited for the usual 5 s on the way out
            assert pool.close_timeout == STREAMS_CLOSE_TIMEOUT_S < 1
            return pool.closed
        finally:
            await state.aclose()

    assert asyncio.run(scenario())
    assert order == ["streams closed", "last signal published"]
    last = redis_state.last_signal()
    assert last is not None and last.info["signal_id"] == "s-2"
