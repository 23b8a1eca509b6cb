"""Binance's REST request-weight limit, per client IP: 429 over the limit, 418 (a ban) for hammering on.

Every answered request is charged its weight in a rolling window (60 s). A request that would go over
the limit is refused with 429 and ``Retry-After`` (seconds until enough weight leaves the window) and
is not charged. A client that keeps sending during that back-off collects violations; at
``ban_after`` violations it is banned: 418 with ``Retry-After`` for ``ban_seconds`` (doubling with each
ban, as Binance scales its bans). Time comes from an injected monotonic clock, so tests need no sleeps.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Verdict:
    """``status`` 200 (go ahead), 429 or 418; ``used`` is the weight of the window after this request."""

    status: int
    used: int
    retry_after: int = 0
    banned_until_s: float = 0.0


class WeightLimiter:
    """Request weight used in the last ``window_s`` seconds, and the 429/418 decisions."""

    def __init__(
        self,
        limit: int = 2400,
        clock: Callable[[], float] | None = None,
        window_s: float = 60.0,
        ban_after: int = 3,
        ban_seconds: float = 120.0,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.ban_after = ban_after
        self.ban_seconds = ban_seconds
        self._clock = clock or time.monotonic
        self._spent: deque[tuple[float, int]] = deque()
        self.used = 0
        self._backoff_until = 0.0
        self._violations = 0
        self._banned_until = 0.0
        self.bans = 0

    def _expire(self, now: float) -> None:
        spent = self._spent
        while spent and spent[0][0] <= now - self.window_s:
            self.used -= spent.popleft()[1]

    def charge(self, weight: int) -> Verdict:
        """Decide one request of ``weight``; charge it when it is allowed."""
        now = self._clock()
        self._expire(now)
        if now < self._banned_until:
            return Verdict(418, self.used, math.ceil(self._banned_until - now), self._banned_until)
        if self.used + weight > self.limit:
            if now < self._backoff_until:
                self._violations += 1
                if self._violations >= self.ban_after:
                    self._banned_until = now + self.ban_seconds * 2**self.bans
                    self.bans += 1
                    self._violations = 0
                    return Verdict(418, self.used, math.ceil(self._banned_until - now), self._banned_until)
            self._backoff_until = now + self._seconds_until_room(weight, now)
            return Verdict(429, self.used, max(1, math.ceil(self._backoff_until - now)))
        self._violations = 0
        self._spent.append((now, weight))
        self.used += weight
        return Verdict(200, self.used)

    def peek(self) -> int:
        """The weight used in the current window (as the ``X-MBX-USED-WEIGHT-1M`` header reports it)."""
        self._expire(self._clock())
        return self.used

    def _seconds_until_room(self, weight: int, now: float) -> float:
        need = self.used + weight - self.limit
        freed = 0
        for at, w in self._spent:
            freed += w
            if freed >= need:
                return at + self.window_s - now
        return self.window_s

    def reset(self) -> None:
        self._spent.clear()
        self.used = 0
        self._backoff_until = self._banned_until = 0.0
        self._violations = 0
