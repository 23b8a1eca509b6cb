"""Candle builders for the analytics tests."""

from __future__ import annotations

import random
from collections.abc import Sequence

import msgspec

from tapewatch.events import Candle

M15 = 900_000
M1 = 60_000


def unchecked(candle: Candle, **changes: object) -> Candle:
    """A copy of ``candle`` with ``changes`` set past its construction check (an impossible candle cannot be
    built or decoded): for testing the analytics' own defences."""
    copy = msgspec.structs.replace(candle)
    for field, value in changes.items():
        msgspec.structs.force_setattr(copy, field, value)
    return copy


def make_candle(
    open_time: int,
    high: float,
    low: float,
    close: float,
    open_: float | None = None,
    quote_volume: float = 1_000.0,
    closed: bool = True,
    length_ms: int = M15,
) -> Candle:
    """One candle opening at ``open_time`` and lasting ``length_ms`` (close time = next open - 1 ms)."""
    return Candle(
        open_time=open_time,
        close_time=open_time + length_ms - 1,
        interval="15m" if length_ms == M15 else "1m" if length_ms == M1 else "x",
        open=close if open_ is None else open_,
        close=close,
        high=high,
        low=low,
        volume=quote_volume / close,
        trades=10,
        closed=closed,
        quote_volume=quote_volume,
    )


def series(
    highs: Sequence[float], lows: Sequence[float], closes: Sequence[float] | None = None, length_ms: int = M15
) -> list[Candle]:
    """Consecutive closed candles from highs and lows (close defaults to the middle of the bar)."""
    if closes is None:
        closes = [(h + lo) / 2 for h, lo in zip(highs, lows, strict=True)]
    return [
        make_candle(i * length_ms, h, lo, c, length_ms=length_ms)
        for i, (h, lo, c) in enumerate(zip(highs, lows, closes, strict=True))
    ]


def random_walk(n: int, seed: int, start: float = 100.0, length_ms: int = M15) -> list[Candle]:
    """A random-walk of ``n`` consistent candles (open = previous close, high/low around both)."""
    rng = random.Random(seed)
    out: list[Candle] = []
    prev = start
    for i in range(n):
        close = max(0.01, prev * (1 + rng.gauss(0, 0.01)))
        high = max(prev, close) * (1 + abs(rng.gauss(0, 0.004)))
        low = min(prev, close) * (1 - abs(rng.gauss(0, 0.004)))
        out.append(
            make_candle(
                i * length_ms,
                high,
                low,
                close,
                open_=prev,
                quote_volume=rng.uniform(1e5, 1e6),
                length_ms=length_ms,
            )
        )
        prev = close
    return out
