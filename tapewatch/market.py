"""Per-symbol market state fed by typed frames: order book, top-of-book proof, trade flow, candles.

The same object serves live, replay and tests: it never fetches anything. When a book needs a snapshot,
:meth:`Market.on_frame` returns a :class:`~tapewatch.market_depth.SnapshotNeeded` and the caller decides
whether to fetch one (live) or to wait for the captured one (replay); when aggTrade ids skip, it returns a
:class:`~tapewatch.trade_gaps.TradeFillNeeded` and holds the symbol's later trades until the missing ones
arrive or the gap is given up by trade time (:mod:`tapewatch.trade_gaps`).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tapewatch.book import OrderBook
from tapewatch.candles import CandleSeries
from tapewatch.market_clock import CLOCK_TOLERANCE_MS
from tapewatch.market_depth import MarketDepth, SnapshotNeeded, snapshot_limit
from tapewatch.market_klines import KlineFillNeeded, MarketKlines
from tapewatch.market_trades import TRADE_GAP_COUNTERS as TRADE_GAP_COUNTERS
from tapewatch.market_trades import MarketTrades
from tapewatch.parse import Frame
from tapewatch.settings import Settings
from tapewatch.streams import Kind
from tapewatch.topcheck import TopCheck
from tapewatch.trade_flow import TradeWindow
from tapewatch.trade_gaps import FILL_MAX_PAGES, FILL_PAGE_SIZE, PendingFill, TradeFillNeeded, TradeGapConfig

VWAP_WINDOW_MS = 3_600_000
_SNAPSHOT = Kind.SNAPSHOT  # a module constant: read once per frame on the hot path
#: Lost-trade id ranges kept per symbol for operators and tests (the counters keep counting past it).
LOST_RANGES_KEPT = 100


@dataclass(frozen=True, slots=True)
class MarketConfig:
    trade_window_ms: int = 300_000
    vwap_window_ms: int = VWAP_WINDOW_MS
    large_trade_size: float = 50_000.0
    stale_after_ms: int = 5_000
    kline_history_bars: int = 100
    imbalance_levels: int = 10
    trade_fill_timeout_ms: int = 10_000  # see TradeGapConfig
    trade_fill_max_held: int = 20_000
    trade_fill_max_ids: int = FILL_MAX_PAGES * FILL_PAGE_SIZE  # a wider gap is skipped, not filled
    clock_tolerance_ms: int = CLOCK_TOLERANCE_MS  # see tapewatch.market_clock

    @classmethod
    def from_settings(cls, s: Settings) -> MarketConfig:
        return cls(
            trade_window_ms=s.trade_history_window * 1000,
            vwap_window_ms=s.context_tf_ms,  # the rolling VWAP window is context_tf long
            large_trade_size=s.large_trade_size,
            stale_after_ms=int(s.book_stale_after * 1000),
            kline_history_bars=s.kline_history_bars,
            trade_fill_timeout_ms=round(s.trade_fill_timeout * 1000),
        )


#: What :meth:`Market.on_frame` may ask of its caller: a book snapshot, the trades of an aggTrade gap or the
#: klines of a candle hole.
Request = SnapshotNeeded | TradeFillNeeded | KlineFillNeeded | None


class SymbolState:
    """Everything tapewatch knows about one symbol right now."""

    __slots__ = (
        "book",
        "candles",
        "caught_up",
        "check",
        "fill",
        "flow",
        "gap_batch",
        "last_agg_id",
        "last_event_time",
        "last_ticker_id",
        "last_trade_id",
        "lost",
        "skipped_gap",
        "snapshot_pending",
        "symbol",
        "trades_checked_ms",
        "vwap",
    )

    def __init__(self, symbol: str, config: MarketConfig) -> None:
        self.symbol = symbol
        self.book = OrderBook(symbol)
        self.check = TopCheck()
        self.flow = TradeWindow(config.trade_window_ms, config.large_trade_size)
        self.vwap = TradeWindow(config.vwap_window_ms, config.large_trade_size)
        self.candles: dict[str, CandleSeries] = {}
        self.last_agg_id = -1
        self.fill: PendingFill | None = None  # an open aggTrade gap: later trades wait in it
        self.lost: deque[tuple[int, int]] = deque(maxlen=LOST_RANGES_KEPT)  # aggTrade ids given up
        # the last skipped aggTrade gap: (id before it, id after it, ids counted missing), taken back should the
        # id after it prove bogus (MarketTrades._agg_id_bogus)
        self.skipped_gap: tuple[int, int, int] | None = None
        # (trade time, price) of the trades the last resolved gap applied at once, in id order, and of those
        # a clock jump released (MarketTrades._release_trade): the followers of open signals (the engine)
        # read them after the symbol's trade frame, since flow.last_price shows only the last
        self.caught_up: list[tuple[int, float]] = []
        # the caught_up list the last resolved gap made: still the same object while no consumer drained it
        self.gap_batch: list[tuple[int, float]] | None = None
        self.last_trade_id = -1
        # the exchange's now when a trade page brought nothing newer than last_agg_id (Market.next_trade_id)
        self.trades_checked_ms = 0
        self.last_ticker_id = -1
        self.last_event_time = 0
        self.snapshot_pending = False

    def features(self, imbalance_levels: int = 10) -> dict[str, float | int | None]:
        """The replay summary's per-symbol block (DESIGN.md §3), as of this symbol's last event."""
        top = self.book.top() if self.book.synced else None
        return {
            "update_id": self.book.last_update_id,
            "best_bid": top.bid_price if top else None,
            "best_ask": top.ask_price if top else None,
            "imbalance_top10": round(self.book.imbalance(imbalance_levels), 12) if top else None,
            "large_buys_300s": self.flow.large_buys,
            "large_sells_300s": self.flow.large_sells,
            "quote_volume_300s": round(self.flow.quote_volume, 6),
            "vwap_1h": round(v, 10) if (v := self.vwap.vwap) is not None else None,
        }


class Market(MarketDepth, MarketKlines, MarketTrades):
    """All symbols' state; :meth:`on_frame` is the single entry point for market data (the book side in
    :class:`~tapewatch.market_depth.MarketDepth`, the candles in :class:`~tapewatch.market_klines.MarketKlines`,
    the trade side, aggTrade gaps included, in :class:`~tapewatch.market_trades.MarketTrades`).

    :attr:`now_ms` is the exchange's "now", against which every book's staleness is judged and by which the
    engine expires signals: the latest event time of a depth diff or polled snapshot of any symbol. It advances
    freely by up to ``config.clock_tolerance_ms`` (60 s) of event time per frame. A frame further ahead — a diff,
    a polled snapshot or a trade — is held until a jump is confirmed by consistent frames of a quorum of symbols
    (three, fewer in a smaller universe), then applied; else it is rejected and counted (``event_time_ahead``).
    A kline whose bar opens beyond the tolerance is rejected (``kline_ahead``). The rule reads the frames' own
    times only, never ``recv`` or the wall clock (the simulator's accelerated clock outruns both), so a replay
    takes the live run's decisions (:mod:`tapewatch.market_clock`)."""

    def __init__(self, config: MarketConfig | None = None) -> None:
        self.config = config or MarketConfig()
        super().__init__(self.config.clock_tolerance_ms)
        self.symbols: dict[str, SymbolState] = {}
        self.counters: Counter[str] = Counter()
        self.messages = 0
        self._snapshot_limit: int | None = None
        # symbol -> (snapshots failed in a row, exchange time before which its book asks no new one)
        self._snapshot_backoff: dict[str, tuple[int, int]] = {}
        c = self.config
        self._gap_config = TradeGapConfig(
            c.trade_fill_timeout_ms,
            c.trade_fill_max_held,
            c.trade_fill_max_ids,
            max(c.trade_window_ms, c.vwap_window_ms),  # a gap older than the longest window is skipped
        )
        # One handler per event kind (a dict lookup beats an if-chain on the hot path), in the mixins: depth,
        # snapshots and bookTicker in MarketDepth, klines in MarketKlines, trades in MarketTrades.
        # A plain dict holding every kind (a defaultdict misses the interpreter's fast dict subscript).
        self._handlers: dict[Kind, Callable[[SymbolState, Any], Request]] = {
            kind: self._ignore for kind in Kind
        }
        self._handlers.update(
            {
                Kind.DEPTH: self._on_depth,
                Kind.BOOK_TICKER: self._on_book_ticker,
                Kind.AGG_TRADE: self._on_agg_trade,
                Kind.TRADE: self._on_trade,
                Kind.KLINE: self._on_kline,
                Kind.SNAPSHOT: self._on_snapshot,
                Kind.KLINES: self._on_kline_history,
                Kind.CONTROL: self._on_control,
            }
        )

    def state(self, symbol: str) -> SymbolState:
        st = self.symbols.get(symbol)
        if st is None:
            st = self.symbols[symbol] = SymbolState(symbol, self.config)
        return st

    def on_frame(self, frame: Frame) -> Request:
        """Apply one decoded frame. Returns a snapshot request when the symbol's book needs one, a fill
        request when its aggTrade ids skipped."""
        self.messages += 1
        try:  # a subscript, not .get(): one probe per frame without a method call
            st = self.symbols[frame.symbol]
        except KeyError:
            st = self.state(frame.symbol)
        kind = frame.kind
        if kind is _SNAPSHOT:
            self._snapshot_limit = snapshot_limit(frame.stream)
        return self._handlers[kind](st, frame.event)

    def active_symbols(self) -> int:
        """Symbols whose diffs or polls the clock took within the tolerance of now (at least 1): the quorum of a
        jump is capped by it. Read once per candidate jump, never on the common path."""
        since = self.now_ms - self.clock_tolerance_ms
        return max(
            1, sum(1 for s in self.symbols.values() if s.last_event_time and s.last_event_time >= since)
        )

    @staticmethod
    def _ignore(st: SymbolState, ev: object) -> None:
        return None

    # --- totals --------------------------------------------------------------------------------------
    def totals(self) -> dict[str, int]:
        books = [s.book for s in self.symbols.values()]
        checks = [s.check for s in self.symbols.values()]
        return {
            "gaps": sum(b.gaps for b in books),
            "resyncs": sum(b.resyncs for b in books),
            "book_checks": sum(c.checks for c in checks),
            "book_mismatches": sum(c.mismatches for c in checks),
            # the live run's book checkpoints: checked against a synced book here, differing, taken as the book
            "checkpoint_checks": self.counters["checkpoint_checks"],
            "checkpoint_mismatches": self.counters["checkpoint_mismatches"],
            "checkpoint_loads": self.counters["checkpoint_loads"],
            "out_of_order": self.counters["out_of_order_trade"] + self.counters["out_of_order_book_ticker"],
            "event_time_ahead": self.counters["event_time_ahead"],
            "event_time_jumps": self.counters["event_time_jumps"],
            "event_time_held": self.held,
            "held_frame_resyncs": self.counters["held_frame_resyncs"],
            # snapshots dropped as late (the book already synced) and fetches that failed (live only)
            "late_snapshots": self.counters["late_snapshots"],
            "snapshot_failed": self.counters["snapshot_failed"],
            "kline_ahead": self.counters["kline_ahead"],
            # candle holes (a lost closing kline, lost bars), the bars REST refills brought, refills that failed
            "kline_gaps": self.counters["kline_gaps"],
            "kline_bars_filled": self.counters["kline_bars_filled"],
            "kline_fill_failed": self.counters["kline_fill_failed"],
            "book_ticker_ahead": self.counters["book_ticker_ahead"],
            "agg_id_ahead": self.counters["agg_id_ahead"],
            "trade_time_regressed": self.counters["trade_time_regressed"],
            "trade_too_old": self.counters["trade_too_old"],
            **self.trade_gap_totals(),
        }

    def final(self) -> dict[str, dict[str, float | int | None]]:
        return {
            sym: st.features(self.config.imbalance_levels)
            for sym, st in sorted(self.symbols.items())
            if st.book.last_update_id or len(st.vwap)
        }
