"""A book loaded from the backup feed's polled snapshots: usable alone, fresh for its poll interval, never
joined with diffs, and its depth coverage flagged."""

from __future__ import annotations

import pytest

from tapewatch.book import Applied, BookState, Dropped, Health, NeedsResync, OrderBook
from tapewatch.events import DepthSnapshot, DepthUpdate
from tapewatch.polled import depth_coverage

pytestmark = pytest.mark.usefixtures("both_sides")  # native and Python book sides

STALE_MS = 5_000


def state(book: OrderBook) -> BookState:
    """The book's state, read afresh (so a type checker does not carry one assertion into the next)."""
    return book.state


def snap(
    update_id: int, time: int, bid: float = 100.0, ask: float = 100.5, levels: int = 50
) -> DepthSnapshot:
    bids = [(bid - i * 0.01, 1.0 + i) for i in range(levels)]
    asks = [(ask + i * 0.01, 2.0 + i) for i in range(levels)]
    return DepthSnapshot(
        last_update_id=update_id, bids=bids, asks=asks, event_time=time, transaction_time=time
    )


def diff(first: int, final: int, prev: int, time: int) -> DepthUpdate:
    return DepthUpdate(
        event_time=time,
        transaction_time=time,
        symbol="BTCUSDT",
        first_id=first,
        final_id=final,
        prev_final_id=prev,
        bids=[(99.0, 1.0)],
        asks=[],
    )


def test_a_polled_snapshot_makes_the_book_usable_on_its_own() -> None:
    book = OrderBook("BTCUSDT")
    outcome = book.load_polled(snap(10, 1_000), every_ms=4_000)
    assert outcome == Applied(synced_now=True)
    assert state(book) is BookState.POLLED and book.synced
    assert book.is_usable(1_000, STALE_MS)
    top = book.top()
    assert top is not None and (top.bid_price, top.ask_price) == (100.0, 100.5)
    assert book.last_update_id == 10 and book.synced_at == 1_000 and book.polled_levels == 50
    # the next poll replaces the levels whole (a level the new snapshot lacks is gone)
    assert book.load_polled(snap(20, 2_000, bid=101.0, ask=101.5, levels=3), every_ms=4_000) == Applied()
    assert len(book.bids) == len(book.asks) == 3 and book.polled_levels == 3
    assert book.top() is not None and book.top().bid_price == 101.0  # type: ignore[union-attr]


def test_a_polled_book_is_fresh_for_its_poll_interval_plus_the_tolerance() -> None:
    book = OrderBook("BTCUSDT")
    book.load_polled(snap(10, 1_000), every_ms=4_000)
    limit = 1_000 + 4_000 + STALE_MS
    assert book.health(limit, STALE_MS).state is Health.SYNCED and book.is_usable(limit, STALE_MS)
    assert book.health(limit + 1, STALE_MS).state is Health.STALE and not book.is_usable(limit + 1, STALE_MS)
    # a name without an interval: only the tolerance
    other = OrderBook("ETHUSDT")
    other.load_polled(snap(10, 1_000))
    assert other.is_usable(1_000 + STALE_MS, STALE_MS) and not other.is_usable(1_001 + STALE_MS, STALE_MS)


def test_a_diff_on_a_polled_book_starts_a_normal_resync() -> None:
    book = OrderBook("BTCUSDT")
    book.load_polled(snap(10, 1_000), every_ms=4_000)
    # even a diff whose pu matches the polled lastUpdateId is not joined to the polled levels
    outcome = book.apply(diff(11, 12, 10, 1_100))
    assert isinstance(outcome, NeedsResync) and "polled book" in outcome.reason
    assert state(book) is BookState.WAITING_SNAPSHOT and not book.synced and book.buffered == 1
    assert not book.is_usable(1_100, STALE_MS) and book.resyncs == 1
    # then the ordinary procedure: a snapshot, the buffered diff that spans it, synced from the diffs
    assert book.load_snapshot(snap(11, 1_050), limit=1000) == Applied(synced_now=True)
    assert state(book) is BookState.SYNCED and book.last_update_id == 12
    assert dict(book.bids.top(1000))[99.0] == 1.0


def test_bad_or_older_polls_are_dropped_and_leave_the_book_alone() -> None:
    book = OrderBook("BTCUSDT")
    book.load_polled(snap(10, 1_000))
    no_time = DepthSnapshot(last_update_id=11, bids=[(100.0, 1.0)], asks=[(101.0, 1.0)])
    assert isinstance(dropped := book.load_polled(no_time), Dropped) and "age" in dropped.reason
    older = book.load_polled(snap(9, 2_000))
    assert isinstance(older, Dropped) and "older" in older.reason
    crossed = book.load_polled(snap(12, 2_000, bid=101.0, ask=100.0))
    assert isinstance(crossed, Dropped) and "crossed" in crossed.reason
    empty = book.load_polled(DepthSnapshot(last_update_id=13, bids=[], asks=[(1.0, 1.0)], event_time=2_000))
    assert isinstance(empty, Dropped)
    assert book.last_update_id == 10 and book.last_event_time == 1_000 and book.dropped == 4
    # the same lastUpdateId again confirms the book as of the newer poll (nothing changed meanwhile)
    assert isinstance(book.load_polled(snap(10, 3_000)), Applied) and book.last_event_time == 3_000


def test_a_diff_synced_book_is_taken_over_by_a_newer_poll() -> None:
    book = OrderBook("BTCUSDT")
    book.load_snapshot(snap(10, 1_000), limit=1000)
    book.apply(diff(9, 12, 8, 1_100))
    assert state(book) is BookState.SYNCED
    assert isinstance(book.load_polled(snap(11, 1_200)), Dropped)  # older than what the diffs built
    assert book.load_polled(snap(30, 5_000), every_ms=1_000) == Applied(synced_now=True)
    assert state(book) is BookState.POLLED and book.resyncs == 0


def test_depth_coverage_of_a_polled_book() -> None:
    book = OrderBook("BTCUSDT")
    assert depth_coverage(book, 0.01) == ("stream", None, False)  # a diff-kept book: full coverage
    book.load_polled(snap(10, 1_000, levels=50), every_ms=1_000)  # 50 levels 0.01 apart: 0.5 of 100 = 0.5 %
    assert depth_coverage(book, 0.01) == ("poll", 50, True)
    wide = [(100.0 - i, 1.0) for i in range(50)], [(100.5 + i, 1.0) for i in range(50)]
    book.load_polled(DepthSnapshot(11, wide[0], wide[1], event_time=2_000), every_ms=1_000)
    assert depth_coverage(book, 0.01) == ("poll", 50, False)  # its levels reach past 1 % of mid
