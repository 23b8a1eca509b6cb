"""Reconnect backoff: exponential with full jitter, reset after a healthy period.

Full jitter (a uniform draw between 0 and the exponential ceiling) spreads the reconnects of many
connections dropped at once (a Binance maintenance closes all of them together) instead of having them
hammer the server in lockstep. Pure: the caller passes "now" and the random source.
"""

from __future__ import annotations

from collections.abc import Callable

# 2**60 * any sane base is far beyond any cap; stopping the exponent here avoids float overflow.
_MAX_EXPONENT = 60


class Backoff:
    """Delays between reconnect attempts of one connection.

    Attempt ``n`` (0-based) waits ``random() * min(cap, base * 2**n)`` seconds. A connection that stayed
    up at least ``healthy_after`` seconds proves the server healthy again: the next failure starts over
    at attempt 0.
    """

    def __init__(self, base: float, cap: float, *, healthy_after: float, random: Callable[[], float]) -> None:
        if base <= 0 or cap <= 0:
            raise ValueError(f"backoff base and cap must be > 0; got base={base}, cap={cap}")
        self.base = base
        self.cap = max(cap, base)
        self.healthy_after = healthy_after
        self._random = random
        self.attempt = 0
        self._up_since: float | None = None

    def ceiling(self) -> float:
        """Largest delay the next attempt may draw."""
        return min(self.cap, self.base * 2.0 ** min(self.attempt, _MAX_EXPONENT))

    def connected(self, now: float) -> None:
        """Record that a connection came up at ``now``."""
        self._up_since = now

    def next_delay(self, now: float) -> float:
        """The delay before the next attempt, after a failure or a drop at ``now``; advances the attempt."""
        if self._up_since is not None and now - self._up_since >= self.healthy_after:
            self.attempt = 0
        self._up_since = None
        delay = self._random() * self.ceiling()
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Start over at attempt 0."""
        self.attempt = 0
        self._up_since = None
