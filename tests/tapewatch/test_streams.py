"""Stream names and the routed websocket paths."""

from __future__ import annotations

import pytest

from tapewatch.streams import Kind, UnknownStream, parse_stream, route, symbol_streams


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("btcusdt@depth", "public"),
        ("btcusdt@depth@100ms", "public"),
        ("btcusdt@depth@0ms", "public"),
        ("btcusdt@depth@500ms", "public"),
        ("btcusdt@bookTicker", "public"),
        ("btcusdt@trade", "public"),
        ("btcusdt@aggTrade", "market"),
        ("btcusdt@kline_1m", "market"),
        ("btcusdt@kline_15m", "market"),
        ("btcusdt@markPrice@1s", "market"),
        ("btcusdt@forceOrder", "market"),
    ],
)
def test_route(name: str, path: str) -> None:
    assert route(name) == path


def test_parse_stream() -> None:
    assert parse_stream("ethusdt@kline_15m") == ("ETHUSDT", Kind.KLINE, "15m")
    assert parse_stream("bchusd_perp@depth@100ms") == ("BCHUSD_PERP", Kind.DEPTH, "100ms")


@pytest.mark.parametrize(
    "name", ["", "btcusdt", "@depth", "btcusdt@depth@7ms", "btcusdt@bogus", "b tc@trade"]
)
def test_unknown_streams_are_rejected(name: str) -> None:
    with pytest.raises(UnknownStream):
        parse_stream(name)


def test_symbol_streams_cover_book_trades_and_candles() -> None:
    streams = symbol_streams("BTCUSDT", 100, ("1m", "15m"))
    assert streams == [
        "btcusdt@depth@100ms",
        "btcusdt@bookTicker",
        "btcusdt@aggTrade",
        "btcusdt@kline_1m",
        "btcusdt@kline_15m",
    ]
    assert symbol_streams("BTCUSDT", 250, ())[0] == "btcusdt@depth"
    assert {route(s) for s in streams} == {"public", "market"}
