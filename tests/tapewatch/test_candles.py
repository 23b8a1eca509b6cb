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


def test_rows_before_the_last_are_closed_even_when_the_callers_clock_is_behind() -> None:
    from tapewatch.events import KlineRow, candles_from_rows

    hour = 3_600_000
    rows = [
        KlineRow(t, 1.0, 2.0, 0.5, 1.5, 10.0, t + hour - 1, 15.0, 3, 5.0, 7.5)
        for t in range(10 * hour, 14 * hour, hour)
    ]
    # the caller's clock sits in the first candle (a simulator running 30x ahead of it)
    candles = candles_from_rows(rows, "1h", 10 * hour + 5)
    assert [c.closed for c in candles] == [True, True, True, False]
    # a clock past the last close closes the last row too
    assert candles_from_rows(rows, "1h", 14 * hour)[-1].closed
