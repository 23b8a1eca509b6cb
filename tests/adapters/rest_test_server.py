"""A real HTTP server on 127.0.0.1 that answers like Binance REST as a test tells it to, and a fake clock.

The server runs in a thread (``http.server``); each route answers with scripted :class:`Reply` s (status,
body, headers, an optional real delay). It records every request it receives with the time of the test's
clock and, unless a reply sets it, sends ``X-MBX-USED-WEIGHT-1M`` = the weight of the requests it received
in the last 60 s of that clock (its own rolling count, as Binance's server would).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from tests.local_http import LocalHttpServer, QuietHandler

USED_WEIGHT = "X-MBX-USED-WEIGHT-1M"


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # real seconds before answering (to provoke client timeouts)


@dataclass(frozen=True)
class Seen:
    path_and_query: str
    time: float
    weight: int


@dataclass
class _Route:
    replies: list[Reply] | Callable[[str], Reply]
    weight: int
    served: int = 0


class FakeClock:
    """Monotonic seconds that only move when someone sleeps.

    ``sleep`` first lets the tasks that are ready run, then waits (briefly, in real time) until
    ``idle()`` is true, so time never jumps while requests are on the wire; then it advances the clock.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self.idle: Callable[[], bool] | None = None

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        for _ in range(5):
            await asyncio.sleep(0)
        if self.idle is not None:
            while not self.idle():  # noqa: ASYNC110 - polls another thread's progress, no event to wait on
                await asyncio.sleep(0.001)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


class RestTestServer(LocalHttpServer):
    """Scripted Binance-like REST server; ``url`` is its base URL."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, window: float = 60.0) -> None:
        self.clock = clock
        self.window = window
        self.report_weight = True
        self.seen: list[Seen] = []
        self._routes: dict[str, _Route] = {}
        self._lock = threading.Lock()
        super().__init__(_make_handler(self), name="rest-test-server")

    def route(
        self, path: str, replies: Reply | list[Reply] | Callable[[str], Reply], weight: int = 1
    ) -> None:
        """Answer GET ``path`` with ``replies`` in order (the last repeats), or with ``replies(path_and_query)``."""
        if isinstance(replies, Reply):
            replies = [replies]
        with self._lock:
            self._routes[path] = _Route(replies, weight)

    def paths(self) -> list[str]:
        with self._lock:
            return [s.path_and_query for s in self.seen]

    def _answer(self, path_and_query: str) -> tuple[Reply, int | None]:
        path = path_and_query.split("?", 1)[0]
        with self._lock:
            now = self.clock()
            route = self._routes.get(path)
            if route is None:
                return Reply(404, b"<html>Not Found</html>"), None
            self.seen.append(Seen(path_and_query, now, route.weight))
            if callable(route.replies):
                reply = route.replies(path_and_query)
            else:
                reply = route.replies[min(route.served, len(route.replies) - 1)]
            route.served += 1
            used = sum(s.weight for s in self.seen if s.time > now - self.window)
        return reply, used if self.report_weight else None


def _make_handler(server: RestTestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def do_GET(self) -> None:
            reply, used = server._answer(self.path)
            headers = dict(reply.headers)
            if used is not None and USED_WEIGHT not in headers:
                headers[USED_WEIGHT] = str(used)
            server.reply(self, reply.status, reply.body, headers, reply.delay)

    return Handler


@contextmanager
def closed_port() -> Iterator[int]:
    """A 127.0.0.1 port nothing listens on (connections are refused)."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    yield port
