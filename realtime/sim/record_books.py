"""The books of the live client the recorder emulates, so ``tapewatch sim --record`` writes the book checkpoints a
live run writes (:mod:`realtime.checkpoints`): at each hour file's start, every synced book as it is after the
lines written so far. The client's books are built as a replay builds them — the same decoder and
:class:`~tapewatch.market.Market` — from the depth diffs and the snapshots the recorder writes (the other lines
do not move a book, and are not decoded here)."""

from __future__ import annotations

from collections.abc import Callable

from realtime.checkpoints import Checkpoints
from realtime.sim.capture_line import capture_line
from tapewatch.market import Market
from tapewatch.parse import FrameDecoder

#: How a line the books need starts to be told apart without decoding it: its stream is a depth stream or a
#: depth snapshot (the recorder writes ``{"recv":...,"stream":"...","data":...}``).
_BOOK_STREAMS = ("@depth", "rest:/fapi/v1/depth")


class _Lines:
    """A :class:`realtime.checkpoints.LineSink` that formats each line as the recorder writes it."""

    def __init__(self, put: Callable[[int, str], None]) -> None:
        self._put = put

    def write(self, recv_ms: int, stream: str, payload: bytes) -> None:
        self._put(recv_ms, capture_line(recv_ms, stream, payload.decode()))


class ClientBooks:
    """Checkpoints due by receive time (``period_s``, from ``start_ms``), and the books they are written from."""

    def __init__(self, period_s: int, start_ms: int) -> None:
        self.market = Market()
        self.decoder = FrameDecoder()
        self.checkpoints = Checkpoints(period_s, start_ms)

    def before(self, recv: int, put: Callable[[int, str], None]) -> None:
        """Before the line received at ``recv`` is written: the checkpoint, when it opens a new period, each
        book's line given to ``put(recv, line)``."""
        if recv >= self.checkpoints.due_ms:
            self.checkpoints.write(recv, self.market, self.market.symbols, _Lines(put))

    def after(self, line: str) -> None:
        """The line just written: applied to the books when it is a depth diff or a depth snapshot."""
        head = line[:120]
        if any(kind in head for kind in _BOOK_STREAMS):
            frame = self.decoder.decode_capture_line(line.encode())
            if frame is not None:
                self.market.on_frame(frame)
