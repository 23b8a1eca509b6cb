"""Entry point of ``tapewatch run``: build the service's parts from the settings and run until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from typing import Literal

from realtime.backup_feed import BackupConfig
from realtime.capture import CaptureWriter
from realtime.control import ControlConfig
from realtime.incidents import IncidentRecorder
from realtime.service import FeedService, SignalSink
from realtime.signal_desk import open_dispatch, restore_engine
from realtime.status_view import status_table, summary
from realtime.ws_pool import StreamPool
from tapewatch.adapters.binance_rest import BinanceRest
from tapewatch.adapters.db import Database
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import AsyncRedisState
from tapewatch.settings import Settings

log = logging.getLogger(__name__)

Exchange = Literal["binance", "sim"]


def exchange_settings(
    settings: Settings, exchange: Exchange, host: str | None = None, port: int | None = None
) -> Settings:
    """The settings with the Binance URLs pointed at the simulated exchange when ``exchange`` is ``sim``."""
    if exchange == "binance":
        return settings
    host = host or settings.sim_host
    port = port or settings.sim_port
    return settings.model_copy(
        update={
            "binance_rest_url": f"http://{host}:{port}",
            "binance_ws_public_url": f"ws://{host}:{port}/public",
            "binance_ws_market_url": f"ws://{host}:{port}/market",
        }
    )


async def run_service(
    settings: Settings,
    *,
    redis_url: str | None,
    database_url: str | None = None,
    duration: float | None = None,
    status_every: float | None = None,
    print_status: Callable[[str], None] = print,
    stop: asyncio.Event | None = None,
    sink: SignalSink | None = None,
    control: ControlConfig | None = None,
    backup: BackupConfig | None = None,
    started: Callable[[FeedService], None] | None = None,
) -> FeedService:
    """Run the realtime service until ``stop`` is set, ``duration`` seconds pass, or it is cancelled.

    With ``database_url`` (migrated already), feed incidents are recorded in PostgreSQL. With ``redis_url`` the
    service obeys the control keys (``control`` tunes the loop); ``backup`` tunes the REST backup feed.
    ``started`` is called with the service once it is built (before it runs)."""
    stop = stop or asyncio.Event()
    capture = (
        CaptureWriter(settings.capture_dir, settings.capture_flush_interval)
        if settings.capture_enabled
        else None
    )
    redis = (
        AsyncRedisState.from_url(redis_url, keys=Keyspace(prefix=settings.redis_prefix))
        if redis_url
        else None
    )
    database = Database(database_url, application_name="tapewatch-realtime") if database_url else None
    try:
        async with BinanceRest.from_settings(settings) as rest, StreamPool(settings) as pool:
            incidents = IncidentRecorder(database) if database is not None else None
            dispatch = None
            if sink is None and database is not None and redis is not None:
                # signals go to PostgreSQL, the Redis stream and the notifiers (exactly once)
                dispatch = open_dispatch(settings, database, redis)
                sink = dispatch
            service = FeedService(
                settings,
                rest=rest,
                pool=pool,
                capture=capture,
                redis=redis,
                incidents=incidents,
                sink=sink,
                control=control,
                backup=backup,
            )
            dispatch_task = None
            if dispatch is not None:
                await asyncio.to_thread(restore_engine, service.engine, dispatch)
                dispatch_task = asyncio.create_task(dispatch.run(), name="dispatch")
            if started is not None:
                started(service)
            task = asyncio.create_task(service.run(), name="feed-service")
            status_task = (
                asyncio.create_task(_status_loop(service, status_every, print_status))
                if status_every
                else None
            )
            waiters = [asyncio.create_task(stop.wait()), task]
            if duration is not None:
                waiters.append(asyncio.create_task(asyncio.sleep(duration)))
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for t in [*waiters, *([status_task] if status_task else [])]:
                t.cancel()
            for t in [*waiters, *([status_task] if status_task else [])]:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            await service.close_incidents()
            if dispatch is not None and dispatch_task is not None:
                dispatch_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await dispatch_task
                if not await dispatch.aclose(grace=10):
                    log.error("some signals were not written or published before exit (see above)")
            log.info("realtime service stopped: %s", summary(service))
            return service
    finally:
        if capture is not None:
            capture.close()
        if redis is not None:
            await redis.aclose()
        if database is not None:
            database.dispose()


async def _status_loop(service: FeedService, every: float, out: Callable[[str], None]) -> None:
    while True:
        await asyncio.sleep(every)
        out(status_table(service))


def main(
    settings: Settings,
    *,
    redis_url: str | None,
    duration: float | None,
    status_every: float | None,
    database_url: str | None = None,
) -> int:
    """Run in the foreground; SIGINT/SIGTERM stop it cleanly."""

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_service(
            settings,
            redis_url=redis_url,
            database_url=database_url,
            duration=duration,
            status_every=status_every,
            print_status=lambda text: print(text, flush=True, file=sys.stdout),
            stop=stop,
        )

    asyncio.run(_main())
    return 0
