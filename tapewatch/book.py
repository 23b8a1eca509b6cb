"""A local order book kept exactly by Binance USD-M's snapshot + diff procedure, as a pure state machine.

Procedure ("How to manage a local order book correctly", USD-M):
1. buffer ``depth`` events; fetch a REST snapshot;
2. drop events with ``u < lastUpdateId``;
3. the first applied event must satisfy ``U <= lastUpdateId <= u``;
4. every next event's ``pu`` must equal the previous event's ``u``; otherwise resync;
5. quantity 0 removes a level.

:meth:`OrderBook.apply` and :meth:`OrderBook.load_snapshot` return what happened (:class:`Applied`,
:class:`Buffered`, :class:`Dropped`, :class:`NeedsResync`); the caller decides what to fetch and when.
Nothing here reads a clock: ``now_ms`` is passed in where freshness matters.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

import msgspec

from tapewatch.events import DepthSnapshot, DepthUpdate, Level


class BookState(StrEnum):
    WAITING_SNAPSHOT = "waiting_snapshot"  # buffering diffs, no snapshot yet (cold start or after a gap)
    WAITING_SYNC_EVENT = "waiting_sync_event"  # snapshot loaded, waiting for the diff that spans it
    SYNCED = "synced"


class Health(StrEnum):
    SYNCED = "synced"
    RESYNCING = "resyncing"
    STALE = "stale"
    CROSSED = "crossed"


@dataclass(frozen=True, slots=True)
class Applied:
    """The event was applied; ``synced_now`` is true for the event that completed a (re)sync."""

    synced_now: bool = False


@dataclass(frozen=True, slots=True)
class Buffered:
    """Held until a snapshot arrives."""


@dataclass(frozen=True, slots=True)
class Dropped:
    """Ignored without harm (older than the snapshot, or a duplicate)."""

    reason: str


@dataclass(frozen=True, slots=True)
class NeedsResync:
    """The book is out of sync and must not be used; fetch a new snapshot."""

    reason: str


Outcome = Applied | Buffered | Dropped | NeedsResync
#: The deepest snapshot Binance serves; past it nothing better can be had, so no blind-spot check applies.
FULL_DEPTH = 1000
APPLIED = Applied()
APPLIED_SYNC = Applied(synced_now=True)
BUFFERED = Buffered()


class Top(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """Best bid and ask with their quantities (a C-level struct: one is made per applied diff)."""

    bid_price: float
    bid_qty: float
    ask_price: float
    ask_qty: float


class BookHealth(NamedTuple):
    state: Health
    last_update_id: int
    last_event_time: int
    age_ms: int
    gaps: int
    resyncs: int


class _Side:
    """One side of the book: qty by price plus the prices kept sorted best-first (bids negated)."""

    __slots__ = ("keys", "qty", "sign")

    def __init__(self, is_bid: bool) -> None:
        self.sign = -1.0 if is_bid else 1.0
        self.qty: dict[float, float] = {}
        self.keys: list[float] = []  # sign * price, ascending = best first

    def clear(self) -> None:
        self.qty.clear()
        self.keys.clear()

    def load(self, levels: list[Level]) -> None:
        self.clear()
        for price, qty in levels:
            if qty > 0:
                self.qty[price] = qty
        self.keys = sorted(self.sign * p for p in self.qty)

    def update(self, levels: list[Level]) -> None:
        qty_map, keys, sign = self.qty, self.keys, self.sign
        for price, qty in levels:
            if qty == 0.0:
                if qty_map.pop(price, None) is not None:
                    k = sign * price
                    del keys[bisect_left(keys, k)]
            else:
                if price not in qty_map:
                    insort(keys, sign * price)
                qty_map[price] = qty

    def best(self) -> tuple[float, float] | None:
        if not self.keys:
            return None
        price = self.sign * self.keys[0]
        return price, self.qty[price]

    def top(self, n: int) -> list[tuple[float, float]]:
        sign, qty = self.sign, self.qty
        return [(sign * k, qty[sign * k]) for k in self.keys[:n]]

    def volume(self, n: int) -> float:
        sign, qty = self.sign, self.qty
        return sum([qty[sign * k] for k in self.keys[:n]])

    def notional_within(self, limit_price: float) -> float:
        """Σ price·qty of levels at or better than ``limit_price``."""
        sign, qty = self.sign, self.qty
        bound = sign * limit_price
        total = 0.0
        for k in self.keys:
            if k > bound:
                break
            price = sign * k
            total += price * qty[price]
        return total


class OrderBook:
    """The local book of one symbol. Read it only while :meth:`is_usable` says so."""

    def __init__(self, symbol: str, max_buffer: int = 5000) -> None:
        self.symbol = symbol
        self.bids = _Side(is_bid=True)
        self.asks = _Side(is_bid=False)
        self.state = BookState.WAITING_SNAPSHOT
        self.last_update_id = 0
        self.last_event_time = 0
        self.snapshot_id = 0
        self.gaps = 0
        self.resyncs = 0
        self.crossed_events = 0
        self.beyond_snapshot = 0
        self.synced_at = 0  # event time of the diff that completed the last (re)sync
        # Worst prices the snapshot listed: past them the book only knows levels a diff has mentioned,
        # so a best price beyond them may be wrong (a partial snapshot's blind spot).
        self._bid_floor = 0.0
        self._ask_ceiling = float("inf")
        self.applied = 0
        self.dropped = 0
        self._buffer: deque[DepthUpdate] = deque(maxlen=max_buffer)

    # --- state machine -------------------------------------------------------------------------------
    def apply(self, ev: DepthUpdate) -> Outcome:
        """Feed one depth diff."""
        if self.state is BookState.SYNCED:
            if ev.final_id <= self.last_update_id:
                self.dropped += 1
                return Dropped(f"duplicate or old event u={ev.final_id} <= {self.last_update_id}")
            if ev.prev_final_id != self.last_update_id:
                self.gaps += 1
                reason = f"gap: pu={ev.prev_final_id} but last applied u={self.last_update_id}"
                self._go_out_of_sync()
                self._buffer.append(ev)
                return NeedsResync(reason)
            return self._apply_diff(ev, synced_now=False)
        if self.state is BookState.WAITING_SNAPSHOT:
            self._buffer.append(ev)
            return BUFFERED
        return self._try_first(ev)

    def load_snapshot(self, snap: DepthSnapshot, limit: int | None = None) -> Outcome:
        """Load a REST snapshot and replay the buffered diffs over it.

        ``limit`` is the depth that was asked for. A partial snapshot (``limit`` below 1000 and as many
        levels as asked) knows nothing past its worst price: when the best price moves past it, the top may
        miss a level no diff ever mentioned, so the book asks for a resync.
        """
        self.bids.load(snap.bids)
        self.asks.load(snap.asks)
        partial = limit if limit is not None and limit < FULL_DEPTH else None
        self._bid_floor = snap.bids[-1][0] if partial and len(snap.bids) >= partial else 0.0
        self._ask_ceiling = snap.asks[-1][0] if partial and len(snap.asks) >= partial else float("inf")
        self.snapshot_id = self.last_update_id = snap.last_update_id
        self.last_event_time = snap.event_time or self.last_event_time
        self.state = BookState.WAITING_SYNC_EVENT
        buffered, self._buffer = list(self._buffer), deque(maxlen=self._buffer.maxlen)
        outcome: Outcome = Dropped("snapshot loaded; waiting for the event that spans it")
        for i, ev in enumerate(buffered):
            result = self.apply(ev)
            if isinstance(result, NeedsResync):
                self._buffer.extend(buffered[i + 1 :])  # kept for the next snapshot
                return result
            if isinstance(result, Applied):
                outcome = APPLIED_SYNC if result.synced_now or outcome is APPLIED_SYNC else result
        return outcome

    def reset(self, reason: str = "reset") -> NeedsResync:
        """Forget the book (e.g. the stream reconnected); the caller must fetch a new snapshot."""
        self._go_out_of_sync()
        return NeedsResync(reason)

    def _try_first(self, ev: DepthUpdate) -> Outcome:
        sid = self.snapshot_id
        if ev.final_id < sid:
            self.dropped += 1
            return Dropped(f"older than snapshot: u={ev.final_id} < lastUpdateId={sid}")
        if ev.first_id > sid:
            self._go_out_of_sync()
            self._buffer.append(ev)
            return NeedsResync(f"snapshot too old: first event U={ev.first_id} > lastUpdateId={sid}")
        return self._apply_diff(ev, synced_now=True)

    def _apply_diff(self, ev: DepthUpdate, synced_now: bool) -> Outcome:
        self.bids.update(ev.bids)
        self.asks.update(ev.asks)
        self.last_update_id = ev.final_id
        self.last_event_time = ev.event_time
        self.state = BookState.SYNCED
        self.applied += 1
        if synced_now:
            self.synced_at = ev.event_time
        if self.is_crossed():
            self.crossed_events += 1
            bid, ask = self.bids.best(), self.asks.best()
            self._go_out_of_sync()
            return NeedsResync(f"crossed book after u={ev.final_id}: bid {bid} >= ask {ask}")
        bids, asks = self.bids.keys, self.asks.keys
        if (bids and -bids[0] < self._bid_floor) or (asks and asks[0] > self._ask_ceiling):
            self.beyond_snapshot += 1
            self._go_out_of_sync()
            return NeedsResync(f"price moved beyond the snapshot's depth after u={ev.final_id}")
        return APPLIED_SYNC if synced_now else APPLIED

    def _go_out_of_sync(self) -> None:
        if self.state is not BookState.WAITING_SNAPSHOT:
            self.resyncs += 1
        self.state = BookState.WAITING_SNAPSHOT
        self.bids.clear()
        self.asks.clear()
        self.snapshot_id = 0
        self._buffer.clear()

    # --- reading -------------------------------------------------------------------------------------
    @property
    def synced(self) -> bool:
        return self.state is BookState.SYNCED

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def is_crossed(self) -> bool:
        if not self.bids.keys or not self.asks.keys:
            return False
        return -self.bids.keys[0] >= self.asks.keys[0]

    def health(self, now_ms: int, stale_after_ms: int) -> BookHealth:
        age = max(0, now_ms - self.last_event_time) if self.last_event_time else -1
        if self.state is not BookState.SYNCED:
            state = Health.RESYNCING
        elif self.is_crossed():
            state = Health.CROSSED
        elif age < 0 or age > stale_after_ms:
            state = Health.STALE
        else:
            state = Health.SYNCED
        return BookHealth(state, self.last_update_id, self.last_event_time, age, self.gaps, self.resyncs)

    def is_usable(self, now_ms: int, stale_after_ms: int) -> bool:
        """Synced, not crossed, and updated within ``stale_after_ms`` of ``now_ms``."""
        return self.health(now_ms, stale_after_ms).state is Health.SYNCED

    def top(self) -> Top | None:
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
