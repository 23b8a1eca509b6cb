"""Tuning of the websocket transport: the ``ws_*`` settings plus a few internal knobs with safe defaults."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from tapewatch.settings import Settings


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """Everything :class:`~realtime.ws_pool.StreamPool` needs to know; times in seconds."""

    max_streams_per_connection: int = 200
    control_rate: float = 3.0  # control messages per second per connection (Binance closes above 10)
    connect_interval: float = 1.0  # between new connections, all paths together
    stale_after: float = 15.0  # reconnect a connection silent this long
    rollover_after: float = 23.5 * 3600  # replace a connection this old (Binance cuts at 24 h)
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    healthy_after: float = 60.0  # a connection up this long resets the backoff
    rollover_grace: float = 10.0  # longest overlap of old and new connection during a rollover
    reply_timeout: float = 10.0  # a control request unanswered this long is retried
    max_params_per_message: int = 100  # streams per SUBSCRIBE/UNSUBSCRIBE
    max_control_retries: int = 5  # refusals of one stream before it is given up (until next set_streams)
    queue_capacity: int = 100_000  # data frames queued for the consumer before drops
    watchdog_interval: float = 1.0  # longest pause between two looks at a connection's health

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            ok = value >= 0 if f.name == "connect_interval" else value > 0
            if not ok:
                raise ValueError(f"TransportConfig.{f.name} must be > 0; got {value!r}")

    @property
    def tick(self) -> float:
        """How often a connection's watchdog looks at it."""
        return min(self.watchdog_interval, self.stale_after / 4, self.rollover_grace / 4)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> TransportConfig:
        """The config of the ``ws_*`` settings, with internal knobs overridden by keyword."""
        base = cls(
            max_streams_per_connection=settings.ws_max_streams_per_connection,
            control_rate=settings.ws_control_rate,
            connect_interval=settings.ws_connect_interval,
            stale_after=settings.ws_stale_after,
            rollover_after=settings.ws_rollover_after * 3600,
            backoff_base=settings.ws_backoff_base,
            backoff_max=settings.ws_backoff_max,
        )
        return replace(base, **overrides)
