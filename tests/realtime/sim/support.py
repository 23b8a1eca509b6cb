"""Helpers for the simulator tests: drive tapewatch's own book and top-of-book check from frames."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from websockets.asyncio.client import connect as ws_connect

from tapewatch.book import Applied, NeedsResync, OrderBook
from tapewatch.events import BookTicker, DepthSnapshot, DepthUpdate
from tapewatch.market_depth import snapshot_limit
from tapewatch.parse import Frame, FrameDecoder
from tapewatch.topcheck import TopCheck

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run one async scenario with a hard time limit."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def connect(url: str, **kwargs: Any) -> ws_connect:
    """A websocket client that buffers every frame (no flow control), so leaving frames unread in a test
    never stalls its closing handshake."""
    kwargs.setdefault("max_queue", None)
    kwargs.setdefault("close_timeout", 2)
    return ws_connect(url, **kwargs)


def capture_lines(root: Path) -> Iterator[bytes]:
    for path in sorted(root.rglob("*.jsonl.gz")):
        with gzip.open(path, "rb") as fh:
            for line in fh:
                yield line.rstrip(b"\n")


@dataclass
class Books:
    """Per-symbol OrderBook + TopCheck fed by decoded frames, counting what happened."""

    decoder: FrameDecoder = field(default_factory=FrameDecoder)
    books: dict[str, OrderBook] = field(default_factory=dict)
    checks: dict[str, TopCheck] = field(default_factory=dict)
    resync_reasons: list[str] = field(default_factory=list)
    applied: int = 0

    def book(self, symbol: str) -> OrderBook:
        if symbol not in self.books:
            self.books[symbol] = OrderBook(symbol)
            self.checks[symbol] = TopCheck()
        return self.books[symbol]

    def feed(self, frame: Frame | None) -> None:
        if frame is None:
            return
        ev = frame.event
        book = self.book(frame.symbol)
        check = self.checks[frame.symbol]
        if isinstance(ev, DepthUpdate):
            self._outcome(book, check, book.apply(ev), ev.final_id)
        elif isinstance(ev, DepthSnapshot):
            # the depth asked for, as the market passes it: a partial snapshot has a blind spot past its levels
            loaded = book.load_snapshot(ev, snapshot_limit(frame.stream))
            self._outcome(book, check, loaded, book.last_update_id)
        elif isinstance(ev, BookTicker):
            check.on_ticker(ev)

    def _outcome(self, book: OrderBook, check: TopCheck, outcome: object, update_id: int) -> None:
        if isinstance(outcome, NeedsResync):
            self.resync_reasons.append(outcome.reason)
            check.reset()
        elif isinstance(outcome, Applied):
            self.applied += 1
            if book.synced:
                check.on_book(update_id, book.top())

    @property
    def gaps(self) -> int:
        return sum(b.gaps for b in self.books.values())

    @property
    def top_checks(self) -> int:
        return sum(c.checks for c in self.checks.values())

    @property
    def mismatches(self) -> int:
        return sum(c.mismatches for c in self.checks.values())

    def samples(self) -> list[str]:
        return [s for c in self.checks.values() for s in c.samples]
