"""One connection's worth of streams on one path, kept connected, subscribed, fresh and rolled over.

A :class:`StreamSlot` owns at most ``max_streams_per_connection`` streams of one path. Its supervisor
task connects (paced across the pool, with backoff after failures), keeps the server's subscriptions
equal to the wanted set by paced SUBSCRIBE/UNSUBSCRIBE, and replaces the connection before Binance's
24-hour cut (see :mod:`realtime.ws_handover`).

The stale watchdog looks at the connection every ``tick``. A connection silent as a whole for
``stale_after`` seconds is reconnected, every time (with backoff). On a connection whose other streams
flow, a silent stream of a continuous kind (depth, bookTicker) gets the connection reconnected, then is
only reported until it delivers again (a quiet market, not a reconnect loop), and each later reconnect it
causes needs twice the silence of the one before (``stale_after × 2**n``, capped; forgiven after an hour
of normal flow); a silent aggTrade, trade or kline stream is only reported (see
:mod:`realtime.ws_watchdog`). Only this slot's connection is reconnected; the pool's other connections are
untouched.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any

from websockets.exceptions import ConnectionClosed

from realtime.backoff import Backoff
from realtime.pacer import Pacer
from realtime.timebase import Timebase
from realtime.ws_config import TransportConfig
from realtime.ws_connection import CONNECT_ERRORS, ConnectionSetup, DataSink, WsConnection
from realtime.ws_delivery import FrameQueue, Received, StreamsStarted, StreamsStopped
from realtime.ws_handover import Rolled, hand_over
from realtime.ws_protocol import Method
from realtime.ws_stats import TransportStats
from realtime.ws_watchdog import StreamWatch

log = logging.getLogger(__name__)


class StreamSlot:
    """Keeps the streams in ``desired`` flowing over one connection to ``base_url``."""

    def __init__(
        self,
        path: str,
        index: int,
        base_url: str,
        *,
        config: TransportConfig,
        stats: TransportStats,
        queue: FrameQueue,
        connect_pacer: Pacer,
        timebase: Timebase,
    ) -> None:
        self.path = path
        self.name = f"{path}-{index}"
        self.base_url = base_url
        self.desired: set[str] = set()
        self.failed: set[str] = set()
        self.watch = StreamWatch(config.stale_after)
        self.conn: WsConnection | None = None
        self._cfg = config
        self._stats = stats
        self._queue = queue
        self._pacer = connect_pacer
        self._tb = timebase
        self._failures: Counter[str] = Counter()
        self._backoff = Backoff(
            config.backoff_base,
            config.backoff_max,
            healthy_after=config.healthy_after,
            random=timebase.random,
        )
        self._generation = 0
        self._rolling = False
        self._wake_supervisor = asyncio.Event()
        self._wake_control = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._setup = ConnectionSetup(
            stats=stats,
            timebase=timebase,
            control_rate=config.control_rate,
            emit=self._emit,
            on_control_failed=self._on_control_failed,
        )

    # --- control from the pool -------------------------------------------------------------------------

    def set_desired(self, streams: Iterable[str]) -> None:
        """Want exactly ``streams`` on this connection; refused streams get a fresh set of retries."""
        self.desired = set(streams)
        if len(self.desired) > self._cfg.max_streams_per_connection:
            raise ValueError(f"{self.name}: {len(self.desired)} streams exceed the per-connection limit")
        self.failed.clear()
        self._failures.clear()
        self.watch.keep_only(self.desired)
        self._wake_supervisor.set()
        self._wake_control.set()

    def start(self) -> None:
        """Start the supervisor task (needs a running event loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name=f"ws-slot {self.name}")

    async def stop(self, *, close_timeout: float | None = None) -> None:
        """Close the connection(s) and stop; the streams still delivered get a ``stopped`` marker.
        ``close_timeout``: the current connection waits at most that long for the peer's closing handshake
        (its reader goes on reading the peer's frames until then) instead of ``CLOSE_TIMEOUT``."""
        if close_timeout is not None and self.conn is not None:
            self.conn.ws.close_timeout = min(close_timeout, self.conn.ws.close_timeout or close_timeout)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        # Closing handshakes in flight; each is bounded by the close timeout.
        await asyncio.gather(*self._background, return_exceptions=True)

    # --- the supervisor ----------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        ended: str | None = None  # why the previous connection ended; None before the first one
        while True:
            streams = sorted(self.desired - self.failed)
            if not streams:
                self._wake_supervisor.clear()
                await self._wake_supervisor.wait()
                continue
            await self._pacer.wait()
            streams = sorted(self.desired - self.failed)
            if not streams:
                continue
            try:
                conn = await self._open(streams, self._deliver)
            except Exception as exc:
                self._stats.connect_failures += 1
                if not isinstance(exc, CONNECT_ERRORS):
                    log.exception("%s: unexpected error while connecting", self.name)
                await self._pause(f"connect failed ({exc or type(exc).__name__})")
                continue
            self._backoff.connected(conn.opened_at)
            self._emit(
                StreamsStarted(tuple(streams), conn.conn_id, "connect" if ended is None else "reconnect")
            )
            try:
                ended = await self._serve(conn)
            except Exception:
                # The supervisor must outlive any bug below it: count it as an error and reconnect.
                log.exception("%s: connection handling failed", conn.conn_id)
                ended = "error"
            self._stats.reconnects[ended] += 1
            await self._pause(f"connection ended ({ended})")

    async def _pause(self, why: str) -> None:
        """Wait out the backoff delay before the next connection attempt."""
        delay = self._backoff.next_delay(self._tb.monotonic())
        log.warning("%s: %s; next attempt in %.2f s", self.name, why, delay)
        await self._tb.sleep(delay)

    async def _open(self, streams: Sequence[str], on_data: DataSink) -> WsConnection:
        self._generation += 1
        conn = await WsConnection.open(
            self.base_url,
            f"{self.name}#{self._generation}",
            self.path,
            streams,
            setup=self._setup,
            on_data=on_data,
        )
        self._stats.connects += 1
        self._stats.connections_open += 1
        log.info("%s: connected with %d streams", conn.conn_id, len(streams), extra={"conn": conn.conn_id})
        return conn

    async def _serve(self, conn: WsConnection) -> str:
        """Run ``conn`` (and its rollover replacements) until one drops or goes stale; return why."""
        cfg, tb = self._cfg, self._tb
        self.conn = conn
        reader = asyncio.create_task(conn.run(), name=f"ws-read {conn.conn_id}")
        control = asyncio.create_task(self._control_loop(), name=f"ws-control {self.name}")
        rollover: asyncio.Task[Rolled | None] | None = None
        rollover_at = conn.opened_at + cfg.rollover_after
        self._wake_control.set()  # the wanted set may have changed while connecting
        ended: str | None = None
        tick: asyncio.Future[Any] | None = None
        try:
            while True:
                tick = asyncio.ensure_future(tb.sleep(cfg.tick))
                waiting: set[asyncio.Future[Any]] = {reader, tick}
                if rollover is not None:
                    waiting.add(rollover)
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                tick.cancel()
                if reader in done:
                    ended = reader.result()
                    return ended
                now = tb.monotonic()
                if rollover is not None and rollover.done():
                    rolled, rollover = _rolled(rollover), None
                    self._rolling = False
                    self._wake_control.set()
                    if rolled is None:
                        rollover_at = now + cfg.backoff_max
                    else:
                        conn.close_reason = "rollover"
                        self._retire(conn, reader)
                        conn, reader = rolled
                        self.conn = conn
                        rollover_at = conn.opened_at + cfg.rollover_after
                        self._stats.reconnects["rollover"] += 1
                        continue
                if conn.owned and conn.silent_for(now) >= cfg.stale_after:
                    log.warning(
                        "%s: no data for %.1f s, reconnecting",
                        conn.conn_id,
                        conn.silent_for(now),
                        extra={"conn": conn.conn_id},
                    )
                    await conn.close("stale")
                    ended = await reader
                    return ended
                if self._check_streams(conn, now, may_reconnect=rollover is None):
                    await conn.close("stale")
                    ended = await reader
                    return ended
                conn.expire_requests(now, cfg.reply_timeout)
                if rollover is None and now >= rollover_at:
                    self._rolling = True
                    rollover = asyncio.create_task(self._roll_over(conn), name=f"ws-rollover {self.name}")
        finally:
            # Settle the helpers first: a cancelled rollover hands delivery back to ``conn``.
            if tick is not None:
                tick.cancel()
            control.cancel()
            if rollover is not None:
                rollover.cancel()
                await asyncio.gather(rollover, return_exceptions=True)
                orphan = _rolled(rollover)
                if orphan is not None:  # finished in the same instant the old connection ended
                    self._retire(*orphan)
            await asyncio.gather(control, return_exceptions=True)
            self._rolling = False
            self.conn = None
            self.watch.connection_ended()
            conn.stop_delivering()
            stopped = tuple(sorted(conn.owned))
            if stopped:
                self._emit(StreamsStopped(stopped, conn.conn_id, ended or "stopped"))
            if reader.done():
                self._stats.connections_open -= 1
            else:
                self._retire(conn, reader)

    def _retire(self, conn: WsConnection, reader: asyncio.Task[str]) -> None:
        """Close ``conn`` in the background (it delivers nothing more) and count it closed."""

        async def close() -> None:
            try:
                conn.stop_delivering()
                await conn.close(conn.close_reason or "stopped")
                await reader
            finally:
                reader.cancel()
                self._stats.connections_open -= 1

        self._spawn(close(), f"ws-close {conn.conn_id}")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- subscriptions -------------------------------------------------------------------------------------

    async def _control_loop(self) -> None:
        try:
            while True:
                await self._wake_control.wait()
                self._wake_control.clear()
                while (conn := self.conn) is not None and self._next_change(conn) is not None:
                    await conn.update(self._next_change)
        except ConnectionClosed:
            return  # the read loop reports the drop

    def _next_change(self, conn: WsConnection) -> tuple[Method, list[str]] | None:
        """The next control message that moves the server towards ``desired``: unsubscribes first, so
        the connection never carries more than its limit."""
        if self._rolling:
            return None
        batch = self._cfg.max_params_per_message
        extra = conn.subscribed - self.desired
        if extra:
            return "UNSUBSCRIBE", sorted(extra)[:batch]
        missing = self.desired - self.failed - conn.subscribed
        if missing:
            return "SUBSCRIBE", sorted(missing)[:batch]
        return None

    def _on_control_failed(self, conn: WsConnection, method: Method, streams: tuple[str, ...]) -> None:
        if method == "SUBSCRIBE":
            for stream in streams:
                if stream not in self.desired:
                    continue
                self._failures[stream] += 1
                if self._failures[stream] > self._cfg.max_control_retries:
                    self.failed.add(stream)
                    self._stats.control_gave_up += 1
                    log.error(
                        "%s: giving up on %s after %d refusals",
                        conn.conn_id,
                        stream,
                        self._failures[stream],
                        extra={"stream": stream, "conn": conn.conn_id},
                    )
        self._wake_control.set()

    # --- watchdog and rollover ---------------------------------------------------------------------------------

    @property
    def stale_streams(self) -> set[str]:
        """Streams silent for ``stale_after`` on the live connection, reported rather than reconnected for."""
        return self.watch.reported

    def _check_streams(self, conn: WsConnection, now: float, *, may_reconnect: bool) -> bool:
        """Judge the silent streams of ``conn`` (otherwise alive); True: reconnect it for one of them."""
        watch = self.watch
        silences = {stream: now - at for stream, at in conn.last_frame_at.items()}
        verdict = watch.check(silences, self._stats.frames, now=now, may_reconnect=may_reconnect)
        for stream in verdict.reconnect_for:
            self._stats.stale_stream_reconnects[stream] += 1
            log.warning(
                "%s: stream %s silent for %.1f s while the connection's other streams flow; "
                "reconnecting this connection (reconnect %d for this stream, next needs %g s of silence)",
                conn.conn_id,
                stream,
                silences[stream],
                self._stats.stale_stream_reconnects[stream],
                watch.limit(stream),
                extra={"stream": stream, "conn": conn.conn_id},
            )
        self._stats.stale_stream_reports += len(verdict.reported)
        self._stats.stale_stream_quiet += len(verdict.quiet)
        for stream in verdict.reported:
            if stream not in verdict.quiet:
                why = ""
            elif stream in watch.suspects:
                why = " again after its reconnect: a quiet market, reported only until it delivers"
            else:
                why = f": a sparse market, reported only until silent for {watch.limit(stream):g} s"
            log.warning(
                "%s: stream %s silent for %.1f s%s",
                conn.conn_id,
                stream,
                silences[stream],
                why,
                extra={"stream": stream, "conn": conn.conn_id},
            )
        for stream in verdict.resumed:
            log.info(
                "%s: stream %s resumed", conn.conn_id, stream, extra={"stream": stream, "conn": conn.conn_id}
            )
        return bool(verdict.reconnect_for)

    async def _roll_over(self, old: WsConnection) -> Rolled | None:
        await self._pacer.wait()
        return await hand_over(
            old,
            self._open,
            deliver=self._deliver,
            emit=self._emit,
            retire=self._retire,
            stats=self._stats,
            timebase=self._tb,
            grace=self._cfg.rollover_grace,
            tick=self._cfg.tick,
        )

    # --- delivery ----------------------------------------------------------------------------------------------

    def _deliver(self, conn: WsConnection, stream: str, raw: bytes, recv_ms: int) -> None:
        self._queue.put_frame(Received(recv_ms, stream, raw))

    def _emit(self, marker: StreamsStarted | StreamsStopped) -> None:
        self._queue.put_marker(marker)


def _rolled(task: asyncio.Task[Rolled | None]) -> Rolled | None:
    """The replacement a finished rollover task produced; None if it failed, was cancelled or crashed."""
    if task.cancelled():
        return None
    exc = task.exception()
    if exc is not None:
        log.error("rollover failed", exc_info=exc)
        return None
    return task.result()
