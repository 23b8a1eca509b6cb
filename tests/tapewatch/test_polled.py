"""The backup feed's captured REST answers decode into the frames live applied, and the market state takes
them: polled books usable, polled trades counted once by aggregate trade id, polled klines moving the candles."""

from __future__ import annotations

import json

import pytest

from tapewatch.events import AggTrade, Candle, Kline
from tapewatch.market import Market, MarketConfig
from tapewatch.parse import Frame, FrameDecoder
from tapewatch.polled import POLL_FRAGMENT, PolledSnapshot, poll_stream, polled_target
from tapewatch.streams import Kind

pytestmark = pytest.mark.usefixtures("both_sides")  # native and Python book sides

TRADES = "rest:/fapi/v1/aggTrades?symbol=BTCUSDT&fromId=5&limit=1000"
DEPTH = poll_stream("rest:/fapi/v1/depth?symbol=BTCUSDT&limit=50", 4_688)
KLINES_1M = poll_stream("rest:/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=3", 60_000)


def line(recv: int, stream: str, data: object) -> bytes:
    return json.dumps({"recv": recv, "stream": stream, "data": data}).encode()


def rest_trade(
    agg_id: int, time: int, price: float = 100.0, qty: float = 1.0, maker: bool = False
) -> dict[str, object]:
    return {
        "a": agg_id,
        "p": str(price),
        "q": str(qty),
        "f": agg_id * 2,
        "l": agg_id * 2 + 1,
        "T": time,
        "m": maker,
    }


def ws_trade(agg_id: int, time: int, price: float = 100.0, qty: float = 1.0) -> dict[str, object]:
    return {"e": "aggTrade", "E": time + 5, "s": "BTCUSDT", **rest_trade(agg_id, time, price, qty)}


def depth_body(update_id: int, time: int) -> dict[str, object]:
    return {
        "lastUpdateId": update_id,
        "E": time,
        "T": time - 1,
        "bids": [["100.0", "3"], ["99.9", "1"]],
        "asks": [["100.1", "1"], ["100.2", "1"]],
    }


def kline_row(open_time: int, close: float) -> list[object]:
    return [open_time, "1", "2", "0.5", str(close), "10", open_time + 59_999, "100", 7, "4", "40", "0"]


def decode_all(decoder: FrameDecoder, raw: bytes) -> list[Frame]:
    """What replay does with a line: the frame, or the page's frames."""
    frame = decoder.decode_capture_line(raw)
    return [frame] if frame is not None else decoder.take_pending()


def test_stream_names_say_what_was_polled() -> None:
    assert DEPTH.endswith(f"&limit=50{POLL_FRAGMENT}&every_ms=4688")
    assert polled_target(DEPTH) == ("BTCUSDT", Kind.SNAPSHOT, "", 4_688)
    assert polled_target(KLINES_1M) == ("BTCUSDT", Kind.KLINE, "1m", 60_000)
    assert polled_target(TRADES) == ("BTCUSDT", Kind.AGG_TRADE, "", 0)
    assert polled_target("rest:/fapi/v1/depth?symbol=BTCUSDT&limit=50#poll") == (
        "BTCUSDT",
        Kind.SNAPSHOT,
        "",
        0,
    )
    # not polls: history and resync snapshots (no fragment), other endpoints, no symbol
    assert polled_target("rest:/fapi/v1/depth?symbol=BTCUSDT&limit=1000") is None
    assert polled_target("rest:/fapi/v1/ticker/24hr?symbol=BTCUSDT#poll") is None
    assert polled_target("rest:/fapi/v1/aggTrades?limit=5") is None


def test_an_aggtrades_line_replays_as_one_trade_frame_per_row_in_order() -> None:
    decoder = FrameDecoder()
    rows = [rest_trade(5, 1_000), rest_trade(6, 1_001, maker=True), rest_trade(7, 1_002)]
    frames = decode_all(decoder, line(9, TRADES, rows))
    assert [f.event.agg_id for f in frames] == [5, 6, 7]  # type: ignore[union-attr]
    assert all(f.kind is Kind.AGG_TRADE and f.symbol == "BTCUSDT" and f.stream == TRADES for f in frames)
    first = frames[0].event
    assert isinstance(first, AggTrade) and first.event_time == first.trade_time == 1_000  # REST has no E
    assert isinstance(frames[1].event, AggTrade) and frames[1].event.buyer_is_maker
    # live decodes the same body into the same frames (the backup feed calls decode_frames)
    assert FrameDecoder().decode_frames(9, TRADES, json.dumps(rows).encode()) == frames
    assert decoder.take_pending() == []  # each page once
    assert decode_all(decoder, line(10, TRADES, [])) == []  # an empty page: nothing, not an error
    assert sum(decoder.rejected.values()) == 0


def test_bad_polled_bodies_are_counted_not_raised() -> None:
    decoder = FrameDecoder()
    assert decode_all(decoder, line(1, TRADES, [{"a": 1}])) == []
    assert decode_all(decoder, line(1, TRADES, [rest_trade(1, 5, price=-1.0)])) == []
    assert decoder.decode_payload(1, DEPTH, b"{not json") is None
    assert decoder.decode_payload(1, "rest:/fapi/v1/openInterest?symbol=BTCUSDT", b"{}") is None
    assert decoder.rejected["schema"] == 1 and decoder.rejected["bad_value"] == 1
    assert decoder.rejected["malformed_json"] == 1 and decoder.rejected["ignored"] == 1


def test_a_page_counts_the_rows_it_held_dropped_ones_included() -> None:
    """``page_rows`` comes from the one decode of the page (the backup feed judges a page full by it): a bad
    row left out of the frames still counts, and anything that is not a page counts none."""
    decoder = FrameDecoder()
    rows = [rest_trade(5, 1_000), rest_trade(6, 1_001, price=0.0), rest_trade(7, 1_002), rest_trade(8, 1_003)]
    frames = decoder.decode_frames(9, TRADES, json.dumps(rows).encode())
    assert [f.event.agg_id for f in frames] == [5, 7, 8]  # type: ignore[union-attr]
    assert decoder.page_rows == 4 and decoder.rejected["bad_value"] == 1
    klines = [kline_row(0, 1.5), kline_row(60_000, 1.8)]
    assert len(decoder.decode_frames(120_000, KLINES_1M, json.dumps(klines).encode())) == 2
    assert decoder.page_rows == 2
    assert len(decoder.decode_frames(9, DEPTH, json.dumps(depth_body(1, 9)).encode())) == 1
    assert decoder.page_rows == 0  # a snapshot is no page
    decoder.decode_frames(9, TRADES, json.dumps(rows).encode())
    assert decoder.decode_frames(9, TRADES, b"[{not json") == [] and decoder.page_rows == 0


def test_polled_depth_makes_a_usable_book_in_the_market() -> None:
    decoder, market = FrameDecoder(), Market(MarketConfig(stale_after_ms=5_000))
    (frame,) = decode_all(decoder, line(1, DEPTH, depth_body(77, 10_000)))
    assert isinstance(frame.event, PolledSnapshot) and frame.event.every_ms == 4_688
    assert market.on_frame(frame) is None  # no snapshot request: the poll stands alone
    st = market.state("BTCUSDT")
    assert market.book_usable("BTCUSDT") and market.now_ms == 10_000 and st.last_event_time == 10_000
    assert market.final()["BTCUSDT"]["best_bid"] == 100.0 and market.final()["BTCUSDT"]["update_id"] == 77
    # exchange time moves on (another symbol's poll): stale past the poll interval plus the tolerance
    other = decoder.decode_payload(
        2, DEPTH.replace("BTCUSDT", "ETHUSDT"), json.dumps(depth_body(5, 19_688)).encode()
    )
    assert other is not None and market.on_frame(other) is None
    assert market.now_ms == 19_688 and market.book_usable("BTCUSDT")
    later = decoder.decode_payload(
        3, DEPTH.replace("BTCUSDT", "ETHUSDT"), json.dumps(depth_body(6, 19_689)).encode()
    )
    assert later is not None and market.on_frame(later) is None and not market.book_usable("BTCUSDT")
    # a poll older than the book is dropped and counted
    old = decoder.decode_payload(4, DEPTH, json.dumps(depth_body(70, 20_000)).encode())
    assert old is not None and market.on_frame(old) is None
    assert market.counters["polled_snapshots_dropped"] == 1 and st.book.last_update_id == 77


def test_trades_overlapping_across_the_switches_are_counted_once() -> None:
    decoder, market = FrameDecoder(), Market(MarketConfig(trade_window_ms=300_000, large_trade_size=150.0))
    raw = [
        line(1, "btcusdt@aggTrade", ws_trade(1, 1_000)),
        line(2, "btcusdt@aggTrade", ws_trade(2, 1_100, qty=2.0)),
        # REST from the trade before the newest held (a lagging poll): 2 is a duplicate
        line(3, TRADES, [rest_trade(2, 1_100, qty=2.0), rest_trade(3, 1_200), rest_trade(4, 1_300)]),
        line(4, TRADES, [rest_trade(5, 1_400, qty=3.0)]),
        # back on the websockets: the stream repeats what the catch-up poll already had
        line(5, "btcusdt@aggTrade", ws_trade(4, 1_300)),
        line(6, "btcusdt@aggTrade", ws_trade(5, 1_400, qty=3.0)),
        line(7, "btcusdt@aggTrade", ws_trade(6, 1_500)),
    ]
    for raw_line in raw:
        for frame in decode_all(decoder, raw_line):
            market.on_frame(frame)
    st = market.state("BTCUSDT")
    assert st.last_agg_id == 6
    assert len(st.flow) == 6  # ids 1..6, each once
    assert st.flow.quote_volume == 100.0 * (1 + 2 + 1 + 1 + 3 + 1)
    assert st.flow.large_buys == 2  # the 200 and 300 USD trades, each once
    assert market.counters["out_of_order_trade"] == 3  # the three repeats, dropped by id


def test_polled_klines_replace_the_forming_bar_the_stream_left() -> None:
    decoder, market = FrameDecoder(), Market()
    stuck = {
        "e": "kline",
        "E": 60_500,
        "s": "BTCUSDT",
        "k": {"t": 60_000, "T": 119_999, "i": "1m", "o": "1", "c": "1.5", "h": "2", "l": "0.5", "v": "1",
              "n": 1, "x": False, "q": "1"},
    }  # fmt: skip
    for raw_line in (line(60_500, "btcusdt@kline_1m", stuck),):
        for frame in decode_all(decoder, raw_line):
            market.on_frame(frame)
    series = market.state("BTCUSDT").candles["1m"]
    assert series.forming is not None and series.forming.close == 1.5
    # the websockets are off: a poll at 150 s has the stuck bar closed and the next one forming
    rows = [kline_row(0, 0.9), kline_row(60_000, 1.7), kline_row(120_000, 1.8)]
    frames = decode_all(decoder, line(150_000, KLINES_1M, rows))
    assert [type(f.event) for f in frames] == [Kline, Kline, Kline] and all(
        f.kind is Kind.KLINE for f in frames
    )
    for frame in frames:
        market.on_frame(frame)
    closed: list[Candle] = series.bars(include_forming=False)
    assert [(c.open_time, c.close) for c in closed] == [(60_000, 1.7)]
    assert series.forming is not None and (series.forming.open_time, series.forming.close) == (120_000, 1.8)
    # the next poll updates the forming bar in place
    rows = [kline_row(60_000, 1.7), kline_row(120_000, 1.95)]
    for frame in decode_all(decoder, line(170_000, KLINES_1M, rows)):
        market.on_frame(frame)
    assert series.forming is not None and series.forming.close == 1.95 and len(series.closed) == 1
