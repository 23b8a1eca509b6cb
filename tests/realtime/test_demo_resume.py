"""A resumed demo simulator continues the market: prices go on from where they stopped, ids keep rising, and
the episodes planted after the resume are new ones (not the first run's again under new signal ids)."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import httpx

from realtime.demo import load_start, save_clock, serve_sim
from realtime.sim.resume import MarketResume, capture, resume_seed
from realtime.sim.venue import Venue

from .sim.support import run

START = 1_767_571_200_000  # 2026-01-05 00:00 UTC
SEED = 11
SYMBOLS = 5
RATE = 60.0  # episodes x60: several within minutes
RUN_MS = 15 * 60_000


def _run(venue: Venue, ms: int) -> None:
    end = venue.now_ms + ms
    while venue.now_ms < end:
        venue.market.step()
        for sym in venue.market.symbols:  # what the publisher would drain
            sym.changes.clear()
            sym.tops.clear()
            sym.trades.clear()


def _planted(venue: Venue, since: int) -> set[tuple[str, str, int, int]]:
    """The episodes as (symbol, direction, start and length relative to the run's start)."""
    return {(e.symbol, e.direction, e.start_ms - since, e.end_ms - e.start_ms) for e in venue.market.episodes}


def test_a_resumed_sim_goes_on_from_the_saved_prices_and_plants_new_episodes(tmp_path: Path) -> None:
    first = Venue(SEED, SYMBOLS, START, episode_rate_scale=RATE)
    _run(first, RUN_MS)
    clock = tmp_path / "demo" / "sim-clock.json"
    saved = capture(first)
    save_clock(clock, first.now_ms, saved)
    stopped_at = first.now_ms

    start = load_start(clock, START, SEED)  # the wall clock is behind the accelerated one
    assert start.resumed and start.start_ms == stopped_at and start.seed == resume_seed(SEED, stopped_at)
    assert start.seed != SEED and start.market == saved
    second = Venue(start.seed, SYMBOLS, start.start_ms, episode_rate_scale=RATE, resume=start.market)

    for sym in second.market.symbols:
        spec, was = sym.spec, saved.symbols[sym.spec.symbol]
        mid = (sym.bids.best() + sym.asks.best()) / 2 * spec.tick
        assert abs(mid - was.price) <= spec.tick, (
            spec.symbol,
            was.price,
            mid,
        )  # the book starts where it was
        last = second.candles[spec.index].forming[60_000].c * spec.tick
        assert abs(last - was.price) <= spec.tick, (spec.symbol, was.price, last)  # klines/ticker end there
        assert sym.trade_id == was.next_trade_id and sym.agg_id == was.next_agg_id  # ids go on rising
    assert saved.next_update_id is not None  # the book update ids go on too, one for each seeded book
    assert [s.last_id for s in second.market.symbols] == [saved.next_update_id + k for k in range(SYMBOLS)]

    first_trades: dict[str, tuple[int, int]] = {}  # symbol -> (agg id, tick) of its first trade after resume
    end = second.now_ms + 60_000
    while second.now_ms < end and len(first_trades) < SYMBOLS:
        second.market.step()
        for sym in second.market.symbols:
            if sym.trades and sym.spec.symbol not in first_trades:
                first_trades[sym.spec.symbol] = (sym.trades[0][0], sym.trades[0][1])
            sym.changes.clear()
            sym.tops.clear()
            sym.trades.clear()
    assert len(first_trades) == SYMBOLS
    for sym in second.market.symbols:
        spec, was = sym.spec, saved.symbols[sym.spec.symbol]
        agg, tick = first_trades[spec.symbol]
        assert agg == was.next_agg_id
        # A taker sweeps a few levels of a book seeded at the saved mid: a few ticks, never a jump.
        band = max(8 * spec.spread_ticks * spec.tick, 0.0005 * was.price)
        assert abs(tick * spec.tick - was.price) <= band, (spec.symbol, was.price, tick * spec.tick)

    _run(second, RUN_MS - (second.now_ms - stopped_at))
    before, after = _planted(first, START), _planted(second, stopped_at)
    assert before and after
    assert not before & after  # the first run's episodes are not planted again
    assert {(s, d, t) for s, d, t, _ in before} != {(s, d, t) for s, d, t, _ in after}


def test_a_fresh_start_keeps_the_seed_and_an_old_clock_file_resumes_the_clock_only(tmp_path: Path) -> None:
    clock = tmp_path / "sim-clock.json"
    fresh = load_start(clock, 1_000, SEED)
    assert (fresh.start_ms, fresh.seed, fresh.market, fresh.resumed) == (1_000, SEED, None, False)

    clock.write_text(
        json.dumps({"now_ms": 5_000, "saved_at": 1})
    )  # written by a demo before prices were saved
    old = load_start(clock, 1_000, SEED)
    assert (old.start_ms, old.market, old.resumed) == (5_000, None, True)
    assert old.seed == resume_seed(SEED, 5_000) != SEED
    assert load_start(clock, 1_000, 0).start_ms == 5_000

    clock.write_text(json.dumps({"now_ms": 5_000, "market": {"symbols": {"BTCUSDT": {"price": -1}}}}))
    bad = load_start(clock, 1_000, SEED)  # a market that cannot be read: the clock still resumes
    assert (bad.start_ms, bad.market, bad.resumed) == (5_000, None, True)

    venue = Venue(SEED, 3, START, history_minutes=10)
    market = capture(venue)
    partial = MarketResume({"ETHUSDT": market.symbols["ETHUSDT"]}, market.next_update_id)
    resumed = Venue(7, 3, START, history_minutes=10, resume=partial)
    fresh_venue = Venue(7, 3, START, history_minutes=10)
    assert resumed.specs[1].price == market.symbols["ETHUSDT"].price
    assert resumed.specs[0] == fresh_venue.specs[0] and resumed.specs[2] == fresh_venue.specs[2]  # not saved


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_demo_simulator_saves_its_market_and_a_restart_goes_on_from_it(tmp_path: Path) -> None:
    clock = tmp_path / "demo" / "sim-clock.json"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"

    async def serve_for(seconds: float) -> list[dict[str, str]]:
        task = asyncio.create_task(
            serve_sim("127.0.0.1", port, seed=SEED, symbols=3, speed=5, clock_file=clock)
        )
        try:
            async with httpx.AsyncClient(base_url=url, timeout=5) as client:
                for _ in range(200):
                    try:
                        tops = (await client.get("/fapi/v1/ticker/bookTicker")).json()
                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.05)
                await asyncio.sleep(seconds)
            return list(tops)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    run(serve_for(1.5))
    saved = json.loads(clock.read_text())
    market = MarketResume.from_json(saved["market"])
    assert set(market.symbols) == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}

    tops = run(serve_for(0.0))  # the restarted simulator's first book tops
    for top in tops:
        price = market.symbols[top["symbol"]].price
        bid, ask = float(top["bidPrice"]), float(top["askPrice"])
        assert abs((bid + ask) / 2 - price) <= 0.001 * price, (top, price)
    assert json.loads(clock.read_text())["now_ms"] >= saved["now_ms"]
