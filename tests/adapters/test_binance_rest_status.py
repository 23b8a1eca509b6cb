"""The REST client's answer to Binance's non-fatal 4xx: 408 (backend timeout) is retried like a 5xx, 403 (the
WAF refused the request) pauses every caller like a 429 without Retry-After; a 400 stays an error."""

from __future__ import annotations

import asyncio

import pytest

from tapewatch.adapters.rest_session import WAF_PAUSE
from tapewatch.errors import BinanceRequestError, FeedError, RateLimited
from tests.adapters.rest_test_server import FakeClock, Reply, RestTestServer
from tests.adapters.test_binance_rest import TIME_BODY, btc_snapshot_body, client, run

DEPTH = "/fapi/v1/depth"
TIMEOUT_408 = Reply(408, b'{"code":-1007,"msg":"Timeout waiting for response from backend server."}')
WAF_403 = Reply(403, b"<html><body>403 Forbidden</body></html>")


def test_a_408_is_retried_with_backoff_and_the_snapshot_returns_a_400_is_not(
    server: RestTestServer, clock: FakeClock
) -> None:
    server.route(DEPTH, [TIMEOUT_408, TIMEOUT_408, Reply(body=btc_snapshot_body())], weight=20)

    async def main() -> None:
        async with client(server.url, clock) as rest:
            snapshot, resp = await rest.depth("BTCUSDT", 1000)
            assert resp.status == 200 and snapshot.last_update_id > 0 and snapshot.bids
            assert rest.stats.requests[("depth", "408")] == 2 and rest.stats.retries["depth"] == 2
            assert rest.stats.backoff_seconds == pytest.approx(sum(clock.sleeps))
            # a 400 (a bad symbol) stays the caller's error: not retried, no pause
            server.route(DEPTH, Reply(400, b'{"code":-1121,"msg":"Invalid symbol."}'), weight=20)
            with pytest.raises(BinanceRequestError, match="Invalid symbol") as err:
                await rest.depth("NOPEUSDT", 1000)
            assert err.value.status == 400 and rest.stats.retries["depth"] == 2
            assert rest.budget.stats.pauses == 0

    run(main())
    assert len(server.seen) == 4
    assert len(clock.sleeps) == 2 and 0 <= clock.sleeps[0] <= 0.5 and 0 <= clock.sleeps[1] <= 1.0


def test_a_408_on_every_attempt_gives_up_with_feed_error(server: RestTestServer, clock: FakeClock) -> None:
    server.route(DEPTH, TIMEOUT_408, weight=20)

    async def main() -> None:
        async with client(server.url, clock, max_retries=2) as rest:
            with pytest.raises(FeedError, match="HTTP 408 on all 3 attempts: Timeout waiting"):
                await rest.depth("BTCUSDT", 1000)

    run(main())
    assert len(server.seen) == 3


def test_a_403_pauses_every_caller_then_the_call_is_retried(server: RestTestServer, clock: FakeClock) -> None:
    server.route("/fapi/v1/time", [WAF_403, Reply(body=TIME_BODY)])
    server.route(DEPTH, Reply(body=btc_snapshot_body()), weight=20)
    start = clock.now

    async def main() -> None:
        async with client(server.url, clock) as rest:
            first = asyncio.create_task(rest.server_time())
            while rest.stats.waf_blocked == 0:  # noqa: ASYNC110 - the answer comes from the server thread
                await asyncio.sleep(0.001)
            snapshot, _ = await rest.depth("BTCUSDT", 1000)  # another caller waits out the pause too
            assert snapshot.bids
            server_time, _ = await first
            assert server_time.server_time == 1499827319559
            assert rest.stats.waf_blocked == 1 and rest.stats.rate_limited == 0
            assert rest.stats.retries["time"] == 1 and rest.budget.stats.pauses == 1
            assert rest.metrics()["waf_blocked"] == 1

    run(main())
    (t403, _), *after = [(s.time, s.path_and_query) for s in server.seen]
    assert t403 == start and WAF_PAUSE == 60.0
    assert len(after) == 2 and all(t >= start + WAF_PAUSE for t, _ in after)


def test_a_403_with_retry_after_and_on_every_attempt_raises_rate_limited(
    server: RestTestServer, clock: FakeClock
) -> None:
    server.route(DEPTH, Reply(403, b"{}", {"Retry-After": "5"}), weight=20)
    start = clock.now

    async def main() -> None:
        async with client(server.url, clock, max_retries=2) as rest:
            with pytest.raises(RateLimited, match="403 on all 3 attempts") as err:
                await rest.depth("BTCUSDT", 1000)
            assert err.value.retry_after == 5 and rest.stats.waf_blocked == 3

    run(main())
    assert [s.time - start for s in server.seen] == pytest.approx([0, 5, 10], abs=0.01)
