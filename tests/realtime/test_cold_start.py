"""Cold start of the whole market within the REST weight budget (virtual time, real scheduler and budget).

800 symbols ask for a snapshot at once: the universe's 30 get 1000 levels (weight 20), the long tail 100
levels (weight 5). All must be synced in well under 10 minutes while no rolling minute uses more than 50 %
of Binance's 2400 limit; a lone resync afterwards must not wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Callable

from realtime.snapshots import SnapshotScheduler
from realtime.timebase import Timebase
from tapewatch.adapters.weight_budget import WeightBudget
from tapewatch.events import DepthSnapshot
from tapewatch.settings import SNAPSHOT_WEIGHTS, load_settings


class VirtualTime:
    """A clock that jumps to the next timer whenever every task is waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self.now

    def wall_ms(self) -> int:
        return int(1_700_000_000_000 + self.now * 1000)

    def wall_s(self) -> float:
        return self.wall_ms() / 1000

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + max(0.0, seconds), next(self._seq), future))
        await future

    async def run_until(self, done: Callable[[], bool], limit: float) -> None:
        while not done():
            for _ in range(20):  # let every runnable task reach its next wait
                await asyncio.sleep(0)
            if done():
                return
            while self._timers and self._timers[0][2].cancelled():
                heapq.heappop(self._timers)
            assert self._timers, "deadlock: nothing is running and no timer is set"
            at, _, future = heapq.heappop(self._timers)
            assert at <= limit, f"not done after {limit} s of virtual time"
            self.now = max(self.now, at)
            future.set_result(None)


class Answer:
    stream = "rest:x"
    body = b"{}"


def test_whole_market_cold_start_fits_the_budget() -> None:
    asyncio.run(_cold_start())


async def _cold_start() -> None:
    settings = load_settings()
    vt = VirtualTime()
    budget = WeightBudget.from_settings(settings, clock=vt.monotonic, sleep=vt.sleep, wall_clock=vt.wall_s)
    grants: list[tuple[float, int]] = []
    delivered: dict[str, float] = {}
    universe = {f"TOP{i}USDT" for i in range(30)}
    symbols = [f"TOP{i}USDT" for i in range(30)] + [f"TAIL{i}USDT" for i in range(770)]

    async def fetch(symbol: str, limit: int) -> tuple[DepthSnapshot, Answer]:
        weight = SNAPSHOT_WEIGHTS[limit]
        reservation = await budget.acquire(weight, pool="snapshot")
        grants.append((vt.now, weight))
        await vt.sleep(0.2)  # the request's round trip
        budget.settle(reservation, None)
        return DepthSnapshot(1, [], []), Answer()

    def deliver(symbol: str, snapshot: DepthSnapshot, answer: Answer) -> None:  # type: ignore[override]
        delivered[symbol] = vt.now

    scheduler = SnapshotScheduler(
        fetch,
        deliver,
        limit_for=lambda s: settings.snapshot_limit if s in universe else settings.tail_snapshot_limit,
        timebase=Timebase(monotonic=vt.monotonic, wall_ms=vt.wall_ms, sleep=vt.sleep),
    )
    task = asyncio.create_task(scheduler.run())
    try:
        for symbol in symbols:
            scheduler.request(symbol, "cold start")
        await vt.run_until(lambda: len(delivered) == len(symbols), limit=600)
        cold_start_seconds = vt.now
        # one symbol's resync once the storm is over
        vt.now += 61  # a quiet minute later (no one drives the clock here, so move it directly)
        asked = vt.now
        scheduler.request("TOP0USDT", "gap")
        await vt.run_until(lambda: delivered["TOP0USDT"] > asked, limit=asked + 5)
        single_resync = delivered["TOP0USDT"] - asked
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    total = sum(w for _, w in grants)
    assert total == 30 * 20 + 770 * 5 + 20  # the storm, then the lone resync
    # 4450 weight at a snapshot share of 960/min: about 4.6 minutes, well under 10
    assert cold_start_seconds < 330, cold_start_seconds
    half = settings.rest_weight_limit // 2
    for start, _ in grants:  # every rolling minute that starts at a grant
        in_window = sum(w for t, w in grants if start <= t < start + 60)
        assert in_window <= half, (start, in_window)
    assert single_resync < 5
