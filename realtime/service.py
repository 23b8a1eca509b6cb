"""``tapewatch run``: the realtime service wiring transport, capture, book sync and market state.

One asyncio process. Frames flow transport -> capture (byte-exact) -> decode -> market state; books that
need a snapshot ask the scheduler, whose answers are captured and applied in the same loop, so a capture
replays into exactly the books the live run had; an aggTrade id gap is filled the same way from REST
(:mod:`realtime.trade_fill`). Live state (heartbeat, per-symbol feed stats, metrics) goes to Redis once a
second (:mod:`realtime.service_publish`); Redis being away is counted and logged, never fatal. Feed
incidents (gaps, resyncs, reconnects, stale books, malformed frames, 429/418) go to PostgreSQL through an
IncidentRecorder, which never blocks the loop. The platform steers the running service through the Redis
control keys (:mod:`realtime.control`: universe, pause, max_universe, and the switch to REST polling of
:mod:`realtime.backup_feed`).

Scale-out (``--shard I/N``, N > 1): the service follows only its shard's symbols of the global universe,
beats and publishes metrics as ``realtime-IofN``, checks every candidate against the other shards in the
``shared_gate`` (the PostgreSQL risk ledger) and publishes its symbols' 1m closes for their correlation rule
(:mod:`realtime.closes_publisher`). Frames of streams no longer followed (in flight when a symbol left the
universe) are counted as ``late_unsubscribed`` and dropped before capture, never as malformed.

A symbol that leaves the universe (a rescan, the hourly quick check, an emergency exclusion, ``max_universe``)
while it has open signals is *retained*: its aggTrade and 1m kline streams stay subscribed so its signals are
followed to their real end (target, stop or expiry) and the correlation rule still sees its returns, while its
book is let go and no candidate is evaluated on it (a ``control:depth_restart`` frame with reason
``unsubscribed`` is captured where that happened, so a replay does the same). Once its last signal ends it is
unsubscribed. A retained symbol stays with the shard that follows its signals (a symbol's shard never changes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Protocol

import msgspec

from realtime.backup_feed import BackupConfig, BackupFeed
from realtime.capture import CaptureWriter
from realtime.checkpoints import Checkpoints
from realtime.closes_publisher import ClosesPublisher
from realtime.control import ControlConfig, ControlLoop
from realtime.history import HistoryLoader
from realtime.incident_watch import IncidentWatch
from realtime.incidents import IncidentRecorder
from realtime.live_metrics import LatencyRing, QuietWatch, RateMeter
from realtime.live_state import LiveState
from realtime.loop_lag import PROCESSING_LAG_EVERY, LoopLagMonitor, processing_lag
from realtime.pacer import Pacer
from realtime.performance_log import performance_log_loop
from realtime.service_publish import (
    component_name,
    publish_loop,
    publish_on_exit,
    service_metrics,
    signal_record,
)
from realtime.service_rest import KLINE_FILL_SHARE, FeedRest
from realtime.service_universe import FeedUniverse, choose_universe
from realtime.snapshots import SnapshotScheduler
from realtime.status_view import symbol_feed
from realtime.timebase import _wall_ms
from realtime.trade_fill import TradeFiller
from realtime.ws_delivery import Received, StreamsStarted, StreamsStopped
from realtime.ws_pool import StreamPool
from tapewatch.adapters.binance_rest import BinanceRest
from tapewatch.adapters.redis_state import AsyncRedisState, SymbolFeed
from tapewatch.engine import EngineOutput, RemoteCloses, SignalEngine
from tapewatch.events import CONTROL_DEPTH_RESTART, CONTROL_PAUSED, ControlChange, DepthRestart
from tapewatch.market import Market, MarketConfig
from tapewatch.market_depth import SnapshotNeeded
from tapewatch.market_klines import KlineFillNeeded, history_klines
from tapewatch.parse import Frame, FrameDecoder
from tapewatch.risk import SharedGate
from tapewatch.settings import Settings
from tapewatch.sharding import parse_shard
from tapewatch.signal_follow import moved_outcomes
from tapewatch.streams import Kind, Path, UnknownStream, parse_stream

log = logging.getLogger(__name__)

#: How long a stopping service waits for the peer's closing handshake of each stream connection.
STREAMS_CLOSE_TIMEOUT_S = 0.5


class SignalSink(Protocol):
    """Where the engine's candidates, signals and finished outcomes go (storage, streams, notifiers). It
    must not block: it queues and returns."""

    def accept(self, output: EngineOutput) -> None: ...


class FeedService(FeedUniverse, FeedRest):
    """The market-data half of the realtime service (the symbols it follows in
    :class:`~realtime.service_universe.FeedUniverse`, the REST answers it applies in
    :class:`~realtime.service_rest.FeedRest`)."""

    def __init__(
        self,
        settings: Settings,
        *,
        rest: BinanceRest,
        pool: StreamPool,
        capture: CaptureWriter | None = None,
        redis: AsyncRedisState | None = None,
        incidents: IncidentRecorder | None = None,
        sink: SignalSink | None = None,
        control: ControlConfig | None = None,
        backup: BackupConfig | None = None,
        shared_gate: SharedGate | None = None,
        remote_closes: RemoteCloses | None = None,
    ) -> None:
        self.settings = settings
        self.shard = parse_shard(settings.shard)
        self.component = component_name(self.shard)
        self.rest = rest
        self.pool = pool
        self.capture = capture
        self.redis = redis
        self.incidents = incidents
        self.watch = (
            IncidentWatch(incidents, update_frequency=settings.update_frequency) if incidents else None
        )
        self.decoder = FrameDecoder()
        self.market = Market(MarketConfig.from_settings(settings))
        self.universe: list[str] = []
        self.retained: list[str] = []  # out of the universe, still followed for their open signals
        self._wanted: frozenset[str] = frozenset()  # the streams of the universe: others' frames are late
        self.counters: Counter[str] = Counter()
        self.started_ms = _wall_ms()
        self.checkpoints = Checkpoints(settings.capture_checkpoint_seconds, self.started_ms)
        self.lag_ms: dict[str, int] = {}
        self._last_recv: dict[str, int] = {}  # symbol -> local receive time of its newest frame
        self._joined: dict[str, int] = {}  # symbol -> when it joined the universe (wall clock, ms)
        self._kinds: Counter[Kind] = Counter()  # frames applied per stream kind
        self.rates = RateMeter()
        self.latency = LatencyRing()
        self.quiet = QuietWatch(int(settings.symbol_quiet_after * 1000))
        self.loop_lag = LoopLagMonitor(warn_after=settings.loop_lag_warn)
        self.processing_lag = processing_lag(settings.processing_lag_warn)
        self.engine = SignalEngine(
            settings, self.market, shared_gate=shared_gate, remote_closes=remote_closes, shard=self.shard
        )
        self.closes = (
            ClosesPublisher(redis, self.market) if redis is not None and not self.shard.whole else None
        )
        self.live = (
            LiveState(
                redis,
                self.engine,
                interval=settings.live_state_interval,
                features_ttl=settings.features_ttl,
                owns=None if self.shard.whole else self.shard.owns,
            )
            if redis is not None
            else None
        )
        self.last_signal: dict[str, str] | None = None  # the newest signal, for `tapewatch status`
        self.ws_silent_ms = 0  # as the publish loop last measured it (published with the metrics)
        self.ws_silent_routes: dict[Path, int] = {}  # the same per route (public, market)
        self.sink = sink
        # the kline history of each joining symbol, retried until had (see realtime.history)
        self.history = HistoryLoader(
            self._fetch_klines,
            self._apply_klines,
            self._history_wanted,
            history_klines(settings.kline_history_bars),
            counters=self.counters,
            ban_left=lambda: self.rest.budget.banned_for(),
        )
        self._history_tasks = self.history.tasks
        # kline refills (the market's KlineFillNeeded): the newest per (symbol, interval), served in order
        self._kline_fills: dict[tuple[str, str], KlineFillNeeded] = {}
        self._kline_fill_ready = asyncio.Event()
        self._kline_fill_pacer = Pacer(60.0 / (KLINE_FILL_SHARE * settings.usable_weight_per_minute))
        self.snapshots = SnapshotScheduler(
            self._fetch_snapshot,
            self._on_snapshot,
            limit_for=self._snapshot_limit,
            failed=self.market.snapshot_failed,
            min_interval=settings.resync_min_interval,
        )
        self._tradable: frozenset[str] | None = None
        self.backup = BackupFeed(
            rest,
            self.decoder,
            self.apply_polled,
            next_trade_id=self.market.next_trade_id,
            config=backup or BackupConfig.from_settings(settings),
            open_symbols=self.engine.open_symbols,  # polled first when the feed cannot follow every symbol
        )
        # the trades an aggTrade id gap misses (a reconnect, the switch back from the backup feed)
        self.fills = TradeFiller(rest, self.decoder, self.apply_polled, wanted=self.market.fill_pending)
        self.control = (
            ControlLoop(
                redis,
                self,
                tradable=self.tradable_symbols,
                refresh=self.refresh_tradable,  # a symbol listed since the start: exchangeInfo again
                config=control,
                shard=self.shard,
                fixed=self.settings.symbols or (),
            )
            if redis is not None
            else None
        )

    # --- universe -------------------------------------------------------------------------------------
    # --- control (realtime.control steers these) ------------------------------------------------------
    def set_paused(self, reason: str | None) -> None:
        """Pause signalling (``reason`` given) or resume it: while paused, candidates are still evaluated and
        stored, with fate ``paused``). The command is captured (stream ``control:paused``) where it took effect,
        so a replay of the capture pauses at the same place in the tape and issues the same signals."""
        self.engine.set_paused(reason is not None)
        if self.capture is not None:
            body = msgspec.json.encode(ControlChange(paused=reason is not None, reason=reason or ""))
            self.capture.write(int(time.time() * 1000), CONTROL_PAUSED, body)

    async def set_backup_feed(self, on: bool) -> None:
        """Switch to REST polling (websocket streams unsubscribed) or back to the websockets (subscribed
        again after a last trades poll; books resync as after a reconnect)."""
        if on == self.backup.on:
            return
        if on:
            self.pool.set_streams([])
            self.backup.start(self.followed)
        else:
            await self.backup.stop()
            self.pool.set_streams(self._followed_streams())

    # --- frames ---------------------------------------------------------------------------------------
    def handle(self, item: Received | StreamsStarted | StreamsStopped) -> None:
        """Process one delivery of the transport (never raises for bad data)."""
        if isinstance(item, Received):
            if item.stream not in self._wanted:
                # in flight when its symbol left the universe: not applied, not captured (replay = live)
                self.counters["late_unsubscribed"] += 1
                return
            if self.capture is not None:
                if item.recv_ms >= self.checkpoints.due_ms:  # one comparison a frame; a write once an hour
                    self.checkpoints.write(item.recv_ms, self.market, self.followed, self.capture)
                self.capture.write(item.recv_ms, item.stream, item.raw)
            frame = self.decoder.decode_payload(item.recv_ms, item.stream, item.raw)
            if frame is not None:
                self._apply(frame)
            return
        if self.watch is not None:
            self.watch.on_marker(item)
        for stream in item.streams:
            try:
                name = parse_stream(stream)
            except UnknownStream:
                continue
            if name.kind is not Kind.DEPTH:
                continue
            if isinstance(item, StreamsStarted):
                # frames after this marker do not continue the old ones: the book starts over
                if isinstance(request := self._restart_depth(name.symbol, item.reason), SnapshotNeeded):
                    self._snapshot_needed(request, None)
            else:
                self.snapshots.cancel(name.symbol)

    def _restart_depth(self, symbol: str, reason: str) -> SnapshotNeeded | None:
        """Restart ``symbol``'s book through a ``control:depth_restart`` frame captured here, in order with the
        frames, so a replay restarts it (and the engine notes it) at the same place in the tape. Returns the
        market's snapshot request (the caller decides whether to fetch it)."""
        self.counters[f"depth_restart_{reason}"] += 1
        restart = DepthRestart(symbol, reason)
        recv = _wall_ms()  # the marker carries no time: when it took effect
        if self.capture is not None:
            self.capture.write(recv, CONTROL_DEPTH_RESTART, msgspec.json.encode(restart))
        frame = Frame(recv, CONTROL_DEPTH_RESTART, symbol, Kind.CONTROL, restart)
        request = self.market.on_frame(frame)
        self.engine.on_frame(frame)  # as in replay: the engine notes the restart where it happened
        return request if isinstance(request, SnapshotNeeded) else None

    def _apply(self, frame: Frame) -> None:
        event_time = getattr(frame.event, "event_time", 0)
        if event_time:
            self.lag_ms[frame.symbol] = frame.recv - event_time
        self._last_recv[frame.symbol] = frame.recv
        self._kinds[frame.kind] += 1
        request = self.market.on_frame(frame)
        if request is not None:
            if isinstance(request, SnapshotNeeded):
                self._snapshot_needed(request, event_time)
            elif isinstance(request, KlineFillNeeded):
                self._kline_fill_needed(request)
            elif self.backup.on:
                # the backup feed polls trades from the newest one the market holds: it fills the gap itself
                self.counters["trade_fill_by_backup"] += 1
            else:
                self.fills.request(request)
        out = self.engine.on_frame(frame)
        if out is not None:
            self.counters["engine_outputs"] += 1
            handed = time.time_ns() / 1e6
            for signal in out.signals:
                if signal.signal_type == "ENTRY":
                    self.latency.add(handed, frame.recv, signal.event_time)
                log.info(
                    "%s %s %s %s at %s (quality %s): %s",
                    signal.signal_type,
                    signal.priority,
                    signal.direction,
                    signal.symbol,
                    signal.entry_price,
                    signal.quality_score,
                    "; ".join(signal.reasons),
                    extra={"symbol": signal.symbol},
                )
                self.last_signal = signal_record(signal)
            if self.sink is not None:
                self.sink.accept(out)
            if self.live is not None:
                self.live.on_output(out)
            if out.finished and self.retained:
                self._release_finished()

    async def consume(self) -> None:
        """Drain the transport queue forever."""
        frames = self.pool.frames
        lag, every, n = self.processing_lag, PROCESSING_LAG_EVERY - 1, 0
        while True:
            item = await frames.get()
            self.handle(item)
            n += 1
            if not n & every and isinstance(item, Received):  # one delivery in PROCESSING_LAG_EVERY is timed
                lag.record_ms(time.time() * 1000 - item.recv_ms)

    # --- live state -----------------------------------------------------------------------------------
    def feed(self, symbol: str) -> SymbolFeed:
        """The symbol's feed stats as published (see :func:`realtime.status_view.symbol_feed`)."""
        return symbol_feed(self, symbol)

    def joined_ms(self, symbol: str) -> int | None:
        """Wall clock (ms) when ``symbol`` last joined the universe (its trades are counted from then on);
        None when it never did."""
        return self._joined.get(symbol)

    def metrics(self) -> dict[str, int | float]:
        """The metrics snapshot as published (see :func:`realtime.service_publish.service_metrics`)."""
        return service_metrics(self)

    def observe(self) -> None:
        """Once per publish: the message rates since the last call, and which symbols have gone quiet."""
        self.rates.update(self._kinds, time.monotonic())
        self.quiet.check(self._last_recv, self.universe, _wall_ms(), self._joined)

    async def incident_loop(self, interval: float = 1.0) -> None:
        """Check books, counters and the REST client for incidents once per ``interval``."""
        if self.watch is None:
            return
        while True:
            await asyncio.sleep(interval)
            try:
                self.watch.check(self.market, self.universe, self.decoder, self.pool.stats, self.rest)
            except Exception:
                # A bug in the watch must not stop the feed: log it and keep checking.
                self.counters["incident_check_errors"] += 1
                log.exception("incident check failed")

    async def close_incidents(self, within: float = 5.0) -> None:
        """At shutdown: record the pending malformed-frame counts and write every queued incident."""
        if self.watch is not None:
            self.watch.flush()
        if self.incidents is not None:
            await self.incidents.close(within)

    async def run(self, symbols: list[str] | None = None) -> None:
        """Choose the universe (unless given), subscribe and process until cancelled."""
        if symbols is None:
            symbols = await choose_universe(self.rest, self.settings, await self.tradable_symbols())
            if not self.shard.whole:
                chosen = len(symbols)
                symbols = self.shard.select(symbols)  # every shard makes the same global choice
                log.info("shard %s: %d of the %d symbols chosen", self.shard.label, len(symbols), chosen)
        if not symbols:
            log.error("the universe is empty: no symbol to watch (check TAPEWATCH_SYMBOLS / UNIVERSE_SIZE)")
        self.set_universe(symbols)
        if self.control is not None:
            # before the first frame: a paused service never lets a signal through. Should the read fail
            # (Redis unreachable), the pause is unknown and the loop pauses signalling itself (fail closed, logged)
            # until its first read, made by control.run
            await self.control.sync()
        try:
            await self._run_tasks()
        finally:
            # first: nothing consumes the frames any more, and connections left open would go on reading and
            # decoding the whole stream into the queue while the rest shuts down (under load the final publish
            # below missed its time limit for it). A reader ends with its connection's closing handshake, which a
            # busy peer answers late: waited for STREAMS_CLOSE_TIMEOUT_S at most, not the usual 5 s
            closing = asyncio.create_task(self.pool.close(close_timeout=STREAMS_CLOSE_TIMEOUT_S))
            await asyncio.wait({closing}, timeout=STREAMS_CLOSE_TIMEOUT_S + 0.5)
            try:
                if self.sink is not None:
                    # the open signals' best and worst moves since last stored: a restart resumes them from it
                    moved = moved_outcomes(self.engine.open.values())
                    if moved:
                        self.sink.accept(EngineOutput(updated=moved))
                await self.history.stop()
                await self.backup.stop(catch_up=False)
                # the last second's counts and signal reach `tapewatch status` too
                await publish_on_exit(self)
            finally:
                await closing

    async def _run_tasks(self) -> None:
        async with asyncio.TaskGroup() as group:
            if self.control is not None:
                group.create_task(self.control.run(), name="control")
            group.create_task(self.consume(), name="consume")
            group.create_task(self.snapshots.run(), name="snapshots")
            group.create_task(self.fills.run(), name="trade-fill")
            group.create_task(self.serve_kline_fills(), name="kline-fill")
            group.create_task(self.refresh_instruments_loop(), name="instruments-refresh")
            group.create_task(publish_loop(self), name="publish")
            group.create_task(performance_log_loop(self.metrics), name="performance-log")  # spec 13.1
            group.create_task(self.loop_lag.run(), name="loop-lag")
            if self.live is not None:
                group.create_task(self.live.run(), name="live-state")
            if self.incidents is not None:
                group.create_task(self.incidents.run(), name="incidents")
                group.create_task(self.incident_loop(), name="incident-watch")
