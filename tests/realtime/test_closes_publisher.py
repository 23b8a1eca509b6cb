"""The 1-minute closes a shard publishes for the others' correlation filter: republished when a bar changes."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from realtime.closes_publisher import INTERVAL, ClosesPublisher
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import AsyncRedisState
from tapewatch.candles import CandleSeries
from tapewatch.events import Candle


def bar(t: int, close: float, closed: bool) -> Candle:
    return Candle(t, t + 59_999, INTERVAL, close, close, close, close, 1.0, 1, closed, close)


def test_a_refill_that_replaces_the_newest_close_is_published_again(
    redis_url: str, redis_keys: Keyspace
) -> None:
    series = CandleSeries(keep=10)
    series.update(bar(0, 1.0, False))
    series.update(bar(60_000, 2.0, False))  # bar 0's close was lost: closed provisionally at 1.0
    market = SimpleNamespace(symbols={"BTCUSDT": SimpleNamespace(candles={INTERVAL: series})})

    async def scenario() -> list[int]:
        state = AsyncRedisState.from_url(redis_url, keys=redis_keys)
        try:
            publisher = ClosesPublisher(state, market)  # type: ignore[arg-type]
            counts = [await publisher.publish(["BTCUSDT"])]
            counts.append(await publisher.publish(["BTCUSDT"]))  # nothing new
            series.extend_history([bar(0, 1.5, True)])  # the REST refill: same bar, the real close
            counts.append(await publisher.publish(["BTCUSDT"]))
            assert publisher.due(["BTCUSDT"]) == {}
            return counts
        finally:
            await state.aclose()

    assert asyncio.run(scenario()) == [1, 0, 1]
