"""The trade side of the market state: aggTrade and trade frames into a symbol's windows, and aggTrade id gaps.

A mixin of :class:`tapewatch.market.Market` (kept apart to keep that module small). A trade whose id skips
past the last applied one + 1 opens a gap (:mod:`tapewatch.trade_gaps`): the market returns a
:class:`~tapewatch.trade_gaps.TradeFillNeeded` and holds the symbol's later trades until the missing ones
arrive or the gap is given up by trade time; a gap too wide to fetch or opened longer ago than the longest
trade window is skipped instead (counted, the trade applied at once).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING

from tapewatch.events import AggTrade, Trade
from tapewatch.market_clock import MarketClock
from tapewatch.trade_gaps import DUPLICATE, HELD, PendingFill, Resolved, TradeFillNeeded, TradeGapConfig

if TYPE_CHECKING:
    from tapewatch.market import SymbolState

log = logging.getLogger(__name__)

#: The trade-gap figures of :meth:`MarketTrades.trade_gap_totals` (the metrics hash and the replay summary
#: show them): trades_missing = trades_filled + trades_lost + trades_skipped + trades_pending.
TRADE_GAP_COUNTERS = (
    "trade_gaps",
    "trade_gaps_skipped",
    "trades_missing",
    "trades_filled",
    "trades_lost",
    "trades_skipped",
    "trades_pending",
)


class MarketTrades(MarketClock):
    """The aggTrade/trade handlers and gap bookkeeping of :class:`~tapewatch.market.Market`. A trade stamped
    beyond the tolerance of the exchange's clock (:mod:`tapewatch.market_clock`) keeps its id but never enters the
    windows: counted ``event_time_ahead``, it would hold them at its time and keep every trade in them."""

    symbols: dict[str, SymbolState]
    counters: Counter[str]
    _gap_config: TradeGapConfig

    def _on_agg_trade(self, st: SymbolState, ev: AggTrade) -> TradeFillNeeded | None:
        if st.fill is not None:
            return self._on_held_trade(st, st.fill, ev)
        a, last = ev.agg_id, st.last_agg_id
        if a <= last:
            self.counters["out_of_order_trade"] += 1
            st.trades_checked_ms = self.now_ms  # the exchange has nothing newer than what is applied
            return None
        if a != last + 1 and last >= 0:
            return self._open_gap(st, ev)
        st.last_agg_id = a
        self._trade(st, ev.trade_time, ev.price, ev.qty, ev.buyer_is_maker)
        return None

    # --- aggTrade gaps ----------------------------------------------------------------------------------
    def _open_gap(self, st: SymbolState, ev: AggTrade) -> TradeFillNeeded | None:
        request = TradeFillNeeded(st.symbol, st.last_agg_id + 1, ev.agg_id - 1)
        self.counters["trade_gaps"] += 1
        self.counters["trades_missing"] += request.missing
        skip = self._gap_config.skip_reason(request.missing, ev.trade_time - st.vwap.last_time)
        if skip is not None:  # too large or too long ago to matter: go on from this trade
            self.counters["trade_gaps_skipped"] += 1
            self.counters["trades_skipped"] += request.missing
            log.warning(
                "aggTrade gap not filled (%s): %s, trades go on from id %d",
                request.reason,
                skip,
                ev.agg_id,
                extra={"symbol": st.symbol, "stream": "aggTrade"},
            )
            st.last_agg_id = ev.agg_id
            self._trade(st, ev.trade_time, ev.price, ev.qty, ev.buyer_is_maker)
            return None
        st.fill = PendingFill(request.from_id, ev, self._gap_config)
        log.info(
            "aggTrade gap: %d trades missing (%s), later trades held until filled",
            request.missing,
            request.reason,
            extra={"symbol": st.symbol, "stream": "aggTrade"},
        )
        return request

    def _on_held_trade(self, st: SymbolState, fill: PendingFill, ev: AggTrade) -> TradeFillNeeded | None:
        outcome = fill.add(ev)
        if outcome is HELD:
            return None
        if outcome is DUPLICATE:
            self.counters["out_of_order_trade"] += 1
            return None
        assert isinstance(outcome, Resolved)
        return self._resolve_gap(st, fill, outcome)

    def _resolve_gap(self, st: SymbolState, fill: PendingFill, done: Resolved) -> TradeFillNeeded | None:
        """Apply the filled trades, then the held ones in id order (a hole among them opens a new gap:
        its request is returned while that gap is still open)."""
        st.fill = None
        self.counters["trades_filled"] += len(done.filled)
        # the trades applied at once, in id order, for the followers of open signals (the engine) to read after the
        # frame, since flow.last_price shows only the last; replaced, not extended: a consumer drains it after every
        # frame, and without one it stays one batch
        caught_up = [
            (ev.trade_time, ev.price)
            for ev in done.filled
            if self._trade(st, ev.trade_time, ev.price, ev.qty, ev.buyer_is_maker)
        ]
        st.last_agg_id = fill.to_id
        if done.lost:
            lost = sum(b - a + 1 for a, b in done.lost)
            self.counters["trades_lost"] += lost
            st.lost.extend(done.lost)
            log.warning(
                "aggTrade gap given up: %d of %d trades never received (ids %s)",
                lost,
                fill.to_id - fill.from_id + 1,
                ", ".join(f"{a}..{b}" for a, b in done.lost[:5]),
                extra={"symbol": st.symbol, "stream": "aggTrade"},
            )
        request: TradeFillNeeded | None = None
        for ev in done.held:
            deferred = self.deferred
            request = self._on_agg_trade(st, ev) or request
            # applied (not held by a new gap) and taken by the windows (not held or rejected as ahead of the clock)
            if ev.agg_id <= st.last_agg_id and self.deferred == deferred:
                caught_up.append((ev.trade_time, ev.price))
        st.caught_up = caught_up
        pending = st.fill
        if (
            request is not None
            and pending is not None
            and pending.request == (request.from_id, request.to_id)
        ):
            return request
        return None

    def next_trade_id(self, symbol: str) -> int | None:
        """The first aggTrade id of ``symbol`` the market still needs (where REST polling continues): inside
        an open gap the first one not received yet, else the one after the last applied. None (poll the
        newest) before any trade, and when the symbol's trades are known only up to longer ago, by the
        exchange's now (:attr:`now_ms`), than a gap is filled across (:meth:`TradeGapConfig.too_old`): a symbol
        back in the universe hours later. The newest page's first trade then opens a gap that the skip rule
        skips as the page is applied (``trade_gaps_skipped``, ``trades_skipped``), live and in replay alike,
        instead of the poll paging through hours of stale trades.

        Known up to: the last applied trade's time, or later when a page brought only trades already applied
        (a quiet or halted symbol: its polls go on from the last id, and ask for the newest once an hour)."""
        st = self.symbols.get(symbol)
        if st is None or st.last_agg_id < 0:
            return None
        if st.fill is not None:
            return st.fill.next_id  # judged worth filling when it opened: at most max_ids, a few pages
        if self._gap_config.too_old(self.now_ms - max(st.vwap.last_time, st.trades_checked_ms)):
            return None
        return st.last_agg_id + 1

    def fill_pending(self, symbol: str, from_id: int) -> bool:
        """True while ``symbol`` still waits for trades from ``from_id`` on (a fill request is still wanted)."""
        st = self.symbols.get(symbol)
        return st is not None and st.fill is not None and st.fill.from_id <= from_id <= st.fill.to_id

    def _on_trade(self, st: SymbolState, ev: Trade) -> None:
        if ev.trade_id <= st.last_trade_id:
            self.counters["out_of_order_trade"] += 1
            return
        st.last_trade_id = ev.trade_id
        if ev.kind == "MARKET":
            self._trade(st, ev.trade_time, ev.price, ev.qty, ev.buyer_is_maker)

    def _trade(self, st: SymbolState, time: int, price: float, qty: float, buyer_is_maker: bool) -> bool:
        """Add a trade to the symbol's windows; False when it is held or rejected as ahead of the clock."""
        if (
            time > self.ahead_ms
            # a tape running on while every depth stream is quiet: within the tolerance of the symbol's own
            # last trade it is its own clock, not a frame ahead of the market's
            and not (st.flow.last_time and time - st.flow.last_time <= self.clock_tolerance_ms)
            and not self.jump(
                st.symbol, time, lambda: self._add_trade(st, time, price, qty, buyer_is_maker), trade=True
            )
        ):
            return False
        self._add_trade(st, time, price, qty, buyer_is_maker)
        return True

    def _add_trade(self, st: SymbolState, time: int, price: float, qty: float, buyer_is_maker: bool) -> None:
        """Add a trade the clock accepted (at once, or held until its jump was confirmed) to the windows."""
        if time < st.flow.last_time:
            self.counters["trade_time_regressed"] += 1
        st.flow.add(time, price, qty, buyer_is_maker)
        st.vwap.add(time, price, qty, buyer_is_maker)

    def trade_gap_totals(self) -> dict[str, int]:
        """The :data:`TRADE_GAP_COUNTERS` figures; ``trades_pending``: the ids of the open gaps, not yet counted
        filled or lost (the ids an open gap already received count as filled when it resolves)."""
        totals = {name: self.counters[name] for name in TRADE_GAP_COUNTERS}
        totals["trades_pending"] = sum(s.fill.missing for s in self.symbols.values() if s.fill is not None)
        return totals
