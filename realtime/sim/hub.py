"""Websocket subscriptions of the simulated exchange: paths, routing, control messages, fan-out.

Paths are Binance's routed ones: ``/public/ws/<stream>[/<stream>...]`` (raw frames: the bare payload),
``/public/stream?streams=a/b/c`` (combined frames ``{"stream":..,"data":..}``) and the same under
``/market``. A stream is delivered only on the path :func:`tapewatch.streams.route` gives it; on the
wrong path it is accepted, listed, and silently never delivered, as Binance does. Control messages
``SUBSCRIBE``, ``UNSUBSCRIBE``, ``LIST_SUBSCRIPTIONS``, ``SET_PROPERTY``/``GET_PROPERTY`` (``combined``)
get Binance's replies; more than :data:`MAX_STREAMS` streams on a connection, or a SUBSCRIBE naming a malformed
stream (``{"code": 2, "msg": "Invalid request: invalid stream"}``, nothing subscribed), is an error reply.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection, broadcast

from tapewatch.streams import UnknownStream, parse_stream, route

log = logging.getLogger(__name__)

MAX_STREAMS = 1024
MAX_MESSAGES_PER_SECOND = 10
Route = Literal["public", "market"]
_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")


@dataclass(frozen=True, slots=True)
class WsPath:
    """A parsed websocket URL: routed path, frame style and the streams named in it."""

    route: Route
    combined: bool
    streams: tuple[str, ...]


def parse_ws_path(target: str) -> WsPath | None:
    """``/public/ws/a/b``, ``/market/stream?streams=a/b`` -> :class:`WsPath`; None for any other path."""
    url = urlsplit(target)
    parts = url.path.split("/")
    if len(parts) < 3 or parts[0] != "" or parts[1] not in ("public", "market"):
        return None
    where: Route = "public" if parts[1] == "public" else "market"
    if parts[2] == "ws":
        return WsPath(where, False, tuple(p for p in parts[3:] if p))
    if parts[2] == "stream" and len(parts) == 3:
        names = parse_qs(url.query).get("streams", [""])[-1]
        return WsPath(where, True, tuple(s for s in names.split("/") if s))
    return None


@dataclass(eq=False, slots=True)
class Client:
    """One websocket connection and its subscriptions (in subscription order, as LIST returns them)."""

    ws: ServerConnection
    route: Route
    combined: bool
    opened: float
    streams: dict[str, None] = field(default_factory=dict)
    recent: deque[float] = field(default_factory=deque)

    def too_fast(self, now: float) -> bool:
        """Record one incoming message; True when more than 10 arrived within the last second."""
        recent = self.recent
        recent.append(now)
        while recent and recent[0] <= now - 1.0:
            recent.popleft()
        return len(recent) > MAX_MESSAGES_PER_SECOND


def _routable(stream: str, where: Route) -> bool:
    try:
        return route(stream) == where
    except (UnknownStream, KeyError):
        return False


def _parses(stream: str) -> bool:
    """Whether ``stream`` is a well-formed single-symbol stream name (Binance refuses the others)."""
    try:
        parse_stream(stream)
    except UnknownStream:
        return False
    return True


class Hub:
    """Who listens to which stream, and delivery of each payload to them."""

    def __init__(self) -> None:
        self._raw: dict[str, set[ServerConnection]] = {}
        self._combined: dict[str, set[ServerConnection]] = {}
        self.clients: dict[ServerConnection, Client] = {}
        self.invalid_subscribes = 0  # SUBSCRIBE requests refused for a malformed stream name

    def wants(self, stream: str) -> bool:
        return stream in self._raw or stream in self._combined

    def add(self, client: Client) -> None:
        self.clients[client.ws] = client

    def remove(self, client: Client) -> None:
        self.unsubscribe(client, list(client.streams))
        self.clients.pop(client.ws, None)

    def subscribe(self, client: Client, streams: list[str]) -> str | None:
        """Add ``streams``; an error message (nothing added) when the connection would exceed the limit."""
        new = [s for s in dict.fromkeys(streams) if s not in client.streams]
        if len(client.streams) + len(new) > MAX_STREAMS:
            return f"Invalid request: too many streams; a connection can listen to at most {MAX_STREAMS}"
        table = self._combined if client.combined else self._raw
        for s in new:
            client.streams[s] = None
            if _routable(s, client.route):
                table.setdefault(s, set()).add(client.ws)
        return None

    def unsubscribe(self, client: Client, streams: list[str]) -> None:
        table = self._combined if client.combined else self._raw
        for s in streams:
            if s in client.streams:
                del client.streams[s]
                conns = table.get(s)
                if conns is not None:
                    conns.discard(client.ws)
                    if not conns:
                        del table[s]

    def set_combined(self, client: Client, combined: bool) -> None:
        if combined != client.combined:
            streams = list(client.streams)
            self.unsubscribe(client, streams)
            client.combined = combined
            self.subscribe(client, streams)

    def deliver(self, stream: str, payload: str) -> None:
        """Send ``payload`` to every subscriber: bare on ``/ws`` connections, wrapped on ``/stream`` ones."""
        raw = self._raw.get(stream)
        if raw:
            broadcast(raw, payload.encode(), text=True)
        combined = self._combined.get(stream)
        if combined:
            broadcast(combined, f'{{"stream":"{stream}","data":{payload}}}'.encode(), text=True)

    def send_to(self, client: Client, stream: str, payload: str) -> None:
        """One frame to one connection, framed for it (used for injected frames)."""
        text = f'{{"stream":"{stream}","data":{payload}}}' if client.combined else payload
        broadcast([client.ws], text.encode(), text=True)

    def subscribers(self, stream: str) -> list[Client]:
        conns = self._raw.get(stream, set()) | self._combined.get(stream, set())
        return [self.clients[c] for c in conns if c in self.clients]

    # --- control messages ------------------------------------------------------------------------------
    def control(self, client: Client, text: str | bytes) -> str:
        """The reply to one incoming control message (Binance's result or error object)."""
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return _error(3, f"Invalid JSON: {exc}", None)
        if not isinstance(msg, dict):
            return _error(2, "Invalid request: expected an object", None)
        rid = msg.get("id")
        if rid is not None and (not isinstance(rid, int) or isinstance(rid, bool) or rid < 0):
            return _error(2, "Invalid request: request ID must be an unsigned integer", None)
        method = msg.get("method")
        params = msg.get("params", [])
        if method not in _METHODS:
            expected = ", ".join(f"`{m}`" for m in _METHODS)
            return _error(2, f"Invalid request: unknown variant `{method}`, expected one of {expected}", rid)
        if not isinstance(params, list):
            return _error(2, "Invalid request: params must be a list", rid)
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not all(isinstance(p, str) for p in params):
                return _error(2, "Invalid request: stream names must be strings", rid)
            if method == "SUBSCRIBE":
                bad = [p for p in params if not _parses(p)]
                if bad:
                    self.invalid_subscribes += 1
                    log.warning(
                        "refused SUBSCRIBE of a malformed stream name",
                        extra={
                            "stream": bad[0][:100],
                            "malformed": len(bad),
                            "count": self.invalid_subscribes,
                        },
                    )
                    return _error(2, "Invalid request: invalid stream", rid)
                error = self.subscribe(client, params)
                if error is not None:
                    return _error(2, error, rid)
            else:
                self.unsubscribe(client, params)
            return _result(None, rid)
        if method == "LIST_SUBSCRIPTIONS":
            return _result(list(client.streams), rid)
        if not params or params[0] != "combined":
            return _error(0, "Unknown property", rid)
        if method == "GET_PROPERTY":
            return _result(client.combined, rid)
        if len(params) != 2 or not isinstance(params[1], bool):
            return _error(1, "Invalid value type: expected Boolean", rid)
        self.set_combined(client, params[1])
        return _result(None, rid)


def _result(result: Any, rid: Any) -> str:
    return orjson.dumps({"result": result, "id": rid}).decode()


def _error(code: int, msg: str, rid: Any) -> str:
    return orjson.dumps({"error": {"code": code, "msg": msg}, "id": rid}).decode()
