"""What the websocket transport hands to its consumer, and the queue it hands it through.

Data frames are :class:`Received` ``(recv_ms, stream, raw)``: ``raw`` is the ``data`` payload exactly as
Binance sent it, so the capture writer can store it byte-exact and the parser decode it once.
Stream lifecycle markers (:class:`StreamsStarted`, :class:`StreamsStopped`) travel in the same queue, in
order with the frames: everything after a ``StreamsStarted`` for a depth stream comes from a fresh
subscription and needs a new order-book snapshot.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import NamedTuple

log = logging.getLogger(__name__)


class Received(NamedTuple):
    """One data frame: local receive time (epoch ms), Binance stream name, raw ``data`` payload bytes."""

    recv_ms: int
    stream: str
    raw: bytes


class StreamsStarted(NamedTuple):
    """These streams (re)started on connection ``conn``: frames after this marker may not continue
    the ones before it. ``reason``: ``connect``, ``reconnect``, ``subscribe`` or ``rollover`` (a rollover
    that could not line the two connections up for these streams)."""

    streams: tuple[str, ...]
    conn: str
    reason: str


class StreamsStopped(NamedTuple):
    """These streams stopped on connection ``conn`` (``reason``: ``unsubscribe``, ``subscribe_error``,
    ``stopped`` or why the connection dropped: ``error``, ``stale``, ``server_close``)."""

    streams: tuple[str, ...]
    conn: str
    reason: str


Delivery = Received | StreamsStarted | StreamsStopped


class FrameQueue:
    """The bounded hand-off between the transport (producer) and one consumer.

    The producer never waits: a data frame that finds ``capacity`` frames already queued is dropped and
    counted (``drops``, ``drops_by_stream``) and a warning is logged, rate-limited. Markers are never
    dropped (they are rare and losing one would hide a restart); they do not count against the bound.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"queue capacity must be >= 1; got {capacity}")
        self.capacity = capacity
        # Unbounded underneath: the bound applies to data frames only, checked in put_frame.
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self._frames = 0
        self.drops = 0
        self.drops_by_stream: Counter[str] = Counter()

    def put_frame(self, item: Received) -> bool:
        """Queue a data frame; False (and counted) when the consumer is ``capacity`` frames behind."""
        if self._frames >= self.capacity:
            self.drops += 1
            self.drops_by_stream[item.stream] += 1
            if self.drops <= 10 or self.drops % 10_000 == 0:
                log.warning(
                    "consumer too slow: dropped frame (%d drops so far)",
                    self.drops,
                    extra={"stream": item.stream},
                )
            return False
        self._frames += 1
        self._queue.put_nowait(item)
        return True

    def put_marker(self, item: StreamsStarted | StreamsStopped) -> None:
        """Queue a lifecycle marker; never dropped."""
        self._queue.put_nowait(item)

    async def get(self) -> Delivery:
        """The next delivery, waiting if there is none."""
        item = await self._queue.get()
        if type(item) is Received:
            self._frames -= 1
        return item

    def get_nowait(self) -> Delivery:
        """The next delivery; raises ``asyncio.QueueEmpty`` if there is none."""
        item = self._queue.get_nowait()
        if type(item) is Received:
            self._frames -= 1
        return item

    def frames_queued(self) -> int:
        """Data frames waiting for the consumer."""
        return self._frames

    def qsize(self) -> int:
        """Deliveries (frames and markers) waiting for the consumer."""
        return self._queue.qsize()
