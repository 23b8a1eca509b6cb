"""A symbol that leaves the universe while it has an open signal stays followed until the signal ends.

Its aggTrade (and 1m kline) streams stay subscribed, its book is let go and no candidate is evaluated on it; the
signal's stop trade closes it (STOP, not a stale EXPIRED at its hold bound), then the symbol is unsubscribed. The
capture of that run replays to the same candidates and signals (the retention is a captured frame)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from realtime.capture import CaptureWriter
from realtime.replay import run_replay
from realtime.service import FeedService
from realtime.ws_delivery import FrameQueue, Received, StreamsStarted
from realtime.ws_stats import TransportStats
from tapewatch.adapters.rest_session import RestStats
from tapewatch.engine import EngineOutput
from tapewatch.errors import FatalError
from tapewatch.events import Candle, DepthSnapshot
from tapewatch.settings import load_settings
from tapewatch.signal import Signal
from tests.adapters.signal_builders import entry
from tests.tapewatch.engine_rig import candles15

X, Y = "BTCUSDT", "ETHUSDT"
T = 1_700_000_100_000  # 15 minutes after the 15m context of engine_rig.candles15 ends


class _Pool:
    """The transport: records the streams asked for, delivers nothing (the test hands frames to the service)."""

    def __init__(self) -> None:
        self.streams: list[str] = []
        self.stats = TransportStats()
        self.frames = FrameQueue(10)
        self.closed = False
        self.close_timeout: float | None = None

    def set_streams(self, streams: Sequence[str]) -> None:
        self.streams = list(streams)

    def of(self, symbol: str) -> list[str]:
        return sorted(s for s in self.streams if s.startswith(symbol.lower() + "@"))

    def routes_wanted(self) -> set[str]:
        return {"public"} if self.streams else set()

    def route_frames(self) -> dict[str, int]:
        return {"public": 0, "market": 0}

    async def close(self, *, close_timeout: float | None = None) -> None:
        self.closed = True
        self.close_timeout = close_timeout


@dataclass(frozen=True)
class _Answer:
    stream: str
    body: bytes


class _Rest:
    """The 15m kline history of every symbol (a context for the setup); no 1m history."""

    def __init__(self) -> None:
        self.stats = RestStats()  # the client's counters the service publishes

    async def klines(self, symbol: str, interval: str, limit: int, **kwargs: Any) -> tuple[None, _Answer]:
        if interval != "15m":
            raise FatalError("no 1m history in this test")
        rows = [_kline_row(c) for c in candles15()]
        stream = f"rest:/fapi/v1/klines?symbol={symbol}&interval=15m&limit={limit}"
        return None, _Answer(stream, json.dumps(rows).encode())


def _kline_row(c: Candle) -> list[Any]:
    """One row of ``/fapi/v1/klines`` as Binance sends it (numbers as strings)."""
    prices = [str(v) for v in (c.open, c.high, c.low, c.close, c.volume)]
    return [c.open_time, *prices, c.close_time, str(c.quote_volume), c.trades, "0", "0", "0"]


class _Sink:
    """Keeps what the engine handed on (the dispatch would store and send it)."""

    def __init__(self) -> None:
        self.outputs: list[EngineOutput] = []

    def accept(self, output: EngineOutput) -> None:
        self.outputs.append(output)

    def signals(self) -> list[Signal]:
        return [s for out in self.outputs for s in out.signals]


class _Tape:
    """Binance payloads of X handed to the service as the websocket pool delivers them."""

    def __init__(self, service: FeedService) -> None:
        self.service = service
        self.agg = 1

    def send(self, stream: str, data: dict[str, Any]) -> None:
        self.service.handle(Received(int(time.time() * 1000), stream, json.dumps(data).encode()))

    def book(self, t: int) -> None:
        """The resync snapshot (bids 500 at 99.9, asks 100 at 100.1) and the diff continuing it."""
        body = {"lastUpdateId": 1000, "E": t, "T": t, "bids": [["99.9", "500"]], "asks": [["100.1", "100"]]}
        snapshot = DepthSnapshot(1000, [(99.9, 500.0)], [(100.1, 100.0)], t, t)
        answer = _Answer(f"rest:/fapi/v1/depth?symbol={X}&limit=1000", json.dumps(body).encode())
        self.service._on_snapshot(X, snapshot, answer)  # the scheduler's path for a fetched snapshot
        self.depth(t)

    def depth(self, t: int) -> None:
        diff = {"e": "depthUpdate", "E": t, "T": t, "s": X, "U": 1000, "u": 1001, "pu": 1000}
        self.send(f"{X.lower()}@depth@100ms", {**diff, "b": [], "a": []})

    def trade(self, t: int, price: float, qty: float = 1.0) -> None:
        a = self.agg
        self.agg += 1
        data = {"e": "aggTrade", "E": t, "s": X, "a": a, "p": repr(price), "q": repr(qty), "f": a, "l": a}
        self.send(f"{X.lower()}@aggTrade", {**data, "T": t, "m": False})

    def large_buys(self, t: int) -> None:
        """A small trade below 100, then 3 large buys at 100: a LONG setup on a bid-heavy book."""
        self.trade(t, 99.0, 10.0)
        for i in range(3):
            self.trade(t + 10 + i, 100.0, 7000.0)


def test_a_symbol_leaving_with_an_open_signal_is_followed_to_its_stop_then_unsubscribed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(var_dir=tmp_path)
    capture = CaptureWriter(tmp_path / "capture")
    pool, sink = _Pool(), _Sink()
    service = FeedService(settings, rest=cast(Any, _Rest()), pool=cast(Any, pool), capture=capture, sink=sink)
    tape = _Tape(service)
    caplog.set_level(logging.INFO, logger="realtime.service")

    async def live() -> None:
        service.set_universe([X, Y])
        await asyncio.gather(*service._history_tasks)
        tape.book(T)
        tape.large_buys(T + 10)
        [entry] = sink.signals()
        assert (entry.signal_type, entry.symbol) == ("ENTRY", X)
        evaluated = service.engine.per_symbol[X].evaluations

        service.set_universe([Y])  # a rescan (or an emergency exclusion, a load shrink) drops X
        assert pool.of(X) == [f"{X.lower()}@aggTrade", f"{X.lower()}@kline_1m"]  # its book goes, trades stay
        assert service.universe == [Y] and service.retained == [X]
        assert service.metrics()["retained_symbols"] == 1
        assert f"{X} left the universe; kept subscribed while signal {entry.signal_id} is open" in caplog.text
        tape.depth(T + 100)  # in flight when the depth stream was let go: late, not applied
        assert service.counters["late_unsubscribed"] == 1

        tape.trade(T + 1_000, entry.entry_price)  # triggers the LONG
        tape.large_buys(T + 1_500)  # a setup's tape again: X is out of the universe, never evaluated
        assert service.engine.per_symbol[X].evaluations == evaluated
        assert service.retained == [X]
        tape.trade(T + 2_000, entry.stop_loss - 0.01)  # the stop
        exits = [(s.signal_type, s.exit_reason, s.event_time) for s in sink.signals()[1:]]
        assert exits == [("EXIT", "STOP", T + 2_000)]
        assert service.engine.open == {}
        assert pool.of(X) == [] and service.retained == [] and service.metrics()["retained_symbols"] == 0
        assert f"{X} released" in caplog.text
        assert service.engine.is_retained(X)  # released, its book let go: evaluated again once it restarts

    asyncio.run(live())
    capture.close()
    live_candidates = [(c.symbol, c.fate, c.event_time) for out in sink.outputs for c in out.candidates]
    assert live_candidates == [(X, "signal", T + 22)]  # one: none while X was retained

    replay = run_replay([tmp_path / "capture"], settings)
    assert replay.engine is not None  # the replay evaluated X exactly where live did: not once retained
    assert replay.engine.per_symbol[X].evaluations == service.engine.per_symbol[X].evaluations
    assert [(c.symbol, c.fate, c.event_time) for c in replay.candidates] == live_candidates
    assert [(s.signal_id, s.signal_type, s.exit_reason, s.event_time) for s in replay.signals] == [
        (s.signal_id, s.signal_type, s.exit_reason, s.event_time) for s in sink.signals()
    ]

    async def rejoin_on_the_backup_feed() -> None:
        # the backup feed is on (it starts no depth stream whose start would end the retention): the service
        # restarts X's book itself when X rejoins, though X was released from the retained list already
        service.backup = cast(Any, SimpleNamespace(on=True, set_symbols=lambda symbols: None))
        service.set_universe([X, Y])
        await asyncio.gather(*service._history_tasks)
        assert not service.engine.is_retained(X)

    asyncio.run(rejoin_on_the_backup_feed())


def test_an_open_signal_resumed_at_start_outside_the_chosen_universe_is_followed(tmp_path: Path) -> None:
    """After a restart the universe may no longer hold a symbol whose signal is still open (stored, resumed):
    it is subscribed for its trades from the start, and a later universe that holds it evaluates it again."""
    service = FeedService(load_settings(var_dir=tmp_path), rest=cast(Any, _Rest()), pool=cast(Any, _Pool()))
    pool = cast(_Pool, service.pool)
    signal = entry("SOLUSDT")
    service.engine.resume([(signal, None)])

    async def start() -> None:
        service.set_universe([Y])
        assert service.retained == ["SOLUSDT"] and service.engine.is_retained("SOLUSDT")
        assert pool.of("SOLUSDT") == ["solusdt@aggTrade", "solusdt@kline_1m"]
        service.set_universe([Y, "SOLUSDT"])  # back in the universe: every stream, no longer retained
        assert service.retained == [] and len(pool.of("SOLUSDT")) == 5
        # the pool reports the depth stream started: the symbol is evaluated again
        service.handle(StreamsStarted(("solusdt@depth@100ms",), "public-0#1", "subscribe"))
        assert not service.engine.is_retained("SOLUSDT")
        await asyncio.gather(*service._history_tasks)

    asyncio.run(start())
