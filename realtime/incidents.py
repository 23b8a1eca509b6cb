"""The incident recorder: feed incidents reach PostgreSQL without ever blocking the event loop.

The service calls :meth:`IncidentRecorder.record`, :meth:`~IncidentRecorder.open` and
:meth:`~IncidentRecorder.resolve` from the event loop; they only append to a bounded in-memory queue.
:meth:`~IncidentRecorder.run` drains it on its own task, in batches, each written in a worker thread
(``asyncio.to_thread``) in one transaction. When PostgreSQL is away the queue keeps the changes (the
oldest new incidents are dropped and counted beyond ``capacity``; resolutions are kept, there is at most one
per open incident) and writes them, in order, when it returns.

Open incidents are tracked by key (kind, symbol, stream): opening one that is already open only counts a
repeat, and the count is noted on the row when it resolves.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from tapewatch.adapters.db import Database
from tapewatch.adapters.db_errors import as_outage, is_outage
from tapewatch.adapters.incidents import (
    Change,
    CloseLeftovers,
    NewIncident,
    PartlyWritten,
    Resolve,
    write_changes,
)

log = logging.getLogger(__name__)

Key = tuple[str, str | None, str | None]  # (kind, symbol, stream)


@dataclass(slots=True)
class RecorderStats:
    """Counters of one recorder (monotonic, except ``queued`` and ``open``)."""

    recorded: int = 0  # changes queued since start
    written: int = 0  # changes written to PostgreSQL
    dropped: int = 0  # new incidents dropped because the queue was full
    refused: int = 0  # changes PostgreSQL refused (logged and skipped)
    repeats: int = 0  # openings of an incident already open (noted on the row when it resolves)
    write_errors: int = 0  # failed batch writes (PostgreSQL unavailable)


class IncidentRecorder:
    """Queues incident changes for ``db`` and writes them in batches on its own task; never blocks the caller.

    ``capacity`` bounds the queue, ``batch_size`` the changes per transaction. ``clock`` (epoch seconds)
    stamps ``recorded_at``/``resolved_at``; ``sleep`` waits between retries (``retry_min`` doubling up to
    ``retry_max`` seconds) while the database is away. ``close_leftovers`` first closes the incidents a
    previous run left open (there is one realtime service: nobody else will resolve them)."""

    def __init__(
        self,
        db: Database,
        *,
        capacity: int = 10_000,
        batch_size: int = 500,
        retry_min: float = 1.0,
        retry_max: float = 30.0,
        close_leftovers: bool = True,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if capacity < 1 or batch_size < 1:
            raise ValueError(f"capacity and batch_size must be >= 1; got {capacity}, {batch_size}")
        self.capacity = capacity
        self.stats = RecorderStats()
        self._writer: Callable[[list[Change]], int] = functools.partial(write_changes, db)
        self._batch_size = batch_size
        self._retry_min = retry_min
        self._retry_max = retry_max
        self._clock = clock
        self._sleep = sleep
        self._queue: deque[Change] = deque()
        self._open: dict[Key, int] = {}  # open incident -> repeats while open
        self._wake = asyncio.Event()
        self._writing: tuple[asyncio.Future[int], list[Change]] | None = None
        self._outage_since: float | None = None
        self._drops_in_outage = 0
        if close_leftovers:
            self._queue.append(CloseLeftovers(self._now()))

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # --- what the service calls (event loop; never blocks) ----------------------------------------------
    def record(
        self,
        kind: str,
        *,
        symbol: str | None = None,
        stream: str | None = None,
        detail: str = "",
        event_time: int | None = None,
    ) -> None:
        """Record a point event (e.g. a minute of malformed frames): a row that is resolved when written."""
        now = self._now()
        self._put(NewIncident(kind, now, symbol, stream, detail, event_time, resolved_at=now))

    def open(
        self,
        kind: str,
        *,
        symbol: str | None = None,
        stream: str | None = None,
        detail: str = "",
        event_time: int | None = None,
    ) -> bool:
        """Open an incident of (kind, symbol, stream) unless one is open already; True when it opened.

        ValueError for a kind or symbol the table refuses (a programming error, raised before queueing)."""
        key = (kind, symbol, stream)
        if key in self._open:
            self._open[key] += 1
            self.stats.repeats += 1
            return False
        self._put(NewIncident(kind, self._now(), symbol, stream, detail, event_time))
        self._open[key] = 0
        return True

    def resolve(
        self, kind: str, *, symbol: str | None = None, stream: str | None = None, note: str = ""
    ) -> bool:
        """Close the open incident of (kind, symbol, stream), noting ``note``; False when none is open."""
        repeats = self._open.pop((kind, symbol, stream), None)
        if repeats is None:
            return False
        if repeats:
            note = f"{note}; {repeats} more while open" if note else f"{repeats} more while open"
        self._put(Resolve(kind, self._now(), symbol, stream, note))
        return True

    def is_open(self, kind: str, *, symbol: str | None = None, stream: str | None = None) -> bool:
        """True while an incident of (kind, symbol, stream) is open."""
        return (kind, symbol, stream) in self._open

    def open_keys(self, kind: str) -> list[tuple[str | None, str | None]]:
        """(symbol, stream) of every open incident of ``kind``."""
        return [(symbol, stream) for k, symbol, stream in self._open if k == kind]

    @property
    def queued(self) -> int:
        """Changes waiting to be written (the batch being written included)."""
        return len(self._queue) + (len(self._writing[1]) if self._writing else 0)

    def metrics(self) -> dict[str, int]:
        """Counters for the service's metrics snapshot in Redis."""
        s = self.stats
        return {
            "incidents_open": len(self._open),
            "incidents_queued": self.queued,
            "incidents_written": s.written,
            "incidents_dropped": s.dropped,
            "incidents_refused": s.refused,
            "incident_write_errors": s.write_errors,
        }

    def _put(self, change: Change) -> None:
        self._queue.append(change)
        self.stats.recorded += 1
        if len(self._queue) > self.capacity:
            self._drop_oldest()
        self._wake.set()

    def _drop_oldest(self) -> bool:
        """Drop the oldest new incident; False when the queue holds none (only resolutions)."""
        # Resolutions stay: without them an incident would look open forever, and there are few of them.
        for i, change in enumerate(self._queue):
            if isinstance(change, NewIncident):
                del self._queue[i]
                break
        else:
            return False
        self.stats.dropped += 1
        self._drops_in_outage += 1
        if self.stats.dropped == 1 or self.stats.dropped % 1000 == 0:
            log.warning(
                "incident queue full (%d): dropping the oldest new incidents (%d dropped so far)",
                self.capacity,
                self.stats.dropped,
            )
        return True

    # --- the writer task -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Write queued changes forever, in batches; wait and retry while PostgreSQL is unavailable."""
        delay = self._retry_min
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            if await self._write_batch():
                delay = self._retry_min
            else:
                await self._sleep(delay)
                delay = min(delay * 2, self._retry_max)

    async def _write_batch(self) -> bool:
        """Write the next batch; False (batch put back at the front) when PostgreSQL is unavailable."""
        batch = [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]
        future = asyncio.ensure_future(asyncio.to_thread(self._writer, batch))
        self._writing = (future, batch)
        # Shielded: when this task is cancelled, the write in the thread goes on and close() settles it.
        with contextlib.suppress(Exception):
            await asyncio.shield(future)
        self._writing = None
        return self._settle(batch, future)

    def _settle(self, batch: list[Change], future: asyncio.Future[int]) -> bool:
        """Account for a finished write of ``batch``; False when it must be retried (put back in front)."""
        exc = future.exception()
        if isinstance(exc, PartlyWritten):  # the first ones are settled: only the rest goes back
            self.stats.written += exc.done - exc.refused
            self.stats.refused += exc.refused
            batch = batch[exc.done :]
        if exc is not None and is_outage(exc):
            # an outage: unreachable, read-only, a statement or lock wait cut by the session limits
            self._queue.extendleft(reversed(batch))
            while len(self._queue) > self.capacity and self._drop_oldest():
                pass
            self.stats.write_errors += 1
            self._outage(as_outage(exc))
            return False
        if exc is not None:  # a refused row or a bug, not an outage: retrying would fail the same way
            self.stats.refused += len(batch)
            log.error("writing %d incident changes failed; skipped", len(batch), exc_info=exc)
            return True
        refused = future.result()
        self.stats.written += len(batch) - refused
        self.stats.refused += refused
        if self._outage_since is not None:
            log.warning(
                "PostgreSQL is back: queued feed incidents are being written again after %.0f s "
                "(%d dropped meanwhile)",
                self._clock() - self._outage_since,
                self._drops_in_outage,
            )
            self._outage_since = None
        return True

    def _outage(self, exc: BaseException) -> None:
        if self._outage_since is None:
            self._outage_since = self._clock()
            self._drops_in_outage = 0
            log.warning(
                "cannot write feed incidents, keeping them queued (%d queued, at most %d kept): %s",
                len(self._queue),
                self.capacity,
                exc,
            )

    async def close(self, within: float = 5.0) -> int:
        """Write what is queued (at shutdown), trying for up to ``within`` seconds; return what is left.

        Call after the :meth:`run` task was cancelled; a batch it had in flight is settled first."""
        deadline = self._clock() + within
        if self._writing is not None:
            future, batch = self._writing
            self._writing = None
            with contextlib.suppress(Exception):  # a timeout, or the write's own error (settled below)
                await asyncio.wait_for(asyncio.shield(future), max(0.0, within))
            if future.done() and not future.cancelled():
                self._settle(batch, future)
            else:
                log.warning("an incident write was still running at shutdown; its outcome is unknown")
        while self._queue and self._clock() < deadline:
            if not await self._write_batch():
                break
        if self._queue:
            log.warning(
                "%d feed incidents not written at shutdown (PostgreSQL unavailable or too slow)",
                len(self._queue),
            )
        return len(self._queue)
