"""Fetch order-book snapshots when books need them, within the REST weight budget.

Books ask for snapshots (cold start, gap, crossed book, stream restart); this scheduler de-duplicates the
requests, spaces the resyncs of one symbol by ``min_interval``, picks the snapshot size (the universe's
symbols get ``snapshot_limit`` levels, the long tail the cheaper ``tail_snapshot_limit``) and hands each
answer back to the service in the event loop. Pacing against Binance's weight limit is the REST client's
shared budget: 300 symbols resyncing at once are queued there, never fired together.

A fetch that fails (any error, once the REST client's own retries are spent) is not retried here: it is
counted (``rejected`` for a request Binance refused, e.g. an invalid symbol; ``failed`` otherwise) and
handed to ``failed`` with the least wait before a new fetch can work (a 429 pause, an IP ban), so the market
lets its book ask again after a per-symbol backoff (:meth:`tapewatch.market.Market.snapshot_failed`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Protocol

from realtime.timebase import REAL_TIME, Timebase
from tapewatch.errors import BinanceRequestError, IpBanned, RateLimited, TapewatchError
from tapewatch.events import DepthSnapshot

log = logging.getLogger(__name__)


class RestAnswer(Protocol):
    """What the scheduler needs of a REST answer: the capture stream name and the raw body."""

    @property
    def stream(self) -> str: ...

    @property
    def body(self) -> bytes: ...


Fetch = Callable[[str, int], Awaitable[tuple[DepthSnapshot, RestAnswer]]]
Deliver = Callable[[str, DepthSnapshot, RestAnswer], None]
#: Told of a fetch that failed: (symbol, why, seconds before a new fetch can work: 0 unless paused or banned).
Failed = Callable[[str, str, float], None]


class SnapshotScheduler:
    """Queue of symbols waiting for a snapshot, served by ``workers`` concurrent fetchers."""

    def __init__(
        self,
        fetch: Fetch,
        deliver: Deliver,
        *,
        limit_for: Callable[[str], int],
        failed: Failed | None = None,
        min_interval: float = 1.0,
        workers: int = 8,
        timebase: Timebase = REAL_TIME,
    ) -> None:
        self._fetch = fetch
        self._deliver = deliver
        self._failed = failed
        self._limit_for = limit_for
        self._min_interval = min_interval
        self._workers = workers
        self._tb = timebase
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._pending: set[str] = set()
        self._last_fetch: dict[str, float] = {}
        self._cancelled: set[str] = set()
        self.counters: Counter[str] = Counter()
        self.in_flight = 0

    def request(self, symbol: str, reason: str) -> None:
        """Ask for a snapshot of ``symbol``; a request already waiting absorbs this one."""
        self._cancelled.discard(symbol)
        if symbol in self._pending:
            self.counters["coalesced"] += 1
            return
        self._pending.add(symbol)
        self.counters["requested"] += 1
        log.debug("snapshot requested: %s", reason, extra={"symbol": symbol, "reason": reason})
        self._queue.put_nowait(symbol)

    def cancel(self, symbol: str) -> None:
        """The symbol left the universe: drop a waiting request."""
        if symbol in self._pending:
            self._cancelled.add(symbol)

    @property
    def waiting(self) -> int:
        return len(self._pending)

    async def run(self) -> None:
        """Serve requests until cancelled."""
        async with asyncio.TaskGroup() as group:
            for _ in range(self._workers):
                group.create_task(self._worker())

    async def _worker(self) -> None:
        while True:
            symbol = await self._queue.get()
            if symbol in self._cancelled:
                self._cancelled.discard(symbol)
                self._pending.discard(symbol)
                continue
            wait = self._last_fetch.get(symbol, -1e18) + self._min_interval - self._tb.monotonic()
            if wait > 0:
                await self._tb.sleep(wait)
            self._last_fetch[symbol] = self._tb.monotonic()
            # A request made while this fetch runs must trigger a new fetch: the answer may predate it.
            self._pending.discard(symbol)
            self.in_flight += 1
            try:
                snapshot, answer = await self._fetch(symbol, self._limit_for(symbol))
            except Exception as exc:  # any failure: the symbol's book must be able to ask again
                self._fetch_failed(symbol, exc)
                continue
            finally:
                self.in_flight -= 1
            if symbol in self._cancelled:
                continue
            self.counters["fetched"] += 1
            self._deliver(symbol, snapshot, answer)

    def _fetch_failed(self, symbol: str, exc: Exception) -> None:
        """Count a failed fetch and tell ``failed`` (which logs it, once per backoff step)."""
        wait = 0.0
        if isinstance(exc, BinanceRequestError):
            self.counters["rejected"] += 1
            why = f"refused by Binance: {exc}"
        else:
            self.counters["failed"] += 1
            why = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, IpBanned):  # nothing can be fetched before the ban ends
                wait = max(0.0, (exc.until_ms - self._tb.wall_ms()) / 1000)
            elif isinstance(exc, RateLimited):
                wait = max(0.0, exc.retry_after)
            elif not isinstance(exc, TapewatchError):  # a bug, not a feed failure: its traceback is needed
                log.exception("snapshot fetch raised unexpectedly", extra={"symbol": symbol})
        if self._failed is None:
            log.warning("snapshot failed: %s", why, extra={"symbol": symbol})
            return
        self._failed(symbol, why, wait)
