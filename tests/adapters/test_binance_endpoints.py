"""Each REST endpoint decodes real Binance bodies into typed data and keeps the raw bytes for capture.

Bodies: the nautilus_trader fixtures (Binance documentation examples) and the REST responses inside the
real recordings (``rest:`` lines). The server answers with those bytes unchanged; the client must return
the same bytes, the path and query Binance was asked, and the typed values.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

from tapewatch.adapters.binance_rest import BinanceRest
from tapewatch.adapters.rest_session import RestResponse
from tapewatch.adapters.weight_budget import WeightBudget
from tapewatch.events import AggTrade, Candle, DepthSnapshot
from tapewatch.parse import CaptureLine, FrameDecoder
from tests.adapters.rest_test_server import FakeClock, Reply, RestTestServer
from tests.helpers import ALL_RECORDINGS, FIXTURES, USDM_CRYPTOFEED, recording_lines

T = TypeVar("T")
WALL = 1_700_000_000.0
_capture_line = msgspec.json.Decoder(CaptureLine)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def rest_lines(path: Path) -> list[tuple[bytes, CaptureLine]]:
    return [
        (line, cap)
        for line in recording_lines(path)
        if (cap := _capture_line.decode(line)).stream[:5] == "rest:"
    ]


@pytest.fixture
def server() -> Iterator[RestTestServer]:
    with RestTestServer() as srv:
        yield srv


def call(server: RestTestServer, fn: Any) -> tuple[Any, RestResponse, list[RestResponse]]:
    """Run ``fn(rest)`` against the server; return its value, response and what ``on_response`` saw."""
    captured: list[RestResponse] = []
    clock = FakeClock()

    async def main() -> tuple[Any, RestResponse]:
        budget = WeightBudget(1920, snapshot_capacity=960, clock=clock, sleep=clock.sleep)
        async with BinanceRest(
            server.url, budget, sleep=clock.sleep, wall_clock=lambda: WALL, rng=random.Random(1)
        ) as rest:
            rest.on_response = captured.append
            value, resp = await fn(rest)
            assert rest.budget.used() >= 1
            return value, resp

    value, resp = run(main())
    assert captured == [resp]
    return value, resp, captured


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.mark.parametrize("recording", ALL_RECORDINGS, ids=lambda p: p.name.split("-2")[0])
def test_depth_decodes_every_recorded_snapshot_like_replay_does(
    server: RestTestServer, recording: Path
) -> None:
    snapshots = [(line, cap) for line, cap in rest_lines(recording) if "/depth?" in cap.stream]
    assert snapshots
    for line, cap in snapshots:
        body = bytes(cap.data)
        query = dict(part.split("=") for part in cap.stream.split("?")[1].split("&"))
        server.route("/fapi/v1/depth", Reply(body=body), weight=20)
        snap, resp, _ = call(server, lambda rest, q=query: rest.depth(q["symbol"], int(q["limit"])))
        assert isinstance(snap, DepthSnapshot) and resp.body == body and resp.status == 200
        assert resp.path_and_query == f"/fapi/v1/depth?symbol={query['symbol']}&limit={query['limit']}"
        if cap.stream.startswith("rest:/fapi/"):
            # the capture stream name the client produces is the one recorded: replay reads it back
            assert resp.stream == cap.stream
        replayed = FrameDecoder().decode_capture_line(line)
        assert replayed is not None and replayed.event == snap
        assert len(snap.bids) > 100 and snap.bids[0][0] < snap.asks[0][0]


def test_depth_decodes_the_documented_body(server: RestTestServer) -> None:
    server.route("/fapi/v1/depth", Reply(body=fixture("usdt_futures_depth.json")))
    snap, resp, _ = call(server, lambda rest: rest.depth("btcusdt", 5))
    assert snap == DepthSnapshot(1027024, [(4.0, 431.0)], [(4.000002, 12.0)], 1589436922972, 1589436922959)
    assert resp.stream == "rest:/fapi/v1/depth?symbol=BTCUSDT&limit=5"


def test_exchange_info_decodes_the_recorded_usdm_answer(server: RestTestServer) -> None:
    (_, cap), *_ = [x for x in rest_lines(USDM_CRYPTOFEED) if x[1].stream == "rest:/fapi/v1/exchangeInfo"]
    server.route("/fapi/v1/exchangeInfo", Reply(body=bytes(cap.data)))
    info, resp, _ = call(server, lambda rest: rest.exchange_info())
    assert resp.stream == cap.stream and resp.body == bytes(cap.data)
    assert info.server_time == 1626858243909 and len(info.symbols) == 122
    assert sum(s.is_perpetual for s in info.symbols) == 119
    weight_limit = info.rate_limits[0]
    assert (weight_limit.rate_limit_type, weight_limit.interval, weight_limit.limit) == (
        "REQUEST_WEIGHT",
        "MINUTE",
        2400,
    )
    sushi = info.symbol("sushiusdt")
    assert sushi is not None and sushi.status == "TRADING" and sushi.quote_asset == "USDT"
    assert (sushi.tick_size, sushi.step_size, sushi.min_notional) == (0.001, 1.0, 5.0)
    btc = info.symbol("BTCUSDT")
    assert btc is not None and btc.tick_size == 0.01 and btc.step_size == 0.001
    assert info.symbol("NOPEUSDT") is None


def test_klines_rows_become_candles(server: RestTestServer) -> None:
    server.route("/fapi/v1/klines", Reply(body=fixture("http_futures_market_klines.json")), weight=5)
    candles, resp, _ = call(
        server, lambda rest: rest.klines("BTCUSDT", "1m", limit=500, start_ms=1499040000000)
    )
    assert (
        resp.path_and_query == "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=500&startTime=1499040000000"
    )
    assert candles == [
        Candle(
            open_time=1499040000000,
            close_time=1499644799999,
            interval="1m",
            open=0.0163479,
            close=0.015771,
            high=0.8,
            low=0.015758,
            volume=148976.11427815,
            trades=308,
            closed=True,
            quote_volume=2434.19055334,
            taker_buy_volume=1756.87402397,
            taker_buy_quote_volume=28.46694368,
        )
    ]


def test_the_forming_kline_is_not_closed(server: RestTestServer) -> None:
    now_ms = int(WALL * 1000)
    body = f'[[{now_ms - 60_000},"1","2","0.5","1.5","10",{now_ms + 59_999},"15",3,"4","6","0"]]'.encode()
    server.route("/fapi/v1/klines", Reply(body=body))
    candles, _, _ = call(server, lambda rest: rest.klines("BTCUSDT", "15m", limit=1))
    assert len(candles) == 1 and not candles[0].closed and candles[0].interval == "15m"


def test_agg_trades_become_stream_agg_trades(server: RestTestServer) -> None:
    server.route("/fapi/v1/aggTrades", Reply(body=fixture("http_futures_usdt_agg_trades.json")), weight=20)
    trades, resp, _ = call(server, lambda rest: rest.agg_trades("BTCUSDT", from_id=26129, limit=1000))
    assert resp.path_and_query == "/fapi/v1/aggTrades?symbol=BTCUSDT&fromId=26129&limit=1000"
    assert trades == [
        AggTrade("BTCUSDT", 1498793709153, 26129, 0.01633102, 4.70443515, 27781, 27781, 1498793709153, True)
    ]


def test_book_ticker_one_symbol_and_all(server: RestTestServer) -> None:
    body = fixture("http_futures_usdt_book_ticker.json")
    server.route("/fapi/v1/ticker/bookTicker", Reply(body=body), weight=2)
    ticker, resp, _ = call(server, lambda rest: rest.book_ticker("BTCUSDT"))
    assert resp.path_and_query == "/fapi/v1/ticker/bookTicker?symbol=BTCUSDT"
    assert (
        ticker.symbol,
        ticker.bid_price,
        ticker.bid_qty,
        ticker.ask_price,
        ticker.ask_qty,
        ticker.time,
    ) == (
        "BTCUSDT",
        4.0,
        431.0,
        4.000002,
        9.0,
        1589437530011,
    )
    server.route("/fapi/v1/ticker/bookTicker", Reply(body=b"[" + body + b"," + body + b"]"), weight=5)
    tickers, resp, _ = call(server, lambda rest: rest.book_ticker())
    assert resp.path_and_query == "/fapi/v1/ticker/bookTicker" and tickers == [ticker, ticker]


# Binance's documented example answer (no recording of this endpoint exists in the shared data).
TICKER_24HR = b"""{
  "symbol": "BTCUSDT", "priceChange": "-94.99999800", "priceChangePercent": "-95.960",
  "weightedAvgPrice": "0.29628482", "lastPrice": "4.00000200", "lastQty": "200.00000000",
  "openPrice": "99.00000000", "highPrice": "100.00000000", "lowPrice": "0.10000000",
  "volume": "8913.30000000", "quoteVolume": "15.30000000", "openTime": 1499783499040,
  "closeTime": 1499869899040, "firstId": 28385, "lastId": 28460, "count": 76
}"""


def test_ticker_24hr_one_symbol_and_all(server: RestTestServer) -> None:
    server.route("/fapi/v1/ticker/24hr", Reply(body=TICKER_24HR))
    ticker, resp, _ = call(server, lambda rest: rest.ticker_24hr("BTCUSDT"))
    assert resp.path_and_query == "/fapi/v1/ticker/24hr?symbol=BTCUSDT"
    assert (ticker.symbol, ticker.price_change, ticker.last_price, ticker.quote_volume, ticker.count) == (
        "BTCUSDT",
        -94.999998,
        4.000002,
        15.3,
        76,
    )
    server.route("/fapi/v1/ticker/24hr", Reply(body=b"[" + TICKER_24HR + b"]"), weight=40)
    tickers, resp, _ = call(server, lambda rest: rest.ticker_24hr())
    assert resp.path_and_query == "/fapi/v1/ticker/24hr" and tickers == [ticker]


def test_open_interest_and_server_time(server: RestTestServer) -> None:
    server.route(
        "/fapi/v1/openInterest",
        Reply(body=b'{"openInterest":"10659.509","symbol":"BTCUSDT","time":1589437530011}'),
    )
    oi, resp, _ = call(server, lambda rest: rest.open_interest("BTCUSDT"))
    assert (oi.symbol, oi.open_interest, oi.time) == ("BTCUSDT", 10659.509, 1589437530011)
    assert resp.stream == "rest:/fapi/v1/openInterest?symbol=BTCUSDT"
    server.route("/fapi/v1/time", Reply(body=b'{"serverTime":1499827319559}'))
    now, resp, _ = call(server, lambda rest: rest.server_time())
    assert now.server_time == 1499827319559 and resp.body == b'{"serverTime":1499827319559}'


def test_ping(server: RestTestServer) -> None:
    server.route("/fapi/v1/ping", Reply(body=b"{}"))

    async def main() -> RestResponse:
        async with BinanceRest(server.url, WeightBudget(10)) as rest:
            return await rest.ping()

    resp = run(main())
    assert (resp.status, resp.body, resp.path_and_query) == (200, b"{}", "/fapi/v1/ping")
