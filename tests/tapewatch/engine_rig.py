"""A market and a signal engine fed hand-made frames of one symbol: a book, a tape and a 15m context."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from tapewatch.engine import EngineOutput, SignalEngine
from tapewatch.events import AggTrade, Candle, DepthSnapshot, DepthUpdate, Kline, KlineHistory
from tapewatch.market import Market, MarketConfig, Request
from tapewatch.parse import Frame, FrameDecoder
from tapewatch.settings import load_settings
from tapewatch.signal import Candidate, Signal
from tapewatch.streams import Kind

SYM = "BTCUSDT"
T0 = 1_700_000_000_000 // 900_000 * 900_000  # a 15m boundary
Levels = Sequence[tuple[float, float]]


def candles15(n: int = 100, end: int = T0, quote_volume: float = 3_000_000.0) -> list[Candle]:
    """``n`` closed 15m candles before ``end`` around 100 (ATR 2): an average 300 s quote volume of 1M."""
    out = []
    for i in range(n):
        o = end - (n - i) * 900_000
        out.append(
            Candle(
                open_time=o,
                close_time=o + 899_999,
                interval="15m",
                open=100.0,
                close=100.0 + (0.5 if i % 2 else -0.5),
                high=101.0,
                low=99.0,
                volume=quote_volume / 100.0,
                trades=100,
                closed=True,
                quote_volume=quote_volume,
            )
        )
    return out


class Rig:
    """Feeds the market then the engine, like the service and the replay do; keeps every output."""

    def __init__(self, **settings: Any) -> None:
        self.settings = load_settings(**settings)
        self.market = Market(MarketConfig.from_settings(self.settings))
        self.engine = SignalEngine(self.settings, self.market)
        self.uid = 1000
        self.agg = 1
        self.outputs: list[EngineOutput] = []
        self.requests: list[Request] = []  # what the market asked for (snapshots, fills), in order

    def feed(self, kind: Kind, stream: str, event: Any) -> None:
        self.frame(Frame(0, stream, SYM, kind, event))

    def frame(self, frame: Frame) -> None:
        request = self.market.on_frame(frame)
        if request is not None:
            self.requests.append(request)
        out = self.engine.on_frame(frame)
        if out is not None:
            self.outputs.append(out)

    def clock(self, time: int) -> None:
        """Diffs of two other symbols at ``time``: the exchange's now moves there at once, a jump past the clock's
        tolerance confirmed market-wide (one symbol's frame alone that far ahead is rejected)."""
        for sym in ("ETHUSDT", "SOLUSDT"):
            ev = DepthUpdate(sym, time, time, 1, 1, 0, [], [])
            self.frame(Frame(0, f"{sym.lower()}@depth@100ms", sym, Kind.DEPTH, ev))

    def context(self, end: int = T0) -> None:
        self.feed(
            Kind.KLINES,
            f"rest:/fapi/v1/klines?symbol={SYM}&interval=15m&limit=100",
            KlineHistory("15m", candles15(end=end)),
        )

    def bar(self, open_time: int, closed: bool = True) -> None:
        """The closing kline of the 15m bar opening at ``open_time``, as the stream sends it at the bar's end;
        ``closed`` False: a kline of the bar forming, sent as it opens."""
        (candle,) = candles15(1, end=open_time + 900_000)
        sent = open_time + 900_000 if closed else open_time
        candle = msgspec.structs.replace(candle, closed=closed)
        self.feed(Kind.KLINE, f"{SYM.lower()}@kline_15m", Kline(SYM, sent, candle))

    def snapshot(self, bids: Levels, asks: Levels, time: int) -> None:
        stream = f"rest:/fapi/v1/depth?symbol={SYM}&limit=1000"
        self.feed(Kind.SNAPSHOT, stream, DepthSnapshot(self.uid, list(bids), list(asks), time, time))

    def depth(self, time: int, bids: Levels = (), asks: Levels = (), skip: int = 0) -> None:
        """A diff continuing the last one; ``skip`` > 0 leaves a sequence gap before it."""
        start = self.uid + skip
        ev = DepthUpdate(SYM, time, time, start, start + 1, start, list(bids), list(asks))
        self.uid = start + 1
        self.feed(Kind.DEPTH, f"{SYM.lower()}@depth@100ms", ev)

    def trade(self, time: int, price: float, qty: float, sell: bool = False, skip: int = 0) -> None:
        """An aggTrade; ``skip`` > 0 leaves that many ids missing before it (an aggTrade gap)."""
        self.agg += skip
        ev = AggTrade(SYM, time, self.agg, price, qty, self.agg, self.agg, time, sell)
        self.agg += 1
        self.feed(Kind.AGG_TRADE, f"{SYM.lower()}@aggTrade", ev)

    def fill(self, rows: Sequence[tuple[int, int, float, float]]) -> None:
        """The REST page of an aggTrade gap: (id, time, price, qty) rows."""
        body = msgspec.json.encode(
            [{"a": a, "p": repr(p), "q": repr(q), "f": a, "l": a, "T": t, "m": False} for a, t, p, q in rows]
        )
        stream = f"rest:/fapi/v1/aggTrades?symbol={SYM}&fromId={rows[0][0]}&limit=1000"
        for frame in FrameDecoder().decode_frames(0, stream, body):
            self.frame(frame)

    def long_setup(self, time: int, bid: float = 500.0, ask: float = 100.0, qty: float = 7000.0) -> None:
        """A LONG setup at ``time``: a book of ``bid`` at 99.9 and ``ask`` at 100.1, one small trade below 100,
        then 3 large buys of ``qty`` at 100 (7000: intensity 2.1; with a 65/35 book and 6200, a LOW score)."""
        self.snapshot([(99.9, bid)], [(100.1, ask)], time)
        self.depth(time)
        self.trade(time + 10, 99.0, 10.0)
        for i in range(3):
            self.trade(time + 20 + i, 100.0, qty)

    def candidates(self) -> list[Candidate]:
        return [c for o in self.outputs for c in o.candidates]

    def signals(self) -> list[Signal]:
        return [s for o in self.outputs for s in o.signals]
