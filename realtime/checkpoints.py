"""Book checkpoints in the capture (stream ``control:book_checkpoint``, :class:`tapewatch.events.BookCheckpoint`).

At the first frame of each checkpoint period (``capture_checkpoint_seconds``, a divisor of an hour: each hour
file starts with one), before that frame is captured, the realtime service writes every synced book as it is
after all the lines captured so far. Raw captures are pruned after ``capture_retention_hours``, taking the run's
first hour files and the snapshots its books were built from with them: without checkpoints a replay of what
is left had no book until a resync, i.e. never for most symbols. With them, a replay that starts at any hour
file takes each book from its checkpoint, and one that started earlier checks its books against the live
ones at every checkpoint (``checkpoint_checks``, ``checkpoint_mismatches`` in the replay summary).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable
from typing import Protocol

import msgspec

from tapewatch.events import CONTROL_BOOK_CHECKPOINT
from tapewatch.market import Market

log = logging.getLogger(__name__)

_NEVER = sys.maxsize
_encode = msgspec.json.Encoder().encode


class LineSink(Protocol):
    """Where checkpoint lines go: the capture writer (live), or the simulator's recorder."""

    def write(self, recv_ms: int, stream: str, payload: bytes) -> None: ...


class Checkpoints:
    """When the next checkpoint is due (``due_ms``: a frame received at or after it opens a new period; never
    when ``period_s`` is 0), and writing one. Callers compare a frame's receive time with ``due_ms`` themselves
    before calling :meth:`write`, so a frame that opens no period costs one comparison, not a call and the
    symbols' list built for it."""

    def __init__(self, period_s: int, now_ms: int) -> None:
        self.period_ms = period_s * 1000
        self.due_ms = self._after(now_ms)
        self.written = 0  # checkpoints written (one per period that had a synced book)
        self.books = 0  # book lines written

    def _after(self, recv_ms: int) -> int:
        """The start of the period after the one ``recv_ms`` lies in."""
        return (recv_ms // self.period_ms + 1) * self.period_ms if self.period_ms else _NEVER

    def write(self, recv_ms: int, market: Market, symbols: Iterable[str], capture: LineSink) -> int:
        """Before capturing a frame received at ``recv_ms``, at or after ``due_ms``: write the synced book of
        each of ``symbols`` (the ones followed: a symbol that left keeps a book nobody updates), received at
        ``recv_ms``, so it lands in that frame's hour file, ahead of it, and set the next ``due_ms``. The book
        lines written."""
        self.due_ms = self._after(recv_ms)
        started = time.perf_counter()
        n = 0
        for symbol in symbols:
            st = market.symbols.get(symbol)
            cp = st.book.checkpoint() if st is not None else None
            if cp is not None:
                capture.write(recv_ms, CONTROL_BOOK_CHECKPOINT, _encode(cp))
                n += 1
        if n:
            self.written += 1
            self.books += n
            log.info(
                "book checkpoint: %d synced books captured in %.0f ms",
                n,
                (time.perf_counter() - started) * 1000,
                extra={"stream": "depth"},
            )
        return n
