"""Is the realtime service alive, and how old is what it last published?

Its metrics hash and open-signals hash have no expiry (``tapewatch status`` reads the last snapshot on
purpose), so a page must not show them as live on their own: they are live only while a realtime heartbeat
(the single service's or any shard's) is there and the metrics were published within the
``dashboard_stale_after`` setting (default ten publish intervals of 1 s: a late wake-up or two is not a stop).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dashboard import ui
from tapewatch.adapters.redis_keys import REALTIME
from tapewatch.adapters.redis_state import RedisState, realtime_shards
from tapewatch.adapters.redis_values import Heartbeat

#: The metrics hash's timestamp (when it was published), not a metric.
UPDATED = "updated_ms"


@dataclass(frozen=True)
class RealtimeStatus:
    """Whether a realtime heartbeat is live, when its metrics were last published (epoch ms, or None), and
    how old they may be to count as live (ms, from ``dashboard_stale_after``)."""

    running: bool
    published_ms: int | None
    stale_after_ms: int

    def fresh(self, now_ms: int) -> bool:
        """The service runs and its metrics are recent: its figures may be shown as live."""
        return (
            self.running
            and self.published_ms is not None
            and now_ms - self.published_ms <= self.stale_after_ms
        )

    def as_of(self, now_ms: int) -> str:
        """``as of 2024-03-11 10:00:00 UTC, 5 min ago`` (the last publish), or ``never published``."""
        if self.published_ms is None:
            return "never published"
        age = ui.fmt_age(max(0, now_ms - self.published_ms) / 1000)
        return f"as of {ui.fmt_time(self.published_ms)} UTC, {age} ago"


def status_of(
    beats: Mapping[str, Heartbeat | None], metrics: Mapping[str, float], stale_after_s: float
) -> RealtimeStatus:
    """The status from every component's heartbeat (None: expired), the realtime metrics snapshot and the
    ``dashboard_stale_after`` setting (seconds)."""
    names = {REALTIME, *realtime_shards(beats)}
    running = any(beats.get(name) is not None for name in names)
    published = metrics.get(UPDATED)
    return RealtimeStatus(
        running=running,
        published_ms=None if published is None else int(published),
        stale_after_ms=round(stale_after_s * 1000),
    )


def read_status(redis: RedisState, stale_after_s: float) -> tuple[RealtimeStatus, dict[str, float]]:
    """The realtime status and its metrics snapshot (StorageUnavailable when Redis is down)."""
    metrics = redis.realtime_metrics()
    return status_of(redis.heartbeats(), metrics, stale_after_s), metrics
