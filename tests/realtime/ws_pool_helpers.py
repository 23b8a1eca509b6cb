"""Helpers for driving a StreamPool against the local Binance-like server in tests."""

from __future__ import annotations

from typing import Any

from realtime.timebase import Timebase
from realtime.ws_config import TransportConfig
from realtime.ws_delivery import Delivery, FrameQueue, StreamsStarted, StreamsStopped
from realtime.ws_pool import StreamPool
from tapewatch.settings import Settings
from tests.realtime.binance_ws_server import BinanceWsServer, eventually


def make_pool(server: BinanceWsServer, timebase: Timebase | None = None, **config: Any) -> StreamPool:
    """A pool on the server's two paths; settings defaults, connections unpaced unless ``config`` says."""
    settings = Settings(
        binance_ws_public_url=server.url("public"), binance_ws_market_url=server.url("market")
    )
    config.setdefault("connect_interval", 0.0)
    cfg = TransportConfig.from_settings(settings, **config)
    return StreamPool(settings, config=cfg, timebase=timebase or Timebase())


async def up(server: BinanceWsServer, pool: StreamPool, n: int, within: float = 5.0) -> None:
    """Wait until both ends see ``n`` open connections."""
    await eventually(
        lambda: len(server.open_conns()) == n and sum(bool(c.conn_id) for c in pool.connections()) == n,
        within=within,
        what=f"{n} connections up",
    )


def drain(queue: FrameQueue) -> list[Delivery]:
    """Everything queued now, without waiting."""
    out: list[Delivery] = []
    while queue.qsize():
        out.append(queue.get_nowait())
    return out


def started(items: list[Delivery], reason: str | None = None) -> set[str]:
    """Streams named by StreamsStarted markers (of one reason)."""
    return {
        s for i in items if isinstance(i, StreamsStarted) and reason in (None, i.reason) for s in i.streams
    }


def stopped(items: list[Delivery], reason: str | None = None) -> set[str]:
    """Streams named by StreamsStopped markers (of one reason)."""
    return {
        s for i in items if isinstance(i, StreamsStopped) and reason in (None, i.reason) for s in i.streams
    }
