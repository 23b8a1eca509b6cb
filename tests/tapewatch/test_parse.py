"""Decoding frames into typed events; every bad frame is counted by reason, never raised."""

from __future__ import annotations

import json

import pytest

from tapewatch.events import AggTrade, BookTicker, Candle, DepthSnapshot, DepthUpdate, Kline, KlineHistory
from tapewatch.parse import MALFORMED_REASONS, FrameDecoder
from tapewatch.polled import poll_stream
from tapewatch.streams import Kind
from tests.helpers import FIXTURES

KLINES_POLL = poll_stream("rest:/fapi/v1/klines?symbol=BTCUSDT&interval=15m&limit=2", 900_000)


def capture_line(stream: str, data: object) -> bytes:
    return json.dumps({"recv": 1, "stream": stream, "data": data}).encode()


def fixture(name: str) -> object:
    return json.loads((FIXTURES / name).read_text())


def test_documented_payloads_decode_into_typed_events() -> None:
    d = FrameDecoder()
    depth = d.decode_capture_line(
        capture_line("btcusdt@depth@100ms", fixture("ws_futures_usdt_depth_update.json"))
    )
    assert depth is not None and isinstance(depth.event, DepthUpdate)
    assert depth.symbol == "BTCUSDT" and depth.kind is Kind.DEPTH
    assert all(isinstance(p, float) and isinstance(q, float) for p, q in depth.event.bids)
    # unknown extra fields (ps, st) are tolerated
    extra = d.decode_capture_line(capture_line("btcusdt@depth", fixture("ws_futures_depth_update.json")))
    assert extra is not None and isinstance(extra.event, DepthUpdate)
    ticker = d.decode_capture_line(capture_line("bnbusdt@bookTicker", fixture("ws_futures_book_ticker.json")))
    assert ticker is not None and isinstance(ticker.event, BookTicker) and ticker.symbol == "BNBUSDT"
    snap = d.decode_capture_line(
        capture_line("rest:/fapi/v1/depth?symbol=BTCUSDT&limit=1000", fixture("usdt_futures_depth.json"))
    )
    assert snap is not None and isinstance(snap.event, DepthSnapshot) and snap.symbol == "BTCUSDT"
    assert d.rejected == {}


def test_trade_and_kline_payloads() -> None:
    d = FrameDecoder()
    agg = {
        "e": "aggTrade",
        "E": 5,
        "a": 7,
        "s": "ETHUSDT",
        "p": "3000.5",
        "q": "2.000",
        "f": 1,
        "l": 2,
        "T": 4,
        "m": True,
    }
    frame = d.decode_capture_line(capture_line("ethusdt@aggTrade", agg))
    assert frame is not None and isinstance(frame.event, AggTrade)
    assert frame.event.price == 3000.5 and frame.event.buyer_is_maker
    k = {
        "t": 0, "T": 59_999, "s": "ETHUSDT", "i": "1m", "f": 1, "L": 2, "o": "1", "c": "2", "h": "3",
        "l": "0.5", "v": "10", "n": 2, "x": True, "q": "15", "V": "5", "Q": "7", "B": "0",
    }  # fmt: skip
    frame = d.decode_capture_line(
        capture_line("ethusdt@kline_1m", {"e": "kline", "E": 60_000, "s": "ETHUSDT", "k": k})
    )
    assert frame is not None and isinstance(frame.event, Kline)
    assert frame.event.candle.closed and frame.event.candle.quote_volume == 15.0


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"recv": 1, "stream": "btcusdt@aggTrade", "data": {', "malformed_json"),
        (b"not json at all", "malformed_json"),
        (b'{"recv": "x", "stream": 1}', "malformed_json"),
        (capture_line("btcusdt@aggTrade", {"e": "aggTrade", "s": "BTCUSDT"}), "schema"),
        (
            capture_line("btcusdt@bookTicker", {"u": 1, "s": "X", "b": "NaN", "B": "1", "a": "2", "A": "1"}),
            "bad_value",
        ),
        (
            capture_line("btcusdt@bookTicker", {"u": 1, "s": "X", "b": "0", "B": "1", "a": "2", "A": "1"}),
            "bad_value",
        ),
        (
            capture_line("btcusdt@bookTicker", {"u": 1, "s": "X", "b": "1", "B": "-1", "a": "2", "A": "1"}),
            "bad_value",
        ),
        (
            capture_line("btcusdt@bookTicker", {"u": 1, "s": "X", "b": "inf", "B": "1", "a": "2", "A": "1"}),
            "bad_value",
        ),
        (
            capture_line("btcusdt@bookTicker", {"u": 1, "s": "X", "b": "abc", "B": "1", "a": "2", "A": "1"}),
            "schema",
        ),
        (capture_line("btcusdt@markPriceXYZ", {}), "unknown_stream"),
        (capture_line("no-at-sign", {}), "unknown_stream"),
        (capture_line("rest:/fapi/v1/exchangeInfo", {}), "ignored"),
    ],
)
def test_bad_frames_are_counted_by_reason(line: bytes, reason: str) -> None:
    d = FrameDecoder()
    assert d.decode_capture_line(line) is None
    assert d.rejected == {reason: 1}


def test_zero_quantity_in_a_diff_is_valid_but_negative_is_not() -> None:
    d = FrameDecoder()
    ev = {
        "e": "depthUpdate",
        "E": 1,
        "T": 1,
        "s": "BTCUSDT",
        "U": 1,
        "u": 2,
        "pu": 0,
        "b": [["1.0", "0"]],
        "a": [],
    }
    assert d.decode_capture_line(capture_line("btcusdt@depth@100ms", ev)) is not None
    ev["b"] = [["1.0", "-2"]]
    assert d.decode_capture_line(capture_line("btcusdt@depth@100ms", ev)) is None
    assert d.rejected_by_stream == {("bad_value", "btcusdt@depth@100ms"): 1}


def test_ws_envelope() -> None:
    d = FrameDecoder()
    payload = {
        "e": "aggTrade",
        "E": 5,
        "a": 7,
        "s": "ETHUSDT",
        "p": "1",
        "q": "2",
        "f": 1,
        "l": 2,
        "T": 4,
        "m": False,
    }
    frame = d.decode_ws_frame(99, json.dumps({"stream": "ethusdt@aggTrade", "data": payload}))
    assert frame is not None and frame.recv == 99 and frame.kind is Kind.AGG_TRADE
    assert d.decode_ws_frame(99, b'{"result": null, "id": 1}') is None
    assert d.rejected == {"malformed_json": 1}


def test_a_captured_pause_decodes_to_a_control_frame_for_the_engine_only() -> None:
    from tapewatch.events import CONTROL_PAUSED, ControlChange

    decoder = FrameDecoder()
    line = b'{"recv":1,"stream":"' + CONTROL_PAUSED.encode() + b'","data":{"paused":true,"reason":"ops"}}'
    assert decoder.decode_capture_line(line) is None  # never handed to the market's per-message path
    (frame,) = decoder.take_pending()
    assert frame.kind is Kind.CONTROL and frame.event == ControlChange(paused=True, reason="ops")
    bad = b'{"recv":1,"stream":"' + CONTROL_PAUSED.encode() + b'","data":{"paused":"maybe"}}'
    assert decoder.decode_capture_line(bad) is None and decoder.take_pending() == []
    assert decoder.rejected["schema"] == 1


def test_captured_tick_sizes_decode_to_a_control_frame_for_the_engine_only() -> None:
    from tapewatch.events import CONTROL_INSTRUMENTS, Instruments

    decoder = FrameDecoder()
    line = (
        b'{"recv":1,"stream":"' + CONTROL_INSTRUMENTS.encode() + b'","data":{"tick_sizes":{"BTCUSDT":"0.1"}}}'
    )
    assert decoder.decode_capture_line(line) is None  # never handed to the market's per-message path
    (frame,) = decoder.take_pending()
    assert frame.kind is Kind.CONTROL and frame.event == Instruments(tick_sizes={"BTCUSDT": "0.1"})
    bad = b'{"recv":1,"stream":"' + CONTROL_INSTRUMENTS.encode() + b'","data":{"tick_sizes":{"BTCUSDT":0.1}}}'
    assert decoder.decode_capture_line(bad) is None and decoder.take_pending() == []
    assert decoder.rejected["schema"] == 1 and "unknown_stream" not in decoder.rejected


def _kline(high: str, low: str, open_: str = "100", close: str = "100") -> dict[str, object]:
    k = {"t": 0, "T": 899_999, "i": "15m", "o": open_, "c": close, "h": high, "l": low, "v": "1", "n": 1,
         "x": True, "q": "100"}  # fmt: skip
    return {"e": "kline", "E": 900_000, "s": "BTCUSDT", "k": k}


@pytest.mark.parametrize(
    ("high", "low", "open_", "close"),
    [("90", "110", "100", "100"), ("101", "99", "102", "100"), ("101", "99", "100", "98")],
    ids=["high_below_low", "open_above_high", "close_below_low"],
)
def test_an_impossible_candle_is_rejected_as_a_bad_value(high: str, low: str, open_: str, close: str) -> None:
    """Such a bar would stay in the history and fail every evaluation of its symbol (candle_features raises)."""
    d = FrameDecoder()
    stream = "btcusdt@kline_15m"
    kline = _kline(high, low, open_, close)
    assert d.decode_capture_line(capture_line(stream, kline)) is None  # the fast path and the two-step way
    assert d.decode_ws_frame(1, json.dumps({"stream": stream, "data": kline})) is None
    assert d.rejected_by_stream == {("bad_value", stream): 2}
    row = [0, open_, high, low, close, "1", 899_999, "100", 1, "0", "0", "0"]
    for rest in ("rest:/fapi/v1/klines?symbol=BTCUSDT&interval=15m&limit=2", KLINES_POLL):
        # the bad row is dropped and counted, the good one kept (see test_rest_bad_rows)
        good = [0, "100", "101", "99", "100", "1", 899_999, "100", 1, "0", "0", "0"]
        (frame,) = d.decode_frames(1, rest, json.dumps([good, row]).encode())
        event = frame.event
        candles = (
            event.candles
            if isinstance(event, KlineHistory)
            else [event.candle]
            if isinstance(event, Kline)
            else []
        )
        assert [(c.high, c.low) for c in candles] == [(101.0, 99.0)]
        assert d.rejected_by_stream[("bad_value", rest)] == 1
    with pytest.raises(ValueError, match="impossible candle"):
        Candle(0, 899_999, "15m", float(open_), float(close), float(high), float(low), 1.0, 1, True, 100.0)


def test_a_flat_or_touching_candle_is_possible() -> None:
    d = FrameDecoder()
    for high, low, open_, close in (("100", "100", "100", "100"), ("101", "99", "99", "101")):
        frame = d.decode_capture_line(capture_line("btcusdt@kline_15m", _kline(high, low, open_, close)))
        assert frame is not None and isinstance(frame.event, Kline)
    assert d.rejected == {}


AGG_ETH = {
    "e": "aggTrade",
    "E": 5,
    "a": 7,
    "s": "ETHUSDT",
    "p": "3000",
    "q": "2",
    "f": 1,
    "l": 2,
    "T": 4,
    "m": True,
}
TICKER_ETH = {
    "e": "bookTicker",
    "u": 9,
    "s": "ETHUSDT",
    "b": "3000",
    "B": "1",
    "a": "3001",
    "A": "1",
    "E": 5,
    "T": 5,
}


@pytest.mark.parametrize("payload", [AGG_ETH, TICKER_ETH], ids=["aggTrade", "bookTicker"])
def test_a_payload_of_another_symbol_than_its_stream_is_rejected_not_applied_to_it(
    payload: dict[str, object],
) -> None:
    """An ETHUSDT trade or ticker on a btcusdt stream would enter BTCUSDT's windows or top-of-book proof: both the
    capture fast path and the websocket path reject it as ``symbol_mismatch``, a malformed reason (so it reaches
    the ``malformed`` metric and the replay summary)."""
    stream = f"btcusdt@{payload['e']}"
    d = FrameDecoder()
    assert d.decode_capture_line(capture_line(stream, payload)) is None
    assert d.decode_ws_frame(1, json.dumps({"stream": stream, "data": payload})) is None
    assert d.rejected == {"symbol_mismatch": 2} and d.rejected_by_stream == {("symbol_mismatch", stream): 2}
    assert "symbol_mismatch" in MALFORMED_REASONS
    ok = d.decode_capture_line(capture_line(f"ethusdt@{payload['e']}", payload))  # its own stream: taken
    assert ok is not None and ok.symbol == "ETHUSDT" and d.decoded == 1


def test_a_kline_of_another_interval_than_its_stream_is_rejected() -> None:
    """A ``kline_1m`` frame whose candle says ``"i": "7x"`` would start a candle series of its own, silently."""
    k = {
        "t": 0, "T": 59_999, "s": "ETHUSDT", "i": "7x", "f": 1, "L": 2, "o": "1", "c": "2", "h": "3",
        "l": "0.5", "v": "10", "n": 2, "x": True, "q": "15", "V": "5", "Q": "7", "B": "0",
    }  # fmt: skip
    payload = {"e": "kline", "E": 60_000, "s": "ETHUSDT", "k": k}
    d = FrameDecoder()
    assert d.decode_capture_line(capture_line("ethusdt@kline_1m", payload)) is None
    assert d.decode_ws_frame(1, json.dumps({"stream": "ethusdt@kline_1m", "data": payload})) is None
    assert d.rejected == {"interval_mismatch": 2} and "interval_mismatch" in MALFORMED_REASONS
    k["i"] = "1m"
    frame = d.decode_capture_line(capture_line("ethusdt@kline_1m", payload))
    assert frame is not None and isinstance(frame.event, Kline) and frame.event.candle.interval == "1m"
