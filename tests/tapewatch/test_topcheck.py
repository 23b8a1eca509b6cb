"""The bookTicker proof (``tapewatch.topcheck``) can fail: a ticker that disagrees with the local book at the
same update id is counted as a mismatch, on any of the four fields, whichever of the two arrives first, and the
market restarts the book it proved wrong (a resync, reason ``book_mismatch``)."""

from __future__ import annotations

import json
import random

import pytest

from tapewatch.book import OrderBook, Top
from tapewatch.events import BookTicker
from tapewatch.market import Market
from tapewatch.market_depth import SnapshotNeeded
from tapewatch.parse import FrameDecoder
from tapewatch.topcheck import TopCheck
from tests.helpers import diff, snapshot

pytestmark = pytest.mark.usefixtures("both_sides")  # native and Python book sides

FIELDS = ["bid_price", "bid_qty", "ask_price", "ask_qty"]
ORDERS = ["ticker_first", "book_first"]
WRONG = {
    "bid_price": 99.5,
    "bid_qty": 4.0,
    "ask_price": 101.5,
    "ask_qty": 2.5,
}  # each keeps the book uncrossed


def book_at_107() -> tuple[OrderBook, Top]:
    book = OrderBook("BTCUSDT")
    book.apply(diff(90, 105, 80, bids=[(100.0, 5.0)]))
    book.load_snapshot(snapshot(100))
    book.apply(diff(106, 107, 105, bids=[(100.0, 6.0)], asks=[(101.0, 0.5)]))
    top = book.top()
    assert top is not None and book.last_update_id == 107
    return book, top


def ticker_of(top: Top, update_id: int, **wrong: float) -> BookTicker:
    fields = {f: getattr(top, f) for f in FIELDS} | wrong
    return BookTicker("BTCUSDT", update_id, **fields)


def compare(check: TopCheck, ticker: BookTicker, top: Top, order: str) -> None:
    if order == "ticker_first":
        check.on_ticker(ticker)
        check.on_book(107, top)
    else:
        check.on_book(107, top)
        check.on_ticker(ticker)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("field", FIELDS)
def test_a_ticker_that_disagrees_with_the_book_is_a_mismatch(field: str, order: str) -> None:
    _, top = book_at_107()
    check = TopCheck()
    compare(check, ticker_of(top, 107, **{field: WRONG[field]}), top, order)
    assert (check.checks, check.mismatches) == (1, 1)
    (sample,) = check.samples
    assert "BTCUSDT u=107" in sample and str(WRONG[field]) in sample


@pytest.mark.parametrize("order", ORDERS)
def test_a_ticker_that_agrees_is_checked_and_not_a_mismatch(order: str) -> None:
    _, top = book_at_107()
    check = TopCheck()
    compare(check, ticker_of(top, 107), top, order)
    assert (check.checks, check.mismatches, check.samples) == (1, 0, [])


def test_a_ticker_at_another_update_id_is_not_compared_even_when_it_disagrees() -> None:
    _, top = book_at_107()
    check = TopCheck()
    check.on_book(107, top)
    check.on_ticker(ticker_of(top, 106, bid_qty=9.0))  # inside the diff 106..107: no book state to match
    assert (check.checks, check.mismatches) == (0, 0)
    check.reset()  # a resync forgets the pending top: a late ticker finds nothing to compare with
    check.on_ticker(ticker_of(top, 107, bid_qty=9.0))
    assert (check.checks, check.mismatches) == (0, 0)


# --- the same through the market, from capture lines --------------------------------------------------

T0 = 1_723_158_000_000


def line(stream: str, data: dict[str, object], recv: int = T0) -> bytes:
    return json.dumps({"recv": recv, "stream": stream, "data": data}).encode()


def depth(first: int, final: int, prev: int, bids: list[list[str]], asks: list[list[str]]) -> bytes:
    data = {"e": "depthUpdate", "E": T0 + final, "T": T0 + final, "s": "BTCUSDT", "U": first, "u": final,
            "pu": prev, "b": bids, "a": asks}  # fmt: skip
    return line("btcusdt@depth@100ms", data)


def ticker(u: int, b: str, bq: str, a: str, aq: str) -> bytes:
    data = {
        "e": "bookTicker",
        "u": u,
        "s": "BTCUSDT",
        "b": b,
        "B": bq,
        "a": a,
        "A": aq,
        "E": T0 + u,
        "T": T0 + u,
    }
    return line("btcusdt@bookTicker", data)


def market_lines(order: str, wrong_ticker: bytes | None) -> list[bytes]:
    snap = {"lastUpdateId": 100, "E": T0, "T": T0, "bids": [["100.0", "1.0"], ["99.0", "2.0"]],
            "asks": [["101.0", "1.0"], ["102.0", "3.0"]]}  # fmt: skip
    sync = depth(90, 105, 80, [["100.0", "5.0"]], [])
    last = depth(106, 107, 105, [["100.0", "6.0"]], [["101.0", "0.5"]])
    good_105 = ticker(105, "100.0", "5.0", "101.0", "1.0")
    t107 = wrong_ticker or ticker(107, "100.0", "6.0", "101.0", "0.5")
    body = [sync, line("rest:/fapi/v1/depth?symbol=BTCUSDT&limit=1000", snap), good_105]
    return [*body, t107, last] if order == "ticker_first" else [*body, last, t107]


def run_market(lines: list[bytes], synced: bool = True) -> Market:
    """The market fed ``lines``; its book ends ``synced`` (not: a ticker proved it wrong, it awaits a snapshot)."""
    decoder, market = FrameDecoder(), Market()
    for raw in lines:
        frame = decoder.decode_capture_line(raw)
        assert frame is not None, raw
        market.on_frame(frame)
    assert market.symbols["BTCUSDT"].book.synced is synced
    return market


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize(
    "wrong",
    [ticker(107, "100.1", "6.0", "101.0", "0.5"), ticker(107, "100.0", "6.0", "101.0", "0.4")],
    ids=["price", "quantity"],
)
def test_the_market_counts_a_ticker_that_disagrees_with_its_book_and_resyncs_it(
    order: str, wrong: bytes
) -> None:
    good = run_market(market_lines(order, None)).totals()
    assert (good["book_checks"], good["book_mismatches"]) == (2, 0)  # u=105 (the sync) and u=107
    assert good["resyncs"] == 0
    market = run_market(market_lines(order, wrong), synced=False)
    bad = market.totals()
    assert (bad["book_checks"], bad["book_mismatches"], bad["resyncs"]) == (2, 1, 1)
    assert market.counters["resync_book_mismatch"] == 1 and market.counters["resync_requests"] == 1
    st = market.symbols["BTCUSDT"]
    assert st.snapshot_pending and st.book.health(T0 + 107, 5_000).state == "resyncing"


@pytest.mark.parametrize("order", ORDERS)
def test_the_frame_that_shows_the_mismatch_asks_for_a_snapshot_and_a_new_one_syncs_the_book(
    order: str,
) -> None:
    """Whichever frame completes the comparison (the ticker, or the diff after it) returns the snapshot request,
    once; the book's next diffs wait for it, and a snapshot spanned by a diff syncs the book again, its proof
    going on (an agreeing ticker is checked, nothing more counted as a mismatch)."""
    decoder, market = FrameDecoder(), Market()
    wrong = ticker(107, "100.1", "6.0", "101.0", "0.5")
    requests = []
    for raw in market_lines(order, wrong):
        frame = decoder.decode_capture_line(raw)
        assert frame is not None
        requests.append(market.on_frame(frame))
    *before, last = requests
    # the sync diff (buffered: a cold start), the snapshot, the agreeing ticker 105, the first of 107's pair
    assert before == [SnapshotNeeded("BTCUSDT", "cold start"), None, None, None]
    assert isinstance(last, SnapshotNeeded) and last.reason.startswith(
        "book_mismatch: BTCUSDT u=107: ticker 100.1x6.0"
    )
    later = [
        depth(108, 109, 107, [["100.0", "7.0"]], []),  # buffered: the snapshot is pending, none asked again
        line(
            "rest:/fapi/v1/depth?symbol=BTCUSDT&limit=1000",
            {"lastUpdateId": 109, "E": T0, "T": T0, "bids": [["100.0", "7.0"]], "asks": [["101.0", "0.5"]]},
        ),
        depth(109, 110, 109, [["100.0", "8.0"]], []),  # spans the snapshot: synced
        ticker(110, "100.0", "8.0", "101.0", "0.5"),
    ]
    for raw in later:
        frame = decoder.decode_capture_line(raw)
        assert frame is not None
        assert market.on_frame(frame) is None
    st = market.symbols["BTCUSDT"]
    assert st.book.synced and not st.snapshot_pending
    assert (st.check.checks, st.check.mismatches, st.book.resyncs) == (3, 1, 1)


# --- the market's per-diff form (on_sides) against the reference (on_book of book.top()) -----------------


def test_on_sides_keeps_the_result_of_on_book_of_the_top_step_by_step() -> None:
    """``Market`` records each applied diff with ``on_sides`` (no Top built for a ticker compared at once):
    over a random run of diffs (empty sides included), tickers before and after their diff, agreeing or not,
    resets, and a small ``keep`` so trims happen often, it keeps exactly what ``on_book(update_id,
    book.top())`` keeps (counts, samples, pending tops and tickers, in order)."""
    rng = random.Random(13)
    fast, reference = TopCheck(keep=4), TopCheck(keep=4)
    book = OrderBook("BTCUSDT")
    update_id = 0
    seen: list[Top] = []  # tops of past diffs, so tickers can agree with them
    for _ in range(5_000):
        step = rng.random()
        if step < 0.5:  # a diff: new best levels, sometimes an empty side
            update_id += rng.randint(1, 3)
            book.bids.load(
                [] if rng.random() < 0.05 else [(rng.choice([99.0, 99.5, 100.0]), float(rng.randint(1, 3)))]
            )
            book.asks.load(
                [] if rng.random() < 0.05 else [(rng.choice([101.0, 101.5]), float(rng.randint(1, 3)))]
            )
            fast.on_sides(update_id, book.bids, book.asks)
            top = book.top()
            reference.on_book(update_id, top)
            if top is not None:
                seen.append(top)
        elif step < 0.95:  # a ticker at a past, current or next id, agreeing with some past top or not
            u = update_id + rng.randint(-6, 3)
            base = rng.choice(seen) if seen and rng.random() < 0.8 else Top(98.0, 1.0, 102.0, 1.0)
            t = BookTicker("BTCUSDT", u, base.bid_price, base.bid_qty, base.ask_price, base.ask_qty)
            fast.on_ticker(t)
            reference.on_ticker(t)
        else:
            fast.reset()
            reference.reset()
        assert (fast.checks, fast.mismatches, fast.samples) == (
            reference.checks,
            reference.mismatches,
            reference.samples,
        )
        assert list(fast._tops.items()) == list(reference._tops.items())
        assert list(fast._tickers.items()) == list(reference._tickers.items())
    # the run exercised every path: matches both ways round, mismatches, trims
    assert reference.checks > 500 and 0 < reference.mismatches < reference.checks
    assert len(reference.samples) == 10


# --- one bookTicker whose update id is corrupted far ahead ------------------------------------------------

BOGUS_U = 10**15  # a book at u=107: far past TICKER_LEAD_MAX_IDS


@pytest.mark.parametrize("order", ORDERS)
def test_a_ticker_id_corrupted_far_ahead_does_not_stop_the_proof(order: str) -> None:
    """A ticker stamped u=10^15 would make every later ticker "out of order" and end the proof for the symbol:
    the next ticker, consistent with the synced book, shows it bogus; it is dropped (counted) and the proof
    goes on. An agreeing ticker is still checked, a disagreeing one still a mismatch."""
    bogus = ticker(BOGUS_U, "100.0", "6.0", "101.0", "0.5")
    for wrong, mismatches in ((None, 0), (ticker(107, "100.1", "6.0", "101.0", "0.5"), 1)):
        lines = market_lines(order, wrong)
        market = run_market([*lines[:3], bogus, *lines[3:]], synced=not mismatches)
        totals = market.totals()
        assert (totals["book_checks"], totals["book_mismatches"]) == (2, mismatches)
        assert (totals["book_ticker_ahead"], totals["out_of_order"]) == (1, 0)
        st = market.symbols["BTCUSDT"]
        assert st.last_ticker_id == 107 and BOGUS_U not in st.check._tickers


def test_a_ticker_older_than_the_last_one_is_still_out_of_order() -> None:
    """Both tickers close to the book: the older one is skipped and counted, the bogus rule does not apply."""
    lines = market_lines("book_first", None)
    market = run_market([*lines, ticker(106, "100.0", "5.0", "101.0", "1.0")])
    totals = market.totals()
    assert (totals["out_of_order"], totals["book_ticker_ahead"], totals["book_checks"]) == (1, 0, 2)
    assert market.symbols["BTCUSDT"].last_ticker_id == 107


def test_a_bogus_ticker_before_the_book_syncs_is_dropped_once_it_has() -> None:
    """While the book is not synced its id means nothing: later tickers stay out of order (counted) until it
    syncs, and the first one after that drops the bogus one."""
    lines = market_lines("book_first", None)  # sync diff, snapshot, ticker 105, diff 107, ticker 107
    bogus = ticker(BOGUS_U, "100.0", "6.0", "101.0", "0.5")
    early = ticker(104, "100.0", "5.0", "101.0", "1.0")
    market = run_market([bogus, early, *lines])
    totals = market.totals()
    assert (totals["out_of_order"], totals["book_ticker_ahead"]) == (1, 1)
    assert totals["book_checks"] == 2  # u=105 and u=107, as without the bogus ticker
