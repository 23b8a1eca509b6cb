"""The Binance websocket transport: keeps a wanted set of streams flowing into one queue.

Give :class:`StreamPool` the stream names you want (``set_streams``), read :attr:`StreamPool.frames`.
Each stream goes to the routed path that carries it (:func:`tapewatch.streams.route`): ``/public`` for
depth, bookTicker and trade, ``/market`` for aggTrade and klines. Each path gets as many connections as
it needs, at most ``max_streams_per_connection`` streams each; a changed set is applied by
SUBSCRIBE/UNSUBSCRIBE on the live connections (no reconnect), new connections are opened only for
streams that do not fit, and a connection left without streams is closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from realtime.pacer import Pacer
from realtime.timebase import REAL_TIME, Timebase
from realtime.ws_config import TransportConfig
from realtime.ws_delivery import FrameQueue
from realtime.ws_slot import StreamSlot
from realtime.ws_stats import TransportStats
from tapewatch.settings import Settings
from tapewatch.streams import Path, UnknownStream, route

log = logging.getLogger(__name__)

PATHS: tuple[Path, ...] = ("public", "market")


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """One connection slot as an operator sees it."""

    name: str  # "<path>-<n>"
    path: str
    conn_id: str | None  # "<path>-<n>#<generation>" while connected
    streams: tuple[str, ...]  # wanted on this connection
    subscribed: tuple[str, ...]  # what the server carries (requests in flight included)
    age: float | None  # seconds since the current connection opened


class StreamPool:
    """Keeps the streams of the last :meth:`set_streams` call subscribed over as few connections as the
    per-connection limit allows, and delivers their frames to :attr:`frames`.

    Use inside a running event loop: ``async with StreamPool(settings) as pool: pool.set_streams(...)``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        config: TransportConfig | None = None,
        queue: FrameQueue | None = None,
        timebase: Timebase = REAL_TIME,
    ) -> None:
        self.config = config or TransportConfig.from_settings(settings)
        self.frames = queue or FrameQueue(self.config.queue_capacity)
        self.stats = TransportStats()
        self._urls: dict[Path, str] = {
            "public": settings.binance_ws_public_url,
            "market": settings.binance_ws_market_url,
        }
        self._tb = timebase
        self._connect_pacer = Pacer(self.config.connect_interval, timebase)
        self._slots: dict[Path, list[StreamSlot]] = {path: [] for path in PATHS}
        self._next_index: dict[Path, int] = dict.fromkeys(PATHS, 0)
        self._stopping: set[asyncio.Task[None]] = set()
        self._closed = False

    async def __aenter__(self) -> StreamPool:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def set_streams(self, names: Iterable[str]) -> None:
        """Want exactly these streams from now on (call from the event loop).

        Names Binance routing does not know are counted (``invalid_streams``), logged and skipped.
        Streams already flowing stay on their connection untouched; the change is applied by paced
        SUBSCRIBE/UNSUBSCRIBE, and new connections (paced) only for streams that fit nowhere.
        """
        if self._closed:
            raise RuntimeError("set_streams on a closed StreamPool")
        wanted: dict[Path, set[str]] = {path: set() for path in PATHS}
        for name in names:
            try:
                wanted[route(name)].add(name)
            except UnknownStream as exc:
                self.stats.invalid_streams += 1
                log.warning("skipping stream %r: %s", name, exc, extra={"stream": name})
        for path in PATHS:
            self._assign(path, wanted[path])

    def _assign(self, path: Path, wanted: set[str]) -> None:
        cap = self.config.max_streams_per_connection
        slots = self._slots[path]
        plans = {slot.name: slot.desired & wanted for slot in slots}
        placed = set().union(*plans.values())
        # Sorted, so one symbol's streams tend to share a connection and runs are reproducible.
        new = sorted(wanted - placed)
        for slot in slots:
            room = cap - len(plans[slot.name])
            if room > 0 and new:
                plans[slot.name].update(new[:room])
                new = new[room:]
        while new:
            slot = self._new_slot(path)
            plans[slot.name] = set(new[:cap])
            new = new[cap:]
        kept: list[StreamSlot] = []
        for slot in self._slots[path]:
            plan = plans[slot.name]
            if plan:
                if plan != slot.desired or slot.failed:
                    slot.set_desired(plan)
                slot.start()
                kept.append(slot)
            else:
                self._stop_slot(slot)
        self._slots[path] = kept

    def _new_slot(self, path: Path) -> StreamSlot:
        slot = StreamSlot(
            path,
            self._next_index[path],
            self._urls[path],
            config=self.config,
            stats=self.stats,
            queue=self.frames,
            connect_pacer=self._connect_pacer,
            timebase=self._tb,
        )
        self._next_index[path] += 1
        self._slots[path].append(slot)
        return slot

    def _stop_slot(self, slot: StreamSlot) -> None:
        task = asyncio.create_task(slot.stop(), name=f"ws-stop {slot.name}")
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def close(self, *, close_timeout: float | None = None) -> None:
        """Close every connection and stop; idempotent. ``close_timeout``: how long each connection waits for
        the peer's closing handshake (a process on its way out: a busy peer answers late, and the reader goes
        on reading its frames until it does); None: the connections' own (``CLOSE_TIMEOUT``)."""
        self._closed = True
        slots = [slot for path in PATHS for slot in self._slots[path]]
        for path in PATHS:
            self._slots[path] = []
        stops = (slot.stop(close_timeout=close_timeout) for slot in slots)
        await asyncio.gather(*stops, *self._stopping, return_exceptions=True)

    # --- what operators and metrics read ---------------------------------------------------------------

    def streams(self) -> set[str]:
        """Every stream currently wanted."""
        return {s for path in PATHS for slot in self._slots[path] for s in slot.desired}

    def connections(self) -> list[ConnectionInfo]:
        """Every connection slot, in path then index order."""
        now = self._tb.monotonic()
        out: list[ConnectionInfo] = []
        for path in PATHS:
            for slot in self._slots[path]:
                conn = slot.conn
                out.append(
                    ConnectionInfo(
                        name=slot.name,
                        path=path,
                        conn_id=conn.conn_id if conn else None,
                        streams=tuple(sorted(slot.desired)),
                        subscribed=tuple(sorted(conn.subscribed)) if conn else (),
                        age=conn.age(now) if conn else None,
                    )
                )
        return out

    def routes_wanted(self) -> set[Path]:
        """The routes (``public``, ``market``) with streams wanted now: the ones whose frames are expected."""
        return {path for path in PATHS if any(slot.desired for slot in self._slots[path])}

    def route_frames(self) -> dict[Path, int]:
        """Data frames received so far on each route's connections (from the per-stream counts)."""
        out: dict[Path, int] = dict.fromkeys(PATHS, 0)
        for stream, count in self.stats.frames.items():
            try:
                out[route(stream)] += count
            except UnknownStream:  # never subscribed (set_streams skips such names)
                continue
        return out

    def stale_streams(self) -> list[str]:
        """Streams silent for ``stale_after`` seconds on connections that are otherwise alive."""
        return sorted(s for path in PATHS for slot in self._slots[path] for s in slot.stale_streams)

    def failed_streams(self) -> list[str]:
        """Streams the server refused ``max_control_retries`` times (retried on the next set_streams)."""
        return sorted(s for path in PATHS for slot in self._slots[path] for s in slot.failed)

    async def list_subscriptions(self) -> dict[str, list[str]]:
        """Ask every open connection which streams the server carries for it (``LIST_SUBSCRIPTIONS``)."""
        live = [slot.conn for path in PATHS for slot in self._slots[path] if slot.conn is not None]
        answers = await asyncio.gather(*(conn.list_subscriptions() for conn in live))
        return {conn.conn_id: sorted(names) for conn, names in zip(live, answers, strict=True)}

    def snapshot(self) -> dict[str, Any]:
        """Counters plus queue, stale and failed streams, JSON-ready: the whole transport state at a glance (a
        debugging view; the metrics hash publishes the counters through ``service_metrics``)."""
        out = self.stats.snapshot()
        out["queue_drops"] = self.frames.drops
        out["queue_depth"] = self.frames.frames_queued()
        out["streams_wanted"] = len(self.streams())
        out["stale_streams"] = self.stale_streams()
        out["failed_streams"] = self.failed_streams()
        return out
