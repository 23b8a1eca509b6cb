"""What the realtime service publishes to Redis once a second: its heartbeat (as :func:`component_name`, with
its process's and host's load: :class:`LoadSampler`), each symbol's feed stats (and their removal once the
symbol left the universe: :func:`publish_feeds`), the metrics dict
(:func:`service_metrics`, plus the websocket silence of each route and of the worst: :class:`RouteSilence`),
a shard's 1m closes and the newest signal (:func:`signal_record`, what ``tapewatch status`` shows). Redis
being away is counted as ``redis_errors`` and logged, never fatal."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING

import psutil

from realtime.capture import CaptureWriter
from realtime.ws_pool import PATHS
from tapewatch.adapters.dispatch import Dispatch
from tapewatch.adapters.risk_ledger import RiskLedger
from tapewatch.adapters.tuning_store import applied_record
from tapewatch.book import BookState
from tapewatch.errors import StorageUnavailable
from tapewatch.health import (
    HOST_CPU,
    HOST_MEMORY,
    PROCESS_CPU,
    PROCESS_RSS,
    WS_SILENT,
    CpuAverage,
    cpu_busy_total,
    ws_silent_key,
)
from tapewatch.parse import MALFORMED_REASONS
from tapewatch.sharding import Shard
from tapewatch.signal import Signal
from tapewatch.streams import Path
from tapewatch.tuning_use import HEARTBEAT_FIELD

if TYPE_CHECKING:
    from realtime.service import FeedService
    from tapewatch.adapters.redis_state import AsyncRedisState

log = logging.getLogger(__name__)

COMPONENT = "realtime"


def component_name(shard: Shard) -> str:
    """The heartbeat/metrics component of a realtime instance: ``realtime``, or ``realtime-0of2`` for a shard."""
    return COMPONENT if shard.whole else f"{COMPONENT}-{shard.index}of{shard.count}"


def signal_record(signal: Signal) -> dict[str, str]:
    """The newest signal as ``tapewatch status`` shows it."""
    return {
        "signal_id": signal.signal_id,
        "signal_type": signal.signal_type,
        "symbol": signal.symbol,
        "direction": signal.direction,
        "priority": signal.priority,
        "timestamp": signal.timestamp,
    }


def capture_metrics(capture: CaptureWriter | None) -> dict[str, int]:
    """``capture_*``: what the capture wrote and what it lost (frames dropped on a full queue, lines lost to
    disk errors): a replay of a run whose capture lost frames is not the run. Empty without a capture."""
    if capture is None:
        return {}
    stats = capture.stats()
    return {
        "capture_lines": stats.lines,
        "capture_dropped": stats.dropped,
        "capture_lost": stats.lost,
        "capture_errors": stats.errors,
        "capture_rejected": stats.rejected,
        "capture_queued": stats.queued,
    }


def service_metrics(service: FeedService) -> dict[str, int | float]:
    """The service's metrics snapshot: feed, websocket transport (``ws_control_*``, ``stale_stream*``), REST
    client (``rest_*``), books, candles, engine, latency, backup feed, control, incidents, the capture and the
    signal dispatch (``pending_*``, ``relay_*``, ``notify_*``: see ``Dispatch.metrics``)."""
    market, engine, pool = service.market, service.engine, service.pool.stats
    universe = service.universe
    return {
        "messages": market.messages,
        "malformed": sum(service.decoder.rejected[r] for r in MALFORMED_REASONS)
        + pool.malformed
        + pool.unowned_frames
        - pool.late_unsubscribed,
        # frames of symbols that just left the universe: expected, so apart from malformed
        "late_unsubscribed": pool.late_unsubscribed + service.counters["late_unsubscribed"],
        "symbols": len(universe),
        # out of the universe, still followed (trades only) until their open signals end
        "retained_symbols": len(service.retained),
        "synced": sum(1 for s in universe if market.book_usable(s)),
        "snapshots_waiting": service.snapshots.waiting,
        "snapshots_fetched": service.snapshots.counters["fetched"],
        "queue_drops": service.pool.frames.drops,
        "reconnects": sum(pool.reconnects.values()),
        # the transport's live changes: SUBSCRIBE/UNSUBSCRIBE the server refused (retried) or left unanswered,
        # and streams given up after max_control_retries refusals
        "ws_control_errors": pool.control_errors,
        "ws_control_timeouts": pool.control_timeouts,
        "ws_control_gave_up": pool.control_gave_up,
        # silent streams on live connections: reports, of those quiet markets, and reconnects of a connection
        # for one silent depth/bookTicker/markPrice stream
        "stale_stream_reports": pool.stale_stream_reports,
        "stale_stream_quiet": pool.stale_stream_quiet,
        "stale_stream_reconnects": pool.stale_stream_reconnects.total(),
        "redis_errors": service.counters["redis_errors"],
        # REST candle requests: history at a symbol's start (failed attempts, retries after a backoff, the
        # loader's unexpected errors); kline refills queued and failed
        "history_failed": service.counters["history_failed"],
        "history_retries": service.counters["history_retries"],
        "history_errors": service.counters["history_errors"],
        "kline_fill_requests": service.counters["kline_fill_requests"],
        "kline_fill_errors": service.counters["kline_fill_errors"],
        "instruments_refreshed": service.counters["instruments_refreshed"],
        "instruments_refresh_failed": service.counters["instruments_refresh_failed"],
        # REST answers 429 (rate limited), 403 (Binance's firewall) and 418 (IP banned), all endpoints
        "rest_rate_limited": service.rest.stats.rate_limited,
        "rest_waf_blocked": service.rest.stats.waf_blocked,
        "rest_banned": service.rest.stats.banned,
        # REST answers that did not decode (rejected), and bad rows dropped from kept list answers
        "rest_malformed": service.rest.stats.malformed.total(),
        "rest_dropped_rows": service.rest.stats.dropped_rows.total(),
        # klines for a bar older than the newest one, ignored
        "candle_stale_updates": sum(
            series.stale_updates for st in market.symbols.values() for series in st.candles.values()
        ),
        "evaluations": engine.counters["evaluations"],
        **{k: v for k, v in engine.counters.items() if k.startswith("not_evaluated_")},
        # setups the engine could not judge (features failed: logged per symbol) or whose rules disagreed
        "bad_features": engine.counters["bad_features"],
        "rules_rejected": engine.counters["rules_rejected"],
        "signals": engine.counters["signals"],
        # signals issued with stop and targets off the tick grid (no tick size known for the symbol)
        "plans_unrounded": engine.counters["plans_unrounded"],
        **{k: v for k, v in engine.counters.items() if k.startswith("shared_gate_")},
        **(engine.shared_gate.metrics() if isinstance(engine.shared_gate, RiskLedger) else {}),
        **({"closes_published": service.closes.published} if service.closes is not None else {}),
        "open_signals": len(engine.open),
        **service.rates.rates,
        **service.latency.metrics(),
        **service.quiet.metrics(),
        **service.loop_lag.metrics(),
        **service.processing_lag.metrics(),
        **(service.live.metrics() if service.live is not None else {}),
        **service.backup.metrics(),
        **service.fills.metrics(),
        "backup_polled_books": sum(1 for s in universe if market.state(s).book.state is BookState.POLLED),
        "backup_polls_dropped": market.counters["polled_snapshots_dropped"],
        **(service.control.metrics() if service.control is not None else {}),
        **market.totals(),
        **(service.incidents.metrics() if service.incidents is not None else {}),
        # incident checks that raised (a bug in the watch, logged with its traceback): the feed went on
        "incident_check_errors": service.counters["incident_check_errors"],
        **capture_metrics(service.capture),
        **(service.sink.metrics() if isinstance(service.sink, Dispatch) else {}),
    }


class WsSilence:
    """How long the websockets have delivered no frame while they were meant to (the connectivity sensor's
    measure of the primary feed: the heartbeat beats whether or not data arrives)."""

    def __init__(self, frames: int, now_s: float) -> None:
        self._frames = frames
        self._since = now_s

    def update(self, frames: int, now_s: float, *, expected: bool) -> int:
        """``ws_silent_ms`` now: ms since the frame count (``frames``, received so far) last grew, counted
        only while frames are ``expected`` (a universe to follow and the backup feed off); ``now_s`` is a
        monotonic clock."""
        if frames != self._frames or not expected:
            self._frames, self._since = frames, now_s
        return int((now_s - self._since) * 1000)


class RouteSilence:
    """The websocket silence of each route (``public``: depth, bookTicker; ``market``: aggTrade, klines), each
    a :class:`WsSilence` of that route's frames: a dead ``/market`` while ``/public`` flows leaves every
    symbol's trades stale, and a count of all frames would not show it. A route with no stream wanted is not
    silent."""

    def __init__(self, frames: Mapping[Path, int], now_s: float) -> None:
        self._routes = {route: WsSilence(frames.get(route, 0), now_s) for route in PATHS}

    def update(
        self, frames: Mapping[Path, int], wanted: Collection[Path], now_s: float, *, expected: bool
    ) -> dict[Path, int]:
        """Each route's silence now (ms), from its frame count (``frames``, received so far); counted only
        while frames are ``expected`` (see :meth:`WsSilence.update`) and the route is ``wanted`` (has
        streams)."""
        return {
            route: silence.update(frames.get(route, 0), now_s, expected=expected and route in wanted)
            for route, silence in self._routes.items()
        }


def silence_metrics(routes: Mapping[Path, int]) -> dict[str, int]:
    """``ws_silent_<route>_ms`` of each route, and ``ws_silent_ms``: the worst route's."""
    return {WS_SILENT: max(routes.values(), default=0), **{ws_silent_key(r): ms for r, ms in routes.items()}}


class LoadSampler:
    """What the heartbeat says of the load: this process's CPU % since the previous beat and resident bytes
    (``cpu``, ``rss``, as the dashboard publishes its own), its host's memory % now (``host_memory``) and its
    host's CPU % averaged over the last 60 s (``host_cpu``: :class:`tapewatch.health.CpuAverage` of the
    host's cumulative CPU times, sampled at each beat — the system performance sensor judges these two). psutil
    reads /proc and does not block; CPU % is measured between samples, so the first beat has none rather than
    a false 0 %, and the host's covers less than 60 s during the service's first minute."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._process = psutil.Process()
        self._host_cpu = CpuAverage()
        self._clock = clock
        self._first = True
        self._failed = False

    def sample(self) -> dict[str, int | float]:
        """The figures now ({} when psutil cannot read them: logged once)."""
        try:
            with self._process.oneshot():
                cpu = self._process.cpu_percent(interval=None)
                rss = self._process.memory_info().rss
            busy, total = cpu_busy_total(psutil.cpu_times()._asdict())
            host_memory = psutil.virtual_memory().percent
        except (psutil.Error, OSError) as exc:
            if not self._failed:
                log.warning("cannot read this process's or host's load for the heartbeat: %s", exc)
            self._failed = True
            return {}
        host_cpu = self._host_cpu.add(self._clock(), busy, total)
        out: dict[str, int | float] = {PROCESS_RSS: int(rss), HOST_MEMORY: round(host_memory, 1)}
        if not self._first:
            out[PROCESS_CPU] = round(cpu, 1)
        if host_cpu is not None:
            out[HOST_CPU] = round(host_cpu, 1)
        self._first = False
        return out


async def publish_feeds(
    redis: AsyncRedisState, service: FeedService, published: set[str], ttl_s: float
) -> None:
    """Publish the feed stats of each symbol of the universe and remove those of the symbols published before
    that have left it (``published``: the symbols whose stats this instance wrote and has not removed, kept up
    to date), all in one round trip: one reply per symbol, one after another, made a slow Redis (0.7 s a reply)
    hold the next heartbeat past its 10-s expiry. Left alone, a symbol's stats would stay in Redis until they
    expire (``ttl_s``), and the data-quality sensor would count a symbol no longer followed. Removed here, with
    the publish, by the one task that writes them: a removal elsewhere could run between a publish's read of
    the universe and its write, and the write would bring the stats back. A removal Redis refused is retried
    at the next publish."""
    universe = list(service.universe)
    gone = sorted(published - set(universe))
    # each record names its shard (symbol_feed): a shard that lost the exchange is silent while the others
    # flow, and the emergency sensor must see that as the shard's outage, not as its symbols' $0 volume
    feeds = {symbol: service.feed(symbol) for symbol in universe}
    published.update(universe)  # maybe written even when the reply is lost: removed once they leave
    await redis.publish_feeds(feeds, removed=gone, ttl_s=ttl_s)
    published.difference_update(gone)


def published_metrics(service: FeedService) -> dict[str, int | float]:
    """The metrics hash as published: the service's metrics and the websocket silence the publish loop last
    measured, each route's (``service.ws_silent_routes``) and the worst route's (``service.ws_silent_ms``)."""
    routes = service.ws_silent_routes
    silence = silence_metrics(routes) if routes else {WS_SILENT: service.ws_silent_ms}
    return {**service.metrics(), **silence}


def _heartbeat_info(service: FeedService, pid: int, load: LoadSampler) -> dict[str, str | int | float | bool]:
    info: dict[str, str | int | float | bool] = {
        "pid": pid,
        **(service.control.info() if service.control is not None else {}),
    }
    if not service.shard.whole:
        info["shard"] = service.shard.label
    info["retained"] = len(service.retained)  # next to the universe's size: symbols kept for signals
    # the exchange's "now" (0 before the first frame): where the dashboard's periods end when the simulator
    # runs ahead of the wall clock
    info["market_now_ms"] = service.market.now_ms
    # the applied tuning row it started with (0: none), so that status can say a restart is pending
    record = applied_record(service.settings)
    if record is not None:
        info[HEARTBEAT_FIELD] = record
    return info | load.sample()


async def publish_loop(service: FeedService, interval: float = 1.0) -> None:
    """Heartbeat, per-symbol feed stats and metrics to Redis, once per ``interval`` (returns at once
    without Redis)."""
    redis = service.redis
    if redis is None:
        return
    pid = os.getpid()
    published_signal: dict[str, str] | None = None
    pool = service.pool
    silence = RouteSilence(pool.route_frames(), time.monotonic())
    load = LoadSampler()
    feeds: set[str] = set()
    while True:
        service.observe()
        expected = bool(service.universe) and not service.backup.on
        routes = silence.update(
            pool.route_frames(), pool.routes_wanted(), time.monotonic(), expected=expected
        )
        service.ws_silent_routes = dict(routes)
        service.ws_silent_ms = max(routes.values(), default=0)
        try:
            await redis.beat(
                service.component, ttl_s=max(10.0, interval * 10), info=_heartbeat_info(service, pid, load)
            )
            await publish_feeds(redis, service, feeds, ttl_s=max(60.0, interval * 60))
            await redis.publish_metrics(published_metrics(service), service.component)
            if service.closes is not None:
                await service.closes.publish(service.followed)
            last_signal = service.last_signal
            if last_signal is not None and last_signal is not published_signal:
                await redis.set_last_signal(last_signal)  # what `tapewatch status` shows
                published_signal = last_signal
        except StorageUnavailable as exc:
            service.counters["redis_errors"] += 1
            errors = service.counters["redis_errors"]
            if errors in (1, 10) or errors % 100 == 0:
                log.warning("cannot publish live state to Redis (will keep trying): %s", exc)
        await asyncio.sleep(interval)


async def publish_on_exit(service: FeedService, within_s: float = 5.0) -> None:
    """On the way out: the metrics hash and the newest signal once more (the publish loop runs once a second,
    so the counts of the last second, and a signal of it, would otherwise never reach ``tapewatch status`` or
    the dashboard). Best effort, bounded by ``within_s``: two Redis writes take milliseconds, but a stopping
    process shares its machine (and, against the in-process simulator, its event loop) with a busy market —
    2 s timed out in 5 of 6 loaded runs, 5 s never (1.1–3.0 s)."""
    if service.redis is None:
        return
    # In a task of its own: this runs in the finally of the service's cancelled run, whose cancel request
    # stays counted, and every Redis call made from it would raise CancelledError once its command had run
    # (tapewatch.adapters.cancels): the metrics were written, the last signal never.
    await asyncio.create_task(_publish_final(service, service.redis, within_s), name="publish-on-exit")


async def _publish_final(service: FeedService, redis: AsyncRedisState, within_s: float) -> None:
    last = service.last_signal
    try:
        async with asyncio.timeout(within_s):
            await redis.publish_metrics(published_metrics(service), service.component)
            if last is not None:
                await redis.set_last_signal(last)
    except (StorageUnavailable, TimeoutError) as exc:
        log.warning("cannot record the final metrics and last signal in Redis on the way out: %s", exc)
