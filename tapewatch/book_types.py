"""What :class:`tapewatch.book.OrderBook` says and reports: its states, the outcome of each event fed to it,
its top of book and its health. Kept apart from the book's procedure so that file stays about the procedure;
import them from :mod:`tapewatch.book` as before (it re-exports every name here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple, Protocol

import msgspec

from tapewatch.events import Level


class BookState(StrEnum):
    WAITING_SNAPSHOT = "waiting_snapshot"  # buffering diffs, no snapshot yet (cold start or after a gap)
    WAITING_SYNC_EVENT = "waiting_sync_event"  # snapshot loaded, waiting for the diff that spans it
    SYNCED = "synced"
    # levels of a snapshot the backup feed polled (REST, websockets off): usable on its own, never continued
    # by diffs (see OrderBook.load_polled)
    POLLED = "polled"


class Health(StrEnum):
    SYNCED = "synced"
    SYNCING = "syncing"  # never synced yet (cold start, a symbol just added): waiting for its first snapshot
    RESYNCING = "resyncing"  # synced once, then out of sync (a gap, a crossed book, a stream restart)
    STALE = "stale"
    CROSSED = "crossed"


class Diff(Protocol):
    """What the book reads of a depth diff: a :class:`tapewatch.events.DepthUpdate`, or a diff the native replay
    path kept in the buffer of a book waiting for its snapshot (``tapewatch._sides.BufferedDiff``: the same values,
    the levels made when read)."""

    @property
    def symbol(self) -> str: ...
    @property
    def event_time(self) -> int: ...
    @property
    def transaction_time(self) -> int: ...
    @property
    def first_id(self) -> int: ...
    @property
    def final_id(self) -> int: ...
    @property
    def prev_final_id(self) -> int: ...
    @property
    def bids(self) -> Sequence[Level]: ...
    @property
    def asks(self) -> Sequence[Level]: ...


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
