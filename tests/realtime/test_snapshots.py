"""The snapshot scheduler: coalescing, per-symbol spacing, failures handed back, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from realtime.snapshots import RestAnswer, SnapshotScheduler
from realtime.timebase import Timebase
from tapewatch.errors import BinanceRequestError, FeedError, IpBanned, RateLimited
from tapewatch.events import DepthSnapshot, DepthUpdate
from tapewatch.market import Market
from tapewatch.market_depth import SnapshotNeeded
from tapewatch.parse import Frame
from tapewatch.streams import Kind


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

    def deliver(symbol: str, snapshot: DepthSnapshot, answer: RestAnswer) -> None:
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


def test_resyncs_of_one_symbol_are_spaced_and_a_failure_is_handed_back() -> None:
    asyncio.run(_test_resyncs_of_one_symbol_are_spaced_and_a_failure_is_handed_back())


async def _test_resyncs_of_one_symbol_are_spaced_and_a_failure_is_handed_back() -> None:
    times: list[float] = []
    outcomes: list[Exception | None] = [FeedError("503"), None, None]
    done = asyncio.get_running_loop().create_future()
    t = FakeTime()
    failures: list[tuple[str, str, float]] = []

    async def fetch(symbol: str, limit: int) -> tuple[DepthSnapshot, Answer]:
        times.append(t.now)
        exc = outcomes.pop(0)
        if exc is not None:
            raise exc
        return snap(len(times)), Answer("rest:x", b"{}")

    delivered = []

    def deliver(symbol: str, snapshot: DepthSnapshot, answer: RestAnswer) -> None:
        delivered.append(snapshot.last_update_id)
        if len(delivered) == 1:
            s.request("BTCUSDT", "gap")  # immediately needs another one
        else:
            done.set_result(None)

    def failed(symbol: str, why: str, wait: float) -> None:
        failures.append((symbol, why, wait))
        s.request(
            symbol, "retry after a failed snapshot"
        )  # as the market's next diff does, after its backoff

    s = SnapshotScheduler(
        fetch, deliver, limit_for=lambda _: 1000, failed=failed, min_interval=5.0, timebase=t.timebase()
    )
    s.request("BTCUSDT", "cold start")
    await run_until(s, done)
    assert s.counters["failed"] == 1 and failures == [("BTCUSDT", "FeedError: 503", 0.0)]
    assert delivered == [2, 3]
    # the retry is spaced like any resync of the symbol (5 s), and so is the next one
    assert times[1] - times[0] >= 5.0 and times[2] - times[1] >= 5.0


def test_every_failure_is_handed_back_once_with_its_wait_and_never_kills_a_worker() -> None:
    asyncio.run(_test_every_failure_is_handed_back_once_with_its_wait_and_never_kills_a_worker())


async def _test_every_failure_is_handed_back_once_with_its_wait_and_never_kills_a_worker() -> None:
    """A refused symbol, a ban, a rate limit and a bug in the fetch each reach ``failed`` once (the market backs
    the symbol off); nothing is retried here, and the one worker goes on serving (a cancelled request is
    skipped)."""
    t = FakeTime()
    calls: list[str] = []
    done = asyncio.get_running_loop().create_future()
    errors: dict[str, Exception] = {
        "BADUSDT": BinanceRequestError("Invalid symbol.", 400, -1121),
        "BANUSDT": IpBanned("banned", until_ms=t.wall_ms() + 60_000),
        "SLOWUSDT": RateLimited("429 on all attempts", 30.0),
        "BUGUSDT": RuntimeError("boom"),
    }
    failures: dict[str, tuple[str, float]] = {}

    async def fetch(symbol: str, limit: int) -> tuple[DepthSnapshot, Answer]:
        calls.append(symbol)
        if symbol in errors:
            raise errors[symbol]
        return snap(1), Answer("rest:x", b"{}")

    def deliver(symbol: str, snapshot: DepthSnapshot, answer: RestAnswer) -> None:
        done.set_result(symbol)

    def failed(symbol: str, why: str, wait: float) -> None:
        failures[symbol] = (why, wait)

    s = SnapshotScheduler(
        fetch, deliver, limit_for=lambda _: 5, failed=failed, workers=1, timebase=t.timebase()
    )
    for symbol in errors:
        s.request(symbol, "cold start")
    s.request("GONEUSDT", "cold start")
    s.cancel("GONEUSDT")
    s.request("ETHUSDT", "cold start")
    await run_until(s, done)
    assert calls == [*errors, "ETHUSDT"]  # each failure once: no retry here
    assert done.result() == "ETHUSDT"
    assert failures == {
        "BADUSDT": ("refused by Binance: Invalid symbol.", 0.0),
        "BANUSDT": ("IpBanned: banned", 60.0),
        "SLOWUSDT": ("RateLimited: 429 on all attempts", 30.0),
        "BUGUSDT": ("RuntimeError: boom", 0.0),
    }
    assert s.counters["rejected"] == 1 and s.counters["failed"] == 3 and s.in_flight == 0
    assert t.sleeps == []  # no worker sat out a ban or a backoff


def test_a_book_whose_snapshot_failed_asks_again_after_the_backoff_and_syncs() -> None:
    asyncio.run(_test_a_book_whose_snapshot_failed_asks_again_after_the_backoff_and_syncs())


async def _test_a_book_whose_snapshot_failed_asks_again_after_the_backoff_and_syncs() -> None:
    """The scheduler wired to a market as the service wires them: Binance refuses the first fetch (a 400 that
    used to drop the symbol for the session); the book's diffs ask again after 5 s of exchange time, the
    second fetch succeeds and the book syncs."""
    t = FakeTime()
    market = Market()
    answers: list[Exception | DepthSnapshot] = [
        BinanceRequestError("Invalid symbol.", 400, -1121),
        DepthSnapshot(12, [(100.0, 1.0)], [(101.0, 1.0)]),
    ]
    settled: list[str] = []
    changed = asyncio.Event()

    async def fetch(symbol: str, limit: int) -> tuple[DepthSnapshot, Answer]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer, Answer(f"rest:/fapi/v1/depth?symbol={symbol}&limit={limit}", b"{}")

    def deliver(symbol: str, snapshot: DepthSnapshot, answer: RestAnswer) -> None:
        market.on_frame(Frame(t.wall_ms(), answer.stream, symbol, Kind.SNAPSHOT, snapshot))
        settled.append("delivered")
        changed.set()

    def failed(symbol: str, why: str, wait: float) -> None:
        market.snapshot_failed(symbol, why, wait)
        settled.append("failed")
        changed.set()

    def on_diff(first: int, last: int, event_time: int) -> None:
        ev = DepthUpdate("BTCUSDT", event_time, event_time, first, last, first - 1, [(100.0, 2.0)], [])
        request = market.on_frame(Frame(event_time, "btcusdt@depth@100ms", "BTCUSDT", Kind.DEPTH, ev))
        if isinstance(request, SnapshotNeeded):
            s.request(request.symbol, request.reason)

    async def settle(n: int) -> None:
        while len(settled) < n:
            changed.clear()
            await asyncio.wait_for(changed.wait(), 5)

    s = SnapshotScheduler(fetch, deliver, limit_for=lambda _: 1000, failed=failed, timebase=t.timebase())
    task = asyncio.create_task(s.run())
    try:
        on_diff(10, 11, 1_000)  # cold start: asks
        await settle(1)
        assert settled == ["failed"] and s.counters["rejected"] == 1
        for i in range(1, 50):  # 4.9 s of diffs: the book backs off
            on_diff(10 + i, 10 + i, 1_000 + 100 * i)
        assert s.counters["requested"] == 1 and market.totals()["snapshot_failed"] == 1
        on_diff(60, 60, 6_000)  # 5 s after the failure: asks again
        await settle(2)
        assert settled == ["failed", "delivered"] and s.counters["requested"] == 2
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    book = market.symbols["BTCUSDT"].book
    assert book.synced and book.last_update_id == 60 and market.book_usable("BTCUSDT")
