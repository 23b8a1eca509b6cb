"""Event-loop lag: how late asyncio wakes a task that asked to sleep a fixed interval.

A busy loop (a burst of frames, a slow callback, a blocking call that slipped in) delays every task: the
websocket readers, the snapshot fetches, the publish loop. The monitor sleeps ``interval`` seconds over and
over and records, each time, how much later than asked it woke up. A wake-up later than ``warn_after`` is
counted and logged (at most one line per ``log_every`` seconds, so a lagging loop is not made worse by its
own log). The figures go to the metrics hash: ``loop_lag_ms_p50``, ``loop_lag_ms_p99``, ``loop_lag_ms_max``
(over the recent ring), ``loop_lag_warnings`` (late wake-ups since start).

:func:`processing_lag` keeps the same figures (``processing_lag_ms_*``) of the time from a frame's receipt to
the end of its processing, measured on one frame in :data:`PROCESSING_LAG_EVERY` the service takes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from tapewatch.live_view import percentile

log = logging.getLogger(__name__)


class LagRing:
    """Recent lags of one kind (ms, a ring of the last ``ring``), their percentiles, and a count and a log line
    (at most one per ``log_every`` seconds) for each lag past ``warn_after_ms``. ``message`` is the log line's
    format, given the lag, the bound (ms) and the count so far. The metrics are ``<name>_ms_p50``,
    ``<name>_ms_p99``, ``<name>_ms_max`` and ``<name>_warnings``."""

    def __init__(
        self,
        name: str,
        *,
        warn_after_ms: float,
        ring: int,
        message: str,
        log_every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if warn_after_ms <= 0 or ring < 1:
            raise ValueError(f"{name}: needs warn_after > 0 and ring >= 1; got {warn_after_ms} ms, {ring}")
        self.name = name
        self.warn_after_ms = warn_after_ms
        self.message = message
        self.log_every = log_every
        self.clock = clock
        self.lags_ms: deque[float] = deque(maxlen=ring)
        self.warnings = 0
        self._logged_at = -float("inf")

    def record_ms(self, lag_ms: float) -> None:
        """One lag of ``lag_ms`` (negative values, clock jitter, count as 0)."""
        if lag_ms < 0:
            lag_ms = 0.0
        self.lags_ms.append(lag_ms)
        if lag_ms > self.warn_after_ms:
            self.warnings += 1
            now = self.clock()
            if now - self._logged_at >= self.log_every:
                self._logged_at = now
                log.warning(self.message, lag_ms, self.warn_after_ms, self.warnings)

    def metrics(self) -> dict[str, float]:
        """The figures of the metrics hash (0 before the first lag)."""
        return {
            f"{self.name}_ms_p50": round(percentile(self.lags_ms, 50) or 0.0, 3),
            f"{self.name}_ms_p99": round(percentile(self.lags_ms, 99) or 0.0, 3),
            f"{self.name}_ms_max": round(max(self.lags_ms, default=0.0), 3),
            f"{self.name}_warnings": self.warnings,
        }


class LoopLagMonitor(LagRing):
    """Measures the loop's lag while :meth:`run` runs (until cancelled)."""

    def __init__(
        self,
        *,
        interval: float = 0.1,
        warn_after: float = 0.5,
        ring: int = 600,
        log_every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0 or warn_after <= 0:
            raise ValueError(
                f"loop lag monitor needs interval > 0, warn_after > 0; got {interval}, {warn_after}"
            )
        super().__init__(
            "loop_lag",
            warn_after_ms=warn_after * 1000,
            ring=ring,
            message="event loop lagging: woke %.0f ms late (> %.0f ms; %d late wake-ups so far)",
            log_every=log_every,
            clock=clock,
        )
        self.interval = interval

    def record(self, lag_s: float) -> None:
        """One wake-up ``lag_s`` seconds late."""
        self.record_ms(lag_s * 1000)

    async def run(self) -> None:
        while True:
            start = self.clock()
            await asyncio.sleep(self.interval)
            self.record(self.clock() - start - self.interval)


#: The service times one delivery in this many (a power of two): timing each cost ~0.37 µs a frame, a few % of a
#: frame's processing; a backlog delays every frame alike, so a sample sees it as well.
PROCESSING_LAG_EVERY = 8


def processing_lag(warn_after: float, *, ring: int = 2000) -> LagRing:
    """Receive → processed of the frames the service applies (wall clock when one is done minus when its reader
    received it): the wait in the frame queue behind a burst or a slow step, and its processing. Lags past
    ``warn_after`` seconds mean the service is behind its feed, whatever the event loop's own lag says."""
    return LagRing(
        "processing_lag",
        warn_after_ms=warn_after * 1000,
        ring=ring,
        message="frames processed %.0f ms after they were received (> %.0f ms; %d such frames so far): "
        "the service is behind its feed",
    )
