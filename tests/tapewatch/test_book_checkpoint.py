"""Book checkpoints (``control:book_checkpoint``): a synced book written whole, read back exactly, checked
against a replay's book, or taken by a book that has no snapshot to wait for."""

from __future__ import annotations

import logging

import msgspec
import pytest

from tapewatch.book import Applied, NeedsResync, OrderBook
from tapewatch.events import CONTROL_BOOK_CHECKPOINT, BookCheckpoint
from tapewatch.market import Market
from tapewatch.parse import FrameDecoder
from tests.helpers import diff, snapshot

pytestmark = pytest.mark.usefixtures("both_sides")  # native and Python book sides


def synced(limit: int | None = None) -> OrderBook:
    book = OrderBook("BTCUSDT")
    book.apply(diff(90, 105, 80, bids=[(100.0, 5.0)], time=1_500))
    book.load_snapshot(snapshot(100, asks=[(101.0, 1.0), (102.0, 3.0), (103.5, 0.1)]), limit)
    book.apply(diff(106, 110, 105, bids=[(99.5, 0.25)], asks=[(101.0, 0.0)], time=1_600))
    return book


def line(cp: BookCheckpoint, recv: int = 2_000) -> bytes:
    return msgspec.json.encode({"recv": recv, "stream": CONTROL_BOOK_CHECKPOINT, "data": cp})


def test_a_synced_book_round_trips_through_its_checkpoint_line() -> None:
    book = synced()
    cp = book.checkpoint()
    assert cp is not None
    assert (cp.last_update_id, cp.event_time, cp.synced_at) == (110, 1_600, 1_500)
    assert cp.bids == [(100.0, 5.0), (99.5, 0.25), (99.0, 2.0)] and cp.asks == [(102.0, 3.0), (103.5, 0.1)]
    assert (cp.bid_floor, cp.ask_ceiling) == (0.0, None)  # a full snapshot: no bound
    frame = FrameDecoder().decode_capture_line(line(cp))
    assert frame is not None and frame.symbol == "BTCUSDT" and frame.event == cp
    # a book taken from it is the same book, and goes on with the next diff
    other = OrderBook("BTCUSDT")
    assert other.restore(cp) == Applied(synced_now=True)
    assert other.differs(cp) is None and other.synced and other.synced_at == 1_500
    assert other.apply(diff(111, 112, 110, asks=[(101.5, 2.0)])) == Applied()
    assert other.asks.best() == (101.5, 2.0)


def test_a_partial_snapshot_s_bounds_travel_with_the_checkpoint() -> None:
    cp = synced(limit=3).checkpoint()  # 3 asks asked for and listed: the book knows nothing past 103.5
    assert cp is not None and cp.ask_ceiling == 103.5 and cp.bid_floor == 0.0
    book = OrderBook("BTCUSDT")
    book.restore(cp)
    # every ask taken out: the best ask would lie past what the snapshot knew, so the book asks for a resync
    outcome = book.apply(diff(111, 112, 110, asks=[(102.0, 0.0), (103.5, 0.0), (104.0, 1.0)]))
    assert isinstance(outcome, NeedsResync) and "beyond the snapshot" in outcome.reason


def test_no_checkpoint_of_a_book_that_is_not_synced() -> None:
    book = OrderBook("BTCUSDT")
    assert book.checkpoint() is None
    book.apply(diff(90, 105, 80))
    assert book.checkpoint() is None  # buffering, waiting for its snapshot
    cp = synced().checkpoint()
    assert cp is not None
    assert "not synced" in str(book.differs(cp))


def test_differences_are_named() -> None:
    cp = synced().checkpoint()
    assert cp is not None
    book = synced()
    book.apply(diff(111, 111, 110, bids=[(99.5, 0.5)]))
    assert "at u=111" in str(book.differs(cp))
    changed = msgspec.structs.replace(cp, bids=[(100.0, 5.0), (99.5, 0.3), (99.0, 2.0)])
    assert "bids differ at u=110" in str(synced().differs(changed)) and "level 2" in str(
        synced().differs(changed)
    )
    shorter = msgspec.structs.replace(cp, asks=cp.asks[:1])
    assert "asks differ" in str(synced().differs(shorter)) and "2 vs 1 levels" in str(
        synced().differs(shorter)
    )


def test_buffered_diffs_apply_over_a_restored_book_or_ask_for_a_resync() -> None:
    cp = synced().checkpoint()
    assert cp is not None
    book = OrderBook("BTCUSDT")
    book.apply(diff(107, 110, 106))  # held by the checkpoint: dropped
    book.apply(diff(111, 113, 110, bids=[(100.0, 0.0)]))
    assert book.restore(cp) == Applied(synced_now=True)
    assert book.last_update_id == 113 and book.bids.best() == (99.5, 0.25) and book.dropped == 1
    gap = OrderBook("BTCUSDT")
    gap.apply(diff(115, 118, 114))  # 111-114 missing
    outcome = gap.restore(cp)
    assert isinstance(outcome, NeedsResync) and "gap" in outcome.reason


def test_a_replay_checks_its_synced_book_and_takes_the_live_one_when_it_differs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    market = Market()
    market.on_frame(FrameDecoder().decode_capture_line(line(synced().checkpoint())))  # type: ignore[arg-type]
    assert market.counters["checkpoint_loads"] == 1 and market.symbols["BTCUSDT"].book.synced
    cp = market.symbols["BTCUSDT"].book.checkpoint()
    assert cp is not None
    market.on_frame(FrameDecoder().decode_capture_line(line(cp)))  # type: ignore[arg-type]
    totals = market.totals()
    assert (totals["checkpoint_checks"], totals["checkpoint_mismatches"], totals["checkpoint_loads"]) == (
        1,
        0,
        1,
    )
    live = msgspec.structs.replace(cp, bids=[(100.0, 4.0), *cp.bids[1:]])
    with caplog.at_level(logging.WARNING, logger="tapewatch.market"):
        market.on_frame(FrameDecoder().decode_capture_line(line(live)))  # type: ignore[arg-type]
    assert market.totals()["checkpoint_mismatches"] == 1
    assert market.symbols["BTCUSDT"].book.bids.best() == (100.0, 4.0)  # the live book, taken whole
    assert market.totals()["resyncs"] == 0
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING and "checkpoint" in r.getMessage()]
    assert "bids differ at u=110" in record.getMessage() and record.__dict__["symbol"] == "BTCUSDT"


def test_a_bad_checkpoint_line_is_counted_not_raised() -> None:
    decoder = FrameDecoder()
    bad = {"recv": 1, "stream": CONTROL_BOOK_CHECKPOINT, "data": {"symbol": "BTCUSDT", "last_update_id": 5}}
    assert decoder.decode_capture_line(msgspec.json.encode(bad)) is None
    nan = line(msgspec.structs.replace(synced().checkpoint(), bids=[]))  # type: ignore[type-var]
    assert decoder.decode_capture_line(nan.replace(b'"bids":[]', b'"bids":[[-1.0,2.0]]')) is None
    assert sum(decoder.rejected.values()) == 2


def test_a_book_out_of_sync_where_the_live_one_was_synced_is_a_mismatch_not_a_load() -> None:
    """The review: a replay that lost a diff the live run applied (a full capture queue, a killed writer's
    last second) resyncs and waits; at the next checkpoint its book was counted as "taken" and the replay
    exited 0. A book that has synced in this replay and is out of sync there differs from the live one."""
    market, decoder = Market(), FrameDecoder()
    cp = synced().checkpoint()
    assert cp is not None
    market.on_frame(decoder.decode_capture_line(line(cp)))  # type: ignore[arg-type]
    market.on_frame(decoder.decode_capture_line(line(cp)))  # type: ignore[arg-type]
    book = market.symbols["BTCUSDT"].book
    book.apply(diff(115, 118, 114))  # 111-114 never came: out of sync, waiting for a snapshot
    later = msgspec.structs.replace(cp, last_update_id=120)
    market.on_frame(decoder.decode_capture_line(line(later)))  # type: ignore[arg-type]
    totals = market.totals()
    assert (totals["checkpoint_checks"], totals["checkpoint_mismatches"], totals["checkpoint_loads"]) == (
        2,
        1,
        1,
    )
    assert book.synced and book.last_update_id == 120
