"""Candle series from kline events and REST history."""

from __future__ import annotations

from tapewatch.candles import CandleSeries
from tapewatch.events import Candle


def bar(t: int, close: float, closed: bool) -> Candle:
    return Candle(t, t + 59_999, "1m", close, close, close, close, 1.0, 1, closed, close)


def test_forming_then_closed_and_duplicates_ignored() -> None:
    s = CandleSeries(keep=3)
    assert not s.update(bar(0, 1.0, False))
    assert s.update(bar(0, 2.0, True))
    assert not s.update(bar(0, 2.0, True))  # the same close received twice
    assert s.stale_updates == 1
    s.update(bar(60_000, 3.0, False))
    assert [c.close for c in s.bars()] == [2.0, 3.0]
    assert [c.close for c in s.bars(include_forming=False)] == [2.0]


def test_history_fill_and_bound() -> None:
    s = CandleSeries(keep=3)
    s.update(bar(300_000, 9.0, False))
    added = s.extend_history([bar(t * 60_000, float(t), True) for t in range(6)])
    assert added == 5  # bars 0..4 are before the forming bar 5
    assert [c.open_time for c in s.closed] == [120_000, 180_000, 240_000]
    assert s.update(bar(240_000, 1.0, False)) is False and s.stale_updates == 1
