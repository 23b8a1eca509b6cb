"""Planned rollover of one connection: open the replacement, overlap, switch at a clean point, no gap.

Binance cuts every connection after 24 hours. Before that, the slot calls :func:`hand_over`: a new
connection with the same streams is opened while the old one keeps delivering; both feed a
:class:`~realtime.ws_rollover.RolloverSwitch`, which delivers each frame exactly once and moves each
stream to the new connection at a frame both have seen. When every stream has switched (or the grace
period is over) the old connection stops delivering and the caller closes it. Streams without a clean
switch point get a ``StreamsStarted(reason="rollover")`` marker, as after a reconnect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from realtime.timebase import Timebase
from realtime.ws_connection import CONNECT_ERRORS, DataSink, MarkerSink, WsConnection
from realtime.ws_delivery import StreamsStarted
from realtime.ws_rollover import RolloverSwitch
from realtime.ws_stats import TransportStats

log = logging.getLogger(__name__)

#: A replacement connection and its read task.
Rolled = tuple[WsConnection, "asyncio.Task[str]"]
Opener = Callable[[Sequence[str], DataSink], Awaitable[WsConnection]]
Retire = Callable[[WsConnection, "asyncio.Task[str]"], None]


async def hand_over(
    old: WsConnection,
    open_replacement: Opener,
    *,
    deliver: DataSink,
    emit: MarkerSink,
    retire: Retire,
    stats: TransportStats,
    timebase: Timebase,
    grace: float,
    tick: float,
) -> Rolled | None:
    """Replace ``old`` by a connection carrying the same streams; return it with its read task.

    Returns None, with ``old`` delivering as before, when the replacement cannot be opened, dies, or
    stays mute while ``old`` speaks. On success ``old`` delivers nothing more; closing it is the
    caller's job.
    """
    streams = sorted(old.owned)
    if not streams:
        return None
    switch = RolloverSwitch(streams)
    done = asyncio.Event()
    counts = [0, 0]  # frames seen from old, from new

    def from_old(conn: WsConnection, stream: str, raw: bytes, recv_ms: int) -> None:
        counts[0] += 1
        for at, data in switch.from_old(stream, (recv_ms, raw)):
            deliver(conn, stream, data, at)
        if switch.complete:
            done.set()

    def from_new(conn: WsConnection, stream: str, raw: bytes, recv_ms: int) -> None:
        counts[1] += 1
        for at, data in switch.from_new(stream, (recv_ms, raw)):
            deliver(conn, stream, data, at)
        if switch.complete:
            done.set()

    # Old frames go through the switch (delivered, and remembered) from before the new connection
    # exists: whatever the new one receives first, the switch has seen the old copy of it.
    old.on_data = from_old
    try:
        new = await open_replacement(streams, from_new)
    except BaseException as exc:
        old.on_data = deliver
        if not isinstance(exc, Exception):
            raise
        stats.connect_failures += 1
        if not isinstance(exc, CONNECT_ERRORS):
            log.exception("%s: unexpected error opening the replacement", old.conn_id)
        log.warning("%s: rollover connect failed (%s); old connection kept", old.conn_id, exc)
        return None
    reader = asyncio.create_task(new.run(), name=f"ws-read {new.conn_id}")
    try:
        deadline = timebase.monotonic() + grace
        while not switch.complete and not reader.done():
            remaining = deadline - timebase.monotonic()
            if remaining <= 0:
                break
            await _first(done.wait(), timebase.sleep(min(remaining, tick)), reader)
    except BaseException:
        old.on_data = deliver
        retire(new, reader)
        raise
    if reader.done() or (counts[1] == 0 and counts[0] > 0):
        log.warning("%s: replacement %s did not deliver; rollover postponed", old.conn_id, new.conn_id)
        old.on_data = deliver
        handed = tuple(sorted(set(streams) - switch.pending()))
        if handed:  # streams already handed to the dead replacement may have lost frames
            emit(StreamsStarted(handed, old.conn_id, "rollover"))
        retire(new, reader)
        return None
    restart = switch.finish()
    old.stop_delivering()
    new.on_data = deliver
    stats.rollover_duplicates_dropped += switch.duplicates_dropped
    if restart:
        stats.rollover_unmatched_streams += len(restart)
        log.warning("%s: %d streams handed over without a match", new.conn_id, len(restart))
        emit(StreamsStarted(tuple(restart), new.conn_id, "rollover"))
        for stream, held in restart.items():
            for at, data in held:
                deliver(new, stream, data, at)
    log.info("%s: rolled over to %s", old.conn_id, new.conn_id, extra={"conn": new.conn_id})
    return new, reader


async def _first(*aws: Awaitable[Any]) -> None:
    """Wait until the first of ``aws`` finishes; cancel the ones started here."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task, original in zip(tasks, aws, strict=True):
            if task is not original:
                task.cancel()
