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


#: aggTrade ids a symbol's trades can advance by within the clock tolerance (60 s) of trade time: 500,000 is
#: 8,000 trades a second for a whole minute, far past any real symbol (BTCUSDT's busiest minutes stay under a
#: tenth of it). A trade that far below the last applied id yet within the tolerance of the symbol's last trade
#: shows that last id was bogus (:meth:`MarketTrades._agg_id_bogus`); a skipped gap counts at most this many ids
#: per tolerance of trade time it spans (:func:`counted_gap`). Not ``market.TICKER_LEAD_MAX_IDS``: bookTicker and
#: depth ids are shared by every symbol and grow 100 times faster than one symbol's aggTrade ids.
AGG_ID_LEAD_MAX_IDS = 500_000


def counted_gap(missing: int, since_ms: int, tolerance_ms: int) -> int:
    """The ids a skipped gap of ``missing`` ids, opened ``since_ms`` of trade time after the last applied trade,
    adds to ``trades_missing``: capped at what that time can explain (:data:`AGG_ID_LEAD_MAX_IDS` per tolerance),
    since a wider gap is a bogus id, not lost trades (one id of 2**70 would add 10^21)."""
    return min(missing, AGG_ID_LEAD_MAX_IDS * (1 + max(0, since_ms) // max(1, tolerance_ms)))


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
            if last - a > AGG_ID_LEAD_MAX_IDS and self._agg_id_bogus(st, ev):
                last = st.last_agg_id  # the id before the bogus one: this trade goes on from it
            if a <= last:
                self.counters["out_of_order_trade"] += 1
                st.trades_checked_ms = self.now_ms  # the exchange has nothing newer than what is applied
                return None
        if a != last + 1 and last >= 0:
            return self._open_gap(st, ev)
        st.last_agg_id = a
        self._trade(st, ev.trade_time, ev.price, ev.qty, ev.buyer_is_maker)
        return None

    def _agg_id_bogus(self, st: SymbolState, ev: AggTrade) -> bool:
        """Whether the trade ``ev``, more than :data:`AGG_ID_LEAD_MAX_IDS` ids below the symbol's last applied one
        yet stamped within the clock tolerance of the symbol's last trade, shows that last id was bogus (a
        corrupted ``a``: no symbol trades that many ids in that time). Then the last id is forgotten (counted
        ``agg_id_ahead``, logged) and the symbol's ids go back to the one before it: the id before the gap the
        bogus id skipped (that gap's counts taken back), else ``ev``'s own id - 1. Without it one runaway id
        drops every later trade of the symbol as out of order until a restart. Read only off the common path."""
        flow_time = st.flow.last_time
        if not flow_time or abs(ev.trade_time - flow_time) > self.clock_tolerance_ms:
            return False
        bogus, gap = st.last_agg_id, st.skipped_gap
        if gap is not None and gap[1] == bogus:  # the bogus id skipped a gap: it was none, take it back
            before, counted = gap[0], gap[2]
            self.counters["trade_gaps"] -= 1
            self.counters["trade_gaps_skipped"] -= 1
            self.counters["trades_missing"] -= counted
            self.counters["trades_skipped"] -= counted
        else:
            before = ev.agg_id - 1
        st.skipped_gap = None
        st.last_agg_id = before
        n = self.counters["agg_id_ahead"] = self.counters["agg_id_ahead"] + 1
        log.warning(
            "aggTrade id %d lay %d ids ahead of trade %d within %d ms of trade time: forgotten as bogus (its trade stays applied), trades go on"
            " from id %d (%d so far)",
            bogus,
            bogus - ev.agg_id,
            ev.agg_id,
            abs(ev.trade_time - flow_time),
            before + 1,
            n,
            extra={"symbol": st.symbol, "stream": "aggTrade"},
        )
        return True

    # --- aggTrade gaps ----------------------------------------------------------------------------------
    def _open_gap(self, st: SymbolState, ev: AggTrade) -> TradeFillNeeded | None:
        request = TradeFillNeeded(st.symbol, st.last_agg_id + 1, ev.agg_id - 1)
        self.counters["trade_gaps"] += 1
        since_ms = ev.trade_time - st.vwap.last_time
        skip = self._gap_config.skip_reason(request.missing, since_ms)
        if skip is not None:  # too large or too long ago to matter: go on from this trade
            counted = counted_gap(request.missing, since_ms, self.clock_tolerance_ms)
            self.counters["trades_missing"] += counted
            self.counters["trade_gaps_skipped"] += 1
            self.counters["trades_skipped"] += counted
            log.warning(
                "aggTrade gap not filled (%s): %s, trades go on from id %d%s",
                request.reason,
                skip,
                ev.agg_id,
                f" ({counted} ids counted missing: more ids than the trade time explains)"
                if counted < request.missing
                else "",
                extra={"symbol": st.symbol, "stream": "aggTrade"},
            )
            st.skipped_gap = (st.last_agg_id, ev.agg_id, counted)
            st.last_agg_id = ev.agg_id
            self._trade(st, ev.trade_time, ev.price, ev.qty, ev.buyer_is_maker)
            return None
        self.counters["trades_missing"] += request.missing
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
        # the trades applied at once, in id order, for the followers of open signals (the engine) to read
        # after the frame, since flow.last_price shows only the last; a new batch, not an extension of the
        # last one (a consumer drains it after every trade frame of the symbol, and without one it stays one
        # batch), but trades a clock jump released since it was drained are kept, ahead of it (_release_trade)
        released = st.caught_up if st.caught_up is not st.gap_batch else []
        caught_up = st.caught_up = st.gap_batch = released
        for ev in done.filled:
            if self._trade(st, ev.trade_time, ev.price, ev.qty, ev.buyer_is_maker):
                caught_up.append((ev.trade_time, ev.price))
        st.last_agg_id = fill.to_id
        if not done.lost:  # the recovery, logged as its gap was (spec 13.1: errors and recoveries)
            log.info(
                "aggTrade gap filled: %d trades fetched, %d held trades applied after them",
                len(done.filled),
                len(done.held),
                extra={"symbol": st.symbol, "stream": "aggTrade"},
            )
        else:
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
            deferred, too_old = self.deferred, self.counters["trade_too_old"]
            request = self._on_agg_trade(st, ev) or request
            # applied (not held by a new gap) and taken by the windows (not held or rejected as ahead of the clock,
            # nor left out as too old)
            if (
                ev.agg_id <= st.last_agg_id
                and self.deferred == deferred
                and self.counters["trade_too_old"] == too_old
            ):
                caught_up.append((ev.trade_time, ev.price))
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
        """Add a trade to the symbol's windows; False when it is held or rejected as ahead of the clock, or left
        out as older than a window (``trade_too_old``): the followers of open signals are not given it."""
        if time > self.ahead_ms and not self._trade_ahead(st, time, price, qty, buyer_is_maker):
            return False
        return self._add_trade(st, time, price, qty, buyer_is_maker)

    def _trade_ahead(
        self, st: SymbolState, time: int, price: float, qty: float, buyer_is_maker: bool
    ) -> bool:
        """A trade past :attr:`ahead_ms`: True when the windows take it now, False while it is held or rejected.
        Apart from _trade, whose every call would otherwise build the closure's cells."""
        # a tape running on while every depth stream is quiet: within the tolerance of the symbol's own last
        # trade it is its own clock, not a frame ahead of the market's
        if st.flow.last_time and time - st.flow.last_time <= self.clock_tolerance_ms:
            return True
        return self.jump(
            st.symbol, time, lambda: self._release_trade(st, time, price, qty, buyer_is_maker), trade=True
        )

    def _release_trade(
        self, st: SymbolState, time: int, price: float, qty: float, buyer_is_maker: bool
    ) -> None:
        """Add a trade held far ahead of the clock to the windows, now that its jump is confirmed, and hand it to
        the followers of open signals (``caught_up``). They read the newest trade of their symbol's trade frames
        only (``flow.last_price``), and the frame that releases it is another symbol's, or this symbol's next
        trade: without it a stop or target it touched would be missed. At most one trade per symbol a jump."""
        if self._add_trade(st, time, price, qty, buyer_is_maker):
            st.caught_up.append((time, price))

    def _add_trade(self, st: SymbolState, time: int, price: float, qty: float, buyer_is_maker: bool) -> bool:
        """Add a trade the clock accepted (at once, or held until its jump was confirmed) to the windows; False
        when a window left it out. One stamped before the symbol's last trade (``trade_time_regressed``: ids in
        order, times not) is counted and logged at power-of-two counts; within a window's horizon it is added
        all the same (a few ms of skew), but the last price and time stay the newest trade's. Older than a
        window's horizon it could never be inside that window: left out of it (appended it would stay counted
        for a whole window, and once was the last price), counted ``trade_too_old`` and logged likewise."""
        if time < st.flow.last_time:
            self._trade_time_regressed(st, time)
        in_flow = st.flow.add(time, price, qty, buyer_is_maker)
        in_vwap = st.vwap.add(time, price, qty, buyer_is_maker)
        if in_flow and in_vwap:
            return True
        self._trade_too_old(
            st, time, [w.window_ms for w, took in ((st.flow, in_flow), (st.vwap, in_vwap)) if not took]
        )
        return False

    def _trade_time_regressed(self, st: SymbolState, time: int) -> None:
        """Count (and at 1, 2, 4, ... log) a trade older than the symbol's last one: the exchange's trade times
        went back, which the windows take but an operator should see."""
        n = self.counters["trade_time_regressed"] = self.counters["trade_time_regressed"] + 1
        if n & (n - 1) == 0:
            log.warning(
                "trade at %d is %d ms older than the symbol's last trade (%d so far)",
                time,
                st.flow.last_time - time,
                n,
                extra={"symbol": st.symbol, "stream": "trade"},
            )

    def _trade_too_old(self, st: SymbolState, time: int, windows_ms: list[int]) -> None:
        """Count (and at 1, 2, 4, ... log) a trade stamped further before the symbol's last one than the horizon
        of the windows ``windows_ms`` (a bogus time, or a stale trade), which left it out."""
        n = self.counters["trade_too_old"] = self.counters["trade_too_old"] + 1
        if n & (n - 1) == 0:
            log.warning(
                "trade at %d is %d ms older than the symbol's last trade: left out of its %s ms windows and not"
                " followed (%d so far)",
                time,
                st.flow.last_time - time,
                ", ".join(map(str, windows_ms)),
                n,
                extra={"symbol": st.symbol, "stream": "trade"},
            )

    def trade_gap_totals(self) -> dict[str, int]:
        """The :data:`TRADE_GAP_COUNTERS` figures; ``trades_pending``: the ids of the open gaps, not yet counted
        filled or lost (the ids an open gap already received count as filled when it resolves)."""
        totals = {name: self.counters[name] for name in TRADE_GAP_COUNTERS}
        totals["trades_pending"] = sum(s.fill.missing for s in self.symbols.values() if s.fill is not None)
        return totals
