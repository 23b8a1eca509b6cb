"""The snapshot scheduler: coalescing, per-symbol spacing, retries, refusals, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from realtime.snapshots import SnapshotScheduler
from realtime.timebase import Timebase
from tapewatch.errors import BinanceRequestError, FeedError, IpBanned
from tapewatch.events import DepthSnapshot


@dataclass
class Answer:
    stream: str
    body: bytes


class FakeTime:
    """Monotonic time that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def wall_ms(self) -> int:
        return int(self.now * 1000)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)

    def timebase(self) -> Timebase:
        return Timebase(monotonic=self.monotonic, wall_ms=self.wall_ms, sleep=self.sleep)


async def run_until(scheduler: SnapshotScheduler, done: asyncio.Future[None]) -> None:
    task = asyncio.create_task(scheduler.run())
    try:
        await asyncio.wait_for(done, 5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def snap(i: int) -> DepthSnapshot:
    return DepthSnapshot(i, [(1.0, 1.0)], [(2.0, 1.0)])


def test_requests_coalesce_and_limits_follow_the_universe() -> None:
    asyncio.run(_test_requests_coalesce_and_limits_follow_the_universe())


async def _test_requests_coalesce_and_limits_follow_the_universe() -> None:
    calls: list[tuple[str, int]] = []
    delivered: list[str] = []
    done = asyncio.get_running_loop().create_future()

    async def fetch(symbol: str, limit: int) -> tuple[DepthSnapshot, Answer]:
        calls.append((symbol, limit))
        return snap(1), Answer(f"rest:/fapi/v1/depth?symbol={symbol}&limit={limit}", b"{}")

    def deliver(symbol: str, snapshot: DepthSnapshot, answer: Answer) -> None:  # type: ignore[override]
        delivered.append(symbol)
        if len(delivered) == 2:
            done.set_result(None)

    t = FakeTime()
    s = SnapshotScheduler(
        fetch, deliver, limit_for=lambda sym: 1000 if sym == "BTCUSDT" else 100, timebase=t.timebase()
    )
    for _ in range(5):
        s.request("BTCUSDT", "cold start")
    s.request("TAILUSDT", "cold start")
    await run_until(s, done)
    assert sorted(calls) == [("BTCUSDT", 1000), ("TAILUSDT", 100)]
    assert s.counters["coalesced"] == 4 and s.counters["fetched"] == 2


def test_resyncs_of_one_symbol_are_spaced_and_failures_retried() -> None:
    asyncio.run(_test_resyncs_of_one_symbol_are_spaced_and_failures_retried())


async def _test_resyncs_of_one_symbol_are_spaced_and_failures_retried() -> None:
    times: list[float] = []
    outcomes: list[Exception | None] = [FeedError("503"), None, None]
    done = asyncio.get_running_loop().create_future()
    t = FakeTime()

    async def fetch(symbol: str, limit: int) -> tuple[DepthSnapshot, Answer]:
        times.append(t.now)
        exc = outcomes.pop(0)
        if exc is not None:
            raise exc
        return snap(len(times)), Answer("rest:x", b"{}")

    delivered = []

    def deliver(symbol: str, snapshot: DepthSnapshot, answer: Answer) -> None:  # type: ignore[override]
        delivered.append(snapshot.last_update_id)
        if len(delivered) == 1:
            s.request("BTCUSDT", "gap")  # immediately needs another one
        else:
            done.set_result(None)

    s = SnapshotScheduler(
        fetch, deliver, limit_for=lambda _: 1000, min_interval=5.0, retry_delay=2.0, timebase=t.timebase()
    )
    s.request("BTCUSDT", "cold start")
    await run_until(s, done)
    assert s.counters["failed"] == 1
    assert delivered == [2, 3]
    # failure at t0, retry after >= max(retry 2 s, spacing 5 s), next resync 5 s after that
    assert times[1] - times[0] >= 5.0 and times[2] - times[1] >= 5.0


def test_refused_symbol_is_dropped_cancelled_is_skipped_and_ban_waits() -> None:
    asyncio.run(_test_refused_symbol_is_dropped_cancelled_is_skipped_and_ban_waits())


async def _test_refused_symbol_is_dropped_cancelled_is_skipped_and_ban_waits() -> None:
    t = FakeTime()
    calls: list[str] = []
    done = asyncio.get_running_loop().create_future()
    banned_once = [True]

    async def fetch(symbol: str, limit: int) -> tuple[DepthSnapshot, Answer]:
        calls.append(symbol)
        if symbol == "BADUSDT":
            raise BinanceRequestError("Invalid symbol.", 400, -1121)
        if symbol == "ETHUSDT" and banned_once:
            banned_once.clear()
            raise IpBanned("banned", until_ms=t.wall_ms() + 60_000)
        return snap(1), Answer("rest:x", b"{}")

    def deliver(symbol: str, snapshot: DepthSnapshot, answer: Answer) -> None:  # type: ignore[override]
        done.set_result(symbol)

    s = SnapshotScheduler(fetch, deliver, limit_for=lambda _: 5, workers=1, timebase=t.timebase())
    s.request("BADUSDT", "cold start")
    s.request("GONEUSDT", "cold start")
    s.cancel("GONEUSDT")
    s.request("ETHUSDT", "cold start")
    await run_until(s, done)
    assert calls == ["BADUSDT", "ETHUSDT", "ETHUSDT"]
    assert s.counters["rejected"] == 1
    assert max(t.sleeps) >= 60.0  # waited for the ban to end before trying again
    assert done.result() == "ETHUSDT"
