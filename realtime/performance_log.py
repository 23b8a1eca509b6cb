"""Spec 13.1 "performance metrics in real time" in the log: one INFO line a minute with the service's key figures.

The metrics hash in Redis holds only the latest values (each publish overwrites it), so without this line nothing
would say afterwards how the service ran an hour ago. The line carries the figures as structured fields (see
:mod:`tapewatch.logs`; ``journalctl -u tapewatch-realtime -o cat | grep performance`` or the JSON log gives the
history): the universe and its synced books, open signals, signals and messages over the interval, the message
rates per stream kind, event→signal latency, event-loop lag, reconnects and malformed frames since start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

#: How often the line is written (seconds).
PERFORMANCE_LOG_EVERY_S = 60.0

#: The figures of the metrics hash the line carries as they are (absent ones are left out).
PERFORMANCE_FIELDS = (
    "symbols",
    "synced",
    "open_signals",
    "msgs_per_s_depth",
    "msgs_per_s_bookTicker",
    "msgs_per_s_aggTrade",
    "msgs_per_s_kline",
    "signal_latency_ms_p50",
    "signal_latency_ms_p99",
    "loop_lag_ms_p99",
    "loop_lag_ms_max",
    "processing_lag_ms_p99",
    "reconnects",
    "malformed",
    "redis_errors",
)


class PerformanceLine:
    """Builds the line's fields from successive metrics snapshots: the figures of :data:`PERFORMANCE_FIELDS` as
    they are, plus ``messages_per_s`` and ``signals_new`` over the time since the previous snapshot."""

    def __init__(self) -> None:
        self._last: tuple[float, int, int] | None = None  # (monotonic s, messages, signals) of the last line

    def fields(self, metrics: Mapping[str, int | float], now_s: float) -> dict[str, int | float]:
        messages, signals = int(metrics.get("messages", 0)), int(metrics.get("signals", 0))
        out: dict[str, int | float] = {k: metrics[k] for k in PERFORMANCE_FIELDS if k in metrics}
        if self._last is not None and now_s > self._last[0]:
            at, seen, issued = self._last
            # a counter that went back (a restarted service object) counts from zero, never negative
            out["messages_per_s"] = round(max(0, messages - seen) / (now_s - at), 1)
            out["signals_new"] = max(0, signals - issued)
        self._last = (now_s, messages, signals)
        return out


def log_performance(fields: Mapping[str, int | float]) -> None:
    """Write the line: a readable summary in the message, every figure as a structured field."""
    log.info(
        "performance: %s/%s books synced, %s open signals, %s msg/s, latency p99 %s ms",
        fields.get("synced", "?"),
        fields.get("symbols", "?"),
        fields.get("open_signals", "?"),
        fields.get("messages_per_s", "?"),
        fields.get("signal_latency_ms_p99", "?"),
        extra=dict(fields),
    )


async def performance_log_loop(
    metrics: Callable[[], Mapping[str, int | float]],
    interval: float = PERFORMANCE_LOG_EVERY_S,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Every ``interval`` seconds, log the performance line of ``metrics()`` (the service's metrics snapshot). A
    snapshot that raises is logged with its traceback and the loop goes on: the log must not stop the feed."""
    line = PerformanceLine()
    line.fields(metrics(), clock())  # the baseline the first line's rates are taken against
    while True:
        await asyncio.sleep(interval)
        try:
            log_performance(line.fields(metrics(), clock()))
        except Exception:
            log.exception("performance log line failed (the service goes on)")
