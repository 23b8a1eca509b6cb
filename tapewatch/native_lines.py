"""The native replay path: capture lines of depth diffs, bookTickers, aggTrades and klines applied to a
:class:`Market` in C.

A books-only replay (``tapewatch replay --books-only``, the bench's ``replay`` stage) spends most of its time on
the four most frequent kinds of line, and most of that in the interpreter: a typed decode, a frame, the market's
dispatch, the book's method calls, the top-of-book proof. The native feeder (``tapewatch._sides.LineFeeder``,
``tapewatch/_native_lines.c``) reads such a line and applies it to the same
:class:`~tapewatch.market.SymbolState` (book sides, update ids, the market clock, the
:class:`~tapewatch.topcheck.TopCheck` dicts, the last aggTrade id) without a typed frame or a dispatch per line; an
aggTrade goes into the two trade windows by ``TradeWindow.add``'s steps written in C, a kline that updates the
forming bar replaces it with a copy given the kline's values, and a kline that closes or opens a bar goes as a
:class:`~tapewatch.events.Candle` built in C to ``CandleSeries.update``.

It takes a line only on the common path, which it recognises before changing anything: well-formed JSON, a
synced book that the diff continues or a book waiting for the snapshot it asked for (the diff is kept in the
book's buffer as a ``BufferedDiff``: the DepthUpdate's values in one object, most of a cold start's buffer being
dropped at the snapshot unread), an event time the clock takes without a jump, a ticker newer than the last,
an aggTrade whose id is the next after the last applied one (no gap held) at a time the clock takes and not before
the symbol's newest trade, a kline of the stream's interval within the clock's tolerance, its bar possible, for an
existing series. Anything else — snapshots, ``@trade`` fills, a series' first kline, control lines, REST answers, a
gap, a jump, an out-of-order ticker or trade, a malformed line — is left to the Python path
(:meth:`NativeLines.feed` returns its index), which handles it as live does. The rare turns that come after a
change are finished here in Python with the market's own code: a diff whose new top the book must judge
(:meth:`_after_apply`), a ticker that disagrees with the book (:meth:`_mismatch`) and a kline that left a candle
hole (:meth:`_after_kline`). tests/tapewatch/test_native_lines.py replays every capture both ways and compares the
whole market state.

The signal engine reads every depth frame, so a replay with the engine does not use this path.
"""

from __future__ import annotations

from tapewatch import book_sides
from tapewatch.book import OrderBook
from tapewatch.book_types import BookState
from tapewatch.candles import CandleSeries
from tapewatch.events import Candle
from tapewatch.market import Market, Request, SymbolState
from tapewatch.parse import FrameDecoder
from tapewatch.streams import Kind
from tapewatch.topcheck import HeldTicker, Quote, TopCheck, _drop_oldest
from tapewatch.trade_flow import FlowTrade, TradeWindow

try:
    from tapewatch._sides import LineFeeder
except ImportError:  # built without a C compiler (or an older build): the Python path does everything
    AVAILABLE = False
else:
    AVAILABLE = True

_KINDS = {Kind.DEPTH: 1, Kind.BOOK_TICKER: 2, Kind.AGG_TRADE: 3, Kind.KLINE: 4}
#: What the feeder is told of a stream: (kind code, symbol, state, book, proof, bids, asks) — for an aggTrade
#: stream the last two are the symbol's trade windows (flow, vwap); for a kline stream (4, symbol, state, candle
#: series, interval, None, None); False: not yet; None: never (its lines take the Python path).
RouteAnswer = tuple[int, str, SymbolState, object, object, object, object] | bool | None


class NativeLines:
    """Feeds the depth and bookTicker lines of a batch to ``market`` in C (see the module). ``requests`` collects
    what the market asked for on lines finished here (a resync after a mismatch), for the caller to count as it
    counts the Python path's; :meth:`finish` adds the lines taken to the market's and the decoder's counts."""

    def __init__(self, market: Market, decoder: FrameDecoder) -> None:
        if not AVAILABLE or not book_sides.NATIVE:
            raise RuntimeError("the native replay path is not built (tapewatch._sides): use the Python path")
        self.market = market
        self.decoder = decoder
        self.requests: list[Request] = []
        self._finished = False
        self._feeder = LineFeeder(
            market,
            self._route,
            self._after_apply,
            self._mismatch,
            self._after_kline,
            _drop_oldest,
            BookState.SYNCED,
            BookState.WAITING_SNAPSHOT,
            SymbolState,
            OrderBook,
            TopCheck,
            TradeWindow,
            CandleSeries,
            Candle,
            FlowTrade,
        )
        self.feed = self._feeder.feed

    def _route(self, stream: str) -> RouteAnswer:
        """What the feeder needs of a stream, asked once per stream: its kind, symbol and state; None when its
        lines never take the native path, False when not yet (the symbol has no state: its first line creates it
        on the Python path)."""
        route = self.decoder.websocket_route(stream)
        code = None if route is None else _KINDS.get(route[1])
        if route is None or code is None:
            return None
        symbol, kind, interval = route
        st = self.market.symbols.get(symbol)
        if st is None:
            return False
        if kind is Kind.KLINE:
            series = st.candles.get(interval) if interval is not None else None
            if series is None:  # its first kline or history creates it, on the Python path
                return False
            return code, symbol, st, series, interval, None, None
        if kind is Kind.AGG_TRADE:
            return code, symbol, st, st.book, st.check, st.flow, st.vwap
        return code, symbol, st, st.book, st.check, st.book.bids, st.book.asks

    def _after_apply(self, st: SymbolState, line: bytes) -> None:
        """A diff the feeder applied whose new top the floor/ceiling test refused (an empty side, a crossed book, a
        price past a partial snapshot's depth): the book judges it (:meth:`OrderBook._check_top`) and the market
        acts on the outcome, as :meth:`Market._on_depth` does."""
        frame = self.decoder.decode_capture_line(line)
        assert frame is not None, "the feeder took a line the decoder refuses"
        self.market.messages += 1
        outcome = st.book._check_top(frame.event, False)  # type: ignore[arg-type]
        if (request := self.market._book_outcome(st, outcome)) is not None:
            self.requests.append(request)

    def _after_kline(self, st: SymbolState, series: CandleSeries, interval: str, event_time: int) -> None:
        """A kline the feeder gave to its series that left a candle hole: the refill is asked for (counted,
        logged, at most one in flight) by :meth:`MarketKlines.kline_updated`, as on the Python path."""
        if (request := self.market.kline_updated(st, series, interval, event_time)) is not None:
            self.requests.append(request)

    def _mismatch(self, st: SymbolState, update_id: int, ticker: HeldTicker, top: Quote) -> None:
        """A ticker that disagreed with the book at ``update_id``: counted, and the book restarted, as
        :meth:`Market._on_book_ticker` / :meth:`Market._on_depth` do."""
        wrong = st.check.mismatched(update_id, ticker, top)
        if (request := self.market._proven_wrong(st, wrong)) is not None:
            self.requests.append(request)

    def counts(self) -> dict[str, int]:
        """Lines taken: ``taken`` entirely in C, ``callbacks`` finished here; ``diffs`` (applied), ``buffered``
        (diffs kept for a snapshot), ``tickers``, ``trades`` (aggTrades) and ``klines`` by kind."""
        counts: dict[str, int] = self._feeder.counts()
        return counts

    def finish(self) -> dict[str, int]:
        """Add the lines taken entirely in C to ``market.messages`` and ``decoder.decoded`` (counted in C while
        feeding; a line finished by a callback was counted there), once; returns :meth:`counts`."""
        counts = self.counts()
        if not self._finished:
            self._finished = True
            self.market.messages += counts["taken"]
            self.decoder.decoded += counts["taken"]
        return counts
