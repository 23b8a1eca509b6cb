"""No trade silently lost: after dropped websocket connections and a quiet aggTrade stream, the service fills
the aggTrade id gaps from REST (simulated exchange), its trade windows hold every trade id without a hole
(or ``trades_lost`` names the ones never received), and a replay of its capture counts the same."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from realtime.backup_feed import Polled
from realtime.capture import iter_capture
from realtime.replay import run_replay
from realtime.service import FeedService
from realtime.sim.server import SimExchange
from realtime.trade_fill import MAX_FILL_PAGES, TradeFiller
from tapewatch.adapters.binance_rest import BinanceRest
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import RedisState
from tapewatch.events import AggTrade
from tapewatch.market import TRADE_GAP_COUNTERS, Market, MarketConfig
from tapewatch.parse import Frame, FrameDecoder
from tapewatch.settings import load_settings
from tapewatch.streams import Kind
from tapewatch.trade_gaps import FILL_PAGE_SIZE, TradeFillNeeded
from tapewatch.universe import tradable_perpetuals
from tests.realtime.control_helpers import all_synced, running_service, sim_settings, wait_for
from tests.realtime.test_service_sim import run_with, settings_for, universe_of

pytestmark = [pytest.mark.db, pytest.mark.e2e, pytest.mark.slow]


def first_streamed_ids(capture: Path) -> dict[str, int]:
    """Per symbol, the id of the first aggTrade the capture holds (the first the market applied), a row of a
    polled or fill page included (the backup feed may deliver a symbol's first trades)."""
    decoder = FrameDecoder()
    first: dict[str, int] = {}
    for line in iter_capture([capture]):
        frame = decoder.decode_capture_line(line)
        for f in [frame] if frame is not None else decoder.take_pending():
            if f.kind is Kind.AGG_TRADE and isinstance(f.event, AggTrade):
                first.setdefault(f.symbol, f.event.agg_id)
    return first


async def exchange_trades(rest: BinanceRest, symbol: str, first: int, last: int) -> list[AggTrade]:
    """The exchange's aggTrades ``first..last`` by ``fromId`` pages."""
    rows: list[AggTrade] = []
    while first <= last:
        page, _ = await rest.agg_trades(symbol, from_id=first, limit=1000)
        page = [t for t in page if t.agg_id <= last]
        if not page:
            break
        rows += page
        first = page[-1].agg_id + 1
    return rows


async def assert_windows_hold_the_exchange_trades(
    service: FeedService, rest: BinanceRest, capture: Path
) -> int:
    """Every symbol's 1 h window holds exactly the exchange's trades from the first streamed one to the last
    applied one, the ids ``trades_lost`` names aside; returns how many symbols were compared."""
    first = first_streamed_ids(capture)
    compared = 0
    for symbol in service.universe:
        st = service.market.state(symbol)
        if symbol not in first or st.fill is not None:
            continue
        rows = await exchange_trades(rest, symbol, first[symbol], st.last_agg_id)
        ids = [t.agg_id for t in rows]
        assert ids == list(range(first[symbol], st.last_agg_id + 1)), f"{symbol}: the exchange's ids skip"
        lost = {i for a, b in st.lost for i in range(a, b + 1)}
        kept = [t for t in rows if t.agg_id not in lost]
        assert len(st.vwap) == len(kept), (symbol, len(st.vwap), len(kept), list(st.lost))
        assert st.vwap.q == pytest.approx(sum(t.qty for t in kept), rel=1e-9), symbol
        assert st.vwap.pq == pytest.approx(sum(t.price * t.qty for t in kept), rel=1e-9), symbol
        assert st.vwap.last_price == kept[-1].price, symbol
        compared += 1
    return compared


def test_trade_gaps_after_dropped_connections_are_filled_and_replay_counts_the_same(
    tmp_path: Path, redis_url: str, redis_keys: Keyspace
) -> None:
    symbols: list[str] = []
    compared: list[int] = []

    async def faults(sim: SimExchange) -> None:
        await asyncio.sleep(2.5)  # trades flowing on every symbol
        sim.faults.stale(f"{symbols[0].lower()}@aggTrade", 1.5)  # its trades meanwhile never streamed
        await asyncio.sleep(2.0)
        sim.faults.drop_connections()  # every stream reconnects: trades in between are missed
        await asyncio.sleep(1.5)

    async def scenario() -> FeedService:
        async with SimExchange(port=0, seed=21, symbols=8, speed=1.0) as sim:
            # a generous give-up: a loaded test box must not turn a slow fill into lost trades
            settings = settings_for(sim, tmp_path, redis_keys.prefix, trade_fill_timeout=60)
            symbols.extend(await universe_of(settings))
            service = await run_with(sim, settings, redis_url, 4.0, faults)
            async with BinanceRest.from_settings(settings) as rest:
                compared.append(
                    await assert_windows_hold_the_exchange_trades(service, rest, tmp_path / "capture")
                )
            return service

    service = asyncio.run(scenario())
    market = service.market
    totals = market.totals()
    metrics = service.metrics()
    assert totals["trade_gaps"] >= 1, "the quiet aggTrade stream left no gap"
    assert totals["trades_filled"] >= 1 and metrics["trade_fill_pages"] >= 1
    assert metrics["trade_fill_failed"] == 0
    assert totals["trades_pending"] == sum(st.fill.missing for st in market.symbols.values() if st.fill)
    assert totals["trades_missing"] == (
        totals["trades_filled"] + totals["trades_lost"] + totals["trades_skipped"] + totals["trades_pending"]
    )
    assert market.counters["trade_time_regressed"] == 0  # every trade entered in id order
    assert compared[0] >= len(service.universe) - 1, "too few symbols compared with the exchange"
    # the capture holds the fill answers where they were applied: a replay counts the same
    summary = run_replay([tmp_path / "capture"], load_settings(trade_fill_timeout=60)).summary
    assert {k: summary[k] for k in TRADE_GAP_COUNTERS} == {k: totals[k] for k in TRADE_GAP_COUNTERS}
    assert summary["trade_fill_requests"] == totals["trade_gaps"] - totals["trade_gaps_skipped"]
    assert summary["final"] == market.final()
    # each depth stream restart (connect, then the reconnect) is captured where it restarted the book: without
    # it a replay could keep the old book when the new connection's first diff continued the old sequence
    restarts = sum(n for key, n in service.counters.items() if key.startswith("depth_restart_"))
    captured = sum(b"control:depth_restart" in line for line in iter_capture([tmp_path / "capture"]))
    assert restarts > len(service.universe) and captured == restarts


def test_a_failed_fill_is_counted_and_the_gap_given_up_by_trade_time(
    tmp_path: Path, redis_url: str, redis_keys: Keyspace
) -> None:
    symbols: list[str] = []

    async def faults(sim: SimExchange) -> None:
        await asyncio.sleep(2.5)
        sim.faults.rest_error(503, count=1000, path="/fapi/v1/aggTrades")  # every fill fails
        sim.faults.stale(f"{symbols[0].lower()}@aggTrade", 1.5)
        await asyncio.sleep(2.0)

    async def scenario() -> FeedService:
        async with SimExchange(port=0, seed=21, symbols=8, speed=1.0) as sim:
            settings = settings_for(
                sim, tmp_path, redis_keys.prefix, trade_fill_timeout=0.5, rest_max_retries=0
            )
            symbols.extend(await universe_of(settings))
            return await run_with(sim, settings, redis_url, 3.0, faults)

    service = asyncio.run(scenario())
    totals = service.market.totals()
    st = service.market.state(symbols[0])
    assert totals["trade_gaps"] >= 1
    assert service.metrics()["trade_fill_failed"] >= 1
    assert totals["trades_filled"] == 0
    assert st.fill is None and st.lost, "the gap was not given up by trade time"
    assert totals["trades_lost"] == sum(
        b - a + 1 for sym in service.market.symbols.values() for a, b in sym.lost
    )
    summary = run_replay([tmp_path / "capture"], load_settings(trade_fill_timeout=0.5)).summary
    assert {k: summary[k] for k in TRADE_GAP_COUNTERS} == {k: totals[k] for k in TRADE_GAP_COUNTERS}
    # a failed request leaves nothing in the capture (only fetched pages are written): replay cannot count
    # trade_fill_failed, and does not pretend to
    pages = sum(b"/fapi/v1/aggTrades?" in line for line in iter_capture([tmp_path / "capture"]))
    assert pages == service.metrics()["trade_fill_pages"]
    assert "trade_fill_failed" not in summary


def test_trades_missed_on_the_switch_back_from_the_backup_feed_are_filled(
    tmp_path: Path, redis_url: str, redis_keys: Keyspace, redis_state: RedisState
) -> None:
    """The last REST poll and the first websocket trade after the switch back leave trades in between: they
    are fetched, never silently skipped."""

    async def scenario() -> tuple[FeedService, int]:
        async with SimExchange(port=0, seed=9, symbols=6, speed=2.0) as sim:
            settings = sim_settings(sim, tmp_path, redis_keys.prefix, universe_size=3, trade_fill_timeout=60)
            async with running_service(settings, redis_url) as run:
                service = run.service
                universe = list(service.universe)
                await wait_for(lambda: all_synced(service), "books synced from the websockets")
                await asyncio.to_thread(redis_state.set_backup_feed, True, source="test")
                await wait_for(lambda: service.backup.on, "the backup feed on")
                last = {s: service.market.state(s).last_agg_id for s in universe}
                await wait_for(
                    lambda: all(service.market.state(s).last_agg_id > last[s] for s in universe),
                    "polled trades",
                )
                # a slow resubscription: the first websocket trades of the busiest symbol come 2 s late
                sim.faults.stale(f"{universe[0].lower()}@aggTrade", 2.0)
                await asyncio.to_thread(redis_state.set_backup_feed, False, source="test")
                await wait_for(lambda: not service.backup.on and all_synced(service), "websockets again")
                last = {s: service.market.state(s).last_agg_id for s in universe}
                await wait_for(
                    lambda: (
                        all(service.market.state(s).last_agg_id > last[s] for s in universe)
                        and not any(service.market.state(s).fill for s in universe)
                    ),
                    "websocket trades after the switch back, gaps closed",
                )
            async with BinanceRest.from_settings(settings) as rest:
                compared = await assert_windows_hold_the_exchange_trades(service, rest, tmp_path / "capture")
            return service, compared

    service, compared = asyncio.run(scenario())
    totals = service.market.totals()
    assert compared == len(service.universe)
    assert totals["trade_gaps"] >= 1, "no trade missed on the switch back"
    assert totals["trades_lost"] == 0
    assert totals["trades_missing"] == totals["trades_filled"] >= 1
    summary = run_replay([tmp_path / "capture"], load_settings(trade_fill_timeout=60)).summary
    assert {k: summary[k] for k in TRADE_GAP_COUNTERS} == {k: totals[k] for k in TRADE_GAP_COUNTERS}
    assert summary["final"] == service.market.final()


async def symbol_with_trades(rest: BinanceRest, count: int) -> tuple[str, list[AggTrade]]:
    """A symbol of the simulated exchange and its newest trades, once it has at least ``count``."""
    info, _ = await rest.exchange_info()
    symbol = sorted(tradable_perpetuals(info.symbols))[0]

    async def enough() -> list[AggTrade]:
        while True:
            trades, _ = await rest.agg_trades(symbol, limit=1000)
            if len(trades) >= count:
                return trades
            await asyncio.sleep(0.2)

    return symbol, await asyncio.wait_for(enough(), 60)


def ws_frame(trade: AggTrade) -> Frame:
    return Frame(1, f"{trade.symbol.lower()}@aggTrade", trade.symbol, Kind.AGG_TRADE, trade)


def test_fill_pages_ask_for_the_missing_ids_only(tmp_path: Path) -> None:
    """Rows past the gap would repeat the held trades (counted out of order): a page asks for no more than
    the ids still missing; a gap wider than a page takes several, each from where the last one ended."""
    assert MarketConfig().trade_fill_max_ids == MAX_FILL_PAGES * FILL_PAGE_SIZE  # a wider gap is skipped

    async def scenario() -> dict[str, tuple[Market, list[Polled], AggTrade]]:
        async with SimExchange(port=0, seed=3, symbols=3, speed=5.0) as sim:
            settings = sim_settings(sim, tmp_path, "twtest:unused:")
            async with BinanceRest.from_settings(settings) as rest:
                _, trades = await symbol_with_trades(rest, 400)
                cases = {"narrow": (trades[-400], trades[-396]), "wide": (trades[-300], trades[-49])}
                out = {}
                for name, (before, after) in cases.items():
                    market = Market()
                    delivered: list[Polled] = []

                    def deliver(
                        polled: Polled, market: Market = market, into: list[Polled] = delivered
                    ) -> None:
                        into.append(polled)
                        for frame in polled.frames:
                            market.on_frame(frame)

                    filler = TradeFiller(rest, FrameDecoder(), deliver, wanted=market.fill_pending, limit=100)
                    assert market.on_frame(ws_frame(before)) is None
                    request = market.on_frame(ws_frame(after))
                    assert isinstance(request, TradeFillNeeded)
                    await filler.fill(request)
                    out[name] = market, delivered, after
                return out

    results = asyncio.run(scenario())
    for name, limits in {"narrow": ["3"], "wide": ["100", "100", "50"]}.items():
        market, delivered, after = results[name]
        assert [p.stream.split("limit=")[1] for p in delivered] == limits, name
        st = market.state(after.symbol)
        assert st.fill is None and st.last_agg_id == after.agg_id, name
        assert market.counters["out_of_order_trade"] == 0, name  # no held trade fetched again
        totals = market.totals()
        assert totals["trades_filled"] == totals["trades_missing"] == sum(map(int, limits)), name
        assert len(st.vwap) == totals["trades_filled"] + 2, name
