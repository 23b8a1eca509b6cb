"""One bad row of a REST list answer loses only that row, never the answer (klines, aggTrades, tickers,
book tickers, exchangeInfo contracts) — in the REST client and in the frame decoder that replays the capture.

A depth snapshot with one bad level is still rejected whole (``test_binance_rest``): a book without the
level would be wrong, so the caller fetches another one.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import msgspec
import pytest

from tapewatch.adapters.binance_rest import BinanceRest
from tapewatch.adapters.rest_session import RestResponse
from tapewatch.adapters.universe_fetch import NO_TICKER, exchange_symbols, failed_share, fetch_statistics
from tapewatch.adapters.weight_budget import WeightBudget
from tapewatch.errors import FeedError
from tapewatch.events import AggTrade, Kline, KlineHistory
from tapewatch.parse import FrameDecoder
from tapewatch.settings import Settings
from tapewatch.universe import Reason, minimums_from, select_universe
from tests.adapters.rest_test_server import FakeClock, Reply, RestTestServer

T = TypeVar("T")
WALL = 1_700_000_150.0
T0 = 1_700_000_000_000  # open time of the first 1m row; the third one is still forming at WALL


@pytest.fixture
def server() -> Iterator[RestTestServer]:
    with RestTestServer() as srv:
        yield srv


def call(
    server: RestTestServer, fn: Callable[[BinanceRest], Awaitable[T]]
) -> tuple[T, BinanceRest, list[RestResponse]]:
    """``fn(rest)`` against the server; its value, the client (for its counters) and what was captured."""
    captured: list[RestResponse] = []
    clock = FakeClock()

    async def main() -> tuple[T, BinanceRest]:
        budget = WeightBudget(1920, snapshot_capacity=960, clock=clock, sleep=clock.sleep)
        async with BinanceRest(
            server.url, budget, sleep=clock.sleep, wall_clock=lambda: WALL, rng=random.Random(1)
        ) as rest:
            rest.on_response = captured.append
            return await fn(rest), rest

    value, rest = asyncio.run(main())
    return value, rest, captured


def kline(open_time: int, **prices: Any) -> list[Any]:
    row: list[Any] = [
        open_time,
        "100",
        "110",
        "90",
        "105",
        "1",
        open_time + 59_999,
        "100",
        5,
        "0.5",
        "50",
        "0",
    ]
    for name, value in prices.items():
        row[{"open": 1, "high": 2, "low": 3, "close": 4}[name]] = value
    return row


BAD_KLINES: dict[str, tuple[dict[str, Any], str, str]] = {
    "high below low": ({"high": "80"}, "bad_value", "impossible candle"),
    "NaN close": ({"close": "NaN"}, "bad_value", "> 0"),
    "zero open": ({"open": "0"}, "bad_value", "> 0"),
    "null open": ({"open": None}, "schema", "got `null`"),
}


def klines_body(**bad: Any) -> bytes:
    return msgspec.json.encode([kline(T0), kline(T0 + 60_000, **bad), kline(T0 + 120_000)])


@pytest.mark.parametrize("case", BAD_KLINES, ids=list(BAD_KLINES))
def test_a_bad_kline_row_is_dropped_logged_and_counted_the_rest_is_kept(
    server: RestTestServer, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    bad, _, why = BAD_KLINES[case]
    server.route("/fapi/v1/klines", Reply(body=klines_body(**bad)))
    with caplog.at_level(logging.WARNING, logger="tapewatch.adapters.binance_rest"):
        (candles, _), rest, captured = call(server, lambda r: r.klines("BTCUSDT", "1m", limit=3))
    assert [c.open_time for c in candles] == [T0, T0 + 120_000]
    assert [c.closed for c in candles] == [True, False]
    assert rest.stats.dropped_rows == {"klines": 1} and not rest.stats.malformed
    assert len(captured) == 1  # the answer is used, so it is captured (byte-exact, bad row included)
    [record] = caplog.records
    message = record.getMessage()
    assert "BTCUSDT 1m kline" in message and f"open time {T0 + 60_000}" in message and why in message


def test_a_klines_answer_whose_every_row_is_bad_is_still_rejected(server: RestTestServer) -> None:
    body = msgspec.json.encode([kline(T0, high="80"), kline(T0 + 60_000, low="0")])
    server.route("/fapi/v1/klines", Reply(body=body))

    async def fetch(rest: BinanceRest) -> BinanceRest:
        with pytest.raises(FeedError, match="all 2 rows are bad"):
            await rest.klines("BTCUSDT", "1m", limit=2)
        return rest

    rest, _, captured = call(server, fetch)
    assert rest.stats.malformed == {"klines": 1} and not rest.stats.dropped_rows and captured == []


@pytest.mark.parametrize("case", BAD_KLINES, ids=list(BAD_KLINES))
def test_captured_kline_history_with_a_bad_row_replays_its_good_rows(case: str) -> None:
    bad, reason, _ = BAD_KLINES[case]
    decoder = FrameDecoder()
    stream = "rest:/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=3"
    frame = decoder.decode_payload(int(WALL * 1000), stream, klines_body(**bad))
    assert frame is not None and isinstance(frame.event, KlineHistory)
    assert [c.open_time for c in frame.event.candles] == [T0, T0 + 120_000]
    assert decoder.rejected == {reason: 1} and decoder.rejected_by_stream == {(reason, stream): 1}


def test_polled_klines_with_a_bad_row_keep_their_good_bars() -> None:
    decoder = FrameDecoder()
    stream = "rest:/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=3#poll&every_ms=60000"
    frames = decoder.decode_frames(int(WALL * 1000), stream, klines_body(high="80"))
    events = [f.event for f in frames]
    assert all(isinstance(e, Kline) for e in events)
    assert [e.candle.open_time for e in events if isinstance(e, Kline)] == [T0, T0 + 120_000]
    assert decoder.rejected == {"bad_value": 1}


def agg_trade(agg_id: int, price: str = "100") -> dict[str, Any]:
    return {"a": agg_id, "p": price, "q": "1", "f": agg_id, "l": agg_id, "T": T0 + agg_id, "m": True}


AGG_PAGE = msgspec.json.encode([agg_trade(1), agg_trade(2, price="0"), agg_trade(3)])


def test_a_bad_agg_trade_is_dropped_and_the_page_kept(server: RestTestServer) -> None:
    server.route("/fapi/v1/aggTrades", Reply(body=AGG_PAGE), weight=20)
    (trades, _), rest, _ = call(server, lambda r: r.agg_trades("BTCUSDT", from_id=1, limit=1000))
    assert [t.agg_id for t in trades] == [1, 3]  # id 2 is missing, as a lost trade would be
    assert rest.stats.dropped_rows == {"aggTrades": 1}


def test_a_captured_agg_trades_page_with_a_bad_trade_replays_its_good_trades() -> None:
    decoder = FrameDecoder()
    stream = "rest:/fapi/v1/aggTrades?symbol=BTCUSDT&fromId=1&limit=1000"
    frames = decoder.decode_frames(int(WALL * 1000), stream, AGG_PAGE)
    assert [f.event.agg_id for f in frames if isinstance(f.event, AggTrade)] == [1, 3]
    assert decoder.rejected == {"bad_value": 1}


def ticker(symbol: str, last_price: str = "4.0", quote_volume: str = "1000") -> dict[str, Any]:
    return {
        "symbol": symbol, "priceChange": "-1", "priceChangePercent": "-0.5", "weightedAvgPrice": "4",
        "lastPrice": last_price, "openPrice": "5", "highPrice": "6", "lowPrice": "3", "volume": "250",
        "quoteVolume": quote_volume, "openTime": T0, "closeTime": T0 + 86_399_999, "count": 76,
    }  # fmt: skip


TICKERS = msgspec.json.encode([ticker("BTCUSDT"), ticker("BADUSDT", last_price="-1"), ticker("ETHUSDT")])


def test_one_bad_24h_ticker_does_not_lose_the_others(server: RestTestServer) -> None:
    server.route("/fapi/v1/ticker/24hr", Reply(body=TICKERS), weight=40)
    (tickers, _), rest, _ = call(server, lambda r: r.ticker_24hr())
    assert [t.symbol for t in tickers] == ["BTCUSDT", "ETHUSDT"]
    assert rest.stats.dropped_rows == {"ticker24hr": 1}


def test_the_universe_scan_measures_the_symbols_whose_ticker_is_good(server: RestTestServer) -> None:
    server.route("/fapi/v1/ticker/24hr", Reply(body=TICKERS), weight=40)
    server.route(
        "/fapi/v1/depth", Reply(body=b'{"lastUpdateId":1,"bids":[["3.9","10"]],"asks":[["4.1","10"]]}')
    )
    server.route("/fapi/v1/openInterest", Reply(body=b'{"symbol":"X","openInterest":"5","time":1}'))
    settings = Settings(min_24h_volume=500)
    symbols = ["BTCUSDT", "BADUSDT", "ETHUSDT"]
    report, _, _ = call(server, lambda r: fetch_statistics(r, symbols, settings, full=False))
    assert [s.symbol for s in report.stats] == ["BADUSDT", "BTCUSDT", "ETHUSDT"]
    assert report.fetched == 2 and report.failed == 0
    # BADUSDT lost its ticker row: kept with nothing measured and the reason, never dropped without a word
    bad = report.stats[0]
    assert report.no_ticker == ("BADUSDT",) and bad.errors == (NO_TICKER,)
    assert bad.quote_volume_24h is None and bad.spread is None and bad.open_interest_usd is None
    assert report.stats[1].quote_volume_24h == 1000.0 and report.stats[1].spread is not None
    assert failed_share(report) == pytest.approx(1 / 3)
    # a rescan records it out as missing_statistic, naming the missing ticker
    decision = {d.symbol: d for d in select_universe(report.stats, 5, minimums_from(settings)).decisions}
    assert (
        decision["BADUSDT"].reason is Reason.MISSING_STATISTIC and "24h ticker" in decision["BADUSDT"].detail
    )


def test_one_bad_book_ticker_does_not_lose_the_others(server: RestTestServer) -> None:
    good = {"symbol": "BTCUSDT", "bidPrice": "4", "bidQty": "1", "askPrice": "4.1", "askQty": "2"}
    body = msgspec.json.encode([good, {**good, "symbol": "BADUSDT", "bidPrice": "NaN"}])
    server.route("/fapi/v1/ticker/bookTicker", Reply(body=body), weight=5)
    (tickers, _), rest, _ = call(server, lambda r: r.book_ticker())
    assert [t.symbol for t in tickers] == ["BTCUSDT"] and rest.stats.dropped_rows == {"bookTicker": 1}


def contract(symbol: str, **fields: Any) -> dict[str, Any]:
    return {
        "symbol": symbol, "contractType": "PERPETUAL", "status": "TRADING", "quoteAsset": "USDT",
        "marginAsset": "USDT", "pricePrecision": 2, **fields,
    }  # fmt: skip


def test_one_bad_contract_in_exchange_info_does_not_lose_the_others(server: RestTestServer) -> None:
    body = msgspec.json.encode(
        {
            "serverTime": T0,
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400}
            ],
            "symbols": [contract("BTCUSDT"), contract("BADUSDT", pricePrecision=None), contract("ETHUSDT")],
        }
    )
    server.route("/fapi/v1/exchangeInfo", Reply(body=body))
    symbols, rest, _ = call(server, exchange_symbols)
    assert symbols == ["BTCUSDT", "ETHUSDT"] and rest.stats.dropped_rows == {"exchangeInfo": 1}
    (info, _), _, _ = call(server, lambda r: r.exchange_info())
    assert info.server_time == T0 and info.rate_limits[0].limit == 2400
