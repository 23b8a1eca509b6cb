"""The feed stats the service publishes: how many seconds of trades its trade window covers after a symbol
joins (or the service starts), so the emergency sensor never reads a filling window as a dead market."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any, cast

import msgspec
import pytest

from realtime.service import FeedService
from realtime.status_view import status_table, symbol_feed, window_covered_s
from tapewatch.adapters.universe_store import live_liquidity
from tapewatch.errors import FatalError
from tapewatch.events import AggTrade, DepthSnapshot, DepthUpdate
from tapewatch.parse import Frame
from tapewatch.settings import load_settings
from tapewatch.streams import Kind
from tapewatch.universe import Reason
from tapewatch.universe_checks import LiveLiquidity, emergency_check, emergency_rules_from


class _Pool:
    """The transport: records the streams asked for, delivers nothing."""

    def __init__(self) -> None:
        self.streams: list[str] = []

    def set_streams(self, streams: Sequence[str]) -> None:
        self.streams = list(streams)


class _Rest:
    """No candle history in this test."""

    async def klines(self, *args: Any, **kwargs: Any) -> Any:
        raise FatalError("no REST in this test")


def test_window_covered_grows_from_joining_to_the_full_window() -> None:
    assert window_covered_s(None, 1_000_000, 300_000) is None
    assert window_covered_s(1_000_000, 1_062_000, 300_000) == 62.0
    assert window_covered_s(1_000_000, 1_400_000, 300_000) == 300.0
    assert window_covered_s(1_000_000, 999_000, 300_000) == 0.0  # the clock stepped back: not negative


def test_the_feed_stats_say_how_much_of_the_trade_window_is_filled() -> None:
    service = FeedService(load_settings(), rest=cast(Any, _Rest()), pool=cast(Any, _Pool()))

    async def join() -> None:
        service.set_universe(["BTCUSDT"])
        await asyncio.sleep(0)  # let the history task fail quietly

    asyncio.run(join())
    joined = service.joined_ms("BTCUSDT")
    assert joined is not None
    assert symbol_feed(service, "BTCUSDT", now_ms=joined + 62_000).window_covered_s == 62.0
    assert symbol_feed(service, "BTCUSDT", now_ms=joined + 900_000).window_covered_s == 300.0
    assert symbol_feed(service, "ETHUSDT", now_ms=joined).window_covered_s is None  # never joined


def _frame(symbol: str, kind: Kind, event: Any, recv: int) -> Frame:
    stream = (
        f"{symbol.lower()}@{kind.value}"
        if kind is not Kind.SNAPSHOT
        else f"rest:/fapi/v1/depth?symbol={symbol}"
    )
    return Frame(recv=recv, stream=stream, symbol=symbol, kind=kind, event=event)


def test_a_book_waiting_for_a_resync_snapshot_is_not_silent_while_its_symbol_trades() -> None:
    """A book waiting for a snapshot (REST depth failing, a ban, the snapshot retry backoff) holds its diffs
    unapplied, so its own last event time stops; the symbol's diffs and trades still arrive. The emergency
    sensor must not read that wait as "no event for N s: live volume $0" and exclude a busy symbol; a symbol
    from which nothing arrives at all still is silent."""
    service = FeedService(load_settings(), rest=cast(Any, _Rest()), pool=cast(Any, _Pool()))
    market = service.market
    t0 = 1_700_000_000_000
    for symbol in ("ALTUSDT", "DEADUSDT"):
        market.on_frame(
            _frame(symbol, Kind.DEPTH, DepthUpdate(symbol, t0, t0, 99, 101, 98, [(9.999, 1.0)], []), t0)
        )
        market.on_frame(_frame(symbol, Kind.SNAPSHOT, DepthSnapshot(100, [(10.0, 5.0)], [(10.001, 5.0)]), t0))
        assert market.book_usable(symbol)
    # ALTUSDT's book misses a diff and waits for its snapshot (which never comes) for 400 s, while its
    # diffs and trades keep arriving; DEADUSDT sends nothing more at all
    gap = t0 + 100
    market.on_frame(
        _frame("ALTUSDT", Kind.DEPTH, DepthUpdate("ALTUSDT", gap, gap, 150, 151, 149, [], []), gap)
    )
    last = gap
    for k in range(1, 401):
        last = gap + k * 1000
        diff = DepthUpdate("ALTUSDT", last, last, 151 + k, 151 + k, 150 + k, [], [])
        market.on_frame(_frame("ALTUSDT", Kind.DEPTH, diff, last))
        trade = AggTrade("ALTUSDT", last, k, 10.0, 2_000.0, k, k, last, k % 2 == 0)
        market.on_frame(_frame("ALTUSDT", Kind.AGG_TRADE, trade, last))
    alt, dead = symbol_feed(service, "ALTUSDT", now_ms=last), symbol_feed(service, "DEADUSDT", now_ms=last)
    assert alt.state != "synced" and alt.spread is None  # the book is not usable meanwhile
    assert market.state("ALTUSDT").book.last_event_time == t0  # what was published as its newest event
    assert alt.last_event_ms == last and dead.last_event_ms == t0
    rules = emergency_rules_from(load_settings())
    flowing = LiveLiquidity("BTCUSDT", 1e-5, 5e6, 5e8, last, last, None, 300.0)
    strikes: dict[str, int] = {}
    for tick in range(rules.strikes):
        now = last + tick * 30_000
        published = {
            s: msgspec.structs.replace(f, updated_ms=now) for s, f in (("ALTUSDT", alt), ("DEADUSDT", dead))
        }
        live = {**live_liquidity(published), "BTCUSDT": dataclasses.replace(flowing, updated_ms=now)}
        check = emergency_check(["BTCUSDT", "ALTUSDT", "DEADUSDT"], live, rules, strikes, now_ms=now)
        strikes = check.strikes
        assert "ALTUSDT" not in strikes
    assert [(e.symbol, e.reason) for e in check.exclusions] == [("DEADUSDT", Reason.BELOW_MIN_VOLUME)]
    assert "no event for" in check.exclusions[0].detail


def test_the_live_table_says_how_many_symbols_it_leaves_out(monkeypatch: pytest.MonkeyPatch) -> None:
    service = FeedService(load_settings(), rest=cast(Any, _Rest()), pool=cast(Any, _Pool()))
    # the totals line (the whole metrics snapshot needs a live transport and REST client; not tested here)
    totals = dict.fromkeys(
        ("messages", "synced", "symbols", "retained_symbols", "malformed", "gaps", "resyncs", "reconnects"), 0
    )
    monkeypatch.setattr(service, "metrics", lambda: totals | {"book_checks": 0, "book_mismatches": 0})
    symbols = [f"S{i:02d}USDT" for i in range(20)]

    async def join() -> None:
        service.set_universe(symbols)
        await asyncio.sleep(0)  # let the history tasks fail quietly

    asyncio.run(join())
    lines = status_table(service).splitlines()
    shown = [line.split()[0] for line in lines[1:] if line.split()[0] in symbols]
    assert shown == symbols[:12]
    assert lines[-2].startswith("… and 8 more symbols (any symbol: the dashboard's Live page")
    assert lines[-1].startswith("messages ")
    every = status_table(service, limit=20).splitlines()
    assert len(every) == 22 and not any(line.startswith("…") for line in every)  # all shown: no such line
