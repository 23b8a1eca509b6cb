"""The backup feed with more symbols than its REST weight budget keeps fresh.

At 1920 weight a minute the aggTrades poller (half of it, weight 20 a request) asks 48 times a minute: a round
over N symbols takes N x 1.25 s, and the engine does not evaluate a symbol whose last trade is more than
``trade_stale_after`` (60 s) older than the event. 60 symbols (a 75 s round) left every symbol stale for 15 s of
each round, 100 symbols (125 s) for more than half the time, silently. The feed now follows what the budget
keeps fresh, open signals first, then by score, and reports the rest as not followed.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, cast

import pytest

from realtime.backup_feed import BackupConfig, BackupFeed, FollowPlan, Poll, Polled, follow_plan
from realtime.service import FeedService
from realtime.sim.server import SimExchange
from tapewatch.adapters.binance_rest import BinanceRest
from tapewatch.engine import SignalEngine
from tapewatch.market import Market, MarketConfig
from tapewatch.parse import FrameDecoder
from tapewatch.settings import Settings, load_settings
from tapewatch.universe import tradable_perpetuals
from tests.realtime.control_helpers import sim_settings, wait_for
from tests.realtime.test_service_retained import _Pool, _Rest

# --- how many symbols the budget keeps fresh, as arithmetic ---------------------------------------------------


def test_the_default_budget_keeps_36_symbols_fresh() -> None:
    config = BackupConfig.from_settings(load_settings())
    assert config.trade_stale_after == 60.0
    assert config.spacing(Poll.TRADES) == pytest.approx(1.25)
    # the trades round within three quarters of trade_stale_after: 36 x 1.25 s = 45 s, 15 s left for a busy
    # symbol's further pages and slow answers
    assert config.max_symbols() == 36
    assert config.round_seconds(Poll.TRADES, 36) == pytest.approx(45.0)
    assert config.round_seconds(Poll.TRADES, 60) == pytest.approx(75.0)  # what 60 symbols would take
    # a longer trade_stale_after: then the klines bound, each 1m bar polled while still among the 3 polled
    # (2 closed bars of the shortest interval: 120 s over 2 intervals at 0.625 s a request)
    relaxed = BackupConfig.from_settings(load_settings(trade_stale_after=600))
    assert relaxed.max_symbols() == 96
    assert relaxed.round_seconds(Poll.KLINES, 96) == pytest.approx(120.0)
    # never less than one symbol
    assert BackupConfig(trade_stale_after=0.1).max_symbols() == 1


def test_symbols_with_open_signals_are_followed_first_then_in_score_order() -> None:
    ranked = ["A", "B", "C", "D", "E"]
    assert follow_plan(ranked, {"E"}, 3) == FollowPlan(("E", "A", "B"), ("C", "D"))
    assert follow_plan(ranked, {"D", "B"}, 1) == FollowPlan(("B",), ("D", "A", "C", "E"))  # in priority order
    assert follow_plan(ranked, (), 10) == FollowPlan(tuple(ranked), ())


@pytest.mark.parametrize("interval", ["", "m", "0m", "1x", "15"])
def test_an_interval_the_capacity_cannot_be_judged_by_is_refused(interval: str) -> None:
    with pytest.raises(ValueError, match="kline interval"):
        BackupConfig(intervals=("1m", interval))


# --- against the simulated exchange ---------------------------------------------------------------------------


def _symbol_of(polled: Polled) -> str:
    return polled.stream.split("symbol=")[1].split("&")[0].split("#")[0]


def _trades_polls(delivered: list[Polled], symbol: str) -> list[Polled]:
    return [p for p in delivered if "/aggTrades?" in p.stream and _symbol_of(p) == symbol]


async def _listed(settings: Settings, rest: BinanceRest, n: int) -> list[str]:
    """The first ``n`` tradable symbols in the exchange's listing order (the busiest first), as a universe."""
    info, _ = await rest.exchange_info()
    tradable = tradable_perpetuals(info.symbols)
    return [s.symbol for s in info.symbols if s.symbol in tradable][:n]


@pytest.mark.slow
def test_beyond_the_budget_the_followed_symbols_stay_fresh_and_the_rest_are_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """14 symbols at a trade_stale_after of 13 s: the budget (a trades request every 1.25 s) keeps 7 fresh (an
    8.75 s round). Polling all 14 (a 17.5 s round) left each symbol's trades stale for over 4 s a round."""
    delivered: list[Polled] = []
    stale: list[tuple[str, int]] = []

    async def scenario() -> tuple[list[str], BackupFeed, dict[str, int | float]]:
        async with SimExchange(port=0, seed=11, symbols=20, speed=1.0) as sim:
            settings = sim_settings(sim, tmp_path, "twtest:unused:", trade_stale_after=13)
            market = Market(MarketConfig.from_settings(settings))
            engine = SignalEngine(settings, market)  # judges freshness as the live engine does

            def deliver(polled: Polled) -> None:
                delivered.append(polled)
                for frame in polled.frames:
                    market.on_frame(frame)

            async with BinanceRest.from_settings(settings) as rest:
                universe = await _listed(settings, rest, 14)
                config = BackupConfig.from_settings(settings)
                feed = BackupFeed(
                    rest, FrameDecoder(), deliver, next_trade_id=market.next_trade_id, config=config
                )
                followed = universe[:7]  # by score: the universe's order
                feed.start(universe)
                await wait_for(
                    lambda: all(market.state(s).flow.last_time for s in followed),
                    "trades of each polled (the exchange starts with none)",
                    within=30,
                )
                # for a round and a half from here, every followed symbol's trades are fresh at every moment
                until = asyncio.get_running_loop().time() + 13
                while asyncio.get_running_loop().time() < until:
                    now = sim.venue.now_ms
                    for symbol in followed:
                        if engine.trades_state(market.state(symbol), now) != "fresh":
                            stale.append((symbol, now - market.state(symbol).flow.last_time))
                    await asyncio.sleep(0.1)
                metrics = feed.metrics()
                await feed.stop()
                return universe, feed, metrics

    with caplog.at_level(logging.INFO, logger="realtime.backup_feed"):
        universe, feed, metrics = asyncio.run(scenario())
    assert not stale, f"stale (symbol, trade age ms): {stale[:10]}"
    followed, left = universe[:7], universe[7:]
    # the others were not polled at all (no depth, trades or klines), not even by the catch-up at the stop
    assert {_symbol_of(p) for p in delivered} == set(followed)
    assert feed.plan == FollowPlan(tuple(followed), tuple(left))
    assert metrics["backup_max_symbols"] == 7
    assert metrics["backup_followed"] == 7 and metrics["backup_not_followed"] == 7
    assert 0 < metrics["backup_trades_round_ms"] <= 13_000 and metrics["backup_trades_rounds_late"] == 0
    assert feed.metrics()["backup_not_followed"] == 0  # off: nothing is left unfollowed
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    (said,) = [w for w in warnings if "not followed" in w]
    assert "keeps 7 of 14 symbols fresh" in said and ", ".join(left) in said
    started = [r.getMessage() for r in caplog.records if r.getMessage().startswith("backup feed on")]
    assert started == [
        "backup feed on: polling 7 of 14 symbols over REST, at most 7 kept fresh "
        "(depth every 1.1 s, aggTrades every 8.8 s, klines every 60.0 s)"
    ]


@pytest.mark.slow
def test_a_symbol_with_an_open_signal_takes_the_place_of_the_lowest_ranked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Room for 3 of 5 symbols (trade_stale_after 5 s): a signal opening on the fifth puts it first from the
    next round on; the third is then not followed, and the log says so each time the set changes."""
    delivered: list[Polled] = []
    open_signals: set[str] = set()

    async def scenario() -> tuple[list[str], BackupFeed, int, int]:
        async with SimExchange(port=0, seed=5, symbols=8, speed=1.0) as sim:
            settings = sim_settings(sim, tmp_path, "twtest:unused:", trade_stale_after=5)
            market = Market(MarketConfig.from_settings(settings))

            def deliver(polled: Polled) -> None:
                delivered.append(polled)
                for frame in polled.frames:
                    market.on_frame(frame)

            async with BinanceRest.from_settings(settings) as rest:
                universe = await _listed(settings, rest, 5)
                feed = BackupFeed(
                    rest,
                    FrameDecoder(),
                    deliver,
                    next_trade_id=market.next_trade_id,
                    config=BackupConfig.from_settings(settings),
                    open_symbols=lambda: open_signals,
                )
                feed.start(universe)
                assert feed.plan == FollowPlan(tuple(universe[:3]), tuple(universe[3:]))
                await wait_for(lambda: bool(_trades_polls(delivered, universe[2])), "the third symbol polled")
                open_signals.add(universe[4])
                await wait_for(
                    lambda: bool(_trades_polls(delivered, universe[4])), "the fifth polled", within=20
                )
                switched = len(delivered)
                await wait_for(lambda: bool(_trades_polls(delivered[switched:], universe[1])), "a round on")
                before_stop = len(delivered)
                await feed.stop()  # the catch-up polls the followed symbols only
                return universe, feed, switched, before_stop

    with caplog.at_level(logging.INFO, logger="realtime.backup_feed"):
        universe, feed, switched, before_stop = asyncio.run(scenario())
    first, second, third, fourth, fifth = universe
    assert feed.plan == FollowPlan((fifth, first, second), (third, fourth))
    assert not _trades_polls(delivered[switched:], third)  # its place went to the open signal
    assert not any(_symbol_of(p) == fourth for p in delivered)
    assert sorted(_symbol_of(p) for p in delivered[before_stop:]) == sorted([fifth, first, second])
    said = [r.getMessage() for r in caplog.records if "not followed" in r.getMessage()]
    assert len(said) == 2
    assert said[0].endswith(
        f"2 not followed (not polled, not evaluated until the websockets are back): {fourth}, {fifth}"
    )
    assert said[1].endswith(f": {third}, {fourth}")


def test_the_service_hands_its_open_signals_to_the_backup_feed(tmp_path: Path) -> None:
    """The service's backup feed asks the engine which symbols have open signals (they are polled first)."""
    service = FeedService(load_settings(var_dir=tmp_path), rest=cast(Any, _Rest()), pool=cast(Any, _Pool()))
    assert service.backup._open_symbols == service.engine.open_symbols
