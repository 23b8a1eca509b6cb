"""The realtime service's own figures for the metrics hash: message rates per stream kind, event→signal
latency, and symbols that went quiet.

Names written (component ``realtime``):

- ``msgs_per_s_depth``, ``msgs_per_s_bookTicker``, ``msgs_per_s_aggTrade``, ``msgs_per_s_kline``: frames
  of that kind applied per second over the last publish interval;
- ``signal_latency_ms_p50``, ``signal_latency_ms_p99``, ``signal_latency_samples``: event→signal inside
  tapewatch: wall clock when an ENTRY is handed to dispatch minus the receive time of the frame that produced
  it (queueing in the event loop included), over the most recent 256 signals;
- ``signal_age_ms_p50``, ``signal_age_ms_p99``: the same hand-over minus the exchange's event time of that
  frame (adds the exchange → us delay and any clock offset; against the simulator, whose clock runs at
  ``--speed``, it is not meaningful);
- ``quiet_symbols`` (now) and ``quiet_symbol_events`` (since start): symbols without any event for
  ``symbol_quiet_after`` seconds while the others still flow.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping, Sequence

from tapewatch.live_view import percentile, quiet_symbols
from tapewatch.streams import Kind

log = logging.getLogger(__name__)

#: The stream kinds whose rates are published, and their names in the metrics hash.
RATE_KINDS: dict[Kind, str] = {
    Kind.DEPTH: "depth",
    Kind.BOOK_TICKER: "bookTicker",
    Kind.AGG_TRADE: "aggTrade",
    Kind.KLINE: "kline",
}


class RateMeter:
    """Per-second rates of monotonically growing counts between two readings."""

    def __init__(self) -> None:
        self._last: dict[Kind, int] = {}
        self._at: float | None = None
        self.rates: dict[str, float] = {f"msgs_per_s_{name}": 0.0 for name in RATE_KINDS.values()}

    def update(self, counts: Mapping[Kind, int], now_s: float) -> dict[str, float]:
        """The rates since the previous call (0 at the first); ``now_s`` is a monotonic clock."""
        if self._at is not None and now_s > self._at:
            elapsed = now_s - self._at
            self.rates = {
                f"msgs_per_s_{name}": round((counts.get(kind, 0) - self._last.get(kind, 0)) / elapsed, 3)
                for kind, name in RATE_KINDS.items()
            }
        self._last = {kind: counts.get(kind, 0) for kind in RATE_KINDS}
        self._at = now_s
        return self.rates


class LatencyRing:
    """The most recent event→signal latencies (ms): from our receipt of the triggering frame and from its
    exchange event time."""

    def __init__(self, size: int = 256) -> None:
        self.values: deque[float] = deque(maxlen=size)
        self.ages: deque[float] = deque(maxlen=size)

    def add(self, handed_ms: float, recv_ms: int, event_time_ms: int) -> None:
        """One signal handed over at ``handed_ms`` (wall clock, fractional) from a frame received at
        ``recv_ms`` (the capture's whole milliseconds, so a figure reads up to 1 ms high) whose exchange
        event time is ``event_time_ms``."""
        self.values.append(max(0.0, handed_ms - recv_ms))
        self.ages.append(handed_ms - event_time_ms)

    def metrics(self) -> dict[str, float]:
        return {
            "signal_latency_ms_p50": percentile(self.values, 50) or 0.0,
            "signal_latency_ms_p99": percentile(self.values, 99) or 0.0,
            "signal_latency_samples": len(self.values),
            "signal_age_ms_p50": percentile(self.ages, 50) or 0.0,
            "signal_age_ms_p99": percentile(self.ages, 99) or 0.0,
        }


class QuietWatch:
    """Reports symbols going quiet and coming back (a log line each time), and counts them."""

    def __init__(self, quiet_after_ms: int) -> None:
        self.quiet_after_ms = quiet_after_ms
        self.quiet: dict[str, int] = {}
        self.events = 0

    def check(
        self, last_seen: Mapping[str, int], symbols: Sequence[str], now_ms: int, joined: Mapping[str, int]
    ) -> dict[str, int]:
        """The quiet symbols now (symbol → ms since its last event), logging every change."""
        quiet = quiet_symbols(last_seen, symbols, now_ms, self.quiet_after_ms, joined)
        for symbol in sorted(quiet.keys() - self.quiet.keys()):
            self.events += 1
            log.warning(
                "symbol quiet: no event for %.0f s while other symbols flow",
                quiet[symbol] / 1000,
                extra={"symbol": symbol},
            )
        for symbol in sorted(self.quiet.keys() - quiet.keys()):
            log.info("symbol no longer quiet", extra={"symbol": symbol})
        self.quiet = quiet
        return quiet

    def metrics(self) -> dict[str, int]:
        return {"quiet_symbols": len(self.quiet), "quiet_symbol_events": self.events}
