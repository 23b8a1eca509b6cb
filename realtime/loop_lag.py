"""Event-loop lag: how late asyncio wakes a task that asked to sleep a fixed interval.

A busy loop (a burst of frames, a slow callback, a blocking call that slipped in) delays every task: the
websocket readers, the snapshot fetches, the publish loop. The monitor sleeps ``interval`` seconds over and
over and records, each time, how much later than asked it woke up. A wake-up later than ``warn_after`` is
counted and logged (at most one line per ``log_every`` seconds, so a lagging loop is not made worse by its
own log). The figures go to the metrics hash: ``loop_lag_ms_p50``, ``loop_lag_ms_p99``, ``loop_lag_ms_max``
(over the recent ring), ``loop_lag_warnings`` (late wake-ups since start).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from tapewatch.live_view import percentile

log = logging.getLogger(__name__)


class LoopLagMonitor:
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
        if interval <= 0 or warn_after <= 0 or ring < 1:
            raise ValueError(
                f"loop lag monitor needs interval > 0, warn_after > 0, ring >= 1; "
                f"got {interval}, {warn_after}, {ring}"
            )
        self.interval = interval
        self.warn_after = warn_after
        self.log_every = log_every
        self.clock = clock
        self.lags_ms: deque[float] = deque(maxlen=ring)
        self.warnings = 0
        self._logged_at = -float("inf")

    def record(self, lag_s: float) -> None:
        """One wake-up ``lag_s`` seconds late (negative values, clock jitter, count as 0)."""
        lag_ms = max(0.0, lag_s * 1000)
        self.lags_ms.append(lag_ms)
        if lag_s > self.warn_after:
            self.warnings += 1
            now = self.clock()
            if now - self._logged_at >= self.log_every:
                self._logged_at = now
                log.warning(
                    "event loop lagging: woke %.0f ms late (> %.0f ms; %d late wake-ups so far)",
                    lag_ms,
                    self.warn_after * 1000,
                    self.warnings,
                )

    async def run(self) -> None:
        while True:
            start = self.clock()
            await asyncio.sleep(self.interval)
            self.record(self.clock() - start - self.interval)

    def metrics(self) -> dict[str, float]:
        """The figures of the metrics hash (0 before the first wake-up)."""
        return {
            "loop_lag_ms_p50": round(percentile(self.lags_ms, 50) or 0.0, 3),
            "loop_lag_ms_p99": round(percentile(self.lags_ms, 99) or 0.0, 3),
            "loop_lag_ms_max": round(max(self.lags_ms, default=0.0), 3),
            "loop_lag_warnings": self.warnings,
        }
