"""A TCP forwarder for outage tests against the real servers: a server that is down is a closed port
(:func:`free_port`), and its return a :func:`forwarder` opening on that port to the test server (Redis or
PostgreSQL, over TCP or its unix socket), optionally holding each answer (a slow server)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

Upstream = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def free_port() -> int:
    """A local TCP port nothing listens on (a server that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    try:
        while data := await reader.read(65536):
            if delay:
                await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def forwarder(port: int, upstream: Upstream, *, delay: float = 0.0) -> AsyncIterator[None]:
    """127.0.0.1:``port`` forwards to ``upstream`` for the block, each answer held ``delay`` seconds (a slow
    server); the connections made through it end with it."""
    tasks: set[asyncio.Task[None]] = set()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await upstream()
        await asyncio.gather(_pipe(reader, up_writer, 0.0), _pipe(up_reader, writer, delay))

    def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(forward(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def redis_upstream(redis_url: str) -> Upstream:
    """Connections to the Redis of ``redis_url`` (``redis://`` or ``unix://``)."""
    parts = urlsplit(redis_url)
    if parts.scheme == "unix":
        return lambda: asyncio.open_unix_connection(parts.path)
    return lambda: asyncio.open_connection(parts.hostname, parts.port or 6379)


def redis_url_via(port: int, redis_url: str) -> str:
    """``redis_url``'s database (``/0`` or ``?db=0``), reached through 127.0.0.1:``port``."""
    parts = urlsplit(redis_url)
    if parts.scheme == "unix":
        db = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p).get("db", "0")
    else:
        db = parts.path.strip("/") or "0"
    return f"redis://127.0.0.1:{port}/{db}"


def pg_upstream(database_url: str) -> Upstream:
    """Connections to the PostgreSQL of ``database_url`` (TCP, or its unix socket)."""
    url = make_url(database_url)
    if url.host:
        return lambda: asyncio.open_connection(url.host, url.port or 5432)
    socket_dir, socket_port = url.query.get("host"), url.query.get("port", url.port or 5432)
    return lambda: asyncio.open_unix_connection(f"{socket_dir}/.s.PGSQL.{socket_port}")


def pg_url_via(port: int, database_url: str) -> str:
    """``database_url``'s database, reached through 127.0.0.1:``port``."""
    url = make_url(database_url)
    url = url.set(
        host="127.0.0.1", port=port, query={k: v for k, v in url.query.items() if k not in ("host", "port")}
    )
    return url.render_as_string(hide_password=False)
