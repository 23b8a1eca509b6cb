"""Reconnect backoff (full jitter, healthy reset) and the pacer, on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from realtime.backoff import Backoff
from realtime.pacer import Pacer
from realtime.timebase import Timebase


def test_ceiling_doubles_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 30, healthy_after=60, random=lambda: 1.0)
    delays = [backoff.next_delay(now=0) for _ in range(9)]
    assert delays == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


def test_full_jitter_draws_between_zero_and_the_ceiling() -> None:
    draws = iter([0.0, 0.25, 0.999])
    backoff = Backoff(1, 100, healthy_after=60, random=lambda: next(draws))
    assert backoff.next_delay(0) == 0.0
    assert backoff.next_delay(0) == 0.5  # 0.25 * 2
    assert backoff.next_delay(0) == pytest.approx(3.996)  # 0.999 * 4


def test_a_healthy_connection_resets_the_backoff() -> None:
    backoff = Backoff(1, 100, healthy_after=60, random=lambda: 1.0)
    for _ in range(4):
        backoff.next_delay(0)
    backoff.connected(now=100)
    assert backoff.next_delay(now=130) == 16  # up only 30 s: not healthy, keeps growing
    backoff.connected(now=200)
    assert backoff.next_delay(now=260) == 1  # up 60 s: starts over
    assert backoff.next_delay(now=261) == 2


def test_many_failures_do_not_overflow() -> None:
    backoff = Backoff(0.5, 30, healthy_after=60, random=lambda: 1.0)
    for _ in range(5000):
        delay = backoff.next_delay(0)
    assert delay == 30


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="base and cap"):
        Backoff(0, 1, healthy_after=1, random=lambda: 0.5)


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def timebase(self) -> Timebase:
        return Timebase(monotonic=lambda: self.now, wall_ms=lambda: int(self.now * 1000), sleep=self.sleep)


def test_pacer_spaces_actions_in_call_order() -> None:
    clock = FakeTime()
    pacer = Pacer(0.5, clock.timebase())
    assert pacer.reserve(10.0) == 0
    assert pacer.reserve(10.0) == 0.5
    assert pacer.reserve(10.1) == pytest.approx(0.9)
    assert pacer.reserve(20.0) == 0  # idle for long: no debt


def test_pacer_wait_sleeps_only_when_needed() -> None:
    clock = FakeTime()
    pacer = Pacer(1 / 3, clock.timebase())

    async def main() -> list[float]:
        starts = []
        for _ in range(4):
            await pacer.wait()
            starts.append(clock.now)
        return starts

    starts = asyncio.run(main())
    assert starts == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert len(clock.slept) == 3


def test_pacer_with_zero_interval_never_waits() -> None:
    pacer = Pacer(0)
    assert [pacer.reserve(5.0) for _ in range(3)] == [0, 0, 0]
    with pytest.raises(ValueError):
        Pacer(-1)
