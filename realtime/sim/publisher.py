"""Turn what the market did in each step into Binance stream messages, with Binance's sequencing.

After every model step :meth:`Publisher.publish` drains each symbol's changes, top-of-book changes and
fills and returns the messages due at that instant:

- ``aggTrade``/``trade`` as they happen;
- ``bookTicker`` at the end of every 100 ms slot in which the top changed, with ``u`` equal to that
  slot's ``depth@100ms`` ``u`` (plus, when the top changed more than once, one intermediate ticker
  whose ``u`` lies strictly inside the slot, as Binance sends them);
- ``depthUpdate`` at the end of each 100 / 250 / 500 ms window holding changes: ``U`` is the first and
  ``u`` the last change id of the window, ``pu`` the previous event's ``u`` for that symbol;
- ``kline_<i>`` every 250 ms for symbols that traded, and ``x: true`` when a candle closes;
- ``markPrice`` (3 s) and ``markPrice@1s``.

Candles are updated from every fill whether or not anyone listens, so REST and streams agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from realtime.sim import protocol as p
from realtime.sim.candles import INTERVAL_MS, CandleBook
from realtime.sim.model import Market, SymbolState
from realtime.sim.tape import TradeTape

# (routed path, stream name, payload text, event time)
Msg = tuple[str, str, str, int]
Want = Callable[[str], bool]

DEPTH_SUFFIX: dict[int, str] = {100: "@depth@100ms", 250: "@depth", 500: "@depth@500ms"}
KLINE_PUSH_MS = 250
FUNDING_MS = 8 * 3_600_000


class _Names:
    """The stream names of one symbol, built once."""

    __slots__ = ("agg_trade", "book_ticker", "depth", "kline", "mark", "mark_1s", "trade")

    def __init__(self, symbol: str, intervals: Sequence[str]) -> None:
        s = symbol.lower()
        self.depth = {speed: s + suffix for speed, suffix in DEPTH_SUFFIX.items()}
        self.book_ticker = f"{s}@bookTicker"
        self.agg_trade = f"{s}@aggTrade"
        self.trade = f"{s}@trade"
        self.kline = {INTERVAL_MS[i]: (i, f"{s}@kline_{i}") for i in intervals}
        self.mark = f"{s}@markPrice"
        self.mark_1s = f"{s}@markPrice@1s"


class Publisher:
    """Builds the messages of each step; ``want(stream)`` says which payloads are worth encoding."""

    def __init__(
        self,
        market: Market,
        candles: Sequence[CandleBook],
        depth_speeds: Sequence[int] = (100, 250, 500),
        kline_intervals: Sequence[str] = tuple(INTERVAL_MS),
    ) -> None:
        self.market = market
        self.candles = list(candles)
        self.speeds = tuple(sorted(depth_speeds))
        # All windows (100 ms ticker slots and every depth speed) end together every ``_period`` ms.
        self._period = math.lcm(100, *self.speeds)
        self._names = [_Names(s.spec.symbol, kline_intervals) for s in market.symbols]
        n = len(market.symbols)
        self._cursor = {speed: [0] * n for speed in self.speeds}
        self.prev_u = {speed: [s.last_id for s in market.symbols] for speed in self.speeds}
        self._dirty: dict[int, set[int]] = {speed: set() for speed in self.speeds}
        self._ticker_dirty: set[int] = set()
        self._period_dirty: set[int] = set()
        self._traded: set[int] = set()
        self.recent = [TradeTape() for _ in range(n)]  # for REST /fapi/v1/aggTrades

    def publish(self, want: Want) -> list[Msg]:
        """The messages due at ``market.now_ms`` (call once after every :meth:`Market.step`)."""
        now = self.market.now_ms
        out: list[Msg] = []
        symbols = self.market.symbols
        touched = self.market.touched
        self._ticker_dirty.update(touched)
        self._period_dirty.update(touched)
        for dirty in self._dirty.values():
            dirty.update(touched)
        for i in touched:
            if symbols[i].trades:
                self._fills(symbols[i], want, out)
        if now % 100 == 0:
            for i in sorted(self._ticker_dirty):
                self._tickers(symbols[i], now, want, out)
            self._ticker_dirty.clear()
        for speed in self.speeds:
            if now % speed == 0:
                for i in sorted(self._dirty[speed]):
                    self._depth(symbols[i], speed, now, want, out)
                self._dirty[speed].clear()
        if now % self._period == 0:
            for i in self._period_dirty:
                symbols[i].changes.clear()
                for speed in self.speeds:
                    self._cursor[speed][i] = 0
            self._period_dirty.clear()
        if now % KLINE_PUSH_MS == 0:
            self._klines(now, want, out)
        if now % 1000 == 0:
            self._marks(now, want, out)
        return out

    # --- pieces ----------------------------------------------------------------------------------------
    def _fills(self, sym: SymbolState, want: Want, out: list[Msg]) -> None:
        names = self._names[sym.index]
        spec = sym.spec
        pd, qd, name = spec.price_decimals, spec.qty_decimals, spec.symbol
        book = self.candles[sym.index]
        agg = want(names.agg_trade)
        single = want(names.trade)
        tick_value = spec.tick * spec.step
        for agg_id, tick, qty, first, last, t, maker in sym.trades:
            book.on_trade(tick, qty, tick * qty * tick_value, not maker, first, last)
            e = t + 2
            price = p.fixed(tick, pd)
            if agg:
                msg = p.agg_trade(name, e, agg_id, price, p.fixed(qty, qd), first, last, t, maker)
                out.append(("market", names.agg_trade, msg, e))
            if single:
                parts = last - first + 1
                each, extra = divmod(qty, parts)
                for k in range(parts):
                    q = p.fixed(each + (extra if k == 0 else 0), qd)
                    out.append(("public", names.trade, p.trade(name, e, first + k, price, q, t, maker), e))
        self.recent[sym.index].extend(sym.trades)
        sym.trades.clear()
        self._traded.add(sym.index)

    def _tickers(self, sym: SymbolState, now: int, want: Want, out: list[Msg]) -> None:
        tops = sym.tops
        if not tops:
            return
        name = self._names[sym.index].book_ticker
        if want(name):
            changes = sym.changes
            last_id, last_t = changes[-1][0], changes[-1][1]
            k = len(changes) - 1
            while k > 0 and changes[k - 1][1] >= now - 100:
                k -= 1
            first_id = changes[k][0]  # the slot's U
            final = sym.top
            inside = [tc for tc in tops if first_id < tc[0] < last_id and tc[2] != final]
            if inside:  # one intermediate ticker, u strictly inside the slot, as Binance also sends
                uid, t, top = inside[0]
                out.append(("public", name, self._ticker(sym, uid, top, t), t + 1))
            out.append(("public", name, self._ticker(sym, last_id, final, last_t), last_t + 1))
        tops.clear()

    @staticmethod
    def _ticker(sym: SymbolState, uid: int, top: tuple[int, int, int, int], t: int) -> str:
        pd, qd = sym.spec.price_decimals, sym.spec.qty_decimals
        b, bq, a, aq = top
        return p.book_ticker(
            sym.spec.symbol, uid, p.fixed(b, pd), p.fixed(bq, qd), p.fixed(a, pd), p.fixed(aq, qd), t, t + 1
        )

    def _depth(self, sym: SymbolState, speed: int, now: int, want: Want, out: list[Msg]) -> None:
        cursor = self._cursor[speed]
        i = sym.index
        changes = sym.changes
        start = cursor[i]
        if start >= len(changes):
            return
        cursor[i] = len(changes)
        prev = self.prev_u[speed][i]
        first, last = changes[start][0], changes[-1][0]
        self.prev_u[speed][i] = last
        name = self._names[i].depth[speed]
        if not want(name):
            return
        bids: dict[int, int] = {}
        asks: dict[int, int] = {}
        for _, _, is_ask, tick, qty in changes[start:]:
            (asks if is_ask else bids)[tick] = qty
        spec = sym.spec
        pd, qd = spec.price_decimals, spec.qty_decimals
        msg = p.depth_update(
            spec.symbol, now, changes[-1][1], first, last, prev,
            p.levels(sorted(bids.items()), pd, qd), p.levels(sorted(asks.items()), pd, qd),
        )  # fmt: skip
        out.append(("public", name, msg, now))

    def _klines(self, now: int, want: Want, out: list[Msg]) -> None:
        rolling = now % 60_000 == 0
        indices = range(len(self.candles)) if rolling else sorted(self._traded)
        for i in indices:
            book = self.candles[i]
            names = self._names[i]
            spec = book.spec
            closed = {c.interval: c for c in book.roll(now)} if rolling else {}
            traded = i in self._traded
            for ms, (interval, stream) in names.kline.items():
                candle = closed.get(ms)
                if candle is None and not traded:
                    continue
                if not want(stream):
                    continue
                row = candle.row() if candle is not None else book.forming[ms].row()
                msg = p.kline(
                    spec.symbol,
                    now,
                    interval,
                    ms,
                    row,
                    candle is not None,
                    spec.price_decimals,
                    spec.qty_decimals,
                )
                out.append(("market", stream, msg, now))
        self._traded.clear()

    def _marks(self, now: int, want: Want, out: list[Msg]) -> None:
        every_3s = now % 3000 == 0
        next_funding = now - now % FUNDING_MS + FUNDING_MS
        for sym in self.market.symbols:
            names = self._names[sym.index]
            fast = want(names.mark_1s)
            slow = every_3s and want(names.mark)
            if not (fast or slow):
                continue
            spec = sym.spec
            mark = (sym.top[0] + sym.top[2]) / 2 * spec.tick
            index = self.market.fair_price(sym.index)
            msg = p.mark_price(
                spec.symbol, now, f"{mark:.8f}", f"{index:.8f}", f"{index:.8f}", "0.00010000", next_funding
            )
            if fast:
                out.append(("market", names.mark_1s, msg, now))
            if slow:
                out.append(("market", names.mark, msg, now))
