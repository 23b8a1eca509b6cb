"""A depth stream restart is captured (``control:depth_restart``) so a replay restarts the book where live did.

The case that needed it: the new connection's first diff happens to continue the old sequence (``pu`` equals
the last ``u``). Without the marker a replay applies it to the old book, then the resync snapshot the live
run fetched arrives on a synced book. Loaded, it left the next diff after it ("snapshot too old") and no later
snapshot in the capture ever resynced that book; now a snapshot on a synced book is dropped as late
(``Market._late_snapshot``), so the old capture keeps its book, though the restart itself is not replayed.
"""

from __future__ import annotations

import json

import msgspec
import pytest

from tapewatch.events import CONTROL_DEPTH_RESTART, CONTROL_PAUSED, ControlChange, DepthRestart
from tapewatch.market import Market
from tapewatch.market_depth import SnapshotNeeded
from tapewatch.parse import Frame, FrameDecoder
from tapewatch.streams import Kind

pytestmark = pytest.mark.usefixtures("both_sides")  # native and Python book sides

SYMBOL = "BTCUSDT"
DEPTH = "btcusdt@depth@100ms"
SNAPSHOT = "rest:/fapi/v1/depth?symbol=BTCUSDT&limit=1000"


def _line(recv: int, stream: str, data: object) -> bytes:
    return json.dumps({"recv": recv, "stream": stream, "data": data}).encode()


def _diff(recv: int, first: int, last: int, prev: int, bid_qty: float) -> bytes:
    data = {
        "e": "depthUpdate",
        "E": recv,
        "T": recv,
        "s": SYMBOL,
        "U": first,
        "u": last,
        "pu": prev,
        "b": [["100.0", f"{bid_qty}"]],
        "a": [["101.0", "2.0"]],
    }
    return _line(recv, DEPTH, data)


def _snapshot(recv: int, last_update_id: int, bid_qty: float) -> bytes:
    data = {
        "lastUpdateId": last_update_id,
        "E": recv,
        "T": recv,
        "bids": [["100.0", f"{bid_qty}"], ["99.0", "4.0"]],
        "asks": [["101.0", "5.0"], ["102.0", "6.0"]],
    }
    return _line(recv, SNAPSHOT, data)


RESTART = _line(1_005, CONTROL_DEPTH_RESTART, {"symbol": SYMBOL, "reason": "reconnect"})


def restart_capture(with_marker: bool) -> list[bytes]:
    """Old connection synced up to u=110; the new one's first diff continues it (pu=110); the resync snapshot
    (lastUpdateId=113) the live run fetched after the restart arrives next, then the new connection goes on."""
    before = [
        _snapshot(1_000, 100, 3.0),
        _diff(1_001, 95, 105, 90, 1.0),
        _diff(1_002, 106, 110, 105, 1.5),
    ]
    after = [
        _diff(1_006, 111, 115, 110, 2.5),
        _snapshot(1_007, 113, 7.0),
        _diff(1_008, 116, 120, 115, 8.0),
    ]
    return before + ([RESTART] if with_marker else []) + after


def _replay(lines: list[bytes]) -> tuple[Market, list[SnapshotNeeded]]:
    """The lines through the decoder and the market, as ``tapewatch replay`` does."""
    decoder, market = FrameDecoder(), Market()
    requests: list[SnapshotNeeded] = []
    for line in lines:
        frame = decoder.decode_capture_line(line)
        if frame is not None and isinstance(request := market.on_frame(frame), SnapshotNeeded):
            requests.append(request)
    return market, requests


def live_market() -> Market:
    """What the live service did: the market restarted when the transport's marker came, in frame order."""
    decoder, market = FrameDecoder(), Market()
    for line in restart_capture(with_marker=False):
        frame = decoder.decode_capture_line(line)
        assert frame is not None
        if frame.kind is Kind.DEPTH and frame.event.first_id == 111:  # type: ignore[union-attr]
            market.restart_stream(SYMBOL, "depth stream reconnect")
        market.on_frame(frame)
    return market


def test_the_restart_line_decodes_to_a_control_frame_of_its_symbol() -> None:
    decoder = FrameDecoder()
    frame = decoder.decode_capture_line(RESTART)
    assert frame == Frame(
        1_005, CONTROL_DEPTH_RESTART, SYMBOL, Kind.CONTROL, DepthRestart(SYMBOL, "reconnect")
    )
    # what the service writes is what replay reads
    body = msgspec.json.encode(DepthRestart(SYMBOL, "reconnect"))
    assert decoder.decode_payload(1_005, CONTROL_DEPTH_RESTART, body) == frame
    for bad in (b'{"reason":"reconnect"}', b'{"symbol":"","reason":"x"}', b'{"symbol":7}', b"{nope"):
        assert decoder.decode_payload(1, CONTROL_DEPTH_RESTART, bad) is None
    assert sum(decoder.rejected.values()) == 4 and decoder.decoded == 2


def test_a_captured_restart_resyncs_the_book_on_the_next_snapshot_as_live() -> None:
    market, requests = _replay(restart_capture(with_marker=True))
    assert market.final() == live_market().final()
    assert requests == [SnapshotNeeded(SYMBOL, "depth stream reconnect")]  # replay ignores it; live fetched
    assert market.final()[SYMBOL]["best_bid"] == 100.0
    book = market.symbols[SYMBOL].book
    assert book.synced and book.last_update_id == 120 and book.gaps == 0


def test_without_the_marker_the_late_snapshot_is_dropped_and_the_book_kept() -> None:
    """An old capture (no marker): the diffs continue the old book, so the restart's snapshot arrives on a synced
    book and is dropped as late (it used to throw the book away for good: "snapshot too old")."""
    market, requests = _replay(restart_capture(with_marker=False))
    book = market.symbols[SYMBOL].book
    assert book.synced and book.last_update_id == 120 and book.gaps == book.resyncs == 0
    assert market.totals()["late_snapshots"] == 1 and requests == []
    assert market.final() == live_market().final()  # here the snapshot held what the diffs had built


def test_a_pause_is_still_not_the_markets() -> None:
    """Only a depth restart is a market frame among the control lines; a pause frame changes no book."""
    market, _ = _replay(restart_capture(with_marker=True))
    before = market.final()
    assert market.on_frame(Frame(1_009, CONTROL_PAUSED, "", Kind.CONTROL, ControlChange(True))) is None
    assert market.final() == before and market.symbols[SYMBOL].book.synced
