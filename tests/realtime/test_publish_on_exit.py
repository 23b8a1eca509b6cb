"""The service's last words in Redis: the final metrics and its newest signal, written from the finally of its
cancelled run (what `tapewatch status` and the dashboard show after a stop)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, cast

from realtime.service import FeedService
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
