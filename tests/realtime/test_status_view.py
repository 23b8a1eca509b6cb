"""The feed stats the service publishes: how many seconds of trades its trade window covers after a symbol
joins (or the service starts), so the emergency sensor never reads a filling window as a dead market."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

from realtime.service import FeedService
from realtime.status_view import symbol_feed, window_covered_s
from tapewatch.errors import FatalError
from tapewatch.settings import load_settings


class _Pool:
    """The transport: records the streams asked for, delivers nothing."""

    def __init__(self) -> None:
        self.streams: list[str] = []

    def set_streams(self, streams: Sequence[str]) -> None:
        self.streams = list(streams)


class _Rest:
    """No candle history in this test."""

    async def klines(self, *args: Any, **kwargs: Any) -> Any:
        raise FatalError("no REST in this test")


def test_window_covered_grows_from_joining_to_the_full_window() -> None:
    assert window_covered_s(None, 1_000_000, 300_000) is None
    assert window_covered_s(1_000_000, 1_062_000, 300_000) == 62.0
    assert window_covered_s(1_000_000, 1_400_000, 300_000) == 300.0
    assert window_covered_s(1_000_000, 999_000, 300_000) == 0.0  # the clock stepped back: not negative


def test_the_feed_stats_say_how_much_of_the_trade_window_is_filled() -> None:
    service = FeedService(load_settings(), rest=cast(Any, _Rest()), pool=cast(Any, _Pool()))

    async def join() -> None:
        service.set_universe(["BTCUSDT"])
        await asyncio.sleep(0)  # let the history task fail quietly

    asyncio.run(join())
    joined = service.joined_ms("BTCUSDT")
    assert joined is not None
    assert symbol_feed(service, "BTCUSDT", now_ms=joined + 62_000).window_covered_s == 62.0
    assert symbol_feed(service, "BTCUSDT", now_ms=joined + 900_000).window_covered_s == 300.0
    assert symbol_feed(service, "ETHUSDT", now_ms=joined).window_covered_s is None  # never joined
