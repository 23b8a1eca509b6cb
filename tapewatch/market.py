"""Per-symbol market state fed by typed frames: order book, top-of-book proof, trade flow, candles.

The same object serves live, replay and tests: it never fetches anything. When a book needs a snapshot,
:meth:`Market.on_frame` returns a :class:`SnapshotNeeded` and the caller decides whether to fetch one
(live) or to wait for the captured one (replay); when aggTrade ids skip, it returns a
:class:`~tapewatch.trade_gaps.TradeFillNeeded` and holds the symbol's later trades until the missing ones
arrive or the gap is given up by trade time (:mod:`tapewatch.trade_gaps`).
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from tapewatch.book import APPLIED, BUFFERED, Applied, Buffered, Dropped, NeedsResync, OrderBook, Outcome
from tapewatch.candles import CandleSeries
from tapewatch.events import BookTicker, DepthRestart, DepthSnapshot, DepthUpdate, Kline, KlineHistory
from tapewatch.market_clock import CLOCK_TOLERANCE_MS
from tapewatch.market_trades import TRADE_GAP_COUNTERS as TRADE_GAP_COUNTERS
from tapewatch.market_trades import MarketTrades
from tapewatch.parse import Frame
from tapewatch.polled import PolledSnapshot
from tapewatch.settings import Settings
from tapewatch.streams import Kind
from tapewatch.topcheck import TopCheck
from tapewatch.trade_flow import TradeWindow
from tapewatch.trade_gaps import FILL_MAX_PAGES, FILL_PAGE_SIZE, PendingFill, TradeFillNeeded, TradeGapConfig

log = logging.getLogger(__name__)

VWAP_WINDOW_MS = 3_600_000
_SNAPSHOT = Kind.SNAPSHOT  # a module constant: read once per frame on the hot path
#: 1-minute candles kept for the 240-minute return correlation (plus margin for gaps).
RETURNS_HISTORY_BARS = 261
#: Lost-trade id ranges kept per symbol for operators and tests (the counters keep counting past it).
LOST_RANGES_KEPT = 100
#: Exchange time (ms) a kline refill may go unanswered before it is asked again (counted ``kline_fill_failed``):
#: the service paces refills (a reconnect of the whole market asks for two per symbol), so it waits long.
KLINE_FILL_TIMEOUT_MS = 600_000
#: Update ids a bookTicker may lead its synced book by and still count as in order for a later, older ticker
#: that does not (Market._ticker_id_bogus). Binance's ids are shared by all symbols and grew by about 80,000 a
#: second in 2024 (BTCUSDT recording), tickers lead the 100 ms diffs by < 300,000 in the recordings: 10^9 is
#: hours of a synced book not moving, while a corrupted id (10^15 for a book at 7*10^12) lies far past it.
TICKER_LEAD_MAX_IDS = 1_000_000_000


def history_klines(kline_history_bars: int) -> tuple[tuple[str, int], ...]:
    """(interval, limit) of the REST kline history a symbol needs at start: the 15m context of
    ``kline_history_bars`` closed candles (one more for the forming one) and four hours of 1m candles."""
    return (("15m", kline_history_bars + 1), ("1m", RETURNS_HISTORY_BARS))


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


def snapshot_limit(stream: str) -> int | None:
    """The ``limit`` of a captured snapshot's request, ``rest:/fapi/v1/depth?symbol=X&limit=100`` -> 100."""
    _, sep, rest = stream.partition("limit=")
    digits = rest.split("&", 1)[0]
    return int(digits) if sep and digits.isdigit() else None


class KlineFillNeeded(NamedTuple):
    """The candle series of ``symbol`` and ``interval`` misses the bars opening from ``start`` to ``end`` (ms,
    both included: a ``startTime``/``endTime`` REST klines request) or holds them only provisionally
    (:class:`~tapewatch.candles.CandleSeries`). The answer, captured, is applied as history (``Kind.KLINES``)."""

    symbol: str
    interval: str
    start: int
    end: int
    bars: int  # the most bars the range holds: the request's limit


class SnapshotNeeded(NamedTuple):
    """The book of ``symbol`` needs a REST snapshot (cold start, gap, crossed book, stream restart)."""

    symbol: str
    reason: str


#: Exchange time (ms) a book waits after its first failed snapshot before its next diff asks again; doubled
#: on each failure in a row, up to SNAPSHOT_RETRY_MAX_MS (see Market.snapshot_failed).
SNAPSHOT_RETRY_MS = 5_000
SNAPSHOT_RETRY_MAX_MS = 300_000


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


class Market(MarketTrades):
    """All symbols' state; :meth:`on_frame` is the single entry point for market data (the trade side, aggTrade
    gaps included, in :class:`~tapewatch.market_trades.MarketTrades`).

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

    # One handler per event kind (a dict lookup beats an if-chain on the hot path).
    def _on_depth(self, st: SymbolState, ev: DepthUpdate) -> SnapshotNeeded | None:
        t = ev.event_time
        if t > self.now_ms:
            if t <= self.ahead_ms:  # the common path
                self.now_ms = t
                self.ahead_ms = t + self.clock_tolerance_ms
            elif not self._diff_ahead(st, ev):
                return None
        st.last_event_time = t
        book = st.book
        outcome = book.apply(ev)
        if outcome is APPLIED:  # the common case, without the dispatch of _book_outcome
            st.check.on_sides(ev.final_id, book.bids, book.asks)  # the bookTicker proof, no Top unless kept
            return None
        if outcome is BUFFERED and st.snapshot_pending:  # waiting for the snapshot asked for (a cold start)
            return None
        return self._book_outcome(st, outcome)

    def _diff_ahead(self, st: SymbolState, ev: DepthUpdate) -> bool:
        """A diff far ahead of the clock: True when it confirms a jump (the clock is moved to it and the diff
        applies now), False while it is held or rejected: neither the book nor the clock takes it (yet). Apart
        from _on_depth, whose every call would otherwise build the closure's cells."""
        t = ev.event_time
        if self.jump(st.symbol, t, lambda: self._held_diff(st, ev)):
            self.advance(t)  # never back: the held frames a jump applied may lie past this one
            return True
        return False

    def _held_diff(self, st: SymbolState, ev: DepthUpdate) -> None:
        """Apply a diff held far ahead of the clock, now that its jump is confirmed (the clock is within the
        tolerance of it)."""
        self.advance(ev.event_time)
        st.last_event_time = ev.event_time
        self._held_request(st, self._book_outcome(st, st.book.apply(ev)))

    def _held_request(self, st: SymbolState, request: SnapshotNeeded | None) -> None:
        """What a held frame's replay asked for: no caller waits for it, so a book it leaves needing a snapshot
        keeps none pending and the symbol's next diff asks for one (counted, logged)."""
        if request is not None:
            st.snapshot_pending = False
            self.counters["held_frame_resyncs"] += 1
            log.warning(
                "a frame held for a clock jump left the book needing a snapshot: the next diff asks for it",
                extra={"symbol": st.symbol, "stream": "depth"},
            )

    def active_symbols(self) -> int:
        """Symbols whose diffs or polls the clock took within the tolerance of now (at least 1): the quorum of a
        jump is capped by it. Read once per candidate jump, never on the common path."""
        since = self.now_ms - self.clock_tolerance_ms
        return max(
            1, sum(1 for s in self.symbols.values() if s.last_event_time and s.last_event_time >= since)
        )

    def _on_book_ticker(self, st: SymbolState, ev: BookTicker) -> None:
        if ev.update_id <= st.last_ticker_id and not self._ticker_id_bogus(st, ev):
            self.counters["out_of_order_book_ticker"] += 1
            return
        st.last_ticker_id = ev.update_id
        st.check.on_ticker(ev)

    def _ticker_id_bogus(self, st: SymbolState, ev: BookTicker) -> bool:
        """Whether the ticker ``ev``, older than the symbol's last one, shows that last one's id was bogus: both
        judged against the synced book's last applied id, the last ticker lies more than
        :data:`TICKER_LEAD_MAX_IDS` ahead of it and ``ev`` does not. Then the bogus ticker is forgotten (counted
        ``book_ticker_ahead``, logged) and ``ev`` taken, else one corrupted ``u`` would make every later ticker
        "out of order" and stop the top-of-book proof for good. Read only off the common path (an out-of-order
        ticker; none in the real recordings), and never while the book is not synced: its id means nothing."""
        book = st.book
        if not book.synced:
            return False
        u = book.last_update_id
        if st.last_ticker_id - u <= TICKER_LEAD_MAX_IDS or ev.update_id - u > TICKER_LEAD_MAX_IDS:
            return False
        st.check.forget_ticker(st.last_ticker_id)
        n = self.counters["book_ticker_ahead"] = self.counters["book_ticker_ahead"] + 1
        log.warning(
            "bookTicker u=%d lay %d ids ahead of the book (u=%d): dropped, tickers go on from u=%d (%d so far)",
            st.last_ticker_id,
            st.last_ticker_id - u,
            u,
            ev.update_id,
            n,
            extra={"symbol": st.symbol, "stream": "bookTicker"},
        )
        return True

    def _on_kline(self, st: SymbolState, ev: Kline) -> KlineFillNeeded | None:
        candle = ev.candle
        if candle.open_time > self.ahead_ms and self._kline_ahead(st, candle.open_time):
            return None
        series = st.candles.get(candle.interval) or self.series(st, candle.interval)
        series.update(candle)
        if series.missing is None:
            return None
        return self.kline_fill(st, series, candle.interval, max(self.now_ms, ev.event_time))

    def _on_kline_history(self, st: SymbolState, ev: KlineHistory) -> KlineFillNeeded | None:
        candles = ev.candles
        if candles and max(c.open_time for c in candles) > self.ahead_ms:
            candles = [c for c in candles if not self._kline_ahead(st, c.open_time)]
        series = self.series(st, ev.interval)
        filled = series.bars_filled
        series.extend_history(candles)
        self.counters["kline_bars_filled"] += series.bars_filled - filled
        asked = series.asked
        if asked is None:
            return None
        if not candles or max(c.close_time for c in candles) < asked[1]:
            # not the refill's answer (it reaches the end asked for): the history of a symbol that
            # (re)joined while a refill was in flight; the refill's own answer, or its timeout, settles it
            return None
        series.asked = None  # answered: the refill in flight is done, whatever it brought
        if series.missing is None:
            return None
        if series.missing[1] > asked[1]:  # a hole found while the refill was in flight: ask for the rest
            return self.kline_fill(st, series, ev.interval, self.now_ms)
        self._kline_fill_failed(st, series, ev.interval, "the answer lacks them: given up")
        series.missing = None  # not asked again: REST has no more to give (a later hole may span them again)
        return None

    def kline_fill(
        self, st: SymbolState, series: CandleSeries, interval: str, now: int
    ) -> KlineFillNeeded | None:
        """The refill a candle hole needs (``series.missing``), at most one in flight per symbol and interval:
        counted (``kline_gaps``) and logged once per hole; asked again, the first one given up (counted
        ``kline_fill_failed``), when the one in flight got no answer within :data:`KLINE_FILL_TIMEOUT_MS` of
        ``now`` (the exchange's time of the frame, so a replay takes the same decisions: it never hears of a
        failed request either). A hole found while a refill is in flight is asked for when its answer came."""
        missing = series.missing
        assert missing is not None
        if series.holes != series.holes_seen:
            self.counters["kline_gaps"] += series.holes - series.holes_seen
            series.holes_seen = series.holes
            log.warning(
                "%s klines missing or unclosed from %d to %d: closed provisionally, refill %s",
                interval,
                missing[0],
                missing[1],
                "asked" if series.asked is None else "asked when the one in flight is answered",
                extra={"symbol": st.symbol, "stream": f"kline_{interval}"},
            )
        asked = series.asked
        if asked is not None:
            if now - asked[0] <= KLINE_FILL_TIMEOUT_MS:
                return None
            self._kline_fill_failed(st, series, interval, "no answer in time: asked again")
        # only the bars the series keeps are worth asking for (a disconnect of hours holds more)
        last = series.closed[-1]  # a hole always follows a closed bar
        bar_ms = last.close_time - last.open_time + 1
        keep = series.closed.maxlen or len(series.closed)
        start, end = max(missing[0], missing[1] + 1 - keep * bar_ms), missing[1]
        series.missing = (start, end)
        series.asked = (now, end)
        return KlineFillNeeded(st.symbol, interval, start, end, (end - start) // bar_ms + 1)

    def _kline_fill_failed(self, st: SymbolState, series: CandleSeries, interval: str, why: str) -> None:
        """Count and log a refill that brought nothing (its bars stay as they are: provisional or absent)."""
        self.counters["kline_fill_failed"] += 1
        log.warning(
            "%s kline refill of %s failed (%s)",
            interval,
            series.missing,
            why,
            extra={"symbol": st.symbol, "stream": f"kline_{interval}"},
        )
        series.asked = None

    def _kline_ahead(self, st: SymbolState, open_time: int) -> bool:
        """Whether a bar opening at ``open_time`` lies beyond the tolerance of the running clock: every later
        bar would look older than it and be ignored, freezing the series, so it is rejected (counted
        ``kline_ahead``). Before the clock starts, and after a jump, bars are taken as they come."""
        now = self.now_ms
        if not now or open_time <= now + self.clock_tolerance_ms:
            return False
        n = self.counters["kline_ahead"] = self.counters["kline_ahead"] + 1
        if n & (n - 1) == 0:
            log.warning(
                "kline opening %.1f s ahead of the exchange clock rejected (%d so far)",
                (open_time - now) / 1000,
                n,
                extra={"symbol": st.symbol, "stream": "kline"},
            )
        return True

    def series(self, st: SymbolState, interval: str) -> CandleSeries:
        """The candle series of ``interval`` (1m keeps enough for 240 minutes of returns)."""
        series = st.candles.get(interval)
        if series is None:
            keep = (
                max(self.config.kline_history_bars, 260)
                if interval == "1m"
                else self.config.kline_history_bars
            )
            series = st.candles[interval] = CandleSeries(keep)
        return series

    def _on_snapshot(self, st: SymbolState, ev: DepthSnapshot) -> Request:
        if type(ev) is PolledSnapshot:
            return self._on_polled(st, ev)
        self.counters["snapshots"] += 1
        late = st.book.synced  # the book drops a snapshot it did not ask for (OrderBook.load_snapshot)
        outcome = st.book.load_snapshot(ev, self._snapshot_limit)
        if late:
            assert isinstance(outcome, Dropped)
            self._late_snapshot(st, outcome)
            return None
        st.snapshot_pending = False
        if self._snapshot_backoff:
            self._snapshot_backoff.pop(st.symbol, None)
        st.check.reset()
        return self._book_outcome(st, outcome)

    def _late_snapshot(self, st: SymbolState, dropped: Dropped) -> None:
        """A snapshot the book dropped as late: it holds a consistent view (synced by diffs, or polled) and so
        asked for none, e.g. a fetch in flight when the depth stream restarted, answered after a first snapshot
        already synced the book. Counted (``late_snapshots``) and logged; the book's rule reads its state
        only, so a replay of the capture drops the same frames."""
        self.counters["late_snapshots"] += 1
        log.info("%s: dropped", dropped.reason, extra={"symbol": st.symbol, "stream": "depth"})

    def snapshot_failed(self, symbol: str, reason: str, retry_after_s: float = 0.0) -> None:
        """The snapshot fetched for ``symbol``'s book failed for good (``reason``; the REST client's retries
        spent, or Binance refused it). The book keeps buffering, no longer waits for that answer, and its first
        diff after a backoff of exchange time asks again: :data:`SNAPSHOT_RETRY_MS` doubled on each failure in
        a row up to :data:`SNAPSHOT_RETRY_MAX_MS`, at least ``retry_after_s`` (a pause or a ban of the REST
        client). Counted (``snapshot_failed``), logged once per failure, i.e. per backoff step; a loaded
        snapshot ends the backoff. Live only: a replay never hears of a failed fetch (it has no answer to
        apply), and waits for the captured snapshot as it always does."""
        st = self.state(symbol)
        failures = self._snapshot_backoff.get(symbol, (0, 0))[0] + 1
        wait_ms = max(
            min(SNAPSHOT_RETRY_MAX_MS, SNAPSHOT_RETRY_MS << min(failures - 1, 16)),
            round(retry_after_s * 1000),
        )
        self._snapshot_backoff[symbol] = (failures, self.now_ms + wait_ms)
        st.snapshot_pending = False
        self.counters["snapshot_failed"] += 1
        log.warning(
            "snapshot failed (%d in a row): %s; the book asks again after %.0f s",
            failures,
            reason,
            wait_ms / 1000,
            extra={"symbol": symbol, "stream": "depth"},
        )

    def _on_polled(self, st: SymbolState, ev: PolledSnapshot) -> SnapshotNeeded | None:
        """A snapshot the backup feed polled: the book is loaded from it alone (``OrderBook.load_polled``),
        and its event time advances the exchange's now as a diff's would (no diffs come meanwhile)."""
        self.counters["polled_snapshots"] += 1
        t = ev.event_time or ev.transaction_time  # the time the book takes (OrderBook.load_polled)
        if t > self.ahead_ms and not self.jump(
            st.symbol, t, lambda: self._held_request(st, self._load_polled(st, ev))
        ):
            return None
        return self._load_polled(st, ev)

    def _load_polled(self, st: SymbolState, ev: PolledSnapshot) -> SnapshotNeeded | None:
        """Load a polled snapshot whose time the clock accepts (at once, or held until a jump was confirmed)."""
        outcome = st.book.load_polled(ev, ev.every_ms)
        if isinstance(outcome, Dropped):
            self.counters["polled_snapshots_dropped"] += 1
            log.debug("polled snapshot dropped: %s", outcome.reason, extra={"symbol": st.symbol})
            return None
        st.last_event_time = t = st.book.last_event_time
        self.advance(t)
        st.snapshot_pending = False
        st.check.reset()
        return self._book_outcome(st, outcome)

    @staticmethod
    def _ignore(st: SymbolState, ev: object) -> None:
        return None

    def _on_control(self, st: SymbolState, ev: object) -> SnapshotNeeded | None:
        """A captured depth stream restart restarts the book, live and in replay alike (the live service
        applies the frame it captures); other commands (pause/resume) are the engine's."""
        if type(ev) is DepthRestart:
            return self.restart_stream(st.symbol, f"depth stream {ev.reason}")
        return None

    def book_usable(self, symbol: str) -> bool:
        """True when the symbol's book is synced, not crossed and fresh against the exchange's now."""
        st = self.symbols.get(symbol)
        return st is not None and st.book.is_usable(self.now_ms, self.config.stale_after_ms)

    def restart_stream(self, symbol: str, reason: str) -> SnapshotNeeded:
        """The depth stream of ``symbol`` (re)connected: its book must be rebuilt from a new snapshot."""
        st = self.state(symbol)
        st.book.reset(reason)
        st.check.reset()
        st.snapshot_pending = True
        return SnapshotNeeded(symbol, reason)

    def _book_outcome(self, st: SymbolState, outcome: Outcome) -> SnapshotNeeded | None:
        if isinstance(outcome, Applied):
            book = st.book
            st.check.on_sides(book.last_update_id, book.bids, book.asks)
            if outcome.synced_now:
                self.counters["syncs"] += 1
            return None
        if isinstance(outcome, NeedsResync):
            self.counters["resync_requests"] += 1
            st.check.reset()
            log.warning(
                "book out of sync: %s", outcome.reason, extra={"symbol": st.symbol, "stream": "depth"}
            )
            st.snapshot_pending = True
            return SnapshotNeeded(st.symbol, outcome.reason)
        if isinstance(outcome, Buffered) and not st.snapshot_pending:
            backoff = self._snapshot_backoff.get(st.symbol) if self._snapshot_backoff else None
            if backoff is not None and self.now_ms < backoff[1]:
                return None  # the last snapshot failed: wait out the backoff (Market.snapshot_failed)
            st.snapshot_pending = True
            reason = "cold start" if backoff is None else "retry after a failed snapshot"
            return SnapshotNeeded(st.symbol, reason)
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
