"""Spacing of actions in time: at most one action per ``interval`` seconds.

Used for opening connections (Binance limits new connections per IP) and for control messages on one
connection (Binance closes a connection that sends more than 10 messages a second).
"""

from __future__ import annotations

from realtime.timebase import REAL_TIME, Timebase


class Pacer:
    """Hands out start times at least ``interval`` seconds apart, in call order.

    The slot is reserved before sleeping, so concurrent callers queue up behind each other instead of
    all waking at the same moment.
    """

    def __init__(self, interval: float, timebase: Timebase = REAL_TIME) -> None:
        if interval < 0:
            raise ValueError(f"pacer interval must be >= 0; got {interval}")
        self.interval = interval
        self._tb = timebase
        self._next: float | None = None

    def reserve(self, now: float) -> float:
        """Reserve the next slot for a caller arriving at ``now``; return how long it must wait."""
        start = now if self._next is None else max(now, self._next)
        self._next = start + self.interval
        return start - now

    async def wait(self) -> None:
        """Return when the caller may act; the slot is taken even if the caller is cancelled while waiting."""
        delay = self.reserve(self._tb.monotonic())
        if delay > 0:
            await self._tb.sleep(delay)
