"""Order-book walls (spec 6.1 detect_large_orders) on hand-made levels and on a real Binance snapshot."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tapewatch.book import OrderBook
from tapewatch.book_analytics import LargeOrder, average_level_size, book_walls, detect_large_orders
from tapewatch.events import DepthSnapshot
from tapewatch.parse import FrameDecoder
from tests.helpers import USDM_CRYPTOFEED, recording_lines, snapshot

pytestmark = pytest.mark.usefixtures("both_sides")  # native and Python book sides


def spec_detect_large_orders(orderbook: list[Any], avg_size: float) -> list[dict[str, Any]]:
    """Transcription of spec 6.1 (strictly greater than 5x)."""
    large_orders = []
    for price, volume in orderbook:
        if float(volume) > avg_size * 5:
            large_orders.append({"price": price, "volume": volume, "size_multiple": float(volume) / avg_size})
    return large_orders


def test_average_level_size() -> None:
    assert average_level_size([(100.0, 1.0), (99.0, 2.0), (98.0, 6.0)]) == 3.0
    assert average_level_size([]) is None


def test_walls_at_and_above_five_times_the_average_are_found_in_book_order() -> None:
    levels = [(100.0, 1.0), (99.5, 10.0), (99.0, 9.99), (98.5, 25.0)]
    assert detect_large_orders(levels, 2.0) == [LargeOrder(99.5, 10.0, 5.0), LargeOrder(98.5, 25.0, 12.5)]
    assert detect_large_orders(levels, 2.0, multiple=6.0) == [LargeOrder(98.5, 25.0, 12.5)]
    assert detect_large_orders(levels, 2.0)[0].notional == 995.0


def test_exactly_five_times_is_a_wall_where_the_spec_code_would_say_no() -> None:
    levels = [(100.0, 10.0)]
    assert detect_large_orders(levels, 2.0) == [LargeOrder(100.0, 10.0, 5.0)]
    assert spec_detect_large_orders(levels, 2.0) == []  # the one documented difference (issue: ">= 5x")


def test_no_average_means_no_walls() -> None:
    assert detect_large_orders([(100.0, 3.0)], None) == []
    assert detect_large_orders([(100.0, 3.0)], 0.0) == []
    assert detect_large_orders([], 1.0) == []
    assert book_walls([], []) == ([], [])


@pytest.mark.parametrize(
    ("levels", "avg", "multiple", "message"),
    [
        ([(100.0, math.nan)], 1.0, 5.0, r"levels\[0\] qty must be finite and >= 0"),
        ([(100.0, 1.0), (99.0, -1.0)], 1.0, 5.0, r"levels\[1\] qty must be finite and >= 0"),
        ([(math.inf, 1.0)], 1.0, 5.0, r"levels\[0\] price must be finite and > 0"),
        ([(0.0, 1.0)], 1.0, 5.0, r"levels\[0\] price must be finite and > 0"),
        ([(100.0, 1.0)], math.nan, 5.0, "avg_size must be finite and >= 0"),
        ([(100.0, 1.0)], -2.0, 5.0, "avg_size must be finite and >= 0"),
        ([(100.0, 1.0)], 1.0, 0.0, "multiple must be finite and > 0"),
        ([(100.0, 1.0)], 1.0, math.nan, "multiple must be finite and > 0"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(
    levels: list[tuple[float, float]], avg: float, multiple: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        detect_large_orders(levels, avg, multiple)


def test_average_level_size_rejects_nan() -> None:
    with pytest.raises(ValueError, match=r"levels\[0\] qty must be finite"):
        average_level_size([(100.0, math.nan)])


def test_book_walls_use_one_average_over_both_sides_of_an_order_book() -> None:
    book = OrderBook("BTCUSDT")
    bids = [(100.0, 1.0), (99.0, 1.0), (98.0, 20.0)]
    asks = [(101.0, 1.0), (102.0, 1.0), (103.0, 6.0)]
    book.load_snapshot(snapshot(1, bids=bids, asks=asks))
    # average over the six levels: 30 / 6 = 5, walls need >= 25: the 20 bid is not one
    assert book_walls(book.bids.top(20), book.asks.top(20)) == ([], [])
    # a 50 bid: average 60 / 6 = 10, and 50 is exactly 5x -> a wall; the 6 ask is not
    book.load_snapshot(snapshot(2, bids=[*bids[:2], (98.0, 50.0)], asks=asks))
    bid_walls, ask_walls = book_walls(book.bids.top(20), book.asks.top(20))
    assert bid_walls == [LargeOrder(98.0, 50.0, 5.0)]
    assert ask_walls == []


def real_snapshot() -> DepthSnapshot:
    decoder = FrameDecoder()
    for line in recording_lines(USDM_CRYPTOFEED):
        frame = decoder.decode_capture_line(line)
        if frame is not None and isinstance(frame.event, DepthSnapshot):
            return frame.event
    raise AssertionError("the recording holds a depth snapshot")


def test_same_walls_as_the_spec_on_a_real_binance_snapshot() -> None:
    snap = real_snapshot()
    book = OrderBook("SUSHIUSDT")
    book.load_snapshot(snap)
    for depth in (20, 100, 1000):
        for side in (book.bids.top(depth), book.asks.top(depth)):
            avg = average_level_size(side)
            assert avg is not None and avg == pytest.approx(sum(q for _, q in side) / len(side))
            ours = detect_large_orders(side, avg)
            expected = spec_detect_large_orders(side, avg)
            assert [(w.price, w.qty, w.size_multiple) for w in ours] == [
                (w["price"], w["volume"], w["size_multiple"]) for w in expected
            ]
            assert all(w.size_multiple >= 5 for w in ours)
    walls = detect_large_orders(book.bids.top(1000), average_level_size(book.bids.top(1000)))
    assert walls, "a 1000-level real book has walls"
