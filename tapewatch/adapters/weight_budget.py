"""A per-process budget of Binance REST request weight, shared by every caller.

Binance allows ``rest_weight_limit`` weight per minute per IP and answers 429 (then 418, a ban) when a
client goes over. The budget keeps a rolling one-minute log of the weight this process has reserved,
lets a call through only when its weight fits under ``capacity`` (the usable share of the limit), and
queues the others in fair FIFO order. Depth snapshots draw from a sub-budget (``snapshot_capacity``) so a
mass resync is paced and never starves the other callers.

The total is an estimate and the server's count wins: every answer corrects it from the
``X-MBX-USED-WEIGHT-1M`` header (see :mod:`tapewatch.adapters.weight_log`).

Time is injected (``clock`` in monotonic seconds and ``sleep``), so tests run on a fake clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

from tapewatch.adapters.weight_log import LogEntry, Pool, WeightLog
from tapewatch.errors import IpBanned
from tapewatch.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["BudgetStats", "Clock", "Pool", "Reservation", "Sleep", "WeightBudget"]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

#: Length of Binance's weight window, seconds.
WINDOW_SECONDS = 60.0
# Timer slack so a wake-up never lands a hair before the entry it waits for has expired (busy loop).
_TICK = 0.001


@dataclass(slots=True, eq=False)
class _Waiter:
    ticket: int
    weight: int
    pool: Pool
    since: float
    future: asyncio.Future[LogEntry]


@dataclass(slots=True, eq=False)
class Reservation:
    """Weight granted to one request; hand it back to :meth:`WeightBudget.settle` when answered."""

    weight: int
    pool: Pool
    granted_at: float
    _entry: LogEntry
    settled: bool = False


@dataclass(slots=True)
class BudgetStats:
    """Cumulative counters of one budget (for metrics and the heartbeat)."""

    granted: int = 0
    weight_reserved: int = 0
    queued_grants: int = 0
    wait_seconds: float = 0.0
    corrected_up: int = 0
    corrected_down: int = 0
    last_server_used: int | None = None
    pauses: int = 0
    bans: int = 0
    refused_banned: int = 0


class WeightBudget:
    """Rolling-minute request-weight budget with a snapshot sub-budget, FIFO queueing, pause and ban.

    One instance per process, shared by every REST client of that process; it is bound to the running
    asyncio event loop. ``capacity`` is the most weight reserved in any rolling ``window`` seconds;
    ``snapshot_capacity`` the most of it that ``pool="snapshot"`` requests may hold. A request heavier
    than its capacity is let through alone, when the window is empty, rather than never.
    """

    def __init__(
        self,
        capacity: int,
        *,
        snapshot_capacity: int | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        wall_clock: Clock = time.time,
        window: float = WINDOW_SECONDS,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"weight capacity must be >= 1; got {capacity}")
        if snapshot_capacity is not None and not 1 <= snapshot_capacity <= capacity:
            raise ValueError(f"snapshot capacity must be between 1 and {capacity}; got {snapshot_capacity}")
        self.capacity = capacity
        self.snapshot_capacity = capacity if snapshot_capacity is None else snapshot_capacity
        self.stats = BudgetStats()
        self._log = WeightLog(window)
        self._clock = clock
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._queues: dict[Pool, deque[_Waiter]] = {"general": deque(), "snapshot": deque()}
        self._tickets = 0
        self._paused_until = float("-inf")
        self._banned_until = float("-inf")
        self._banned_until_ms = 0
        self._timer: asyncio.Task[None] | None = None
        self._timer_at = float("inf")

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        wall_clock: Clock = time.time,
    ) -> WeightBudget:
        """The process budget: ``usable_weight_per_minute``, snapshots at most ``resync_weight_share`` of it."""
        capacity = settings.usable_weight_per_minute
        snapshots = max(1, int(capacity * settings.resync_weight_share))
        return cls(capacity, snapshot_capacity=snapshots, clock=clock, sleep=sleep, wall_clock=wall_clock)

    # --- reading ---------------------------------------------------------------------------------------

    def used(self) -> int:
        """Weight counted in the current rolling window (answered, in flight and server corrections)."""
        self._log.prune(self._clock())
        return self._log.used

    def snapshot_used(self) -> int:
        """Weight the snapshot pool holds in the current rolling window."""
        self._log.prune(self._clock())
        return self._log.snapshot_used

    @property
    def queued(self) -> int:
        """Requests waiting for weight."""
        return sum(1 for q in self._queues.values() for w in q if not w.future.done())

    @property
    def in_flight(self) -> int:
        """Requests granted weight and not yet settled."""
        return self._log.in_flight

    def paused_for(self) -> float:
        """Seconds left of a 429 pause (0 when not paused)."""
        return max(0.0, self._paused_until - self._clock())

    def banned_for(self) -> float:
        """Seconds left of a 418 ban (0 when not banned)."""
        return max(0.0, self._banned_until - self._clock())

    @property
    def banned_until_ms(self) -> int:
        """End of the last 418 ban, epoch ms (0 when never banned)."""
        return self._banned_until_ms

    def snapshot(self) -> dict[str, float | int | None]:
        """Current state and cumulative counters as a flat, JSON-friendly dict."""
        state: dict[str, float | int | None] = {
            "capacity": self.capacity,
            "used": self.used(),
            "snapshot_capacity": self.snapshot_capacity,
            "snapshot_used": self._log.snapshot_used,
            "queued": self.queued,
            "in_flight": self._log.in_flight,
            "paused_for": self.paused_for(),
            "banned_for": self.banned_for(),
        }
        state.update(asdict(self.stats))
        return state

    # --- reserving -------------------------------------------------------------------------------------

    async def acquire(self, weight: int, *, pool: Pool = "general") -> Reservation:
        """Wait (FIFO within the budget) until ``weight`` fits, then reserve it.

        Raises IpBanned at once during a ban, and to every queued caller when a ban starts. A caller
        cancelled while waiting leaves the queue and holds no weight.
        """
        if weight < 0:
            raise ValueError(f"weight must be >= 0; got {weight}")
        self._check_ban()
        now = self._clock()
        self._tickets += 1
        waiter = _Waiter(self._tickets, weight, pool, now, asyncio.get_running_loop().create_future())
        self._queues[pool].append(waiter)
        self._kick()
        try:
            entry = await waiter.future
        except asyncio.CancelledError:
            fut = waiter.future
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._log.forget(fut.result(), self._clock())  # granted, but it will never be sent
            elif waiter in self._queues[pool]:
                self._queues[pool].remove(waiter)
            self._kick()
            raise
        return Reservation(weight, pool, entry.time, entry)

    def settle(self, reservation: Reservation, server_used: int | None) -> None:
        """Mark the request answered (or failed) and correct the log to the server's ``server_used``.

        ``server_used`` is the ``X-MBX-USED-WEIGHT-1M`` header of the response (None when absent or the
        request got no response; the reserved weight then stays counted). Settling twice is a no-op.
        """
        if reservation.settled:
            return
        reservation.settled = True
        up, down = self._log.answer(reservation._entry, server_used, self._clock())
        if server_used is not None and server_used >= 0:
            self.stats.last_server_used = server_used
        self.stats.corrected_up += up
        self.stats.corrected_down += down
        self._kick()

    def pause(self, seconds: float) -> None:
        """Stop granting weight for ``seconds`` (a 429: the limit is per IP, so every caller waits)."""
        until = self._clock() + max(0.0, seconds)
        if until > self._paused_until:
            self._paused_until = until
        self.stats.pauses += 1
        self._kick()

    def ban(self, seconds: float, until_ms: int | None = None) -> None:
        """Refuse every request for ``seconds`` (a 418); queued callers get IpBanned now.

        ``until_ms`` is the ban's end in epoch ms as Binance stated it; computed from the wall clock
        when not given.
        """
        now = self._clock()
        self._banned_until = max(self._banned_until, now + max(0.0, seconds))
        self._banned_until_ms = until_ms or int((self._wall_clock() + max(0.0, seconds)) * 1000)
        self.stats.bans += 1
        for queue in self._queues.values():
            while queue:
                waiter = queue.popleft()
                if not waiter.future.done():
                    waiter.future.set_exception(self._ban_error())
        self._cancel_timer()

    # --- internals -------------------------------------------------------------------------------------

    def _ban_error(self) -> IpBanned:
        left = self._banned_until - self._clock()
        return IpBanned(
            f"Binance banned this IP (418); no REST request is sent for another {left:.0f} s "
            f"(until {self._banned_until_ms} ms epoch)",
            self._banned_until_ms,
        )

    def _check_ban(self) -> None:
        if self._clock() < self._banned_until:
            self.stats.refused_banned += 1
            raise self._ban_error()

    def _eligible(self, waiter: _Waiter) -> bool:
        if waiter.pool != "snapshot":
            return True
        need = min(waiter.weight, self.snapshot_capacity)
        return self._log.snapshot_used + need <= self.snapshot_capacity

    def _heads(self) -> list[_Waiter]:
        heads = []
        for queue in self._queues.values():
            while queue and queue[0].future.done():  # cancelled callers
                queue.popleft()
            if queue:
                heads.append(queue[0])
        return heads

    def _grant(self) -> None:
        """Grant queued requests in ticket order while they fit; the oldest that does not fit blocks."""
        now = self._clock()
        self._log.prune(now)
        while True:
            heads = self._heads()
            if not heads or now < self._paused_until:
                return
            eligible = [w for w in heads if self._eligible(w)]
            if not eligible:
                return
            head = min(eligible, key=lambda w: w.ticket)
            if self._log.used + min(head.weight, self.capacity) > self.capacity:
                return
            self._queues[head.pool].popleft()
            entry = self._log.reserve(now, head.weight, head.pool)
            self.stats.granted += 1
            self.stats.weight_reserved += head.weight
            if now > head.since:
                self.stats.queued_grants += 1
                self.stats.wait_seconds += now - head.since
            head.future.set_result(entry)

    def _next_wake(self, now: float) -> float:
        """The earliest time the blocked queue head can change; only valid right after :meth:`_grant`."""
        if now < self._paused_until:
            return self._paused_until
        wake = float("inf")
        heads = self._heads()
        eligible = [w for w in heads if self._eligible(w)]
        for waiter in heads:
            if waiter not in eligible:
                need = min(waiter.weight, self.snapshot_capacity)
                excess = self._log.snapshot_used + need - self.snapshot_capacity
                wake = min(wake, self._log.free_at(excess, "snapshot"))
        if eligible:
            head = min(eligible, key=lambda w: w.ticket)
            excess = self._log.used + min(head.weight, self.capacity) - self.capacity
            wake = min(wake, self._log.free_at(excess))
        return wake

    def _has_waiters(self) -> bool:
        return bool(self._heads())

    def _cancel_timer(self) -> None:
        if self._timer is not None and not self._timer.done():
            self._timer.cancel()
        self._timer = None
        self._timer_at = float("inf")

    def _kick(self) -> None:
        """Grant what fits now; make sure one timer task wakes the queue when the next grant can happen."""
        self._grant()
        if not self._has_waiters():
            self._cancel_timer()
            return
        wake = self._next_wake(self._clock())
        if self._timer is not None and not self._timer.done() and wake >= self._timer_at:
            return
        self._cancel_timer()
        self._timer_at = wake
        self._timer = asyncio.get_running_loop().create_task(self._run_timer(), name="weight-budget-timer")

    async def _run_timer(self) -> None:
        # The only task that sleeps for the budget: with an injected fake sleep, time advances once per wake.
        while True:
            delay = self._timer_at - self._clock()
            if delay == float("inf"):
                log.error("weight budget queue is blocked with no wake time; %d queued", self.queued)
                delay = self._log.window
            await self._sleep(max(delay, 0.0) + _TICK)
            self._grant()
            if not self._has_waiters():
                self._timer = None
                self._timer_at = float("inf")
                return
            self._timer_at = self._next_wake(self._clock())
