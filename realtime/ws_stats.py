"""Counters of the websocket transport, read by the heartbeat/metrics publisher and by tests."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: Why an established connection was replaced: a read error or protocol failure, the stale watchdog (the
#: whole connection silent, or one of its depth/bookTicker streams), a planned rollover before Binance's
#: 24-hour cut, or the server closing it cleanly.
RECONNECT_REASONS = ("error", "stale", "rollover", "server_close")


@dataclass
class TransportStats:
    """Every counter of one :class:`~realtime.ws_pool.StreamPool` (monotonic unless noted)."""

    connections_open: int = 0  # gauge
    connects: int = 0
    connect_failures: int = 0
    reconnects: Counter[str] = field(default_factory=Counter)
    control_sent: int = 0
    control_errors: int = 0
    control_timeouts: int = 0
    control_gave_up: int = 0
    frames: Counter[str] = field(default_factory=Counter)
    malformed: int = 0
    unexpected_replies: int = 0
    unowned_frames: int = 0
    late_unsubscribed: int = 0  # of unowned_frames: those still in flight after their stream's UNSUBSCRIBE
    stale_stream_reports: int = 0  # silent streams reported (once per silence)
    stale_stream_quiet: int = 0  # of those: continuous streams silent again after their reconnect
    # per stream: reconnects of its connection because this continuous stream alone was silent
    stale_stream_reconnects: Counter[str] = field(default_factory=Counter)
    rollover_duplicates_dropped: int = 0
    rollover_unmatched_streams: int = 0
    invalid_streams: int = 0

    def frames_total(self) -> int:
        """Data frames received on every connection (rollover overlaps count twice)."""
        return self.frames.total()

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy of the counters (per-stream frame counts included)."""
        return {
            "connections_open": self.connections_open,
            "connects": self.connects,
            "connect_failures": self.connect_failures,
            "reconnects": {reason: self.reconnects[reason] for reason in RECONNECT_REASONS},
            "control_sent": self.control_sent,
            "control_errors": self.control_errors,
            "control_timeouts": self.control_timeouts,
            "control_gave_up": self.control_gave_up,
            "frames_total": self.frames_total(),
            "frames": dict(self.frames),
            "malformed": self.malformed,
            "unexpected_replies": self.unexpected_replies,
            "unowned_frames": self.unowned_frames,
            "late_unsubscribed": self.late_unsubscribed,
            "stale_stream_reports": self.stale_stream_reports,
            "stale_stream_quiet": self.stale_stream_quiet,
            "stale_stream_reconnects": dict(self.stale_stream_reconnects),
            "rollover_duplicates_dropped": self.rollover_duplicates_dropped,
            "rollover_unmatched_streams": self.rollover_unmatched_streams,
            "invalid_streams": self.invalid_streams,
        }
