"""A local order book kept exactly by Binance USD-M's snapshot + diff procedure, as a pure state machine.

Procedure ("How to manage a local order book correctly", USD-M):
1. buffer ``depth`` events; fetch a REST snapshot;
2. drop events with ``u < lastUpdateId``;
3. the first applied event must satisfy ``U <= lastUpdateId <= u``;
4. every next event's ``pu`` must equal the previous event's ``u``; otherwise resync;
5. quantity 0 removes a level.

:meth:`OrderBook.apply` and :meth:`OrderBook.load_snapshot` return what happened (:class:`Applied`,
:class:`Buffered`, :class:`Dropped`, :class:`NeedsResync`); the caller decides what to fetch and when.
While the websockets are off, :meth:`OrderBook.load_polled` loads the backup feed's REST polls instead: each
stands alone (state POLLED, fresh for the poll interval), and a diff on such a book starts a normal resync.
Nothing here reads a clock: ``now_ms`` is passed in where freshness matters.
"""

from __future__ import annotations

from collections import deque

from tapewatch import book_sides
from tapewatch.book_types import (
    APPLIED,
    APPLIED_SYNC,
    BUFFERED,
    FULL_DEPTH,
    Applied,
    BookHealth,
    BookState,
    Buffered,
    Diff,
    Dropped,
    Health,
    NeedsResync,
    Outcome,
    Top,
)
from tapewatch.events import BookCheckpoint, DepthSnapshot

__all__ = [
    "APPLIED",
    "APPLIED_SYNC",
    "BUFFERED",
    "FULL_DEPTH",
    "Applied",
    "BookHealth",
    "BookState",
    "Buffered",
    "Diff",
    "Dropped",
    "Health",
    "NeedsResync",
    "OrderBook",
    "Outcome",
    "Top",
]


# Module constants for the hot path: reading an enum member through its class costs ~100 ns in 3.11.
_WAITING_SNAPSHOT = BookState.WAITING_SNAPSHOT
_WAITING_SYNC_EVENT = BookState.WAITING_SYNC_EVENT
_SYNCED = BookState.SYNCED
_POLLED = BookState.POLLED


class OrderBook:
    """The local book of one symbol. Read it only while :meth:`is_usable` says so."""

    # slots: replay keeps ~800 books, out of cache; a slot is read at a fixed offset of the object
    __slots__ = (
        "_ask_ceiling",
        "_bid_floor",
        "_buffer",
        "applied",
        "asks",
        "beyond_snapshot",
        "bids",
        "crossed_events",
        "dropped",
        "ever_synced",
        "gaps",
        "last_event_time",
        "last_update_id",
        "polled_every_ms",
        "polled_levels",
        "resyncs",
        "snapshot_id",
        "state",
        "symbol",
        "synced_at",
    )

    def __init__(self, symbol: str, max_buffer: int = 5000) -> None:
        self.symbol = symbol
        # native sides when built (tapewatch.book_sides): same behaviour either way
        self.bids, self.asks = book_sides.new_sides()
        self.state = _WAITING_SNAPSHOT
        self.last_update_id = 0
        self.last_event_time = 0
        self.snapshot_id = 0
        self.gaps = 0
        self.resyncs = 0
        self.crossed_events = 0
        self.beyond_snapshot = 0
        self.synced_at = 0  # event time of the diff that completed the last (re)sync
        # True once the book has held a consistent view (synced, or loaded from a poll): out of sync after
        # that it is resyncing, before it only syncing (a cold start is no fault).
        self.ever_synced = False
        # Worst prices the snapshot listed: past them the book only knows levels a diff has mentioned,
        # so a best price beyond them may be wrong (a partial snapshot's blind spot).
        self._bid_floor = 0.0
        self._ask_ceiling = float("inf")
        self.applied = 0
        self.dropped = 0
        self._buffer: deque[Diff] = deque(maxlen=max_buffer)
        # A polled book (state POLLED): the poller's interval between two polls of it, and the levels per side
        # its snapshot listed (the fewer of the two sides).
        self.polled_every_ms = 0
        self.polled_levels = 0

    # --- state machine -------------------------------------------------------------------------------
    def apply(self, ev: Diff) -> Outcome:
        """Feed one depth diff.

        The synced case is the hot loop of replay (one call per diff, a diff often carries 1-3 levels), so it
        is written out here: one method call per diff, each side updated and its best price read once."""
        if self.state is not _SYNCED:
            return self._apply_unsynced(ev)
        last = self.last_update_id
        final = ev.final_id
        if final <= last:
            self.dropped += 1
            return Dropped(f"duplicate or old event u={final} <= {last}")
        if ev.prev_final_id != last:
            self.gaps += 1
            reason = f"gap: pu={ev.prev_final_id} but last applied u={last}"
            self._go_out_of_sync()
            self._buffer.append(ev)
            return NeedsResync(reason)
        bids, asks = self.bids, self.asks
        levels = ev.bids
        if levels:  # a 100 ms diff often moves one side only
            bids.update(levels)
        levels = ev.asks
        if levels:
            asks.update(levels)
        self.last_update_id = final
        self.last_event_time = ev.event_time
        self.applied += 1
        # One comparison chain; the rare bad cases (an empty side among them) are sorted out in _check_top.
        bid, ask = bids.best_price(), asks.best_price()
        if bid is not None and ask is not None and self._bid_floor <= bid < ask <= self._ask_ceiling:
            return APPLIED
        return self._check_top(ev, False)

    def _apply_unsynced(self, ev: Diff) -> Outcome:
        """A diff while waiting for a snapshot (buffered), for the event spanning it, or on a polled book."""
        if self.state is _WAITING_SNAPSHOT:
            self._buffer.append(ev)
            return BUFFERED
        if self.state is _POLLED:
            # Nothing says where a diff stream would take over a polled book: never join them silently.
            self._go_out_of_sync()
            self._buffer.append(ev)
            return NeedsResync(f"diff U={ev.first_id} on a polled book: resync by snapshot + diffs")
        return self._try_first(ev)

    def load_snapshot(self, snap: DepthSnapshot, limit: int | None = None) -> Outcome:
        """Load a REST snapshot and replay the buffered diffs over it.

        ``limit`` is the depth that was asked for. A partial snapshot (``limit`` below 1000 and as many
        levels as asked) knows nothing past its worst price: when the best price moves past it, the top may
        miss a level no diff ever mentioned, so the book asks for a resync.

        Dropped, the book unchanged: a snapshot for a book that holds a consistent view (synced by diffs, or
        polled) and so asked for none, e.g. a fetch answered after a depth stream restart's first snapshot
        synced the book. Older than the book, it would force a resync; newer, it would still leave the book
        unusable until a diff spans it. The decision reads the book's state only (a replay takes it too).
        """
        if self.state is _SYNCED or self.state is _POLLED:
            self.dropped += 1
            return Dropped(
                f"late snapshot lastUpdateId={snap.last_update_id}: the book is synced at u={self.last_update_id}"
            )
        self.bids.load(snap.bids)
        self.asks.load(snap.asks)
        partial = limit if limit is not None and limit < FULL_DEPTH else None
        self._bid_floor = snap.bids[-1][0] if partial and len(snap.bids) >= partial else 0.0
        self._ask_ceiling = snap.asks[-1][0] if partial and len(snap.asks) >= partial else float("inf")
        self.snapshot_id = self.last_update_id = snap.last_update_id
        self.last_event_time = snap.event_time or self.last_event_time
        self.state = _WAITING_SYNC_EVENT
        buffered, self._buffer = list(self._buffer), deque(maxlen=self._buffer.maxlen)
        outcome: Outcome = Dropped("snapshot loaded; waiting for the event that spans it")
        # The leading diffs the snapshot already holds (u < lastUpdateId: most of a cold start's buffer) are
        # dropped and counted as _try_first drops them, without a Dropped built for each to be thrown away.
        sid, older = self.snapshot_id, 0
        for ev in buffered:
            if ev.final_id >= sid:
                break
            older += 1
        self.dropped += older
        return self._apply_buffered(buffered, older, outcome)

    def _apply_buffered(self, buffered: list[Diff], start: int, outcome: Outcome) -> Outcome:
        """Apply ``buffered[start:]`` over a snapshot or checkpoint just loaded: the outcome (APPLIED_SYNC
        once any diff synced the book, else ``outcome`` or the last applied), or the resync a gap among them
        asks for (the diffs after it are kept for the next snapshot)."""
        for i in range(start, len(buffered)):
            result = self.apply(buffered[i])
            if isinstance(result, NeedsResync):
                self._buffer.extend(buffered[i + 1 :])
                return result
            if isinstance(result, Applied):
                outcome = APPLIED_SYNC if result.synced_now or outcome is APPLIED_SYNC else result
        return outcome

    def load_polled(self, snap: DepthSnapshot, every_ms: int = 0) -> Outcome:
        """Load a snapshot the backup feed polled: it replaces the levels and stands alone (state POLLED).

        No diff continues it: the book is usable at once, as of the snapshot's event time, and stays fresh
        for ``every_ms`` (the poller's interval between two polls of this book) beyond the ``stale_after_ms``
        its reader allows (see :meth:`health`). A diff arriving later never joins it (see :meth:`apply`).
        Dropped, the book unchanged: a snapshot without event time (its age cannot be judged), one older than
        the update id the book holds, and one with an empty or crossed side.
        """
        time = snap.event_time or snap.transaction_time
        if not time:
            self.dropped += 1
            return Dropped("polled snapshot without event time (E or T): its age cannot be judged")
        if snap.last_update_id < self.last_update_id and self.synced:
            self.dropped += 1
            return Dropped(
                f"polled snapshot older than the book: {snap.last_update_id} < {self.last_update_id}"
            )
        if not snap.bids or not snap.asks or max(p for p, _ in snap.bids) >= min(p for p, _ in snap.asks):
            self.dropped += 1
            return Dropped(f"polled snapshot {snap.last_update_id} has an empty or crossed side")
        first = self.state is not _POLLED
        self.bids.load(snap.bids)
        self.asks.load(snap.asks)
        # a whole new view each poll: no partial-depth guard (that is for diffs) and no buffered diffs carried
        self._bid_floor, self._ask_ceiling = 0.0, float("inf")
        self._buffer.clear()
        self.snapshot_id = 0
        self.last_update_id = snap.last_update_id
        self.last_event_time = self.synced_at = time
        self.polled_every_ms = max(0, every_ms)
        self.polled_levels = min(len(snap.bids), len(snap.asks))
        self.state = _POLLED
        self.ever_synced = True
        self.applied += 1
        return APPLIED_SYNC if first else APPLIED

    def checkpoint(self) -> BookCheckpoint | None:
        """The book as a :class:`BookCheckpoint` (every level, best first); None unless it is synced by
        snapshot + diffs (a polled book stands on its polls, and an unsynced one holds nothing to keep)."""
        if self.state is not _SYNCED:
            return None
        ceiling = self._ask_ceiling
        return BookCheckpoint(
            symbol=self.symbol,
            last_update_id=self.last_update_id,
            event_time=self.last_event_time,
            synced_at=self.synced_at,
            bid_floor=self._bid_floor,
            ask_ceiling=None if ceiling == float("inf") else ceiling,
            bids=self.bids.top(len(self.bids)),
            asks=self.asks.top(len(self.asks)),
        )

    def differs(self, cp: BookCheckpoint) -> str | None:
        """How this book differs from the checkpoint ``cp`` (None: it is the same book: synced at the same
        update id, with the same levels and the same partial-snapshot bounds)."""
        mine = self.checkpoint()
        if mine is None:
            return f"the book is not synced ({self.state.value}) where the live one was, at u={cp.last_update_id}"
        if mine.last_update_id != cp.last_update_id:
            return f"the book is at u={mine.last_update_id}, the live one was at u={cp.last_update_id}"
        for side, ours, theirs in (("bid", mine.bids, cp.bids), ("ask", mine.asks, cp.asks)):
            if ours != theirs:
                at = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), None)
                where = f"level {at + 1}: {ours[at]} vs {theirs[at]}" if at is not None else "depth"
                return (
                    f"{side}s differ at u={cp.last_update_id} ({len(ours)} vs {len(theirs)} levels; {where})"
                )
        if (mine.bid_floor, mine.ask_ceiling) != (cp.bid_floor, cp.ask_ceiling):
            return f"the partial snapshot's bounds differ at u={cp.last_update_id}"
        return None

    def restore(self, cp: BookCheckpoint) -> Outcome:
        """Take the book from a checkpoint of the live one: synced at ``cp.last_update_id``, as if the diffs up
        to it had been applied here. Diffs buffered before it that it already holds are dropped (counted);
        later ones apply over it, and a gap among them asks for a resync as any gap does. Not counted as a
        resync: the book is not out of sync, it is given the state the live run had."""
        self.bids.load(cp.bids)
        self.asks.load(cp.asks)
        self._bid_floor = cp.bid_floor
        self._ask_ceiling = float("inf") if cp.ask_ceiling is None else cp.ask_ceiling
        self.snapshot_id = 0
        self.last_update_id = cp.last_update_id
        self.last_event_time = cp.event_time
        self.synced_at = cp.synced_at
        self.state = _SYNCED
        self.ever_synced = True
        buffered, self._buffer = list(self._buffer), deque(maxlen=self._buffer.maxlen)
        held = 0  # the leading diffs the checkpoint already holds
        while held < len(buffered) and buffered[held].final_id <= cp.last_update_id:
            held += 1
        self.dropped += held
        return self._apply_buffered(buffered, held, APPLIED_SYNC)

    def reset(self, reason: str = "reset") -> NeedsResync:
        """Forget the book (e.g. the stream reconnected); the caller must fetch a new snapshot."""
        self._go_out_of_sync()
        return NeedsResync(reason)

    def _try_first(self, ev: Diff) -> Outcome:
        sid = self.snapshot_id
        if ev.final_id < sid:
            self.dropped += 1
            return Dropped(f"older than snapshot: u={ev.final_id} < lastUpdateId={sid}")
        if ev.first_id > sid:
            self._go_out_of_sync()
            self._buffer.append(ev)
            return NeedsResync(f"snapshot too old: first event U={ev.first_id} > lastUpdateId={sid}")
        return self._apply_diff(ev, synced_now=True)

    def _apply_diff(self, ev: Diff, synced_now: bool) -> Outcome:
        bids, asks = self.bids, self.asks
        if ev.bids:  # a 100 ms diff often moves one side only
            bids.update(ev.bids)
        if ev.asks:
            asks.update(ev.asks)
        self.last_update_id = ev.final_id
        self.last_event_time = ev.event_time
        self.state = _SYNCED
        self.applied += 1
        if synced_now:
            self.synced_at = ev.event_time
            self.ever_synced = True
        # One comparison chain on the hot path; the rare bad cases are sorted out in _check_top.
        bid, ask = bids.best_price(), asks.best_price()
        if bid is not None and ask is not None and self._bid_floor <= bid < ask <= self._ask_ceiling:
            return APPLIED_SYNC if synced_now else APPLIED
        return self._check_top(ev, synced_now)

    def _check_top(self, ev: Diff, synced_now: bool) -> Outcome:
        """After a diff left a side empty, crossed the book, or moved past a partial snapshot's depth."""
        if self.is_crossed():
            self.crossed_events += 1
            best_bid, best_ask = self.bids.best(), self.asks.best()
            self._go_out_of_sync()
            return NeedsResync(f"crossed book after u={ev.final_id}: bid {best_bid} >= ask {best_ask}")
        bid, ask = self.bids.best_price(), self.asks.best_price()
        if (bid is not None and bid < self._bid_floor) or (ask is not None and ask > self._ask_ceiling):
            self.beyond_snapshot += 1
            self._go_out_of_sync()
            return NeedsResync(f"price moved beyond the snapshot's depth after u={ev.final_id}")
        return APPLIED_SYNC if synced_now else APPLIED

    def _go_out_of_sync(self) -> None:
        if self.state is not _WAITING_SNAPSHOT:
            self.resyncs += 1
        self.state = _WAITING_SNAPSHOT
        self.bids.clear()
        self.asks.clear()
        self.snapshot_id = 0
        self._buffer.clear()

    # --- reading -------------------------------------------------------------------------------------
    @property
    def synced(self) -> bool:
        """True while the book holds a consistent view: synced by snapshot + diffs, or loaded from a poll."""
        return self.state is _SYNCED or self.state is _POLLED

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def is_crossed(self) -> bool:
        bid, ask = self.bids.best_price(), self.asks.best_price()
        return bid is not None and ask is not None and bid >= ask

    def health(self, now_ms: int, stale_after_ms: int) -> BookHealth:
        """The book's state as its readers name it: SYNCING until it first synced, RESYNCING when out of sync
        after that, else CROSSED, STALE (no update within ``stale_after_ms`` of ``now_ms``) or SYNCED."""
        age = max(0, now_ms - self.last_event_time) if self.last_event_time else -1
        if self.state is _POLLED:
            # renewed once per poll round, not every 100 ms: fresh until the next poll is due, plus the tolerance
            stale_after_ms += self.polled_every_ms
        if self.state is not _SYNCED and self.state is not _POLLED:
            state = Health.RESYNCING if self.ever_synced else Health.SYNCING
        elif self.is_crossed():
            state = Health.CROSSED
        elif age < 0 or age > stale_after_ms:
            state = Health.STALE
        else:
            state = Health.SYNCED
        return BookHealth(state, self.last_update_id, self.last_event_time, age, self.gaps, self.resyncs)

    def is_usable(self, now_ms: int, stale_after_ms: int) -> bool:
        """Synced, not crossed, and updated within ``stale_after_ms`` of ``now_ms`` (``health`` says SYNCED)."""
        last = self.last_event_time
        if self.state is not _SYNCED or not last or self.is_crossed():
            # a polled book has its own freshness (see health)
            return self.state is _POLLED and self.health(now_ms, stale_after_ms).state is Health.SYNCED
        return max(0, now_ms - last) <= stale_after_ms

    def top(self) -> Top | None:
        """Best bid and ask with their quantities; None while a side is empty."""
        bid, ask = self.bids.best(), self.asks.best()
        if bid is None or ask is None:
            return None
        return Top(bid[0], bid[1], ask[0], ask[1])

    def imbalance(self, levels: int = 10) -> float:
        """``(bid - ask) / (bid + ask)`` of the quantities on the top ``levels`` levels; 0 when empty."""
        bid, ask = self.bids.volume(levels), self.asks.volume(levels)
        total = bid + ask
        return (bid - ask) / total if total > 0 else 0.0

    def mid(self) -> float | None:
        top = self.top()
        return None if top is None else (top.bid_price + top.ask_price) / 2

    def depth_within(self, fraction: float = 0.01) -> tuple[float, float]:
        """Quote notional (bid, ask) resting within ``fraction`` of mid."""
        mid = self.mid()
        if mid is None:
            return 0.0, 0.0
        return self.bids.notional_within(mid * (1 - fraction)), self.asks.notional_within(
            mid * (1 + fraction)
        )
