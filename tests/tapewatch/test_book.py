"""The order-book state machine: Binance USD-M's snapshot + diff procedure, edge cases of the real data."""

from __future__ import annotations

import json
import random

import pytest

from tapewatch.book import Applied, Buffered, Dropped, Health, NeedsResync, OrderBook
from tapewatch.events import DepthSnapshot
from tapewatch.market import Market
from tapewatch.parse import FrameDecoder
from tests.helpers import ALL_RECORDINGS, RECORDINGS, diff, recording_lines, snapshot

pytestmark = pytest.mark.usefixtures("both_sides")  # native and Python book sides


def synced_book() -> OrderBook:
    book = OrderBook("BTCUSDT")
    assert book.apply(diff(90, 105, 80, bids=[(100.0, 5.0)])) == Buffered()
    assert book.load_snapshot(snapshot(100)) == Applied(synced_now=True)
    return book


def test_buffered_events_older_than_snapshot_are_dropped_and_spanning_event_applied() -> None:
    book = OrderBook("BTCUSDT")
    book.apply(diff(50, 60, 40, bids=[(100.0, 9.0)]))  # u < lastUpdateId: dropped
    book.apply(diff(61, 105, 60, bids=[(100.0, 5.0)]))  # U <= 100 <= u: the sync event
    book.apply(diff(106, 110, 105, asks=[(101.0, 0.0)]))
    assert book.load_snapshot(snapshot(100)) == Applied(synced_now=True)
    assert book.synced
    assert book.last_update_id == 110
    assert book.bids.best() == (100.0, 5.0)
    assert book.asks.best() == (102.0, 3.0)  # 101 removed by quantity 0
    assert book.dropped == 1


def test_sync_event_with_u_equal_to_last_update_id_is_accepted() -> None:
    # The futures rule accepts u == lastUpdateId (AKRO, KEEP, CTK, ETH in the real data).
    book = OrderBook("CTKUSDT")
    book.apply(diff(95, 100, 90))
    assert book.load_snapshot(snapshot(100)) == Applied(synced_now=True)
    assert book.apply(diff(140, 150, 100)) == Applied()


def test_sync_event_with_big_U_equal_to_last_update_id_is_accepted() -> None:
    book = OrderBook("SUSHIUSDT")
    book.apply(diff(100, 120, 90))
    assert book.load_snapshot(snapshot(100)) == Applied(synced_now=True)


def test_snapshot_before_any_spanning_event_waits_for_it() -> None:
    book = OrderBook("BTCUSDT")
    assert isinstance(book.load_snapshot(snapshot(100)), Dropped)
    assert not book.synced
    assert isinstance(book.apply(diff(80, 99, 70)), Dropped)
    assert book.apply(diff(99, 103, 99)) == Applied(synced_now=True)


def test_snapshot_older_than_the_stream_needs_resync() -> None:
    book = OrderBook("BTCUSDT")
    book.apply(diff(200, 210, 190))
    outcome = book.load_snapshot(snapshot(100))
    assert isinstance(outcome, NeedsResync)
    assert "snapshot too old" in outcome.reason
    assert book.buffered == 1  # the event is kept for the next snapshot
    assert book.load_snapshot(snapshot(205)) == Applied(synced_now=True)


def test_gap_in_pu_chain_marks_out_of_sync_and_clears_the_book() -> None:
    book = synced_book()
    outcome = book.apply(diff(120, 130, 110))  # pu 110 != last u 105
    assert isinstance(outcome, NeedsResync)
    assert "gap" in outcome.reason
    assert not book.synced
    assert book.top() is None
    assert book.gaps == 1 and book.resyncs == 1
    assert not book.is_usable(now_ms=1_000, stale_after_ms=5_000)
    # after a new snapshot the buffered event that broke the chain is applied
    assert book.load_snapshot(snapshot(125)) == Applied(synced_now=True)
    assert book.last_update_id == 130


def test_duplicate_event_is_dropped_without_resync() -> None:
    book = synced_book()
    assert isinstance(book.apply(diff(90, 105, 80)), Dropped)
    assert book.synced


def test_crossed_book_is_never_used() -> None:
    book = synced_book()
    outcome = book.apply(diff(106, 107, 105, bids=[(101.5, 1.0)]))  # bid above best ask 101
    assert isinstance(outcome, NeedsResync)
    assert "crossed" in outcome.reason
    assert not book.synced


def test_price_beyond_a_partial_snapshot_needs_resync() -> None:
    """A 2-level snapshot knows nothing below 99: once the best bid is gone past it the top may be wrong."""

    def synced_partial() -> OrderBook:
        book = OrderBook("BTCUSDT")
        book.apply(diff(90, 105, 80, bids=[(100.0, 5.0)]))
        assert book.load_snapshot(snapshot(100), limit=2) == Applied(synced_now=True)
        return book

    full = synced_book()  # the same levels from a full-depth snapshot: no blind spot is assumed
    assert full.apply(diff(106, 107, 105, bids=[(100.0, 0.0), (99.0, 0.0), (98.5, 1.0)])) == Applied()
    book = synced_partial()  # bids 100 (qty 5), 99; asks 101, 102
    assert book.apply(diff(106, 107, 105, bids=[(100.0, 0.0)])) == Applied()  # best bid 99: still known
    outcome = book.apply(diff(108, 109, 107, bids=[(99.0, 0.0), (98.5, 1.0)]))
    assert isinstance(outcome, NeedsResync) and "beyond the snapshot" in outcome.reason
    assert book.beyond_snapshot == 1 and not book.synced
    book2 = synced_partial()
    outcome = book2.apply(diff(106, 107, 105, asks=[(101.0, 0.0), (102.0, 0.0), (103.0, 2.0)]))
    assert isinstance(outcome, NeedsResync)


def test_health_reports_stale_when_no_update_for_too_long() -> None:
    book = synced_book()
    assert book.health(now_ms=1_000 + 4_000, stale_after_ms=5_000).state is Health.SYNCED
    assert book.health(now_ms=1_000 + 6_000, stale_after_ms=5_000).state is Health.STALE
    assert not book.is_usable(now_ms=1_000 + 6_000, stale_after_ms=5_000)


def test_health_says_syncing_until_the_first_sync_and_resyncing_after_a_gap() -> None:
    """A cold start (or a symbol just added) is no fault: only a book that was synced once is resyncing."""
    book = OrderBook("BTCUSDT")
    assert book.health(now_ms=1_000, stale_after_ms=5_000).state is Health.SYNCING
    book.apply(diff(90, 105, 80, bids=[(100.0, 5.0)]))
    assert book.health(now_ms=1_000, stale_after_ms=5_000).state is Health.SYNCING  # diffs buffered
    assert isinstance(book.load_snapshot(snapshot(10)), NeedsResync)  # the first snapshot too old
    assert book.health(now_ms=1_000, stale_after_ms=5_000).state is Health.SYNCING
    assert book.load_snapshot(snapshot(100)) == Applied(synced_now=True)
    assert book.health(now_ms=1_000, stale_after_ms=5_000).state is Health.SYNCED
    assert isinstance(book.apply(diff(120, 130, 110)), NeedsResync)  # a gap
    assert book.health(now_ms=1_000, stale_after_ms=5_000).state is Health.RESYNCING
    assert book.load_snapshot(snapshot(125)) == Applied(synced_now=True)
    assert book.health(now_ms=1_000, stale_after_ms=5_000).state is Health.SYNCED
    book.reset("depth stream reconnect")  # a stream restart after a sync: resyncing, not syncing
    assert book.health(now_ms=1_000, stale_after_ms=5_000).state is Health.RESYNCING


def test_a_polled_book_that_a_diff_knocks_out_is_resyncing() -> None:
    book = OrderBook("BTCUSDT")
    polled = DepthSnapshot(100, [(100.0, 1.0)], [(101.0, 1.0)], event_time=1_000, transaction_time=1_000)
    assert book.load_polled(polled) == Applied(synced_now=True)
    assert isinstance(book.apply(diff(120, 130, 110)), NeedsResync)
    assert book.health(now_ms=1_000, stale_after_ms=5_000).state is Health.RESYNCING


def test_views_top_imbalance_and_depth() -> None:
    book = synced_book()
    assert book.bids.top(2) == [(100.0, 5.0), (99.0, 2.0)]
    assert book.asks.top(5) == [(101.0, 1.0), (102.0, 3.0)]
    assert book.imbalance(10) == pytest.approx((7 - 4) / 11)
    bid_usd, ask_usd = book.depth_within(0.01)  # mid 100.5: bids >= 99.495, asks <= 101.505
    assert bid_usd == pytest.approx(100 * 5)
    assert ask_usd == pytest.approx(101 * 1)


def test_level_inserted_and_removed_keeps_sorted_order() -> None:
    book = synced_book()
    book.apply(diff(106, 107, 105, bids=[(99.5, 1.0), (98.0, 4.0)], asks=[(101.5, 2.0)]))
    assert [p for p, _ in book.bids.top(10)] == [100.0, 99.5, 99.0, 98.0]
    assert [p for p, _ in book.asks.top(10)] == [101.0, 101.5, 102.0]
    book.apply(diff(108, 109, 107, bids=[(100.0, 0.0), (97.0, 0.0)]))  # 97 never existed: ignored
    assert book.bids.best() == (99.5, 1.0)


@pytest.mark.parametrize("path", ALL_RECORDINGS, ids=lambda p: p.name.split(".")[0])
def test_real_recordings_sync_without_gaps_and_match_book_ticker(path) -> None:  # type: ignore[no-untyped-def]
    """Every snapshot joins its stream, zero gaps, and the top of book equals bookTicker at the same u."""
    check = json.loads((RECORDINGS / path.name.replace(".jsonl.gz", ".check.json")).read_text())
    decoder, market = FrameDecoder(), Market()
    for line in recording_lines(path):
        frame = decoder.decode_capture_line(line)
        if frame is not None:
            market.on_frame(frame)
    assert decoder.rejected.keys() <= {"ignored"}
    assert set(check) == {s for s, st in market.symbols.items() if st.book.last_update_id}
    for symbol, expected in check.items():
        st = market.symbols[symbol]
        rebuilt = expected["book_rebuild"]
        assert st.book.synced, symbol
        assert st.book.gaps == 0 and st.book.resyncs == 0
        assert st.book.applied == rebuilt["events_applied"], symbol
        assert st.check.checks == rebuilt["top_of_book_matches"], symbol
        assert st.check.mismatches == 0, st.check.samples
        assert st.book.last_update_id == expected["depth_last_u"]


def test_deleting_a_diff_from_a_real_recording_is_detected_and_resynced() -> None:
    lines = list(recording_lines(RECORDINGS / "cryptofeed-usdm-20210722-sushi-ctk.jsonl.gz"))
    depth = [i for i, line in enumerate(lines) if b'"sushiusdt@depth@100ms"' in line]
    del lines[depth[len(depth) // 2]]
    # The recording holds no later snapshot, so after the gap the book must stay out of sync (never used).
    decoder, market = FrameDecoder(), Market()
    requests = []
    for line in lines:
        frame = decoder.decode_capture_line(line)
        if frame is not None and (req := market.on_frame(frame)) is not None:
            requests.append(req)
    st = market.symbols["SUSHIUSDT"]
    assert st.book.gaps == 1
    assert not st.book.synced
    assert any(r.symbol == "SUSHIUSDT" and "gap" in r.reason for r in requests)
    assert st.features()["best_bid"] is None  # an unsynced book exposes nothing
    assert market.symbols["CTKUSDT"].book.synced  # the other symbol is unaffected


def test_book_matches_a_plain_dict_reference_over_random_diffs() -> None:
    """The sorted price lists (bids best last, asks best first) stay exactly the dict's levels, and every
    reader agrees with a naive computation over a plain dict, through inserts, updates and removals."""
    rng = random.Random(7)
    ticks = [round(95 + 0.25 * i, 2) for i in range(41)]  # 95.00 .. 105.00
    ref_bids = {p: float(rng.randint(1, 9)) for p in ticks if p < 100}
    ref_asks = {p: float(rng.randint(1, 9)) for p in ticks if p > 100.5}
    book = OrderBook("BTCUSDT")
    book.apply(diff(90, 100, 80))
    book.load_snapshot(snapshot(100, sorted(ref_bids.items(), reverse=True), sorted(ref_asks.items())))
    last = 100
    for _ in range(2_000):
        bid_levels = [
            (p, float(rng.choice([0, 0, 1, 2, 5]))) for p in rng.sample([t for t in ticks if t < 100], 3)
        ]
        ask_levels = [
            (p, float(rng.choice([0, 0, 1, 2, 5]))) for p in rng.sample([t for t in ticks if t > 100.5], 3)
        ]
        for ref, levels in ((ref_bids, bid_levels), (ref_asks, ask_levels)):
            for p, q in levels:
                if q:
                    ref[p] = q
                else:
                    ref.pop(p, None)
        outcome = book.apply(diff(last + 1, last + 2, last, bids=bid_levels, asks=ask_levels))
        last += 2
        assert outcome == Applied() if ref_bids and ref_asks else isinstance(outcome, Applied)
        want_bids = sorted(ref_bids.items(), reverse=True)
        want_asks = sorted(ref_asks.items())
        assert book.bids.top(100) == want_bids and book.asks.top(100) == want_asks
        assert book.bids.best() == (want_bids[0] if want_bids else None)
        assert book.asks.best() == (want_asks[0] if want_asks else None)
        assert book.bids.volume(10) == sum(q for _, q in want_bids[:10])
        if want_bids and want_asks:
            top = book.top()
            assert top is not None and (top.bid_price, top.ask_price) == (want_bids[0][0], want_asks[0][0])
            assert book.bids.notional_within(99.0) == sum(p * q for p, q in want_bids if p >= 99.0)
            assert book.asks.notional_within(102.0) == sum(p * q for p, q in want_asks if p <= 102.0)


def test_side_readers_at_their_edges() -> None:
    book = synced_book()  # bids 100 x5, 99 x2; asks 101 x1, 102 x3
    assert book.bids.top(0) == [] and book.asks.top(0) == [] and book.bids.volume(0) == 0
    assert book.bids.top(50) == [(100.0, 5.0), (99.0, 2.0)] and book.asks.top(1) == [(101.0, 1.0)]
    # the limit price itself counts (at or better than)
    assert book.bids.notional_within(99.0) == 100 * 5 + 99 * 2
    assert book.bids.notional_within(99.5) == 100 * 5
    assert book.asks.notional_within(102.0) == 101 * 1 + 102 * 3
    assert book.asks.notional_within(100.0) == 0.0
    book.apply(diff(106, 107, 105, bids=[(100.0, 0.0), (99.0, 0.0)]))  # the bid side emptied: no top, no use
    assert book.bids.best() is None and book.top() is None and book.imbalance() == -1.0  # asks only
    assert book.synced and not book.is_crossed()


def test_book_names_are_the_split_modules_own_objects() -> None:
    """The result types and sides moved to tapewatch.book_types / book_sides: ``from tapewatch.book import X``
    must give the very same classes, or an ``isinstance`` against one import path fails for the other."""
    from tapewatch import book, book_sides, book_types

    for name in ("Applied", "Buffered", "Dropped", "NeedsResync", "Top", "BookHealth", "BookState", "Health"):
        assert getattr(book, name) is getattr(book_types, name), name
    ob = book.OrderBook("X")
    bids, asks = book_sides.new_sides()  # whichever implementation the test runs with (both_sides)
    assert type(ob.bids) is type(bids) and type(ob.asks) is type(asks)
    assert isinstance(ob.reset(), book_types.NeedsResync)
