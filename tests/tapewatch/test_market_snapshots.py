"""The market's snapshots: a late one never throws a synced book away; a failed one never leaves a book dead.

A late snapshot (a fetch in flight when the depth stream restarted, answered after a first one synced the
book) is dropped by the book's state alone, so a replay of the capture drops it too. A failed fetch is
handed to :meth:`Market.snapshot_failed`: the book's next diff asks again once a per-symbol backoff of
exchange time (5 s doubling to 5 min) has passed.
"""

from __future__ import annotations

import pytest

from tapewatch.book import Applied, Dropped, OrderBook
from tapewatch.book_types import BookState
from tapewatch.events import DepthSnapshot, DepthUpdate
from tapewatch.market import Market
from tapewatch.market_depth import SNAPSHOT_RETRY_MAX_MS, SNAPSHOT_RETRY_MS, SnapshotNeeded
from tapewatch.parse import Frame
from tapewatch.polled import PolledSnapshot
from tapewatch.streams import Kind

pytestmark = pytest.mark.usefixtures("both_sides")  # native and Python book sides

SYMBOL = "BTCUSDT"
DEPTH = "btcusdt@depth@100ms"
REST = "rest:/fapi/v1/depth?symbol=BTCUSDT&limit=1000"


def diff(first: int, last: int, prev: int, t: int, bid_qty: float = 1.0) -> DepthUpdate:
    return DepthUpdate(SYMBOL, t, t, first, last, prev, [(100.0, bid_qty)], [(101.0, 2.0)])


def snapshot(last_update_id: int, t: int, bid_qty: float = 3.0) -> DepthSnapshot:
    return DepthSnapshot(last_update_id, [(100.0, bid_qty), (99.0, 4.0)], [(101.0, 5.0), (102.0, 6.0)], t, t)


def on_diff(market: Market, ev: DepthUpdate) -> object:
    return market.on_frame(Frame(ev.event_time, DEPTH, SYMBOL, Kind.DEPTH, ev))


def on_snapshot(market: Market, snap: DepthSnapshot) -> object:
    return market.on_frame(Frame(snap.event_time, REST, SYMBOL, Kind.SNAPSHOT, snap))


def synced_at_29() -> Market:
    """A market whose book synced from snapshot 20 and diffs up to u=29."""
    market = Market()
    assert on_diff(market, diff(15, 21, 14, 1_000)) == SnapshotNeeded(SYMBOL, "cold start")
    assert on_snapshot(market, snapshot(20, 1_050)) is None
    assert on_diff(market, diff(22, 29, 21, 1_100, bid_qty=7.0)) is None
    book = market.symbols[SYMBOL].book
    assert book.synced and book.last_update_id == 29
    return market


# --- a late snapshot -------------------------------------------------------------------------------------


@pytest.mark.parametrize("last_update_id", [25, 29, 40])
def test_a_late_snapshot_on_a_synced_book_is_dropped_and_the_next_diff_applies(last_update_id: int) -> None:
    market = synced_at_29()
    book = market.symbols[SYMBOL].book
    bids = book.bids.top(10)
    assert on_snapshot(market, snapshot(last_update_id, 1_150, bid_qty=9.0)) is None
    assert book.synced and book.last_update_id == 29 and book.bids.top(10) == bids  # not loaded
    assert on_diff(market, diff(30, 33, 29, 1_200, bid_qty=8.0)) is None  # continues the book: no resync
    assert book.synced and book.last_update_id == 33 and book.bids.top(1) == [(100.0, 8.0)]
    totals = market.totals()
    assert totals["late_snapshots"] == 1 and totals["resyncs"] == 0 and totals["gaps"] == 0
    assert market.counters["resync_requests"] == 0 and market.book_usable(SYMBOL)


def test_a_snapshot_on_a_book_waiting_for_one_still_loads() -> None:
    """After a gap (and after a depth stream restart) the book asks for a snapshot: the answer is loaded."""
    market = synced_at_29()
    assert on_diff(market, diff(35, 38, 34, 1_200)) == SnapshotNeeded(
        SYMBOL, "gap: pu=34 but last applied u=29"
    )
    assert on_snapshot(market, snapshot(36, 1_250)) is None
    assert on_diff(market, diff(39, 40, 38, 1_300)) is None
    book = market.symbols[SYMBOL].book
    assert book.synced and book.last_update_id == 40 and market.totals()["late_snapshots"] == 0
    assert market.restart_stream(SYMBOL, "depth stream reconnect") == SnapshotNeeded(
        SYMBOL, "depth stream reconnect"
    )
    assert on_diff(market, diff(41, 45, 40, 1_400)) is None  # buffered: the restart's request is pending
    assert on_snapshot(market, snapshot(42, 1_450)) is None
    assert book.synced and book.last_update_id == 45 and market.totals()["late_snapshots"] == 0


def test_the_restarts_second_snapshot_does_not_resync_a_book_the_first_one_synced() -> None:
    """A restart while a fetch was in flight: the first answer syncs the book, the second (older than the
    book by then) is dropped instead of forcing another resync."""
    market = synced_at_29()
    market.restart_stream(SYMBOL, "depth stream reconnect")
    on_diff(market, diff(30, 34, 29, 1_200))  # the new connection's first diff, buffered
    assert on_snapshot(market, snapshot(31, 1_210)) is None  # the answer in flight during the restart
    assert on_diff(market, diff(35, 37, 34, 1_300)) is None
    assert on_snapshot(market, snapshot(36, 1_310)) is None  # the restart's own answer, late
    assert on_diff(market, diff(38, 40, 37, 1_400)) is None
    book = market.symbols[SYMBOL].book
    assert book.synced and book.last_update_id == 40
    assert market.totals()["late_snapshots"] == 1 and market.counters["resync_requests"] == 0


def test_the_book_itself_drops_a_snapshot_when_synced_or_polled() -> None:
    book = OrderBook(SYMBOL)
    assert book.load_snapshot(snapshot(20, 1_050)) == Dropped(
        "snapshot loaded; waiting for the event that spans it"
    )
    assert book.apply(diff(15, 29, 14, 1_100)) == Applied(synced_now=True)
    outcome = book.load_snapshot(snapshot(25, 1_150, bid_qty=9.0))
    assert isinstance(outcome, Dropped) and "late snapshot" in outcome.reason
    assert book.state is BookState.SYNCED and book.last_update_id == 29 and book.bids.top(1) == [(100.0, 1.0)]
    polled = OrderBook(SYMBOL)
    polled.load_polled(PolledSnapshot(50, [(100.0, 1.0)], [(101.0, 1.0)], 2_000, 2_000), 1_000)
    assert isinstance(polled.load_snapshot(snapshot(60, 2_100)), Dropped)
    assert polled.state is BookState.POLLED and polled.last_update_id == 50


# --- a failed snapshot -----------------------------------------------------------------------------------


def test_a_failed_snapshot_lets_the_next_diff_ask_again_after_the_backoff_then_the_book_syncs() -> None:
    market = Market()
    t = 1_000
    assert on_diff(market, diff(10, 12, 9, t)) == SnapshotNeeded(SYMBOL, "cold start")
    assert on_diff(market, diff(13, 14, 12, t + 100)) is None  # pending: asked once
    market.snapshot_failed(SYMBOL, "FeedError: HTTP 408 on all 6 attempts")
    assert market.totals()["snapshot_failed"] == 1
    assert on_diff(market, diff(15, 16, 14, t + 100 + SNAPSHOT_RETRY_MS - 1)) is None  # backing off
    retry = on_diff(market, diff(17, 18, 16, t + 100 + SNAPSHOT_RETRY_MS))
    assert retry == SnapshotNeeded(SYMBOL, "retry after a failed snapshot")
    assert on_diff(market, diff(19, 20, 18, t + 200 + SNAPSHOT_RETRY_MS)) is None  # pending again
    assert on_snapshot(market, snapshot(17, t + 250 + SNAPSHOT_RETRY_MS)) is None  # buffered diffs replayed
    book = market.symbols[SYMBOL].book
    assert book.synced and book.last_update_id == 20 and market.book_usable(SYMBOL)


def test_a_refused_symbol_backs_off_doubling_to_five_minutes_and_a_loaded_snapshot_ends_it() -> None:
    market = Market()
    assert isinstance(on_diff(market, diff(10, 11, 9, 1_000)), SnapshotNeeded)
    waits: list[int] = []
    for _ in range(9):
        market.snapshot_failed(SYMBOL, "refused by Binance: Invalid symbol.")
        waits.append(waited_for_request(market, step=1_000))
    expected = [min(SNAPSHOT_RETRY_MAX_MS, SNAPSHOT_RETRY_MS * 2**i) for i in range(9)]
    assert waits == expected and expected[-1] == SNAPSHOT_RETRY_MAX_MS == 300_000
    assert market.totals()["snapshot_failed"] == 9
    # a loaded snapshot ends the backoff: the next failure waits 5 s again
    last = market.now_ms  # the last diff's ids: (last, last + 1)
    assert on_snapshot(market, snapshot(last, last)) is None
    assert market.symbols[SYMBOL].book.synced
    gap = diff(last + 10, last + 11, last + 5, last + 100)
    assert isinstance(on_diff(market, gap), SnapshotNeeded)
    market.snapshot_failed(SYMBOL, "FeedError: 503")
    assert waited_for_request(market, step=1_000) == SNAPSHOT_RETRY_MS


def test_a_wait_the_rest_client_imposes_outlasts_the_backoff() -> None:
    """An IP ban (or a 429 pause) ends later than 5 s: the book asks again only once it is over."""
    market = Market()
    assert isinstance(on_diff(market, diff(10, 11, 9, 1_000)), SnapshotNeeded)
    market.snapshot_failed(SYMBOL, "IpBanned: banned", retry_after_s=120.0)
    assert waited_for_request(market, step=10_000) == 120_000


def waited_for_request(market: Market, step: int) -> int:
    """Feed the waiting book a diff every ``step`` ms of exchange time until it asks for a snapshot; the
    exchange time that took."""
    start = t = market.now_ms
    while True:
        t += step
        u = t  # any increasing ids: the diffs are only buffered
        if isinstance(on_diff(market, diff(u, u + 1, u - 1, t)), SnapshotNeeded):
            return t - start
