"""Candles of every symbol: a cheap 1-minute history before the start, then candles built from the trades.

History is a candle-level random walk that ends at the symbol's starting price, with volumes scaled so
the last 24 hours add up to the symbol's 24 h quote volume (so ``ticker/24hr`` and the live trades agree).
Live 1-minute candles are appended as they close; forming candles of the streamed intervals are kept
incrementally from each trade. Any interval asked over REST is aggregated from the 1-minute candles,
which gives the same numbers as the streamed forming candles.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from realtime.sim.symbols import SymbolSpec

MINUTE = 60_000
DAY = 86_400_000
HISTORY_MINUTES = 1500  # 25 h: the 24 h ticker and 100 bars of 15m
MAX_LIVE_MINUTES = 7 * 1440  # live 1-minute candles kept (older ones, and then the history, are dropped)
INTERVAL_MS: dict[str, int] = {
    "1m": MINUTE, "3m": 3 * MINUTE, "5m": 5 * MINUTE, "15m": 15 * MINUTE, "30m": 30 * MINUTE,
    "1h": 60 * MINUTE, "2h": 120 * MINUTE, "4h": 240 * MINUTE, "6h": 360 * MINUTE, "8h": 480 * MINUTE,
    "12h": 720 * MINUTE, "1d": DAY,
}  # fmt: skip

# A candle row: open time, o, h, l, c (ticks), volume (steps), quote volume, trades, taker buy volume
# (steps), taker buy quote volume, first trade id, last trade id (-1, -1 when it has no trades).
Row = tuple[int, int, int, int, int, int, float, int, int, float, int, int]


class Forming:
    """A candle still open; updated trade by trade."""

    __slots__ = ("L", "Q", "V", "c", "f", "h", "interval", "l", "n", "o", "q", "t", "v")

    def __init__(self, interval: int, t: int, price: int) -> None:
        self.interval = interval
        self.t = t
        self.o = self.h = self.l = self.c = price
        self.v = self.V = self.n = 0
        self.q = self.Q = 0.0
        self.f = self.L = -1

    def add(self, tick: int, qty: int, quote: float, taker_buy: bool, first: int, last: int) -> None:
        if tick > self.h:
            self.h = tick
        if tick < self.l:
            self.l = tick
        self.c = tick
        self.v += qty
        self.q += quote
        self.n += last - first + 1
        if taker_buy:
            self.V += qty
            self.Q += quote
        if self.f < 0:
            self.f = first
        self.L = last

    def merge_row(self, row: Row) -> None:
        """Fold a later 1-minute row into this (longer) candle; a new candle starts at its first row's open."""
        _, _, h, low, c, v, q, n, tv, tq, f, last = row
        self.h = max(self.h, h)
        self.l = min(self.l, low)
        self.c = c
        self.v += v
        self.q += q
        self.n += n
        self.V += tv
        self.Q += tq
        if f >= 0:
            if self.f < 0:
                self.f = f
            self.L = last

    def row(self) -> Row:
        return (
            self.t,
            self.o,
            self.h,
            self.l,
            self.c,
            self.v,
            self.q,
            self.n,
            self.V,
            self.Q,
            self.f,
            self.L,
        )


def first_agg_id(first_trade_id: int) -> int:
    """The first aggTrade id of a market that starts fresh at ``first_trade_id``: about two fills make one
    aggTrade, so half the trade id (a resumed market goes on with the ids it stopped at instead)."""
    return first_trade_id // 2 + 1


@dataclass(frozen=True, slots=True)
class History:
    """1-minute candles before the start; row k opens at ``start_ms + k * MINUTE``."""

    start_ms: int
    ohlc: np.ndarray  # (k, 4) int64 ticks
    volume: np.ndarray  # steps
    quote: np.ndarray
    trades: np.ndarray
    taker_volume: np.ndarray
    taker_quote: np.ndarray
    first_trade_id: int
    #: The first live aggTrade id when it is not half the first live trade id (a resumed market goes on with
    #: the ids it stopped at); the synthesized history trades' agg ids run up to just below it.
    live_agg_id: int | None = None

    @property
    def next_trade_id(self) -> int:
        return self.first_trade_id + int(self.trades.sum())

    @property
    def next_agg_id(self) -> int:
        """The first live aggTrade id."""
        return first_agg_id(self.next_trade_id) if self.live_agg_id is None else self.live_agg_id


def generate_history(spec: SymbolSpec, rng: np.random.Generator, end_ms: int, minutes: int) -> History:
    """A random-walk 1-minute history of ``minutes`` candles ending at ``end_ms`` at the start price."""
    sigma = spec.daily_vol / math.sqrt(1440)
    regime = np.exp(
        0.3 * np.convolve(rng.standard_normal(minutes + 59), np.ones(60) / math.sqrt(60), "valid")
    )
    r = rng.standard_normal(minutes) * sigma * regime
    # close[k] = price * exp(-sum(r[k+1:])): the last close is the start price.
    tail = np.concatenate([np.cumsum(r[::-1])[::-1][1:], [0.0]])
    close = spec.price * np.exp(-tail)
    open_ = np.concatenate([[close[0] * math.exp(-r[0])], close[:-1]])
    wick = np.abs(rng.standard_normal((2, minutes))) * sigma * 0.6 * regime
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    ohlc = np.rint(np.stack([open_, high, low, close], axis=1) / spec.tick).astype(np.int64)
    ohlc = np.maximum(ohlc, 1)
    hour = ((end_ms - (minutes - np.arange(minutes)) * MINUTE) // 3_600_000) % 24
    raw = rng.lognormal(0.0, 0.45, minutes) * regime**0.8 * (1 + 0.35 * np.sin((hour - 9) / 24 * 2 * math.pi))
    quote = raw * (spec.quote_volume_24h / raw[-1440:].sum())
    avg_price = ohlc.mean(axis=1) * spec.tick
    volume = np.maximum(1, np.rint(quote / (avg_price * spec.step))).astype(np.int64)
    quote = volume * spec.step * avg_price
    trades = np.maximum(1, np.rint(quote / spec.mean_trade_quote * 2)).astype(np.int64)
    share = np.clip(0.5 + 0.08 * rng.standard_normal(minutes), 0.05, 0.95)
    taker_volume = np.rint(volume * share).astype(np.int64)
    return History(
        start_ms=end_ms - minutes * MINUTE,
        ohlc=ohlc,
        volume=volume,
        quote=quote,
        trades=trades,
        taker_volume=taker_volume,
        taker_quote=taker_volume * spec.step * avg_price,
        first_trade_id=1_000_000_000 * (spec.index + 1) + int(rng.integers(1, 1_000_000)),
    )


def _history_rows(h: History, lo: int, hi: int) -> list[Row]:
    first = h.first_trade_id + int(h.trades[:lo].sum())
    rows: list[Row] = []
    for k in range(lo, hi):
        o, hi_, low, c = (int(x) for x in h.ohlc[k])
        n = int(h.trades[k])
        rows.append((
            h.start_ms + k * MINUTE, o, hi_, low, c, int(h.volume[k]), float(h.quote[k]), n,
            int(h.taker_volume[k]), float(h.taker_quote[k]), first, first + n - 1,
        ))  # fmt: skip
        first += n
    return rows


#: Where in its minute each synthesized history trade lies (ms): the open, the two extremes, the close.
_HISTORY_TRADE_OFFSETS = (0, 15_000, 30_000, 59_000)
# A synthesized history aggTrade: agg id, tick, qty (steps), first and last trade id, time, buyer is maker.
HistoryTrade = tuple[int, int, int, int, int, int, bool]


def history_trades(h: History, start: int, end: int) -> list[HistoryTrade]:
    """aggTrades consistent with the history candles, for minutes before the start (which have no real trades),
    traded in ``[start, end]``: four a minute (the open, the extreme on the way, the other extreme, the close,
    at 0, 15, 30 and 59 s; down first when the candle closes up). Agg ids run up to just below the first live
    one, trade ids are the candle's, so REST answers stay in id order across the start."""
    lo = max(0, (start - h.start_ms) // MINUTE)
    hi = min(len(h.trades), (end - h.start_ms) // MINUTE + 1)
    if hi <= lo:
        return []
    agg_base = h.next_agg_id - len(_HISTORY_TRADE_OFFSETS) * len(h.trades)
    out: list[HistoryTrade] = []
    for k, row in enumerate(_history_rows(h, lo, hi), start=lo):
        t, o, high, low, c, volume, _, n, _, _, first, _ = row
        ticks = (o, low, high, c) if c >= o else (o, high, low, c)
        parts = len(ticks)
        for j, (tick, offset) in enumerate(zip(ticks, _HISTORY_TRADE_OFFSETS, strict=True)):
            if not start <= t + offset <= end:
                continue
            f = first + n * j // parts
            last = max(f, first + n * (j + 1) // parts - 1)
            qty = max(1, volume // parts)
            up = j > 0 and tick >= ticks[j - 1]
            out.append((agg_base + parts * k + j, tick, qty, f, last, t + offset, not up))
    return out


class CandleBook:
    """One symbol's 1-minute candles (history + live) and its forming candles of ``intervals``."""

    def __init__(self, spec: SymbolSpec, history: History, start_ms: int, intervals: Iterable[str]) -> None:
        self.spec = spec
        self.history = history
        self.live: list[Row] = []
        self._history_dropped = False
        minute = start_ms - start_ms % MINUTE
        last_close = int(history.ohlc[-1, 3]) if len(history.ohlc) else round(spec.price / spec.tick)
        self.forming: dict[int, Forming] = {}
        self._day_cache: tuple[int, DayStats] | None = None
        for name in sorted(set(intervals) | {"1m"}, key=INTERVAL_MS.__getitem__):
            ms = INTERVAL_MS[name]
            t = start_ms - start_ms % ms
            rows = _history_rows(
                history, max(0, (t - history.start_ms) // MINUTE), (minute - history.start_ms) // MINUTE
            )
            candle = Forming(ms, t, rows[0][1] if rows and ms > MINUTE else last_close)
            for row in rows if ms > MINUTE else ():
                candle.merge_row(row)
            self.forming[ms] = candle

    def on_trade(self, tick: int, qty: int, quote: float, taker_buy: bool, first: int, last: int) -> None:
        for candle in self.forming.values():
            candle.add(tick, qty, quote, taker_buy, first, last)

    def roll(self, boundary: int) -> list[Forming]:
        """Close every forming candle that ends at ``boundary``; return them (shortest interval first)."""
        closed: list[Forming] = []
        for ms, candle in self.forming.items():
            if boundary % ms == 0 and candle.t < boundary:
                closed.append(candle)
                self.forming[ms] = Forming(ms, boundary, candle.c)
                if ms == MINUTE:
                    self.live.append(candle.row())
                    if len(self.live) > MAX_LIVE_MINUTES:  # bounded memory on long runs
                        del self.live[: len(self.live) - MAX_LIVE_MINUTES]
                        self._history_dropped = True
        return closed

    def minute_rows(self, since: int) -> list[Row]:
        """1-minute rows (history, live, then the forming one) opening at or after ``since``."""
        h = self.history
        lo = max(0, min(len(h.trades), (since - h.start_ms + MINUTE - 1) // MINUTE))
        rows = [] if self._history_dropped else _history_rows(h, lo, len(h.trades))
        rows += [r for r in self.live if r[0] >= since]
        forming = self.forming[MINUTE]
        if forming.t >= since:
            rows.append(forming.row())
        return rows

    def klines(self, interval: int, start: int | None, end: int | None, limit: int) -> list[Row]:
        """Candles of ``interval`` ms aggregated from 1-minute rows, Binance's startTime/endTime/limit rules."""
        since = self.history.start_ms if start is None else start - start % interval
        if start is None and end is None:
            now = self.forming[MINUTE].t
            since = max(since, now - now % interval - (limit - 1) * interval)
        out: list[Row] = []
        current: Forming | None = None
        for row in self.minute_rows(since):
            bucket = row[0] - row[0] % interval
            if current is None or bucket != current.t:
                if current is not None:
                    out.append(current.row())
                current = Forming(interval, bucket, row[1])
            current.merge_row(row)
        if current is not None:
            out.append(current.row())
        if start is not None:
            out = [r for r in out if r[0] >= start]
        if end is not None:
            out = [r for r in out if r[0] <= end]
        return out[:limit] if start is not None else out[-limit:]

    def day_stats(self, now: int) -> DayStats:
        """Totals of the last 24 h of 1-minute candles (the forming one included), as ``ticker/24hr`` reports."""
        minute = now - now % MINUTE
        since = minute - DAY + MINUTE
        cached = self._day_cache
        if cached is None or cached[0] != minute:
            cached = (minute, self._closed_stats(since, minute))
            self._day_cache = cached
        s = cached[1]
        f = self.forming[MINUTE]
        if s.count == 0 and s.volume == 0 and s.high == 0:  # nothing closed in the window yet
            s = DayStats(since, f.o, f.h, f.l, 0, 0.0, 0, f.f)
        first = s.first_id if s.first_id >= 0 else f.f
        return DayStats(
            s.open_time,
            s.open,
            max(s.high, f.h),
            min(s.low, f.l),
            s.volume + f.v,
            s.quote + f.q,
            s.count + f.n,
            first,
        )

    def _closed_stats(self, since: int, until: int) -> DayStats:
        """Totals of the closed 1-minute candles opening in [since, until): history by numpy, then live."""
        h = self.history
        lo = max(0, min(len(h.trades), (since - h.start_ms) // MINUTE))
        hi = max(lo, min(len(h.trades), (until - h.start_ms) // MINUTE))
        live = [r for r in self.live if since <= r[0] < until]
        if hi > lo:
            ohlc = h.ohlc[lo:hi]
            stats = DayStats(
                open_time=h.start_ms + lo * MINUTE,
                open=int(ohlc[0, 0]),
                high=int(ohlc[:, 1].max()),
                low=int(ohlc[:, 2].min()),
                volume=int(h.volume[lo:hi].sum()),
                quote=float(h.quote[lo:hi].sum()),
                count=int(h.trades[lo:hi].sum()),
                first_id=h.first_trade_id + int(h.trades[:lo].sum()),
            )
        elif live:
            stats = DayStats(live[0][0], live[0][1], live[0][2], live[0][3], 0, 0.0, 0, -1)
        else:
            return DayStats(since, 0, 0, 0, 0, 0.0, 0, -1)
        high, low, volume, quote, count, first = (
            stats.high, stats.low, stats.volume, stats.quote, stats.count, stats.first_id
        )  # fmt: skip
        for r in live:
            high, low = max(high, r[2]), min(low, r[3])
            volume, quote, count = volume + r[5], quote + r[6], count + r[7]
            if first < 0 and r[10] >= 0:
                first = r[10]
        return DayStats(stats.open_time, stats.open, high, low, volume, quote, count, first)


@dataclass(frozen=True, slots=True)
class DayStats:
    """24 h totals of one symbol (prices in ticks, volume in steps, first trade id or -1)."""

    open_time: int
    open: int
    high: int
    low: int
    volume: int
    quote: float
    count: int
    first_id: int
