"""The Binance REST client against a real HTTP server on 127.0.0.1: pacing, corrections and every failure."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx
import pytest

from tapewatch.adapters.binance_rest import BinanceRest
from tapewatch.adapters.rest_session import RestResponse
from tapewatch.adapters.weight_budget import WeightBudget
from tapewatch.errors import BinanceRequestError, FeedError, IpBanned, RateLimited
from tapewatch.settings import Settings
from tests.adapters.rest_test_server import FakeClock, Reply, RestTestServer, closed_port
from tests.helpers import FIXTURES, USDM_HFTBACKTEST, recording_lines

T = TypeVar("T")
WALL = 1_700_000_000.0  # fixed wall clock (epoch seconds)
TIME_BODY = b'{"serverTime":1499827319559}'


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def client(
    server_url: str,
    clock: FakeClock,
    *,
    capacity: int = 1920,
    snapshots: int = 960,
    max_retries: int = 3,
    timeout: float = 5.0,
) -> BinanceRest:
    budget = WeightBudget(
        capacity, snapshot_capacity=snapshots, clock=clock, sleep=clock.sleep, wall_clock=lambda: WALL
    )
    clock.idle = lambda: budget.in_flight == 0
    return BinanceRest(
        server_url,
        budget,
        timeout=timeout,
        max_retries=max_retries,
        sleep=clock.sleep,
        wall_clock=lambda: WALL,
        rng=random.Random(7),
    )


def btc_snapshot_body() -> bytes:
    for line in recording_lines(USDM_HFTBACKTEST):
        if b'"stream":"rest:' in line[:80]:
            return line[line.index(b'"data":') + 7 : -1]
    raise AssertionError("no snapshot in the recording")


def windows_max(times_weights: list[tuple[float, int]], window: float = 60.0) -> int:
    """The largest total weight in any rolling window (t - window, t] ending at a request."""
    return max(sum(w for s, w in times_weights if t - window < s <= t) for t, _ in times_weights)


# --- pacing ----------------------------------------------------------------------------------------------


def test_300_concurrent_depth_1000_are_queued_and_paced_under_the_budget(
    server: RestTestServer, clock: FakeClock
) -> None:
    body = (FIXTURES / "usdt_futures_depth.json").read_bytes()  # small: this test is about pacing
    server.route("/fapi/v1/depth", Reply(body=body), weight=20)
    server.route("/fapi/v1/time", Reply(body=TIME_BODY), weight=1)
    start = clock.now

    async def main() -> tuple[list[float], BinanceRest]:
        async with client(server.url, clock) as rest:
            resyncs = [asyncio.create_task(rest.depth("BTCUSDT", 1000)) for _ in range(300)]
            await asyncio.sleep(0)
            # with 252 snapshots queued, other callers are not starved
            _, time_resp = await rest.server_time()
            assert time_resp.status == 200 and clock.now == start
            results = await asyncio.gather(*resyncs)
            assert all(snap.last_update_id == 1027024 for snap, _ in results)
            assert all(resp.body == body for _, resp in results)
            return [s.time for s in server.seen if s.path_and_query.startswith("/fapi/v1/depth")], rest

    depth_times, rest = run(main())
    assert len(depth_times) == 300
    # no rolling minute holds more than the snapshot share (960 = 48 snapshots), let alone the budget
    assert windows_max([(t, 20) for t in depth_times]) <= 960
    assert windows_max([(s.time, s.weight) for s in server.seen]) <= 1920
    # 48 at once, then 48 more each minute: 7 rounds, the last after 6 minutes
    assert sorted(depth_times)[47] == start and sorted(depth_times)[48] > start + 59.9
    assert max(depth_times) - start == pytest.approx(360, abs=0.1)
    assert rest.budget.stats.queued_grants == 252 and rest.budget.stats.wait_seconds > 252 * 59
    assert rest.stats.requests[("depth", "200")] == 300


def test_the_servers_weight_count_corrects_the_estimate_both_ways(
    server: RestTestServer, clock: FakeClock
) -> None:
    server.route("/fapi/v1/time", [Reply(body=TIME_BODY, headers={"X-MBX-USED-WEIGHT-1M": "1915"})], weight=1)
    server.route("/fapi/v1/ticker/24hr", Reply(body=b"[]"), weight=40)
    start = clock.now

    async def main() -> None:
        async with client(server.url, clock) as rest:
            await rest.server_time()  # estimate 1 -> the server says 1915 (another process on this IP)
            assert rest.budget.used() == 1915
            await rest.ticker_24hr()  # weight 40 does not fit under 1920 until that minute is over
            assert clock.now == pytest.approx(start + 60, abs=0.01)
            assert rest.budget.used() == 40  # the server's own count (its window restarted)

            # downward: the estimate holds weight the server has already forgotten
            hog = await rest.budget.acquire(1800)
            rest.budget.settle(hog, None)
            server.route("/fapi/v1/time", Reply(body=TIME_BODY, headers={"X-MBX-USED-WEIGHT-1M": "3"}))
            before = clock.now
            await rest.server_time()
            assert rest.budget.used() == 3
            await rest.ticker_24hr()
            assert clock.now == before  # went at once

    run(main())


def test_missing_or_garbage_weight_header_leaves_the_estimate(
    server: RestTestServer, clock: FakeClock
) -> None:
    server.report_weight = False
    server.route(
        "/fapi/v1/time",
        [Reply(body=TIME_BODY), Reply(body=TIME_BODY, headers={"X-MBX-USED-WEIGHT-1M": "lots"})],
    )

    async def main() -> None:
        async with client(server.url, clock) as rest:
            _, resp = await rest.server_time()
            assert resp.used_weight is None and rest.budget.used() == 1
            _, resp = await rest.server_time()
            assert resp.used_weight is None and rest.budget.used() == 2

    run(main())


# --- 429 and 418 -----------------------------------------------------------------------------------------


def test_429_pauses_every_caller_for_retry_after_then_retries(
    server: RestTestServer, clock: FakeClock
) -> None:
    limited = Reply(429, b'{"code":-1003,"msg":"Too many requests."}', {"Retry-After": "7"})
    server.route("/fapi/v1/time", [limited, Reply(body=TIME_BODY)])
    server.route("/fapi/v1/openInterest", Reply(body=b'{"openInterest":"1.5","symbol":"BTCUSDT","time":1}'))
    start = clock.now

    async def main() -> BinanceRest:
        async with client(server.url, clock) as rest:
            first = asyncio.create_task(rest.server_time())
            while rest.stats.rate_limited == 0:  # noqa: ASYNC110 - the answer comes from the server thread
                await asyncio.sleep(0.001)
            other, _ = await rest.open_interest("BTCUSDT")  # another caller, after the 429
            assert other.open_interest == 1.5
            server_time, _ = await first
            assert server_time.server_time == 1499827319559
            return rest

    rest = run(main())
    (t429, _), *after = [(s.time, s.path_and_query) for s in server.seen]
    assert t429 == start
    assert len(after) == 2 and all(t >= start + 7 for t, _ in after)
    assert rest.stats.rate_limited == 1 and rest.stats.retries["time"] == 1
    assert rest.stats.requests[("time", "429")] == 1 and rest.budget.stats.pauses == 1


def test_429_on_every_attempt_raises_rate_limited(server: RestTestServer, clock: FakeClock) -> None:
    server.route(
        "/fapi/v1/time", Reply(429, b'{"code":-1003,"msg":"Too many requests."}', {"Retry-After": "3"})
    )

    async def main() -> None:
        async with client(server.url, clock, max_retries=2) as rest:
            with pytest.raises(RateLimited) as err:
                await rest.server_time()
            assert err.value.retry_after == 3 and rest.stats.rate_limited == 3

    run(main())
    assert len(server.seen) == 3


def test_418_blocks_every_caller_until_the_ban_ends(server: RestTestServer, clock: FakeClock) -> None:
    ban_msg = b'{"code":-1003,"msg":"Way too much request weight used; IP banned until 1700000120000."}'
    server.route("/fapi/v1/time", [Reply(418, ban_msg, {"Retry-After": "120"}), Reply(body=TIME_BODY)])
    server.route("/fapi/v1/depth", Reply(body=btc_snapshot_body()), weight=20)

    async def main() -> None:
        async with client(server.url, clock, capacity=100, snapshots=20) as rest:
            await rest.depth("BTCUSDT")  # fills the snapshot share: the next snapshot queues
            queued = asyncio.create_task(rest.depth("BTCUSDT"))
            await asyncio.sleep(0)
            with pytest.raises(IpBanned, match="IP banned until 1700000120000") as err:
                await rest.server_time()
            assert err.value.until_ms == 1_700_000_120_000
            with pytest.raises(IpBanned):
                await queued  # the queued caller is refused, not sent later
            for call in (rest.server_time(), rest.exchange_info(), rest.depth("ETHUSDT", 5)):
                with pytest.raises(IpBanned):
                    await call
            assert len(server.seen) == 2  # nothing sent during the ban
            clock.now += 120
            time, _ = await rest.server_time()
            assert time.server_time == 1499827319559
            assert rest.stats.banned == 1 and rest.budget.stats.refused_banned == 3

    run(main())


# --- retries -----------------------------------------------------------------------------------------------


def test_5xx_is_retried_with_full_jitter_backoff_then_succeeds(
    server: RestTestServer, clock: FakeClock
) -> None:
    busy = Reply(503, b'{"code":-1001,"msg":"Internal error; unable to process your request."}')
    server.route("/fapi/v1/time", [busy, Reply(502, b"<html>bad gateway</html>"), Reply(body=TIME_BODY)])

    async def main() -> BinanceRest:
        async with client(server.url, clock) as rest:
            time, resp = await rest.server_time()
            assert time.server_time == 1499827319559 and resp.status == 200
            return rest

    rest = run(main())
    assert len(server.seen) == 3 and rest.stats.retries["time"] == 2
    backoffs = [s for s in clock.sleeps]
    assert len(backoffs) == 2 and 0 <= backoffs[0] <= 0.5 and 0 <= backoffs[1] <= 1.0
    assert rest.stats.backoff_seconds == pytest.approx(sum(backoffs))


def test_5xx_on_every_attempt_gives_up_with_feed_error(server: RestTestServer, clock: FakeClock) -> None:
    server.route("/fapi/v1/time", Reply(500, b'{"code":-1000,"msg":"An unknown error occured."}'))

    async def main() -> None:
        async with client(server.url, clock, max_retries=2) as rest:
            with pytest.raises(FeedError, match=r"HTTP 500 on all 3 attempts: An unknown error"):
                await rest.server_time()

    run(main())
    assert len(server.seen) == 3


def test_timeouts_are_retried_then_raise_feed_error(server: RestTestServer, clock: FakeClock) -> None:
    server.route("/fapi/v1/time", [Reply(body=TIME_BODY, delay=2.0), Reply(body=TIME_BODY)])

    async def main() -> None:
        async with client(server.url, clock, timeout=0.05) as rest:
            time, _ = await rest.server_time()  # the slow answer times out, the retry is fast
            assert time.server_time == 1499827319559
            assert rest.stats.requests[("time", "timeout")] == 1
            server.route("/fapi/v1/time", Reply(body=TIME_BODY, delay=2.0))
            with pytest.raises(FeedError, match="timeout on all 4 attempts") as err:
                await rest.server_time()
            assert isinstance(err.value.__cause__, httpx.TimeoutException)

    run(main())


def test_connection_refused_is_retried_then_raises_feed_error(clock: FakeClock) -> None:
    async def main() -> None:
        with closed_port() as port:
            async with client(f"http://127.0.0.1:{port}", clock, max_retries=2) as rest:
                with pytest.raises(FeedError, match="connection_error on all 3 attempts"):
                    await rest.exchange_info()
                assert rest.stats.requests[("exchangeInfo", "connection_error")] == 3
                assert rest.budget.in_flight == 0

    run(main())


# --- request errors and bad bodies ------------------------------------------------------------------------


def test_400_invalid_symbol_raises_binance_request_error_without_retry(
    server: RestTestServer, clock: FakeClock
) -> None:
    server.route("/fapi/v1/depth", Reply(400, b'{"code":-1121,"msg":"Invalid symbol."}'))

    async def main() -> None:
        async with client(server.url, clock) as rest:
            with pytest.raises(BinanceRequestError, match="Invalid symbol") as err:
                await rest.depth("NOPEUSDT", 100)
            assert (err.value.status, err.value.code) == (400, -1121)

    run(main())
    assert server.paths() == ["/fapi/v1/depth?symbol=NOPEUSDT&limit=100"]


def test_a_4xx_without_binance_json_still_raises_a_clear_error(
    server: RestTestServer, clock: FakeClock
) -> None:
    async def main() -> None:
        async with client(server.url, clock) as rest:
            with pytest.raises(BinanceRequestError, match="HTTP 404, code None: <html>Not Found") as err:
                await rest.ping()
            assert err.value.code is None

    run(main())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"lastUpdateId": 1, "bids": [["1.0", "2.0"]', "malformed JSON body"),
        (b"<html>maintenance</html>", "malformed JSON body"),
        (b'{"bids": [], "asks": []}', "unexpected body.*lastUpdateId"),
        (b'{"lastUpdateId": 1, "bids": [["NaN", "1"]], "asks": []}', "unexpected body"),
        (b'{"lastUpdateId": 1, "bids": [["-5", "1"]], "asks": []}', "unexpected body"),
    ],
)
def test_bad_2xx_bodies_raise_feed_error_and_are_counted(
    server: RestTestServer, clock: FakeClock, body: bytes, message: str
) -> None:
    server.route("/fapi/v1/depth", Reply(body=body), weight=2)
    captured: list[RestResponse] = []

    async def main() -> BinanceRest:
        async with client(server.url, clock) as rest:
            rest.on_response = captured.append
            with pytest.raises(FeedError, match=message):
                await rest.depth("BTCUSDT", 5)
            return rest

    rest = run(main())
    assert rest.stats.malformed["depth"] == 1 and len(server.seen) == 1 and captured == []


def test_bad_arguments_fail_before_anything_is_sent(server: RestTestServer, clock: FakeClock) -> None:
    async def main() -> None:
        async with client(server.url, clock) as rest:
            with pytest.raises(ValueError, match="depth limit must be one of 5, 10, 20"):
                await rest.depth("BTCUSDT", 7)
            with pytest.raises(ValueError, match="not a Binance symbol"):
                await rest.depth("BTCUSDT&limit=5", 5)
            with pytest.raises(ValueError, match="kline interval"):
                await rest.klines("BTCUSDT", "7m")
            with pytest.raises(ValueError, match="klines limit"):
                await rest.klines("BTCUSDT", "1m", limit=1501)
            with pytest.raises(ValueError, match="shorter than 1 hour"):
                await rest.agg_trades("BTCUSDT", start_ms=0, end_ms=3_600_000)
            with pytest.raises(ValueError, match="aggTrades limit"):
                await rest.agg_trades("BTCUSDT", limit=0)
            assert rest.budget.used() == 0

    run(main())
    assert server.seen == []


def test_a_failing_on_response_hook_does_not_fail_the_call(server: RestTestServer, clock: FakeClock) -> None:
    server.route("/fapi/v1/time", Reply(body=TIME_BODY))

    def broken(resp: RestResponse) -> None:
        raise OSError("disk full")

    async def main() -> None:
        async with client(server.url, clock) as rest:
            rest.on_response = broken
            time, _ = await rest.server_time()
            assert time.server_time == 1499827319559 and rest.stats.callback_errors == 1
            metrics = rest.metrics()
            assert metrics["requests"] == {"time 200": 1} and metrics["callback_errors"] == 1
            assert metrics["budget"]["used"] == 1

    run(main())


def test_from_settings_uses_the_rest_url_timeout_retries_and_budget(server: RestTestServer) -> None:
    server.route("/fapi/v1/time", [Reply(503, b"{}"), Reply(body=TIME_BODY)])
    settings = Settings(binance_rest_url=server.url + "/", rest_max_retries=1, rest_timeout=3)

    async def main() -> None:
        async def no_wait(seconds: float) -> None:
            return None

        async with BinanceRest.from_settings(settings, sleep=no_wait) as rest:
            assert rest.budget.capacity == 1920 and rest.budget.snapshot_capacity == 960
            time, resp = await rest.server_time()
            assert time.server_time == 1499827319559 and resp.path_and_query == "/fapi/v1/time"

    run(main())
