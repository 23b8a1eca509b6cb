"""The REST answers the realtime service applies like frames: the books' snapshots, each symbol's kline
history and the refills of candle holes (paced to a share of the REST weight), and the backup feed's polls.
Each is captured byte-exact under its ``rest:`` name before it is decoded and applied, so a replay of the capture
decodes exactly what the live run applied.

A mixin of :class:`realtime.service.FeedService` (kept apart to keep that module small).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import TYPE_CHECKING

from realtime.backup_feed import Polled
from realtime.capture import CaptureWriter
from realtime.incident_watch import IncidentWatch
from realtime.pacer import Pacer
from realtime.snapshots import RestAnswer, SnapshotScheduler
from realtime.timebase import _wall_ms
from tapewatch.adapters.binance_rest import BinanceRest
from tapewatch.adapters.binance_weights import MAX_KLINES_LIMIT
from tapewatch.errors import FatalError, RetryableError
from tapewatch.events import DepthSnapshot
from tapewatch.market_depth import SnapshotNeeded
from tapewatch.market_klines import KlineFillNeeded
from tapewatch.parse import Frame, FrameDecoder
from tapewatch.settings import Settings
from tapewatch.streams import Kind

log = logging.getLogger("realtime.service")  # the service's logger: its lines keep the name they always had

#: Share of the usable REST weight kline refills are paced to (weight 1 a request below 100 bars): a reconnect
#: of the whole market asks for two per symbol at once, which must not crowd out the books' snapshots.
KLINE_FILL_SHARE = 0.1


class FeedRest:
    """The REST-answer methods of :class:`~realtime.service.FeedService`."""

    settings: Settings
    rest: BinanceRest
    capture: CaptureWriter | None
    decoder: FrameDecoder
    snapshots: SnapshotScheduler
    watch: IncidentWatch | None
    universe: list[str]
    counters: Counter[str]
    _kline_fills: dict[tuple[str, str], KlineFillNeeded]
    _kline_fill_ready: asyncio.Event
    _kline_fill_pacer: Pacer

    if TYPE_CHECKING:

        def _apply(self, frame: Frame) -> None: ...

    def apply_polled(self, polled: Polled) -> None:
        """An answer of the backup feed: captured byte-exact, then its frames applied like live frames."""
        if self.capture is not None:
            self.capture.write(polled.recv, polled.stream, polled.body)
        for frame in polled.frames:
            self._apply(frame)

    async def _fetch_klines(self, symbol: str, interval: str, limit: int) -> RestAnswer:
        """One request of a symbol's candle history (the 15m context, the 1m returns): the answer is captured
        and applied like a frame by ``_apply_klines`` (so a replay decodes exactly what the live run applied)."""
        _, answer = await self.rest.klines(symbol, interval, limit)
        return answer

    def _apply_klines(self, answer: RestAnswer) -> None:
        """A REST klines answer (history, refill): captured under its ``rest:`` name, decoded and applied."""
        recv = _wall_ms()
        if self.capture is not None:
            self.capture.write(recv, answer.stream, answer.body)
        frame = self.decoder.decode_payload(recv, answer.stream, answer.body)
        if frame is not None:
            self._apply(frame)

    def _kline_fill_needed(self, need: KlineFillNeeded) -> None:
        """Queue a refill (the market asks at most one per symbol and interval until it is answered)."""
        key = (need.symbol, need.interval)
        self._kline_fills.pop(key, None)
        self._kline_fills[key] = need
        self.counters["kline_fill_requests"] += 1
        self._kline_fill_ready.set()

    async def serve_kline_fills(self) -> None:
        """Serve the queued refills forever, paced to ``KLINE_FILL_SHARE`` of the REST weight (cancel to stop).
        The backup feed's kline polls go on meanwhile: a polled closed bar replaces a provisional one as the
        refill does, and bars already closed are never taken twice (``CandleSeries.extend_history``)."""
        while True:
            await self._kline_fill_ready.wait()
            self._kline_fill_ready.clear()
            while self._kline_fills:
                need = self._kline_fills.pop(next(iter(self._kline_fills)))
                await self._kline_fill_pacer.wait()
                await self.fetch_kline_fill(need)

    async def fetch_kline_fill(self, need: KlineFillNeeded) -> None:
        """One refill: ``/fapi/v1/klines`` with ``startTime``/``endTime``, applied like the history (a REST
        failure is counted and logged; the market asks again when it finds the refill unanswered)."""
        try:
            _, answer = await self.rest.klines(
                need.symbol,
                need.interval,
                min(need.bars, MAX_KLINES_LIMIT),
                start_ms=need.start,
                end_ms=need.end,
            )
        except (RetryableError, FatalError) as exc:
            self.counters["kline_fill_errors"] += 1
            log.warning(
                "%s kline refill from %d to %d failed: %s",
                need.interval,
                need.start,
                need.end,
                exc,
                extra={"symbol": need.symbol, "stream": f"kline_{need.interval}"},
            )
            return
        self._apply_klines(answer)

    def _snapshot_limit(self, symbol: str) -> int:
        top = self.universe[: self.settings.universe_size]
        return self.settings.snapshot_limit if symbol in top else self.settings.tail_snapshot_limit

    def _snapshot_needed(self, request: SnapshotNeeded, event_time: int | None) -> None:
        self.snapshots.request(request.symbol, request.reason)
        if self.watch is not None:
            self.watch.on_snapshot_needed(request.symbol, request.reason, event_time)

    async def _fetch_snapshot(self, symbol: str, limit: int) -> tuple[DepthSnapshot, RestAnswer]:
        return await self.rest.depth(symbol, limit)

    def _on_snapshot(self, symbol: str, snapshot: DepthSnapshot, answer: RestAnswer) -> None:
        recv = _wall_ms()
        if self.capture is not None:
            self.capture.write(recv, answer.stream, answer.body)
        self._apply(Frame(recv, answer.stream, symbol, Kind.SNAPSHOT, snapshot))
