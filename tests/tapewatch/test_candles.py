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


def test_a_bar_whose_closing_kline_was_lost_is_closed_provisionally_and_refilled() -> None:
    # update(t0, open) -> update(t1, open) -> update(t1, closed) -> update(t2, open): the close of t0 was lost
    s = CandleSeries(keep=10)
    s.update(bar(0, 1.0, False))
    s.update(bar(60_000, 2.0, False))
    s.update(bar(60_000, 2.5, True))
    s.update(bar(120_000, 3.0, False))
    assert [(c.open_time, c.close, c.closed) for c in s.closed] == [(0, 1.0, True), (60_000, 2.5, True)]
    assert s.provisional == {0} and s.holes == 1
    assert s.missing == (0, 59_999)  # the refill asks for bar t0 again
    # the REST answer replaces the provisional bar; the bar closed by its own kline is not duplicated
    added = s.extend_history([bar(0, 1.2, True), bar(60_000, 9.9, True)])
    assert added == 1 and s.bars_filled == 1
    assert [(c.open_time, c.close) for c in s.bars()] == [(0, 1.2), (60_000, 2.5), (120_000, 3.0)]
    assert s.provisional == set() and s.missing is None


def test_a_hole_of_several_bars_asks_for_the_whole_range() -> None:
    s = CandleSeries(keep=10)
    s.update(bar(0, 1.0, True))
    s.update(bar(60_000, 2.0, False))
    s.update(bar(300_000, 6.0, False))  # a long disconnect: bar 1 never closed, bars 2..4 never seen
    assert s.missing == (60_000, 299_999) and s.provisional == {60_000}
    assert [c.open_time for c in s.closed] == [0, 60_000]
    # a partial answer narrows the range to what is still missing
    s.extend_history([bar(60_000, 2.1, True), bar(120_000, 3.0, True)])
    assert s.missing == (180_000, 299_999)
    s.extend_history([bar(t * 60_000, float(t), True) for t in range(3, 6)])  # bar 5 is forming: not taken
    assert [c.open_time for c in s.bars()] == [t * 60_000 for t in range(6)]
    assert s.missing is None and s.bars_filled == 4


def test_whole_bars_lost_after_a_closed_one_are_a_hole_too() -> None:
    s = CandleSeries(keep=10)
    s.update(bar(0, 1.0, True))
    s.update(bar(180_000, 4.0, False))
    assert s.missing == (60_000, 179_999) and s.provisional == set() and s.holes == 1


def test_a_closed_kline_for_a_provisional_bar_replaces_it() -> None:
    # a backup-feed poll lists the last closed bars: the provisional one among them is replaced, not "stale"
    s = CandleSeries(keep=10)
    s.update(bar(0, 1.0, False))
    s.update(bar(60_000, 2.0, False))
    assert s.update(bar(0, 1.5, True))
    assert [(c.open_time, c.close) for c in s.closed] == [(0, 1.5)] and s.provisional == set()
    assert s.stale_updates == 0


def test_the_revision_grows_when_closed_bars_change_in_place() -> None:
    """Readers cache what they derive from the closed bars by the newest bar's open time; a refill or a
    confirmation that replaces a bar in place leaves that time as it was, so the revision must move."""
    s = CandleSeries(keep=10)
    s.update(bar(0, 1.0, False))
    s.update(bar(60_000, 2.0, False))  # bar 0 closed provisionally: the newest closed bar
    before = (s.closed[-1].open_time, s.revision)
    s.extend_history([bar(0, 1.5, True)])  # the refill replaces it in place
    assert s.closed[-1].open_time == before[0] and s.closed[-1].close == 1.5
    assert s.revision > before[1]
    s.update(bar(60_000, 2.0, True))
    s.update(bar(180_000, 4.0, False))  # bar 120_000 lost: none to estimate, nothing provisional
    revision = s.revision
    s.update(bar(180_000, 4.0, True))  # an ordinary close appends: the open time moves, the revision need not
    assert s.revision == revision


def test_a_refill_answer_marked_forming_by_a_slow_clock_still_fills_the_hole() -> None:
    """The REST client marks a row closed from its own clock; a refill's single row, asked once the stream
    opened the next bar, is closed on the exchange even when that clock runs behind and marked it forming."""
    s = CandleSeries(keep=10)
    s.update(bar(0, 1.0, False))
    s.update(bar(60_000, 2.0, False))  # bar 0's closing kline lost: closed provisionally, a hole to refill
    assert s.provisional == {0} and s.missing == (0, 59_999)
    assert s.extend_history([bar(0, 1.5, False)]) == 1  # the refill's row, "forming" by a clock 1 s behind
    assert [(c.open_time, c.close, c.closed) for c in s.closed] == [(0, 1.5, True)]
    assert s.provisional == set() and s.missing is None and s.bars_filled == 1
    # a row the stream has not moved past stays out: it may still be forming
    assert s.extend_history([bar(60_000, 2.5, False)]) == 0
    assert s.forming is not None and s.forming.close == 2.0
