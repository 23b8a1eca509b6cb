"""A minute missing from a signal's 1-minute klines (a bad row the REST client dropped, an exchange outage)
leaves its batch outcome unsettled, retried by the next pass, instead of silently skipping the minute where
the stop may have been hit; on the day's last pass (``settle_holes``) a hole is settled from the candles that exist.

Signals and prices are those of ``outcome_helpers`` (entry 100, stop 99, R = 1): the stop costs -1.0995 R.
"""

from __future__ import annotations

import asyncio
import logging
import random

import msgspec
import pytest

from assets.outcomes import TRADE_PAGE, fetch_klines, fetch_trades
from tapewatch.adapters.binance_rest import BinanceRest
from tapewatch.adapters.weight_budget import WeightBudget
from tapewatch.events import Candle
from tapewatch.outcome import MinuteRole, OpenSignal, OutcomeParams, OutcomeState, TradeSpan
from tapewatch.outcome_batch import batch_outcome, last_end, missing_minutes
from tests.adapters.rest_test_server import FakeClock, Reply, RestTestServer
from tests.tapewatch.outcome_helpers import M1, MONDAY, absolute, binance_candles, make_signal

P = OutcomeParams()
#: A HIGH LONG signal: 99.5 at 1 min, the stop (99.0) hit in minute 3 only, then 99.2 .. 99.3 to the bound.
LOSS_IN_MINUTE_3 = [(0, 100.0), (M1, 99.5), (3 * M1 + 10_000, 99.0), (4 * M1, 99.2), (46 * M1, 99.3)]
STOP_R = -1.0995
LOG = "tapewatch.outcome_batch"


def history(signal: OpenSignal) -> list[Candle]:
    return binance_candles(absolute(signal, LOSS_IN_MINUTE_3))


def without(candles: list[Candle], *minutes: int) -> list[Candle]:
    return [c for c in candles if (c.open_time - MONDAY) // M1 not in minutes]


def test_quiet_minutes_are_zero_volume_candles_not_holes() -> None:
    sig = make_signal()
    candles = history(sig)
    assert [c.trades for c in candles[:4]] == [1, 1, 0, 1]  # minute 2: nothing traded, a flat candle
    assert missing_minutes(sig, candles, last_end(sig, P) + 1) == []
    outcome = batch_outcome(sig, candles, P)
    assert outcome is not None and outcome.state is OutcomeState.STOPPED
    assert outcome.pnl_r == pytest.approx(STOP_R)


def test_a_missing_minute_where_the_stop_was_hit_leaves_the_outcome_unsettled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sig = make_signal()
    holed = without(history(sig), 3)
    with caplog.at_level(logging.WARNING, logger=LOG):
        assert batch_outcome(sig, holed, P) is None
        assert batch_outcome(sig, holed, P, settle_holes=False) is None  # the first pass: unsettled again
    first = caplog.records[0]
    assert "BTCUSDT" in first.getMessage() and "1 minute(s): 2024-03-04 00:03 UTC" in first.getMessage()
    assert "retried by the next pass" in first.getMessage()
    assert first.__dict__["symbol"] == "BTCUSDT" and first.__dict__["missing_minutes"] == 1
    # a hole after the exit (the stop in minute 3) changes nothing: settled at once
    outcome = batch_outcome(sig, without(history(sig), 10, 11), P)
    assert outcome is not None and outcome.state is OutcomeState.STOPPED
    assert outcome.pnl_r == pytest.approx(STOP_R)


def test_a_hole_on_the_last_pass_is_settled_from_what_exists_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exchange outage: no trading in minute 3, so the candles that exist are the whole truth."""
    sig = make_signal()
    holed = without(history(sig), 3)
    with caplog.at_level(logging.WARNING, logger=LOG):
        outcome = batch_outcome(sig, holed, P, settle_holes=True)
    assert outcome is not None and outcome.finished
    assert outcome.state is OutcomeState.EXPIRED  # 99.2 .. 99.3 never reach the stop
    [record] = caplog.records
    assert "settled from the candles that exist" in record.getMessage()
    assert record.__dict__["settled_with_holes"] is True


def kline_row(candle: Candle, *, bad: bool = False) -> list[object]:
    """``candle`` as a Binance klines row; ``bad``: with its high below its low (an impossible candle)."""
    high = candle.low - 1 if bad else candle.high
    return [
        candle.open_time, str(candle.open), str(high), str(candle.low), str(candle.close), "1",
        candle.close_time, "100", candle.trades, "0.5", "50", "0",
    ]  # fmt: skip


def test_a_kline_row_dropped_by_the_rest_client_is_retried_until_the_exchange_sends_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through a real HTTP server: the first answer has minute 3 (the stop) impossible, so the client drops it
    (``dropped_rows``); the outcome stays unsettled. The next pass gets the minute and settles the stop."""
    sig = make_signal()
    candles = history(sig)
    first = msgspec.json.encode([kline_row(c, bad=c.open_time == MONDAY + 3 * M1) for c in candles])
    second = msgspec.json.encode([kline_row(c) for c in candles])
    wall = (last_end(sig, P) + 3_600_000) / 1000  # an hour after the end: every candle is closed

    async def one_pass(url: str) -> tuple[list[Candle], dict[str, int]]:
        clock = FakeClock()
        budget = WeightBudget(1920, snapshot_capacity=960, clock=clock, sleep=clock.sleep)
        async with BinanceRest(
            url, budget, sleep=clock.sleep, wall_clock=lambda: wall, rng=random.Random(1)
        ) as rest:
            return await fetch_klines(rest, sig, P), dict(rest.stats.dropped_rows)

    with RestTestServer() as server:
        server.route("/fapi/v1/klines", [Reply(body=first), Reply(body=second)])
        got, dropped = asyncio.run(one_pass(server.url))
        assert dropped == {"klines": 1}
        with caplog.at_level(logging.WARNING, logger=LOG):
            assert batch_outcome(sig, got, P) is None
        assert any("2024-03-04 00:03" in r.getMessage() for r in caplog.records if r.name == LOG)
        got, dropped = asyncio.run(one_pass(server.url))
    assert dropped == {}
    outcome = batch_outcome(sig, got, P)
    assert outcome is not None and outcome.state is OutcomeState.STOPPED
    assert outcome.pnl_r == pytest.approx(STOP_R)


def test_creation_trades_page_on_past_a_full_page_with_a_bad_trade() -> None:
    """A full aggTrades page (``TRADE_PAGE`` rows) of a deciding minute with one impossible trade, which the
    client drops: the page still counts as full, so the next page is fetched and its trades are kept."""
    sig = make_signal(created=MONDAY + 30_000)
    rows = [
        {"a": i, "p": "0" if i == 7 else "100.5", "q": "1", "f": i, "l": i, "T": sig.created + i, "m": False}
        for i in range(TRADE_PAGE)
    ]
    last = {
        "a": TRADE_PAGE,
        "p": "101.5",
        "q": "1",
        "f": TRADE_PAGE,
        "l": TRADE_PAGE,
        "T": sig.created + 2_000,
    }
    wall = (last_end(sig, P) + 3_600_000) / 1000

    async def fetch(url: str) -> list[tuple[int, float, int]] | str:
        clock = FakeClock()
        budget = WeightBudget(1920, snapshot_capacity=960, clock=clock, sleep=clock.sleep)
        async with BinanceRest(
            url, budget, sleep=clock.sleep, wall_clock=lambda: wall, rng=random.Random(1)
        ) as rest:
            span = TradeSpan(minute=MONDAY, start=sig.created, end=MONDAY + M1 - 1, role=MinuteRole.CREATION)
            return await fetch_trades(rest, sig.symbol, span, int(wall * 1000))

    with RestTestServer() as server:
        server.route(
            "/fapi/v1/aggTrades",
            [
                Reply(body=msgspec.json.encode(rows)),
                Reply(body=msgspec.json.encode([rows[-1], last | {"m": True}])),
            ],
        )
        got = asyncio.run(fetch(server.url))
    assert isinstance(got, list)
    assert len(got) == TRADE_PAGE  # 999 good rows of the first page + the second page's new trade
    assert got[-1] == (sig.created + 2_000, 101.5, TRADE_PAGE)  # with its aggTrade id
