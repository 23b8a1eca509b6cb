"""``ws_silent_ms``: how long the websockets delivered nothing while they were meant to (what the connectivity
sensor judges the primary feed by; the heartbeat beats whether or not data arrives)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from realtime.service import FeedService
from realtime.service_publish import RouteSilence, WsSilence, silence_metrics
from realtime.ws_pool import StreamPool
from tapewatch.adapters.binance_rest import BinanceRest
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import AsyncRedisState, RedisState
from tapewatch.settings import load_settings
from tests.realtime.binance_ws_server import BinanceWsServer, run
from tests.realtime.test_service_publish import publishing


def test_silence_grows_while_no_frame_arrives_and_resets_on_one() -> None:
    silence = WsSilence(frames=100, now_s=10.0)
    assert silence.update(100, 10.0, expected=True) == 0
    assert silence.update(100, 41.5, expected=True) == 31_500
    assert silence.update(101, 42.0, expected=True) == 0
    assert silence.update(101, 43.0, expected=True) == 1_000


def test_silence_is_not_counted_while_no_frame_is_expected() -> None:
    # the backup feed is on (websockets off by design) or the universe is empty
    silence = WsSilence(frames=5, now_s=0.0)
    assert silence.update(5, 600.0, expected=False) == 0
    # back on the websockets: the silence counts from the switch, not from the last frame before it
    assert silence.update(5, 602.0, expected=True) == 2_000


def test_a_route_with_no_stream_is_not_silent_and_each_route_counts_its_own_frames() -> None:
    silence = RouteSilence({"public": 10, "market": 4}, now_s=0.0)
    routes = silence.update({"public": 50, "market": 4}, {"public", "market"}, 40.0, expected=True)
    assert routes == {"public": 0, "market": 40_000}
    # /market without streams (none wanted there): not silent, and it counts from when it has some again
    assert silence.update({"public": 60, "market": 4}, {"public"}, 50.0, expected=True)["market"] == 0
    assert (
        silence.update({"public": 70, "market": 4}, {"public", "market"}, 53.0, expected=True)["market"]
        == 3_000
    )
    assert silence_metrics({"public": 0, "market": 3_000}) == {
        "ws_silent_ms": 3_000,  # the worst route: what readers of the single figure judge
        "ws_silent_public_ms": 0,
        "ws_silent_market_ms": 3_000,
    }


def test_a_dead_market_route_is_published_as_silent_while_public_flows(
    tmp_path: Path, redis_url: str, redis_keys: Keyspace, redis_state: RedisState
) -> None:
    """The service's own publish loop against a websockets server whose ``/market`` route refuses every
    connection while ``/public`` delivers bookTicker frames: the metrics hash must show the silence (it used to
    count every route's frames together: ``ws_silent_ms`` stayed at 0 while no trade or kline arrived), and the
    heartbeat carries the process's and host's load."""

    async def body() -> None:
        async with BinanceWsServer(paths=["public"]) as server:
            settings = load_settings(
                var_dir=tmp_path,
                binance_ws_public_url=server.url("public"),
                binance_ws_market_url=server.url("market"),
            )
            redis = AsyncRedisState.from_url(redis_url, keys=redis_keys)
            service = FeedService(
                settings, rest=BinanceRest.from_settings(settings), pool=StreamPool(settings), redis=redis
            )
            service.universe = ["BTCUSDT"]
            service.pool.set_streams(["btcusdt@bookTicker", "btcusdt@aggTrade", "btcusdt@kline_1m"])
            async with publishing(service, redis, interval=0.1):
                until = time.monotonic() + 2.0
                while time.monotonic() < until:
                    await server.publish("btcusdt@bookTicker", b'{"u":1,"s":"BTCUSDT"}')
                    await asyncio.sleep(0.05)
            assert service.pool.stats.frames["btcusdt@bookTicker"] > 10  # /public did deliver

    run(body)
    metrics = redis_state.metrics("realtime")
    assert metrics["ws_silent_ms"] >= 1_000  # the worst route's
    assert metrics["ws_silent_market_ms"] == metrics["ws_silent_ms"]
    assert metrics["ws_silent_public_ms"] < 500
    beat = redis_state.heartbeat("realtime")
    assert beat is not None
    assert isinstance(beat.info["rss"], int) and beat.info["rss"] > 0
    assert 0 <= float(beat.info["host_cpu"]) <= 100 and 0 < float(beat.info["host_memory"]) <= 100
    assert float(beat.info["cpu"]) >= 0
