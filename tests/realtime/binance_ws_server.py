"""A real websockets server on 127.0.0.1 that behaves like Binance's USD-M market-stream endpoints.

What it mimics (what the transport under test must cope with):
- routed paths: it serves ``/<path>/stream?streams=a/b/c`` only for the paths it is given (404 otherwise)
  and records any stream requested on a path that does not carry it (``misrouted``);
- combined envelopes ``{"stream": name, "data": payload}``, sent as text frames;
- the control protocol: SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS with ``{"result": ..., "id": N}``
  replies, ``{"error": {"code": 2, "msg": ...}, "id": N}`` for bad requests;
- the limits: a connection that sends more than 10 messages in a second is closed (1008), at most 1024
  streams per connection.
Test hooks: refuse handshakes, refuse or swallow SUBSCRIBEs of given streams, silence a connection,
close or drop one, publish frames, run a sequence-numbered feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

MAX_MESSAGES_PER_SECOND = 10
MAX_STREAMS = 1024
_PUBLIC_KINDS = ("@depth", "@bookTicker", "@trade")


def path_of(stream: str) -> str:
    """Where Binance serves ``stream`` (written independently of tapewatch.streams on purpose)."""
    rest = stream[stream.index("@") :]
    if rest.startswith(_PUBLIC_KINDS) and not rest.startswith("@aggTrade"):
        return "public"
    return "market"


@dataclass
class ServerConn:
    """One client connection as the server saw it."""

    number: int
    path: str
    ws: ServerConnection
    opened_at: float
    streams: set[str] = field(default_factory=set)
    url_streams: tuple[str, ...] = ()
    controls: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    incoming: deque[float] = field(default_factory=deque)
    closed_at: float | None = None
    silenced: bool = False
    rate_violation: bool = False
    sent: int = 0


class BinanceWsServer:
    """Start with ``async with BinanceWsServer(paths=("public", "market")) as server:``."""

    def __init__(self, paths: Iterable[str] = ("public", "market")) -> None:
        self.paths = set(paths)
        self.conns: list[ServerConn] = []
        self.misrouted: list[tuple[str, str]] = []
        self.handshakes: list[tuple[float, str, int]] = []  # (time, path, HTTP status)
        self.refuse_connections = 0
        self.refuse_subscribe: dict[str, int] = {}  # stream -> SUBSCRIBE requests to refuse
        self.swallow_subscribe: dict[str, int] = {}  # stream -> SUBSCRIBE requests left unanswered
        self.silence_new = False  # connections opened while set get no data
        self.newest_first = False  # publish to the most recent connection first
        self._server: Server | None = None
        self._feeds: list[asyncio.Task[None]] = []
        self.port = 0

    async def __aenter__(self) -> BinanceWsServer:
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self._check_request)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_feeds()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}/{path}"

    # --- handshake and control protocol ---------------------------------------------------------------

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        segments = parts.path.strip("/").split("/")
        now = time.monotonic()
        if len(segments) != 2 or segments[0] not in self.paths or segments[1] != "stream":
            self.handshakes.append((now, parts.path, 404))
            return connection.respond(HTTPStatus.NOT_FOUND, "unknown path\n")
        if self.refuse_connections > 0:
            self.refuse_connections -= 1
            self.handshakes.append((now, segments[0], 503))
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "try later\n")
        self.handshakes.append((now, segments[0], 101))
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        parts = urlsplit(ws.request.path)
        path = parts.path.strip("/").split("/")[0]
        names = [s for s in "/".join(parse_qs(parts.query).get("streams", [""])).split("/") if s]
        conn = ServerConn(len(self.conns), path, ws, time.monotonic(), url_streams=tuple(names))
        conn.silenced = self.silence_new
        self._add(conn, names)
        self.conns.append(conn)
        try:
            async for message in ws:
                now = time.monotonic()
                conn.incoming.append(now)
                while conn.incoming and now - conn.incoming[0] > 1.0:
                    conn.incoming.popleft()
                if len(conn.incoming) > MAX_MESSAGES_PER_SECOND:
                    conn.rate_violation = True
                    await ws.close(1008, "Too many requests")
                    break
                await self._control(conn, now, message)
        except ConnectionClosed:
            pass
        finally:
            conn.closed_at = time.monotonic()

    def _add(self, conn: ServerConn, names: Iterable[str]) -> None:
        for name in names:
            if path_of(name) != conn.path:
                self.misrouted.append((conn.path, name))
            conn.streams.add(name)

    async def _control(self, conn: ServerConn, now: float, message: str | bytes) -> None:
        try:
            request = json.loads(message)
            method, params, request_id = request["method"], request.get("params", []), request["id"]
        except (ValueError, KeyError, TypeError):
            await conn.ws.send(json.dumps({"error": {"code": 3, "msg": "Invalid JSON"}, "id": None}))
            return
        conn.controls.append((now, request))
        if method == "SUBSCRIBE":
            for name in params:
                if self.refuse_subscribe.get(name, 0) > 0:
                    self.refuse_subscribe[name] -= 1
                    await self._error(conn, request_id, f"Invalid request: refused {name}")
                    return
            if len(conn.streams | set(params)) > MAX_STREAMS:
                await self._error(conn, request_id, "Invalid request: too many streams")
                return
            self._add(conn, params)
            for name in params:
                if self.swallow_subscribe.get(name, 0) > 0:
                    self.swallow_subscribe[name] -= 1
                    return
            await conn.ws.send(json.dumps({"result": None, "id": request_id}))
        elif method == "UNSUBSCRIBE":
            conn.streams.difference_update(params)
            await conn.ws.send(json.dumps({"result": None, "id": request_id}))
        elif method == "LIST_SUBSCRIPTIONS":
            await conn.ws.send(json.dumps({"result": sorted(conn.streams), "id": request_id}))
        else:
            await self._error(conn, request_id, f"Invalid request: unknown variant {method}")

    async def _error(self, conn: ServerConn, request_id: object, msg: str) -> None:
        await conn.ws.send(json.dumps({"error": {"code": 2, "msg": msg}, "id": request_id}))

    # --- what tests look at and do ---------------------------------------------------------------------

    def open_conns(self, path: str | None = None) -> list[ServerConn]:
        return [c for c in self.conns if c.closed_at is None and (path is None or c.path == path)]

    def subscribers(self, stream: str) -> list[ServerConn]:
        return [c for c in self.conns if c.closed_at is None and stream in c.streams]

    async def publish(self, stream: str, payload: bytes) -> int:
        """Send ``payload`` as ``stream``'s data to every open, non-silenced subscriber; return how many."""
        frame = b'{"stream":"' + stream.encode() + b'","data":' + payload + b"}"
        text = frame.decode()
        sent = 0
        targets = self.subscribers(stream)
        for conn in reversed(targets) if self.newest_first else targets:
            if conn.silenced:
                continue
            with contextlib.suppress(ConnectionClosed):
                await conn.ws.send(text)
                conn.sent += 1
                sent += 1
        return sent

    async def stop_feeds(self) -> None:
        for task in self._feeds:
            task.cancel()
        await asyncio.gather(*self._feeds, return_exceptions=True)
        self._feeds.clear()

    def start_feed(self, streams: Iterable[str], interval: float) -> dict[str, list[tuple[float, int]]]:
        """Publish ``{"seq": n}`` on each stream every ``interval`` s; returns (send time, seq) per stream."""
        log: dict[str, list[tuple[float, int]]] = {s: [] for s in streams}

        async def feed() -> None:
            seq = 0
            while True:
                seq += 1
                for stream, sent in log.items():
                    if await self.publish(stream, b'{"seq":%d}' % seq):
                        sent.append((time.monotonic(), seq))
                await asyncio.sleep(interval)

        self._feeds.append(asyncio.create_task(feed()))
        return log


async def eventually(predicate: Callable[[], bool], within: float = 5.0, what: str = "condition") -> None:
    """Wait until ``predicate()`` holds; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.01)


def run(coro_fn: Callable[[], Awaitable[None]], timeout: float = 20.0) -> None:
    """Run an async test body on a fresh event loop with an overall timeout."""

    async def main() -> None:
        async with asyncio.timeout(timeout):
            await coro_fn()

    asyncio.run(main())
