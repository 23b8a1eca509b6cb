"""One websocket connection of the transport: a combined-stream socket to one routed Binance path.

The connection keeps the protocol bookkeeping (which streams the server carries for us, which of them
we deliver, the control requests awaiting a reply, when each stream last spoke); policy (what to
subscribe, when to reconnect or roll over) belongs to :mod:`realtime.ws_slot`.

Keepalive: Binance pings every 3 minutes and drops a connection that has not answered within 10; the
websockets protocol layer answers every ping with a pong by itself, as long as frames are read, which
the read loop here never stops doing (it hands frames off without waiting). Our own pings every
``PING_INTERVAL`` s detect a dead TCP path; Binance counts them against its 10 messages/s limit, which
one ping in 20 s does not approach.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, WebSocketException

from realtime.pacer import Pacer
from realtime.timebase import Timebase
from realtime.ws_delivery import StreamsStarted, StreamsStopped
from realtime.ws_protocol import (
    Incoming,
    Method,
    control_message,
    decode_list_result,
    describe_error,
    has_error,
    incoming_decoder,
)
from realtime.ws_stats import TransportStats
from tapewatch.streams import combined_url

log = logging.getLogger(__name__)

OPEN_TIMEOUT = 10.0
PING_INTERVAL = 20.0
PING_TIMEOUT = 20.0
CLOSE_TIMEOUT = 5.0
MAX_SIZE = 4 * 2**20
# Frames websockets buffers before it stops reading the socket; the read loop drains it immediately.
MAX_QUEUE = 256

# Control messages are spaced 5 % wider than 1/rate, so network jitter cannot squeeze rate+1 of them
# into one second at the server.
CONTROL_SPACING_MARGIN = 1.05

#: What opening a connection raises when the server is unreachable, refuses, or times out.
CONNECT_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError, WebSocketException)

#: Receives every data frame of a delivered stream: (connection, stream, raw payload, recv epoch ms).
DataSink = Callable[["WsConnection", str, bytes, int], None]
#: Told about a control request that failed (error reply or no reply): (connection, method, streams).
FailureSink = Callable[["WsConnection", Method, tuple[str, ...]], None]
MarkerSink = Callable[[StreamsStarted | StreamsStopped], None]


@dataclass
class _Request:
    method: Method
    streams: tuple[str, ...]
    sent_at: float
    reply: asyncio.Future[Incoming] | None = field(default=None)


@dataclass(frozen=True, slots=True)
class ConnectionSetup:
    """What the connections of one slot share: the transport counters, the clock, the control-message rate
    (per second), and the sinks of stream markers and of control requests that failed."""

    stats: TransportStats
    timebase: Timebase
    control_rate: float
    emit: MarkerSink
    on_control_failed: FailureSink


def _drop(conn: WsConnection, stream: str, raw: bytes, recv_ms: int) -> None:
    """A sink for frames nobody should see (an old connection after a rollover switched)."""


class WsConnection:
    """An open combined-stream connection to one path (``public`` or ``market``).

    ``subscribed``: streams the server carries for us (including requests still awaiting a reply).
    ``owned``: streams whose frames this connection delivers to ``on_data``; a stream leaves it the
    moment its UNSUBSCRIBE is sent, so late frames are not delivered twice when it moves elsewhere.
    """

    def __init__(
        self,
        ws: ClientConnection,
        conn_id: str,
        path: str,
        streams: Sequence[str],
        *,
        setup: ConnectionSetup,
        on_data: DataSink,
    ) -> None:
        self.ws = ws
        self.conn_id = conn_id
        self.path = path
        self.subscribed: set[str] = set(streams)
        self.owned: set[str] = set(streams)
        # streams unsubscribed here: their frames still in flight are late, not unknown (issue 7)
        self.released: set[str] = set()
        self.on_data = on_data
        self._stats = setup.stats
        timebase = self._tb = setup.timebase
        self._emit = setup.emit
        self._on_control_failed = setup.on_control_failed
        self._pacer = Pacer(CONTROL_SPACING_MARGIN / setup.control_rate, timebase)
        self._pending: dict[int, _Request] = {}
        self._next_id = 1
        now = timebase.monotonic()
        self.opened_at = now
        self.last_data_at = now
        self.last_frame_at: dict[str, float] = dict.fromkeys(streams, now)
        self.frames_received = 0
        self.close_reason: str | None = None

    @classmethod
    async def open(
        cls,
        base_url: str,
        conn_id: str,
        path: str,
        streams: Sequence[str],
        *,
        setup: ConnectionSetup,
        on_data: DataSink,
    ) -> WsConnection:
        """Connect to ``<base_url>/stream?streams=...``; raises one of :data:`CONNECT_ERRORS` on failure."""
        ws = await connect(
            combined_url(base_url, streams),
            open_timeout=OPEN_TIMEOUT,
            ping_interval=PING_INTERVAL,
            ping_timeout=PING_TIMEOUT,
            close_timeout=CLOSE_TIMEOUT,
            max_size=MAX_SIZE,
            max_queue=MAX_QUEUE,
        )
        return cls(ws, conn_id, path, streams, setup=setup, on_data=on_data)

    # --- reading --------------------------------------------------------------------------------------

    async def run(self) -> str:
        """Read frames until the connection ends; return why: our own ``close_reason`` if we closed it,
        else ``server_close`` (clean close by the server) or ``error``."""
        recv = self.ws.recv
        try:
            while True:
                self._on_frame(await recv(decode=False))
        except ConnectionClosedOK:
            return self.close_reason or "server_close"
        except ConnectionClosed as exc:
            if self.close_reason is None:
                log.warning("connection %s lost: %s", self.conn_id, exc, extra={"conn": self.conn_id})
            return self.close_reason or "error"
        except Exception:
            # A bug past the socket must not leave a half-dead connection: drop it and reconnect.
            log.exception("read loop of %s failed", self.conn_id, extra={"conn": self.conn_id})
            self.close_reason = self.close_reason or "error"
            await self.ws.close(1011, "internal error")
            return self.close_reason

    def _on_frame(self, message: bytes) -> None:
        recv_ms = self._tb.wall_ms()
        try:
            frame = incoming_decoder.decode(message)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._malformed(exc)
            return
        stream = frame.stream
        if stream is not None:
            self.frames_received += 1
            self._stats.frames[stream] += 1
            if stream in self.owned:
                now = self._tb.monotonic()
                self.last_data_at = now
                self.last_frame_at[stream] = now
                self.on_data(self, stream, bytes(frame.data), recv_ms)
            else:
                self._stats.unowned_frames += 1
                if stream in self.released:
                    self._stats.late_unsubscribed += 1
        elif frame.id is not None:
            self._on_reply(frame)
        elif has_error(frame):
            self._stats.control_errors += 1
            log.warning("error from server on %s: %s", self.conn_id, describe_error(frame))
        else:
            self._malformed(f"neither data nor reply: {message[:200]!r}")

    def _malformed(self, detail: object) -> None:
        self._stats.malformed += 1
        if self._stats.malformed <= 10 or self._stats.malformed % 1000 == 0:
            log.warning("malformed frame on %s: %s", self.conn_id, detail, extra={"conn": self.conn_id})

    def _on_reply(self, frame: Incoming) -> None:
        assert frame.id is not None
        request = self._pending.pop(frame.id, None)
        if request is None:
            self._stats.unexpected_replies += 1
            log.warning("reply to unknown request id %s on %s", frame.id, self.conn_id)
            return
        if request.reply is not None:
            if not request.reply.done():
                request.reply.set_result(frame)
            return
        if has_error(frame):
            self._stats.control_errors += 1
            log.warning(
                "%s of %d streams refused on %s: %s",
                request.method,
                len(request.streams),
                self.conn_id,
                describe_error(frame),
                extra={"conn": self.conn_id, "stream": request.streams[0] if request.streams else ""},
            )
            self._failed(request)

    def _failed(self, request: _Request) -> None:
        """Undo the bookkeeping of a refused (or unanswered) request so the owner can retry it."""
        if request.method == "SUBSCRIBE":
            lost = tuple(s for s in request.streams if s in self.owned)
            self.subscribed.difference_update(request.streams)
            self.owned.difference_update(request.streams)
            for s in request.streams:
                self.last_frame_at.pop(s, None)
            if lost:
                self._emit(StreamsStopped(lost, self.conn_id, "subscribe_error"))
        elif request.method == "UNSUBSCRIBE":
            # The server may still send them: mark them subscribed so the owner unsubscribes again.
            self.subscribed.update(request.streams)
        self._on_control_failed(self, request.method, request.streams)

    def expire_requests(self, now: float, timeout: float) -> int:
        """Treat requests unanswered for ``timeout`` s as failed (SUBSCRIBE/UNSUBSCRIBE are retried by the
        owner, a LIST_SUBSCRIPTIONS caller gets TimeoutError); return how many."""
        late = [rid for rid, r in self._pending.items() if now - r.sent_at >= timeout]
        for rid in late:
            request = self._pending.pop(rid)
            self._stats.control_timeouts += 1
            log.warning("%s on %s got no reply in %.1f s", request.method, self.conn_id, timeout)
            if request.reply is not None:
                if not request.reply.done():
                    request.reply.set_exception(
                        TimeoutError(f"{request.method} unanswered on {self.conn_id}")
                    )
            else:
                self._failed(request)
        return len(late)

    # --- control messages -------------------------------------------------------------------------------

    async def _send(
        self, method: Method, streams: tuple[str, ...], reply: asyncio.Future[Incoming] | None
    ) -> None:
        request_id = self._next_id
        self._next_id += 1
        self._pending[request_id] = _Request(method, streams, self._tb.monotonic(), reply)
        self._stats.control_sent += 1
        await self.ws.send(control_message(method, streams, request_id))

    async def update(self, pick: Callable[[WsConnection], tuple[Method, Sequence[str]] | None]) -> bool:
        """Wait for this connection's next control-message slot, then send what ``pick`` asks for *now*
        (it is called after the wait, so it sees the latest wishes); False when it asks for nothing."""
        await self._pacer.wait()
        change = pick(self)
        if change is None:
            return False
        method, streams = change
        if method == "SUBSCRIBE":
            return await self._subscribe_now(tuple(s for s in streams if s not in self.subscribed))
        if method == "UNSUBSCRIBE":
            return await self._unsubscribe_now(tuple(s for s in streams if s in self.subscribed))
        raise ValueError(f"update() sends SUBSCRIBE or UNSUBSCRIBE, not {method}")

    async def subscribe(self, streams: Iterable[str]) -> bool:
        """SUBSCRIBE ``streams`` (paced); False when all are already subscribed."""
        batch = tuple(streams)
        return await self.update(lambda _: ("SUBSCRIBE", batch))

    async def unsubscribe(self, streams: Iterable[str]) -> bool:
        """UNSUBSCRIBE ``streams`` (paced); False when none is subscribed."""
        batch = tuple(streams)
        return await self.update(lambda _: ("UNSUBSCRIBE", batch))

    async def _subscribe_now(self, batch: tuple[str, ...]) -> bool:
        if not batch:
            return False
        now = self._tb.monotonic()
        self.subscribed.update(batch)
        self.owned.update(batch)
        self.released.difference_update(batch)
        for s in batch:
            self.last_frame_at[s] = now
        # The marker goes out before the request so it precedes every frame of these streams.
        self._emit(StreamsStarted(batch, self.conn_id, "subscribe"))
        await self._send("SUBSCRIBE", batch, None)
        return True

    async def _unsubscribe_now(self, batch: tuple[str, ...]) -> bool:
        if not batch:
            return False
        self.subscribed.difference_update(batch)
        stopped = tuple(s for s in batch if s in self.owned)
        self.owned.difference_update(batch)
        self.released.update(batch)
        for s in batch:
            self.last_frame_at.pop(s, None)
        if stopped:
            self._emit(StreamsStopped(stopped, self.conn_id, "unsubscribe"))
        await self._send("UNSUBSCRIBE", batch, None)
        return True

    async def list_subscriptions(self) -> list[str]:
        """The streams the server says this connection carries (``LIST_SUBSCRIPTIONS``, paced).

        Raises TimeoutError when the watchdog's :meth:`expire_requests` finds it unanswered."""
        await self._pacer.wait()
        reply: asyncio.Future[Incoming] = asyncio.get_running_loop().create_future()
        await self._send("LIST_SUBSCRIPTIONS", (), reply)
        frame = await reply
        if has_error(frame):
            raise RuntimeError(f"LIST_SUBSCRIPTIONS refused on {self.conn_id}: {describe_error(frame)}")
        names = decode_list_result(frame)
        if names is None:
            raise RuntimeError(f"LIST_SUBSCRIPTIONS on {self.conn_id} answered {bytes(frame.result)!r}")
        return names

    # --- health and shutdown ---------------------------------------------------------------------------

    def age(self, now: float) -> float:
        """Seconds since the connection opened."""
        return now - self.opened_at

    def silent_for(self, now: float) -> float:
        """Seconds since any delivered stream of this connection last sent data (or since it opened)."""
        return now - self.last_data_at

    def stop_delivering(self) -> None:
        """Deliver nothing more (frames are still read, so pings keep being answered)."""
        self.on_data = _drop

    async def close(self, reason: str) -> None:
        """Close with ``reason`` recorded (``run`` returns it); waits at most ``CLOSE_TIMEOUT`` s."""
        if self.close_reason is None:
            self.close_reason = reason
        await self.ws.close()
