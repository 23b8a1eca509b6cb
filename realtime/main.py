"""Entry point of ``tapewatch run``: build the service's parts from the settings and run until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from realtime.backup_feed import BackupConfig
from realtime.capture import CaptureStats, CaptureWriter
from realtime.control import ControlConfig
from realtime.incidents import IncidentRecorder
from realtime.service import FeedService, SignalSink
from realtime.signal_desk import open_dispatch, start_engine
from realtime.status_view import status_table, summary
from realtime.ws_pool import StreamPool
from tapewatch.adapters.binance_rest import BinanceRest
from tapewatch.adapters.db import Database
from tapewatch.adapters.dispatch import Dispatch, DispatchStopped, innermost_frame
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import AsyncRedisState, RedisState
from tapewatch.adapters.risk_ledger import RiskLedger
from tapewatch.engine import RemoteCloses
from tapewatch.errors import ConfigError, StorageUnavailable
from tapewatch.risk import RiskParams
from tapewatch.settings import Settings
from tapewatch.sharding import Shard, parse_shard

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


def capture_dir(settings: Settings, shard: Shard) -> Path:
    """Where this instance writes its capture: ``capture_dir``, or ``capture_dir/shard-IofN`` for a shard (two
    processes never append to the same hour file; replay one shard's directory to reproduce that shard)."""
    if shard.whole:
        return settings.capture_dir
    return settings.capture_dir / f"shard-{shard.index}of{shard.count}"


#: A read of another shard's closes runs on the event loop, in the middle of judging a candidate: bounded
#: (connect and reply) and never retried; after a failure Redis is not asked again for CLOSES_RETRY_AFTER_S
#: (those correlations are unknown meanwhile, which never rejects).
CLOSES_READ_TIMEOUT_S = 0.5
CLOSES_RETRY_AFTER_S = 10.0


def closes_state(url: str, keys: Keyspace, timeout_s: float = CLOSES_READ_TIMEOUT_S) -> RedisState:
    """The Redis client the correlation rule reads other shards' closes with: ``timeout_s`` to connect and to
    answer, no retry (the shared client waits 10 s a try, and tries three times)."""
    return RedisState.from_url(url, keys=keys, timeout_s=timeout_s)


def remote_closes_reader(
    state: RedisState,
    *,
    retry_after_s: float = CLOSES_RETRY_AFTER_S,
    clock: Callable[[], float] = time.monotonic,
) -> RemoteCloses:
    """Another shard's 1m closes from Redis for the correlation rule; unknown (None) while Redis is away. After
    a failed read Redis is not asked for ``retry_after_s``: a stalled Redis costs the event loop one read's
    timeout per window, not one per symbol and candidate."""
    down_until = float("-inf")

    def read(symbol: str) -> list[tuple[int, float]] | None:
        nonlocal down_until
        if clock() < down_until:
            return None
        try:
            return state.closes(symbol)
        except StorageUnavailable as exc:
            down_until = clock() + retry_after_s
            log.warning(
                "cannot read the 1m closes of %s from Redis (correlations with other shards' symbols unknown, "
                "not read for %g s): %s",
                symbol,
                retry_after_s,
                exc,
            )
            return None

    return read


#: How often the shard's ledger upkeep runs (kept releases written, an earlier run's reservations settled).
LEDGER_UPKEEP_S = 1.0


async def ledger_upkeep(ledger: RiskLedger, interval: float = LEDGER_UPKEEP_S) -> None:
    """:meth:`RiskLedger.upkeep` once per ``interval``, in a thread (PostgreSQL may be slow or away: the event
    loop never waits for it); a failure is logged (the first, then every 60th) and tried again."""
    failures = 0
    while True:
        try:
            await asyncio.to_thread(ledger.upkeep)
            failures = 0
        except StorageUnavailable as exc:
            failures += 1
            if failures % 60 == 1:
                log.warning("the global risk ledger's upkeep failed (tried again in %g s): %s", interval, exc)
        except Exception:  # a bug must not end the retries of the releases: logged with its traceback
            log.exception("the global risk ledger's upkeep raised (tried again in %g s)", interval)
        await asyncio.sleep(interval)


def _ending(exc: BaseException | None) -> str:
    """How a task ended, in one line: its error (each error of a task group), or that it returned."""
    if exc is None:
        return "it returned"
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_ending(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def watch_dispatch(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    """Stop the service (``stop``) the moment the dispatch task ends other than by cancellation, and say so
    loudly: the engine would run on while its signals are no longer stored or published (see
    :func:`dispatch_failure` for the error the service then exits with)."""

    def ended(done: asyncio.Task[None]) -> None:
        if done.cancelled():
            return
        exc = done.exception()
        log.critical(
            "the signal dispatch stopped while the service runs (%s): signals are no longer stored or "
            "published; stopping the service so that its supervisor restarts it",
            _ending(exc),
            exc_info=exc,
        )
        stop.set()

    task.add_done_callback(ended)


#: Seconds the stop waits for the cancelled dispatch to end before it says what still runs and goes on.
DISPATCH_STOP_GRACE_S = 15.0


async def stop_dispatch(
    task: asyncio.Task[None],
    running: Callable[[], list[asyncio.Task[None]]],
    grace: float = DISPATCH_STOP_GRACE_S,
) -> bool:
    """Cancel the dispatch ``task`` and wait at most ``grace`` s for it to end; True when it did (an error it
    ended with, other than the cancel, is raised). Otherwise a task that swallowed the cancel keeps it
    waiting: each of ``running`` (its tasks not ended) is logged as an ERROR with the frame it waits in and
    cancelled once more (its TaskGroup cancels them only once), and the stop goes on without waiting. Should
    one swallow that cancel too, ``asyncio.run`` still waits for it at exit (it cancels every task left)."""
    task.cancel()
    await asyncio.wait({task}, timeout=grace)
    if task.done():
        with contextlib.suppress(asyncio.CancelledError):
            task.result()
        return True
    for stuck in running() or [task]:
        log.error(
            "the %s task did not stop within %g s of its cancel; it waits at %s (cancelled again, the stop "
            "goes on)",
            stuck.get_name(),
            grace,
            innermost_frame(stuck),
            extra={"task": stuck.get_name(), "grace_s": grace},
        )
        stuck.cancel()
    return False


def dispatch_failure(task: asyncio.Task[None] | None) -> DispatchStopped | None:
    """The error to exit with when the dispatch ``task`` ended by itself (None while it runs or once cancelled)."""
    if task is None or not task.done() or task.cancelled():
        return None
    exc = task.exception()
    failure = DispatchStopped(f"the signal dispatch stopped ({_ending(exc)})")
    failure.__cause__ = exc
    return failure


def close_capture(capture: CaptureWriter, timeout: float | None = None) -> CaptureStats:
    """Close the capture and log what it wrote and what it lost (a warning when frames were dropped or lines
    lost: the capture, and so a replay of this run, is incomplete)."""
    stats = capture.close(timeout)
    incomplete = stats.dropped or stats.lost or stats.rejected or stats.queued
    log.log(
        logging.WARNING if incomplete else logging.INFO,
        "capture closed: %d lines in %d files; %d frames dropped (queue full or closed), %d lines lost to "
        "disk errors (%d errors), %d frames rejected, %d left in the queue",
        stats.lines,
        stats.files,
        stats.dropped,
        stats.lost,
        stats.errors,
        stats.rejected,
        stats.queued,
    )
    return stats


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
    ``started`` is called with the service once it is built (before it runs).

    Should the signal dispatch (PostgreSQL writer, outbox relay) end while the service runs, the service stops
    and DispatchStopped is raised once it has shut down (``tapewatch run`` exits with status 1). A service that
    crashes shuts down the same way (:func:`shut_down`: held signals and incidents written, or said lost), then
    its own error is raised.

    With ``settings.shard`` I/N, N > 1, both URLs are required: the global risk ledger lives in PostgreSQL and
    the shards' 1m closes in Redis (ConfigError otherwise)."""
    stop = stop or asyncio.Event()
    shard = parse_shard(settings.shard)
    if not shard.whole and not (database_url and redis_url):
        raise ConfigError(
            f"--shard {shard.label}: shards share their risk limits through PostgreSQL and Redis; set "
            "TAPEWATCH_DATABASE_URL and TAPEWATCH_REDIS_URL (the same ones for every shard)"
        )
    capture = (
        CaptureWriter(capture_dir(settings, shard), settings.capture_flush_interval)
        if settings.capture_enabled
        else None
    )
    redis = (
        AsyncRedisState.from_url(redis_url, keys=Keyspace(prefix=settings.redis_prefix))
        if redis_url
        else None
    )
    database = Database(database_url, application_name="tapewatch-realtime") if database_url else None
    # scale-out: the ledger judges each candidate against every shard; other shards' closes come from Redis
    ledger: RiskLedger | None = None
    closes: RedisState | None = None
    if not shard.whole and database is not None and redis_url:
        ledger = RiskLedger(database, RiskParams.from_settings(settings), shard=shard.label)
        closes = closes_state(redis_url, Keyspace(prefix=settings.redis_prefix))
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
                shared_gate=ledger,
                remote_closes=remote_closes_reader(closes) if closes is not None else None,
            )
            dispatch_task = None
            # the engine rebuilt from PostgreSQL (with a dispatch) and captured as it starts, tuning and all
            await asyncio.to_thread(start_engine, service.engine, dispatch, capture)
            if dispatch is not None:
                dispatch_task = asyncio.create_task(dispatch.run(), name="dispatch")
                watch_dispatch(dispatch_task, stop)
            upkeep_task = None
            if ledger is not None:
                # before the first candidate: release this shard's signals finished before a restart, delete the
                # reservations of signals it never stored (kept for later when PostgreSQL cannot do it now)
                try:
                    await asyncio.to_thread(ledger.upkeep)
                except StorageUnavailable as exc:
                    log.warning(
                        "cannot settle the global risk ledger at start (tried again each second): %s", exc
                    )
                upkeep_task = asyncio.create_task(ledger_upkeep(ledger), name="ledger-upkeep")
            if started is not None:
                started(service)
            task = asyncio.create_task(service.run(), name="feed-service")
            status_task = (
                asyncio.create_task(_status_loop(service, status_every, print_status))
                if status_every
                else None
            )
            extra_tasks = [t for t in (status_task, upkeep_task) if t is not None]
            waiters = [asyncio.create_task(stop.wait()), task]
            if duration is not None:
                waiters.append(asyncio.create_task(asyncio.sleep(duration)))
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            try:
                await end_tasks([*waiters, *extra_tasks])  # the service's error
            finally:
                # a crashed service too: its held signals and queued incidents are written, or said lost
                failure = await shut_down(service, dispatch, dispatch_task)
            if failure is not None:
                raise failure
            return service
    finally:
        if capture is not None:
            close_capture(capture)
        if redis is not None:
            await redis.aclose()
        if closes is not None:
            closes.close()
        if database is not None:
            database.dispose()


async def end_tasks(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait for every one to end; then raise the first error one ended with (other than
    its cancel): the service's own, when it crashed."""
    for task in tasks:
        task.cancel()
    error: Exception | None = None
    for task in tasks:
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            error = error or exc
    if error is not None:
        raise error


async def shut_down(
    service: FeedService, dispatch: Dispatch | None, dispatch_task: asyncio.Task[None] | None
) -> BaseException | None:
    """The service's last steps, each taken whatever became of the others (and of the service): write the
    queued incidents (5 s), stop the dispatch (at most :data:`DISPATCH_STOP_GRACE_S` s), write and publish
    what it holds (10 s; an ERROR says when some is left). Errors are logged, not raised: the one the process
    must exit with (the dispatch ended by itself, or with an error when stopped) is returned, None otherwise."""
    try:
        await service.close_incidents()
    except Exception:
        log.exception("writing the queued feed incidents at shutdown failed")
    failure: BaseException | None = dispatch_failure(dispatch_task)
    if dispatch is not None and dispatch_task is not None:
        if not dispatch_task.done():
            try:
                await stop_dispatch(dispatch_task, dispatch.running_tasks)
            except Exception as exc:
                log.exception("the signal dispatch ended with an error when stopped")
                failure = failure or exc
        try:
            flushed = await dispatch.aclose(grace=10)
        except Exception:
            log.exception("writing and publishing the held signals at shutdown failed")
            flushed = False
        if not flushed:
            log.error("some signals were not written or published before exit (see above)")
    log.info("realtime service stopped: %s", summary(service))
    return failure


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
