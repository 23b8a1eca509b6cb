"""The replay hot paths stay lean without changing what they compute (issue 3): a snapshot drops the diffs it
already holds in bulk, and the per-frame handlers build no closure cells."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tapewatch.book import Applied, Dropped, NeedsResync, OrderBook, Outcome
from tapewatch.events import DepthUpdate
from tapewatch.market import Market
from tapewatch.market_trades import MarketTrades
from tapewatch.parse import FrameDecoder
from tests.helpers import diff, snapshot

pytestmark = pytest.mark.usefixtures("both_sides")  # native and Python book sides

SNAPSHOT_ID = 10_000


def _older(n: int) -> list[DepthUpdate]:
    """``n`` chained diffs, every one older than the snapshot (u < lastUpdateId), as a cold start buffers them."""
    return [diff(10 * i + 1, 10 * i + 10, 10 * i, bids=[(100.0 - i % 7, 1.0 + i)]) for i in range(n)]


def _state(book: OrderBook, outcome: Outcome) -> tuple[Any, ...]:
    return (
        outcome,
        book.state,
        book.last_update_id,
        book.dropped,
        book.applied,
        book.gaps,
        book.resyncs,
        book.buffered,
        book.bids.top(50),
        book.asks.top(50),
    )


def _one_by_one(buffered: list[DepthUpdate]) -> tuple[Any, ...]:
    """The reference: the snapshot loaded over an empty buffer, then every diff fed through ``apply`` as the book
    replays its buffer (an outcome kept as load_snapshot keeps it; the rest buffered again after a resync)."""
    book = OrderBook("BTCUSDT")
    book.apply(diff(1, 2, 0))  # something buffered, as the books under test have; u < lastUpdateId: dropped
    waiting = book.load_snapshot(snapshot(SNAPSHOT_ID))
    assert waiting == Dropped("snapshot loaded; waiting for the event that spans it")
    synced, applied = False, None
    for i, ev in enumerate(buffered):
        result = book.apply(ev)
        if isinstance(result, NeedsResync):
            for rest in buffered[i + 1 :]:
                book.apply(rest)
            return _state(book, result)
        if isinstance(result, Applied):
            synced, applied = synced or result.synced_now, result
    return _state(book, Applied(True) if synced else applied or waiting)


def _counting_apply(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the diffs load_snapshot replays through OrderBook.apply."""
    calls: list[int] = []
    apply: Callable[[OrderBook, DepthUpdate], Outcome] = OrderBook.apply

    def counted(book: OrderBook, ev: DepthUpdate) -> Outcome:
        calls.append(ev.final_id)
        return apply(book, ev)

    monkeypatch.setattr(OrderBook, "apply", counted)
    return calls


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(
            [diff(9_991, 10_010, 9_990, bids=[(100.0, 5.0)]), diff(10_011, 10_020, 10_010)], id="sync"
        ),
        pytest.param([diff(10_011, 10_020, 10_010)], id="snapshot-too-old"),
        pytest.param([], id="all-older"),
        pytest.param([diff(9_991, 10_000, 9_990, asks=[(101.0, 0.0)])], id="u-equals-snapshot"),
    ],
)
def test_a_snapshot_drops_the_buffered_diffs_it_holds_in_bulk_with_the_same_result(
    tail: list[DepthUpdate], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cold start buffers minutes of diffs (38 % of the depth frames of a 3-minute whole-market capture): the
    ones older than the snapshot are counted dropped without going one by one through apply, and the book ends
    exactly as when each of them is fed on its own."""
    buffered = [diff(1, 2, 0), *_older(999), *tail]
    expected = _one_by_one(buffered[1:])
    book = OrderBook("BTCUSDT")
    for ev in buffered:
        book.apply(ev)
    calls = _counting_apply(monkeypatch)
    outcome = book.load_snapshot(snapshot(SNAPSHOT_ID))
    assert _state(book, outcome) == expected
    assert book.dropped == 1000  # every older diff counted
    assert calls == [ev.final_id for ev in tail]  # only the diffs from the first one the snapshot lacks


@pytest.mark.parametrize(
    "handler",
    [
        Market.on_frame,
        Market._on_depth,
        Market._on_book_ticker,
        Market._on_kline,
        MarketTrades._on_agg_trade,
        MarketTrades._trade,
        MarketTrades._add_trade,
        FrameDecoder.decode_capture_line,
    ],
    ids=lambda f: f.__qualname__,
)
def test_the_per_frame_handlers_build_no_closure_cells(handler: Callable[..., object]) -> None:
    """A lambda in a handler makes every call build cells for the names it captures (self, the symbol's state,
    the event, the trade's fields), a cost on each of the ~10^6 frames of a replay even when the lambda's rare
    path is not taken: such lambdas live in the helpers off the common path (_diff_ahead, _trade_ahead)."""
    code = handler.__code__
    assert code.co_cellvars == () and code.co_freevars == ()
