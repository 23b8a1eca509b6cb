"""The shared request-weight budget, on a fake clock: pacing, FIFO, sub-budget, corrections, pause, ban."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from tapewatch.adapters.weight_budget import Pool, Reservation, WeightBudget
from tapewatch.errors import IpBanned
from tapewatch.settings import Settings
from tests.adapters.rest_test_server import FakeClock

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def budget(clock: FakeClock, capacity: int = 100, snapshots: int | None = None) -> WeightBudget:
    return WeightBudget(
        capacity, snapshot_capacity=snapshots, clock=clock, sleep=clock.sleep, wall_clock=lambda: 0.0
    )


async def take(
    b: WeightBudget, weight: int, log: list[tuple[str, float]], name: str, pool: Pool = "general"
) -> None:
    r = await b.acquire(weight, pool=pool)
    log.append((name, b._clock()))
    b.settle(r, None)


def test_from_settings_uses_the_usable_share_and_the_resync_share() -> None:
    b = WeightBudget.from_settings(Settings())
    assert (b.capacity, b.snapshot_capacity) == (1920, 960)
    b = WeightBudget.from_settings(
        Settings(rest_weight_limit=1000, rest_weight_target=0.5, resync_weight_share=0.2)
    )
    assert (b.capacity, b.snapshot_capacity) == (500, 100)


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        WeightBudget(0)
    with pytest.raises(ValueError, match="snapshot capacity"):
        WeightBudget(10, snapshot_capacity=11)

    async def main() -> None:
        with pytest.raises(ValueError, match="weight must be >= 0"):
            await WeightBudget(10).acquire(-1)

    run(main())


def test_weight_is_granted_at_once_while_it_fits_and_freed_after_the_window() -> None:
    clock = FakeClock()

    async def main() -> None:
        b = budget(clock)
        for _ in range(4):
            b.settle(await b.acquire(25), None)
        assert b.used() == 100 and clock.sleeps == []
        clock.now += 59.9
        assert b.used() == 100
        clock.now += 0.1
        assert b.used() == 0

    run(main())


def test_queue_is_fifo_a_small_request_never_jumps_a_big_one() -> None:
    clock = FakeClock()
    log: list[tuple[str, float]] = []

    async def main() -> None:
        b = budget(clock, capacity=10)
        b.settle(await b.acquire(5), None)  # t=1000
        clock.now += 30
        b.settle(await b.acquire(3), None)  # t=1030: 8 of 10 used
        big = asyncio.create_task(take(b, 5, log, "big"))  # does not fit
        small = asyncio.create_task(take(b, 1, log, "small"))  # would fit, but "big" came first
        await asyncio.gather(big, small)
        assert b.stats.queued_grants == 2

    run(main())
    # both go when the 5 from t=1000 expire (t=1060), "big" first
    assert [name for name, _ in log] == ["big", "small"]
    assert log[0][1] == pytest.approx(1060, abs=0.01)
    assert log[1][1] == pytest.approx(1060, abs=0.01)


def test_snapshot_sub_budget_paces_snapshots_without_starving_other_callers() -> None:
    clock = FakeClock()
    log: list[tuple[str, float]] = []

    async def main() -> None:
        b = budget(clock, capacity=100, snapshots=40)
        snaps = [asyncio.create_task(take(b, 20, log, f"snap{i}", "snapshot")) for i in range(5)]
        await asyncio.sleep(0)
        assert [n for n, _ in log] == ["snap0", "snap1"] and b.queued == 3
        # other callers still get the remaining 60 at once
        await take(b, 60, log, "ticker")
        assert log[-1] == ("ticker", 1000.0)
        await asyncio.gather(*snaps)
        assert b.snapshot_used() <= 40

    run(main())
    times = {name: t for name, t in log}
    assert times["snap2"] == pytest.approx(1060, abs=0.01) and times["snap3"] == pytest.approx(1060, abs=0.01)
    assert times["snap4"] == pytest.approx(1120, abs=0.02)


def test_a_request_heavier_than_the_capacity_goes_alone_when_the_window_is_empty() -> None:
    clock = FakeClock()

    async def main() -> None:
        b = budget(clock, capacity=10)
        b.settle(await b.acquire(3), None)
        r = await b.acquire(40)
        assert clock.now == pytest.approx(1060, abs=0.01) and b.used() == 40
        b.settle(r, None)

    run(main())


def test_server_count_above_the_estimate_wins() -> None:
    clock = FakeClock()

    async def main() -> None:
        b = budget(clock)
        b.settle(await b.acquire(1), 95)  # another process on this IP used 94
        assert b.used() == 95 and b.stats.corrected_up == 94
        await b.acquire(10)
        assert clock.now == pytest.approx(1060, abs=0.01)

    run(main())


def test_server_count_below_the_estimate_wins_and_frees_waiters() -> None:
    clock = FakeClock()

    async def main() -> None:
        b = budget(clock)
        b.settle(await b.acquire(90), None)
        probe = await b.acquire(1)
        waiting = asyncio.create_task(b.acquire(50))
        await asyncio.sleep(0)
        assert not waiting.done()
        b.settle(probe, 5)  # the server's minute rolled over: it counts only 5
        await asyncio.sleep(0)
        assert waiting.done() and clock.now == 1000.0
        assert b.used() == 55 and b.stats.corrected_down == 86

    run(main())


def test_downward_correction_keeps_requests_still_in_flight() -> None:
    clock = FakeClock()

    async def main() -> None:
        b = budget(clock)
        slow = await b.acquire(30)
        fast = await b.acquire(1)
        b.settle(fast, 1)  # the server has not seen the slow one yet
        assert b.used() == 31 and b.in_flight == 1
        b.settle(slow, 31)
        b.settle(slow, 999)  # settling twice changes nothing
        assert b.used() == 31 and b.in_flight == 0

    run(main())


def test_pause_holds_every_caller_until_it_ends() -> None:
    clock = FakeClock()
    log: list[tuple[str, float]] = []

    async def main() -> None:
        b = budget(clock)
        b.pause(7)
        assert b.paused_for() == 7
        await asyncio.gather(*(take(b, 1, log, f"c{i}") for i in range(3)))

    run(main())
    assert [n for n, _ in log] == ["c0", "c1", "c2"]
    assert all(t == pytest.approx(1007, abs=0.01) for _, t in log)


def test_ban_refuses_new_and_queued_callers_until_it_ends() -> None:
    clock = FakeClock()

    async def main() -> None:
        b = budget(clock, capacity=10)
        b.settle(await b.acquire(10), None)
        queued = asyncio.create_task(b.acquire(5))
        await asyncio.sleep(0)
        b.ban(120, until_ms=1_700_000_120_000)
        with pytest.raises(IpBanned) as err:
            await queued
        assert err.value.until_ms == 1_700_000_120_000
        with pytest.raises(IpBanned, match="120 s"):
            await b.acquire(1)
        assert b.stats.refused_banned == 1 and b.queued == 0
        clock.now += 120
        r = await b.acquire(1)
        assert isinstance(r, Reservation) and b.banned_for() == 0

    run(main())


def test_cancelled_waiters_leave_the_queue_and_hold_no_weight() -> None:
    clock = FakeClock()

    async def never(seconds: float) -> None:
        await asyncio.Event().wait()  # time stands still: only the cancellations free weight

    async def main() -> None:
        b = WeightBudget(10, clock=clock, sleep=never)
        first = await b.acquire(10)
        queued = asyncio.create_task(b.acquire(4))
        behind = asyncio.create_task(b.acquire(6))
        await asyncio.sleep(0)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert b.queued == 1
        # settle with a server count that frees everything: "behind" is granted, then cancelled
        # before it runs; its weight must be given back.
        b.settle(first, 0)
        behind.cancel()
        with pytest.raises(asyncio.CancelledError):
            await behind
        assert b.used() == 0 and b.in_flight == 0

    run(main())


def test_snapshot_reports_state_and_counters() -> None:
    clock = FakeClock()

    async def main() -> dict[str, float | int | None]:
        b = budget(clock, snapshots=50)
        b.settle(await b.acquire(20, pool="snapshot"), 42)
        return b.snapshot()

    snap = run(main())
    assert snap["used"] == 42 and snap["snapshot_used"] == 20 and snap["capacity"] == 100
    assert snap["granted"] == 1 and snap["weight_reserved"] == 20 and snap["last_server_used"] == 42
