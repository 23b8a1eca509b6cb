"""The order-book side of the market state: depth diffs, REST and polled snapshots, the bookTicker proof of
the top of book, and depth stream restarts.

A mixin of :class:`tapewatch.market.Market` (kept apart to keep that module small). It never fetches anything:
when a book needs a snapshot, the handlers return a :class:`SnapshotNeeded` and the caller decides whether to
fetch one (live) or to wait for the captured one (replay). A failed fetch backs the book's next request off
(:meth:`MarketDepth.snapshot_failed`).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, NamedTuple

from tapewatch.book import APPLIED, BUFFERED, Applied, Buffered, Dropped, NeedsResync, Outcome
from tapewatch.events import BookCheckpoint, BookTicker, DepthRestart, DepthSnapshot, DepthUpdate
from tapewatch.market_clock import MarketClock
from tapewatch.polled import PolledSnapshot

if TYPE_CHECKING:
    from tapewatch.market import MarketConfig, Request, SymbolState

log = logging.getLogger("tapewatch.market")  # the market's logger: its lines keep the name they always had

#: Update ids a bookTicker may lead its synced book by and still count as in order for a later, older ticker
#: that does not (Market._ticker_id_bogus). Binance's ids are shared by all symbols and grew by about 80,000 a
#: second in 2024 (BTCUSDT recording), tickers lead the 100 ms diffs by < 300,000 in the recordings: 10^9 is
#: hours of a synced book not moving, while a corrupted id (10^15 for a book at 7*10^12) lies far past it.
TICKER_LEAD_MAX_IDS = 1_000_000_000


def snapshot_limit(stream: str) -> int | None:
    """The ``limit`` of a captured snapshot's request, ``rest:/fapi/v1/depth?symbol=X&limit=100`` -> 100."""
    _, sep, rest = stream.partition("limit=")
    digits = rest.split("&", 1)[0]
    return int(digits) if sep and digits.isdigit() else None


class SnapshotNeeded(NamedTuple):
    """The book of ``symbol`` needs a REST snapshot (cold start, gap, crossed book, a bookTicker that proved it
    wrong, stream restart)."""

    symbol: str
    reason: str


#: Exchange time (ms) a book waits after its first failed snapshot before its next diff asks again; doubled
#: on each failure in a row, up to SNAPSHOT_RETRY_MAX_MS (see Market.snapshot_failed).
SNAPSHOT_RETRY_MS = 5_000
SNAPSHOT_RETRY_MAX_MS = 300_000


class MarketDepth(MarketClock):
    """The depth, snapshot, bookTicker and depth-restart handlers of :class:`~tapewatch.market.Market`, and the
    outcomes of its books: a diff or polled snapshot stamped beyond the tolerance of the exchange's clock
    (:mod:`tapewatch.market_clock`) is held until its jump is confirmed."""

    config: MarketConfig
    symbols: dict[str, SymbolState]
    counters: Counter[str]
    _snapshot_limit: int | None
    _snapshot_backoff: dict[str, tuple[int, int]]

    if TYPE_CHECKING:

        def state(self, symbol: str) -> SymbolState: ...

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
            # the bookTicker proof (no Top unless kept): a mismatch restarts the book
            wrong = st.check.on_sides(ev.final_id, book.bids, book.asks)
            return None if wrong is None else self._proven_wrong(st, wrong)
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

    def _on_book_ticker(self, st: SymbolState, ev: BookTicker) -> SnapshotNeeded | None:
        if ev.update_id <= st.last_ticker_id and not self._ticker_id_bogus(st, ev):
            self.counters["out_of_order_book_ticker"] += 1
            return None
        st.last_ticker_id = ev.update_id
        wrong = st.check.on_ticker(ev)
        return None if wrong is None else self._proven_wrong(st, wrong)

    def _proven_wrong(self, st: SymbolState, mismatch: str) -> SnapshotNeeded | None:
        """A bookTicker disagreed with the book at the same update id (``mismatch``, counted by the check):
        the book is wrong and is never read again as it is. It goes out of sync and asks for a snapshot by the
        path a sequence gap takes (:meth:`_book_outcome`: ``resync_requests``, logged, one snapshot pending,
        fetched by the live service's scheduler like every resync), reason ``book_mismatch: ...``, counted
        ``resync_book_mismatch``; the engine skips the symbol (``book_resyncing``) until a snapshot synced it
        again. A replay of the capture takes the same decision and finds the snapshot the live run fetched."""
        self.counters["resync_book_mismatch"] += 1
        return self._book_outcome(st, st.book.reset(f"book_mismatch: {mismatch}"))

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

    def _on_control(self, st: SymbolState, ev: object) -> SnapshotNeeded | None:
        """A captured depth stream restart restarts the book, live and in replay alike (the live service
        applies the frame it captures); a captured book checkpoint checks or gives the book (replay only: the
        live service writes it from its books); other commands (pause/resume) are the engine's."""
        if type(ev) is DepthRestart:
            return self.restart_stream(st.symbol, f"depth stream {ev.reason}")
        if type(ev) is BookCheckpoint:
            return self._on_checkpoint(st, ev)
        return None

    def _on_checkpoint(self, st: SymbolState, cp: BookCheckpoint) -> SnapshotNeeded | None:
        """The live run's book at a checkpoint: a book that has synced here must be the same
        (``checkpoint_checks``); one that is not — other levels, another update id, or out of sync where the
        live one was synced: the replay lost a line the live run applied (a full capture queue, the last second
        of a killed writer) — is counted (``checkpoint_mismatches``, logged) and takes the live one, as does a
        book that never synced here (``checkpoint_loads``: a replay that starts at this hour file, the earlier
        ones pruned, has no snapshot to wait for), so the replay goes on from what the live run had, and the
        engine reads what it read."""
        book = st.book
        if book.ever_synced:
            self.counters["checkpoint_checks"] += 1
            differs = book.differs(cp)
            if differs is None:
                return None
            self.counters["checkpoint_mismatches"] += 1
            log.warning(
                "book differs from the live run's checkpoint: %s; the live book is taken",
                differs,
                extra={"symbol": st.symbol, "stream": "depth"},
            )
        else:
            self.counters["checkpoint_loads"] += 1
            log.info(
                "book taken from the live run's checkpoint at u=%d (it was %s here)",
                cp.last_update_id,
                book.state.value,
                extra={"symbol": st.symbol, "stream": "depth"},
            )
        st.snapshot_pending = False
        if self._snapshot_backoff:
            self._snapshot_backoff.pop(st.symbol, None)
        st.check.reset()
        st.last_event_time = max(st.last_event_time, cp.event_time)
        return self._book_outcome(st, book.restore(cp))

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
            if outcome.synced_now:
                self.counters["syncs"] += 1
            wrong = st.check.on_sides(book.last_update_id, book.bids, book.asks)
            return None if wrong is None else self._proven_wrong(st, wrong)
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
