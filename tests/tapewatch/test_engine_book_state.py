"""Why the engine could not judge a setup on a book that is not usable: a book awaiting its first snapshot (a
cold start, a symbol just added) is ``book_syncing``, one out of sync after a sync ``book_resyncing`` (a gap, or
a bookTicker that proved it wrong)."""

from __future__ import annotations

import pytest

from tapewatch.events import BookTicker
from tapewatch.market_depth import SnapshotNeeded
from tapewatch.streams import Kind

from .engine_rig import SYM, Rig

T = 1_700_000_100_000


def large_buys(rig: Rig, time: int) -> None:
    """A small trade below 100, then 3 large buys at 100: a LONG flow setup whenever the book allows."""
    rig.trade(time, 99.0, 10.0)
    for i in range(3):
        rig.trade(time + 10 + i, 100.0, 7000.0)


def test_a_cold_start_book_counts_as_syncing_not_resyncing() -> None:
    rig = Rig()
    rig.context()
    rig.depth(T, bids=[(99.9, 500.0)])  # buffered: no snapshot yet
    large_buys(rig, T + 10)
    counts = rig.engine.per_symbol["BTCUSDT"].not_evaluated
    assert rig.candidates() == []
    assert counts["book_syncing"] == 1 and counts["book_resyncing"] == 0
    assert rig.engine.counters["not_evaluated_book_syncing"] == 1
    assert rig.engine.counters["not_evaluated_book_resyncing"] == 0


def test_a_book_out_of_sync_after_a_gap_counts_as_resyncing() -> None:
    rig = Rig()
    rig.context()
    rig.snapshot([(99.9, 500.0)], [(100.1, 100.0)], T)
    rig.depth(T)
    assert rig.market.symbols["BTCUSDT"].book.synced
    rig.depth(T + 100, skip=3)  # a sequence gap: the book waits for a new snapshot
    large_buys(rig, T + 200)
    counts = rig.engine.per_symbol["BTCUSDT"].not_evaluated
    assert rig.candidates() == []
    assert counts["book_resyncing"] == 1 and counts["book_syncing"] == 0
    assert rig.engine.counters["not_evaluated_book_resyncing"] == 1


@pytest.mark.parametrize("ticker_first", [False, True], ids=["ticker_after_diff", "ticker_before_diff"])
def test_a_book_a_bookticker_proves_wrong_resyncs_and_is_not_judged_until_synced_again(
    ticker_first: bool,
) -> None:
    """Issue 4: a bookTicker that disagrees with the book at the same update id proves the book wrong. The book
    goes out of sync and asks for one snapshot (reason ``book_mismatch``), the setup on it is not judged
    (``book_resyncing``) until the snapshot synced it again, then it is; the mismatch stays counted."""
    rig = Rig()
    rig.context()
    rig.snapshot([(99.9, 500.0)], [(100.1, 100.0)], T)
    rig.depth(T)  # synced at u=1001
    assert rig.requests == []
    wrong = BookTicker(SYM, rig.uid + 1 if ticker_first else rig.uid, 99.0, 1.0, 99.5, 1.0, T + 50, T + 50)
    rig.feed(Kind.BOOK_TICKER, "btcusdt@bookTicker", wrong)
    if ticker_first:
        rig.depth(T + 50)  # the diff of u=1002: its top disagrees with the ticker that came first
    st = rig.market.symbols[SYM]
    assert st.check.mismatches == 1 and rig.market.totals()["book_mismatches"] == 1
    assert rig.market.counters["resync_book_mismatch"] == 1
    [request] = rig.requests
    assert isinstance(request, SnapshotNeeded) and request.reason.startswith("book_mismatch: BTCUSDT u=")
    assert st.book.health(T + 100, 5_000).state == "resyncing" and st.book.resyncs == 1
    rig.depth(T + 100)  # buffered: the snapshot asked for is still pending, none asked again
    large_buys(rig, T + 110)
    counts = rig.engine.per_symbol[SYM].not_evaluated
    assert rig.candidates() == [] and counts["book_resyncing"] >= 1
    assert len(rig.requests) == 1
    rig.snapshot([(99.9, 500.0)], [(100.1, 100.0)], T + 200)
    rig.depth(T + 300)  # spans the snapshot: synced again
    assert st.book.health(T + 300, 5_000).state == "synced"
    large_buys(rig, T + 310)
    assert [(c.direction, c.fate) for c in rig.candidates()] == [("LONG", "signal")]
    assert st.check.mismatches == 1
