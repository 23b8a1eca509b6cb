"""Why the engine could not judge a setup on a book that is not usable: a book awaiting its first snapshot (a
cold start, a symbol just added) is ``book_syncing``, one out of sync after a sync ``book_resyncing``."""

from __future__ import annotations

from .engine_rig import Rig

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
