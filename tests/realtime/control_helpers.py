"""Running the realtime service in-process against the simulated exchange, with the service object at hand
while it runs (the control and backup-feed tests steer it through Redis and look inside)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from realtime.backup_feed import BackupConfig
from realtime.control import ControlConfig
from realtime.main import exchange_settings, run_service
from realtime.service import FeedService, SignalSink
from realtime.sim.server import SimExchange
from tapewatch.settings import Settings, load_settings


def sim_settings(sim: SimExchange, var_dir: Path, prefix: str, **extra: Any) -> Settings:
    """Settings of a fast-syncing service against ``sim`` with Redis keys under ``prefix``."""
    base = load_settings(
        var_dir=var_dir,
        redis_prefix=prefix,
        ws_connect_interval=0.05,
        resync_min_interval=0.2,
        **{"universe_size": 4, **extra},
    )
    return exchange_settings(base, "sim", host=sim.host, port=sim.port)


async def wait_for(condition: Callable[[], bool], what: str, within: float = 15.0) -> float:
    """Return (the seconds it took) as soon as ``condition()`` holds; fail with ``what`` after ``within`` seconds."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > within:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


@dataclass
class Running:
    service: FeedService
    task: asyncio.Task[FeedService]

    def alive(self) -> bool:
        return not self.task.done()


@contextlib.asynccontextmanager
async def running_service(
    settings: Settings,
    redis_url: str,
    *,
    sink: SignalSink | None = None,
    control: ControlConfig | None = None,
    backup: BackupConfig | None = None,
) -> AsyncIterator[Running]:
    """``realtime.main.run_service`` running in a task for the block, its service at hand once it has chosen
    its universe; stopped (and any crash raised) at the end of the block."""
    built: list[FeedService] = []
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_service(
            settings,
            redis_url=redis_url,
            stop=stop,
            sink=sink,
            control=control,
            backup=backup,
            started=built.append,
        ),
        name="service-under-test",
    )
    try:
        await wait_for(lambda: bool(built and built[0].universe) or task.done(), "a universe is chosen")
        if task.done():
            await task  # raises what ended it
        yield Running(built[0], task)
        assert not task.done(), "the service stopped on its own"
    finally:
        stop.set()
        await task


def all_synced(service: FeedService) -> bool:
    """Every symbol of the universe has a usable book."""
    return bool(service.universe) and all(service.market.book_usable(s) for s in service.universe)
