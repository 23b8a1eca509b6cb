"""The engine on polled books: a recorded capture with planted episodes is turned into what the backup feed
would have captured (no depth diffs and no bookTickers, a 50-level polled snapshot of each book every 2 s),
and the engine still evaluates, finds candidates, and flags their depth coverage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from realtime.capture import iter_capture
from tapewatch.engine import SignalEngine
from tapewatch.market import Market, MarketConfig
from tapewatch.parse import Frame, FrameDecoder
from tapewatch.polled import poll_stream
from tapewatch.settings import load_settings
from tapewatch.signal import Candidate
from tapewatch.streams import Kind
from tests.helpers import signal_capture

pytestmark = pytest.mark.slow

POLL_EVERY_MS = 2_000


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return signal_capture(tmp_path_factory, symbols=8)


def as_polled(capture: Path) -> Iterator[bytes]:
    """The capture with every book fed by polls instead of diffs: the diff-built book (kept aside) is
    written as a 50-level polled snapshot every ``POLL_EVERY_MS`` of a symbol's event time."""
    decoder, shadow = FrameDecoder(), Market()
    polled_at: dict[str, int] = {}
    for line in iter_capture([capture]):
        frame = decoder.decode_capture_line(line)
        if frame is not None and frame.kind in (Kind.DEPTH, Kind.SNAPSHOT, Kind.BOOK_TICKER):
            shadow.on_frame(frame)
            book = shadow.state(frame.symbol).book
            time = book.last_event_time
            if (
                frame.kind is Kind.DEPTH
                and book.synced
                and time - polled_at.get(frame.symbol, 0) >= POLL_EVERY_MS
            ):
                polled_at[frame.symbol] = time
                body = {
                    "lastUpdateId": book.last_update_id,
                    "E": time,
                    "T": time,
                    "bids": [[str(p), str(q)] for p, q in book.bids.top(50)],
                    "asks": [[str(p), str(q)] for p, q in book.asks.top(50)],
                }
                name = poll_stream(f"rest:/fapi/v1/depth?symbol={frame.symbol}&limit=50", POLL_EVERY_MS)
                yield json.dumps({"recv": frame.recv, "stream": name, "data": body}).encode()
            continue  # no diff, snapshot or bookTicker reaches the engine: the websockets are off
        yield line


def run(lines: Iterator[bytes]) -> tuple[SignalEngine, list[Candidate]]:
    settings = load_settings()
    engine = SignalEngine(settings, Market(MarketConfig.from_settings(settings)))
    decoder, candidates = FrameDecoder(), []
    for line in lines:
        frame = decoder.decode_capture_line(line)
        frames: list[Frame] = [frame] if frame is not None else decoder.take_pending()
        for f in frames:
            engine.market.on_frame(f)
            out = engine.on_frame(f)
            if out is not None:
                candidates.extend(out.candidates)
    return engine, candidates


def test_the_engine_finds_candidates_on_polled_books_and_flags_their_depth(capture: Path) -> None:
    engine, candidates = run(as_polled(capture))
    market = engine.market
    assert market.counters["polled_snapshots"] > 100 and market.counters["polled_snapshots_dropped"] == 0
    assert all(st.book.state == "polled" for st in market.symbols.values() if st.book.last_update_id)
    assert engine.counters["evaluations"] > 0
    assert candidates, "no candidate on polled books with planted episodes"
    for candidate in candidates:
        quality = candidate.features.data_quality
        # the levels the poll listed a side (at most the 50 asked; a thin book lists fewer)
        assert quality.book_source == "poll" and 0 < (quality.depth_levels or 0) <= 50, candidate
        assert quality.book_sync_age_ms is not None and quality.book_sync_age_ms <= POLL_EVERY_MS + 5_000
    # the same capture on diff-kept books: the same setups are found, flagged as stream books
    _, streamed = run(iter_capture([capture]))
    assert streamed and all(c.features.data_quality.book_source == "stream" for c in streamed)
    assert all(c.features.data_quality.depth_levels is None for c in streamed)
