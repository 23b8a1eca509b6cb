"""The one threaded HTTP server on 127.0.0.1 that the tests' scripted servers (REST, webhook) build on."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # hundreds of concurrent connects must not overflow the listen backlog


class LocalHttpServer:
    """A real HTTP server on a free 127.0.0.1 port, served from a thread while used as a context manager.

    Subclasses build their handler class (which may refer to the subclass instance) and pass it to
    ``__init__``; ``reply`` answers a request, honouring a scripted real delay."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], name: str = "local-http") -> None:
        self._stop = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.01,), name=name, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def reply(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        headers: Mapping[str, str],
        delay: float = 0.0,
    ) -> None:
        """Send a JSON answer after ``delay`` real seconds (none if the server stops meanwhile)."""
        if delay and self._stop.wait(delay):
            return
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, no access log on stderr."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass
