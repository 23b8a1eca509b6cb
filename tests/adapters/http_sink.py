"""A real HTTP server on 127.0.0.1 that records POST requests and answers as a test scripts it.

Used as the webhook receiver and as a stand-in for the Telegram Bot API. Each request is recorded (path,
headers, body) before it is answered with the next scripted :class:`Answer` (the last one repeats).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.local_http import LocalHttpServer, QuietHandler


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b'{"ok": true}'
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # real seconds before answering (to provoke client timeouts)

    @staticmethod
    def json(status: int, payload: Any, **headers: str) -> Answer:
        return Answer(status, json.dumps(payload).encode(), headers)


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpSink(LocalHttpServer):
    """``url`` is its base URL; ``requests`` what it received, in order."""

    def __init__(self, answers: list[Answer] | Callable[[Request], Answer] | None = None) -> None:
        self.requests: list[Request] = []
        self._answers: list[Answer] | Callable[[Request], Answer] = answers or [Answer()]
        self._served = 0
        self._lock = threading.Lock()
        super().__init__(_handler(self), name="http-sink")

    def answer_with(self, answers: list[Answer] | Callable[[Request], Answer]) -> None:
        with self._lock:
            self._answers, self._served = answers, 0

    def _next(self, request: Request) -> Answer:
        with self._lock:
            self.requests.append(request)
            if callable(self._answers):
                return self._answers(request)
            answer = self._answers[min(self._served, len(self._answers) - 1)]
            self._served += 1
            return answer


def _handler(sink: HttpSink) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            answer = sink._next(Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            sink.reply(self, answer.status, answer.body, answer.headers, answer.delay)

    return Handler
