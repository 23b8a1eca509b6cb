"""A real HTTP server on 127.0.0.1 that records POST requests and answers as a test scripts it.

Used as the webhook receiver and as a stand-in for the Telegram Bot API. Each request is recorded (path,
headers, body) before it is answered with the next scripted :class:`Answer` (the last one repeats).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


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


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class HttpSink:
    """``url`` is its base URL; ``requests`` what it received, in order."""

    def __init__(self, answers: list[Answer] | Callable[[Request], Answer] | None = None) -> None:
        self.requests: list[Request] = []
        self._answers: list[Answer] | Callable[[Request], Answer] = answers or [Answer()]
        self._served = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.01,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

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

    def __enter__(self) -> HttpSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _handler(sink: HttpSink) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            answer = sink._next(Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            if answer.delay and sink._stop.wait(answer.delay):
                return
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.body)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and left

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
