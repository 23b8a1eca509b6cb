"""REST endpoints of the running simulator: shapes, headers, weights, errors, 429 then 418."""

from __future__ import annotations

from typing import Any, cast

import httpx
import msgspec
import pytest

from realtime.sim import SimExchange
from realtime.sim.ratelimit import WeightLimiter
from realtime.sim.rest import Reply, answer
from realtime.sim.venue import Venue
from tapewatch.trade_gaps import FILL_MAX_PAGES, FILL_PAGE_SIZE

from .support import run


async def _get(sim: SimExchange, path: str, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=sim.rest_url, timeout=10) as client:
        return await client.get(path, params=params)


def test_endpoints_answer_binance_shapes_with_the_weight_header() -> None:
    async def scenario() -> dict[str, httpx.Response]:
        async with SimExchange(port=0, symbols=12, speed=20) as sim:
            await sim.wait_until(sim.now_ms + 3_000)  # a few simulated seconds of trades
            out = {
                "ping": await _get(sim, "/fapi/v1/ping"),
                "time": await _get(sim, "/fapi/v1/time"),
                "info": await _get(sim, "/fapi/v1/exchangeInfo"),
                "t1": await _get(sim, "/fapi/v1/ticker/24hr", symbol="ETHUSDT"),
                "tall": await _get(sim, "/fapi/v1/ticker/24hr"),
                "depth": await _get(sim, "/fapi/v1/depth", symbol="BTCUSDT", limit=20),
                "klines": await _get(sim, "/fapi/v1/klines", symbol="BTCUSDT", interval="1h", limit=24),
                "oi": await _get(sim, "/fapi/v1/openInterest", symbol="BTCUSDT"),
                "agg": await _get(sim, "/fapi/v1/aggTrades", symbol="BTCUSDT", limit=5),
                "bt": await _get(sim, "/fapi/v1/ticker/bookTicker", symbol="BTCUSDT"),
                "btall": await _get(sim, "/fapi/v1/ticker/bookTicker"),
            }
            out["time_now"] = httpx.Response(200, json={"now": sim.now_ms})
            return out

    r = run(scenario())
    for name, resp in r.items():
        assert resp.status_code == 200, (name, resp.text)
        if name != "time_now":
            assert resp.headers["content-type"].startswith("application/json")
            assert int(resp.headers["x-mbx-used-weight-1m"]) >= 1
    assert r["ping"].json() == {}
    assert abs(r["time"].json()["serverTime"] - r["time_now"].json()["now"]) < 60_000
    info = r["info"].json()
    assert info["rateLimits"][0] == {
        "rateLimitType": "REQUEST_WEIGHT",
        "interval": "MINUTE",
        "intervalNum": 1,
        "limit": 2400,
    }
    tradable = [
        s["symbol"] for s in info["symbols"]
        if s["contractType"] == "PERPETUAL" and s["status"] == "TRADING" and s["quoteAsset"] == "USDT"
    ]  # fmt: skip
    assert len(tradable) == 12 and len(info["symbols"]) > 12  # the others are filtered out by a client
    btc = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
    price_filter = next(f for f in btc["filters"] if f["filterType"] == "PRICE_FILTER")
    lot = next(f for f in btc["filters"] if f["filterType"] == "LOT_SIZE")
    assert price_filter["tickSize"] == "0.1" and lot["stepSize"] == "0.001"
    t1 = r["t1"].json()
    assert set(t1) >= {
        "symbol",
        "priceChange",
        "priceChangePercent",
        "lastPrice",
        "volume",
        "quoteVolume",
        "openTime",
        "closeTime",
        "count",
    }
    assert len(r["tall"].json()) == 12
    depth = r["depth"].json()
    assert list(depth) == ["lastUpdateId", "E", "T", "bids", "asks"]
    assert len(depth["bids"]) == 20 and all(
        isinstance(p, str) and isinstance(q, str) for p, q in depth["bids"]
    )
    assert float(depth["bids"][0][0]) < float(depth["asks"][0][0])
    assert [float(b[0]) for b in depth["bids"]] == sorted((float(b[0]) for b in depth["bids"]), reverse=True)
    klines = r["klines"].json()
    assert len(klines) == 24 and len(klines[0]) == 12
    open_time, o, h, low, c, v, close_time, q, n, tv, tq, ignore = klines[-1]
    assert close_time == open_time + 3_600_000 - 1 and ignore == "0" and isinstance(n, int)
    assert float(low) <= float(o) <= float(h) and float(low) <= float(c) <= float(h)
    assert all(isinstance(x, str) for x in (v, q, tv, tq))
    assert set(r["oi"].json()) == {"openInterest", "symbol", "time"}
    agg = r["agg"].json()
    assert len(agg) == 5 and set(agg[0]) == {"a", "p", "q", "f", "l", "T", "m"}
    assert set(r["bt"].json()) >= {"symbol", "bidPrice", "bidQty", "askPrice", "askQty", "time"}
    assert len(r["btall"].json()) == 12


@pytest.mark.parametrize(
    ("path", "params", "weight"),
    [
        ("/fapi/v1/ping", {}, 1),
        ("/fapi/v1/exchangeInfo", {}, 1),
        ("/fapi/v1/ticker/24hr", {"symbol": "BTCUSDT"}, 1),
        ("/fapi/v1/ticker/24hr", {}, 40),
        ("/fapi/v1/depth", {"symbol": "BTCUSDT", "limit": 5}, 2),
        ("/fapi/v1/depth", {"symbol": "BTCUSDT", "limit": 50}, 2),
        ("/fapi/v1/depth", {"symbol": "BTCUSDT", "limit": 100}, 5),
        ("/fapi/v1/depth", {"symbol": "BTCUSDT", "limit": 500}, 10),
        ("/fapi/v1/depth", {"symbol": "BTCUSDT", "limit": 1000}, 20),
        ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 99}, 1),
        ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 100}, 2),
        ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 1000}, 5),
        ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 1500}, 10),
        ("/fapi/v1/aggTrades", {"symbol": "BTCUSDT"}, 20),
        ("/fapi/v1/ticker/bookTicker", {}, 5),
        ("/fapi/v1/depth", {"symbol": "NOPEUSDT"}, 10),  # refused, but charged like Binance
    ],
)
def test_each_request_costs_binances_weight(path: str, params: dict[str, Any], weight: int) -> None:
    async def scenario() -> tuple[int, int]:
        async with SimExchange(port=0, symbols=3, speed=20) as sim:
            first = await _get(sim, "/fapi/v1/time")
            second = await _get(sim, path, **params)
            return int(first.headers["x-mbx-used-weight-1m"]), int(second.headers["x-mbx-used-weight-1m"])

    before, after = run(scenario())
    assert after - before == weight


def test_bad_requests_get_binances_error_codes() -> None:
    async def scenario() -> list[httpx.Response]:
        async with SimExchange(port=0, symbols=3, speed=20) as sim:
            return [
                await _get(sim, "/fapi/v1/depth", symbol="NOPEUSDT"),
                await _get(sim, "/fapi/v1/ticker/24hr", symbol="NOPEUSDT"),
                await _get(sim, "/fapi/v1/depth", symbol="BTCUSDT", limit=7),
                await _get(sim, "/fapi/v1/klines", symbol="BTCUSDT", interval="7m"),
                await _get(sim, "/fapi/v1/klines", symbol="BTCUSDT", interval="1m", limit=1501),
                await _get(sim, "/fapi/v1/depth"),
                await _get(sim, "/fapi/v1/depth", symbol="BTCUSDT", limit="ten"),
                await _get(sim, "/fapi/v1/nothing"),
                await _get(sim, "/elsewhere"),
                await _get(
                    sim, "/fapi/v1/klines", symbol="BTCUSDT", interval="1m", startTime=2000, endTime=1000
                ),
                await _get(sim, "/fapi/v1/aggTrades", symbol="BTCUSDT", startTime=2000, endTime=1999),
            ]

    r = run(scenario())
    assert [x.status_code for x in r] == [400, 400, 400, 400, 400, 400, 400, 404, 404, 400, 400]
    assert r[0].json() == {"code": -1121, "msg": "Invalid symbol."}
    assert r[1].json()["code"] == -1121
    assert r[2].json() == {"code": -4021, "msg": "7 is not valid depth limit"}
    assert r[3].json() == {"code": -1120, "msg": "Invalid interval."}
    assert r[4].json()["code"] == -1130
    assert r[5].json()["code"] == -1102
    assert r[6].json()["code"] == -1100
    assert all("x-mbx-used-weight-1m" in x.headers for x in r[:8])
    assert r[9].json() == r[10].json() == {"code": -1023, "msg": "Start time is greater than end time."}


def test_over_the_weight_limit_429_then_hammering_on_418() -> None:
    async def scenario() -> list[httpx.Response]:
        async with SimExchange(port=0, symbols=3, speed=20, weight_limit=100) as sim:
            out = []
            async with httpx.AsyncClient(base_url=sim.rest_url) as client:
                for _ in range(12):
                    out.append(await client.get("/fapi/v1/aggTrades", params={"symbol": "BTCUSDT"}))
            return out

    r = run(scenario())
    codes = [x.status_code for x in r]
    assert codes[:5] == [200] * 5
    assert codes[5] == 429
    assert r[5].json()["code"] == -1003 and int(r[5].headers["retry-after"]) >= 1
    assert 418 in codes
    ban = r[codes.index(418)]
    assert ban.json()["code"] == -1003 and "banned until" in ban.json()["msg"]
    assert int(ban.headers["retry-after"]) >= 60
    assert codes[codes.index(418) :] == [418] * (12 - codes.index(418))


def test_weight_window_rolls_and_bans_expire_on_the_injected_clock() -> None:
    now = [0.0]
    limiter = WeightLimiter(limit=100, clock=lambda: now[0], ban_after=2, ban_seconds=120)
    assert limiter.charge(60).status == 200
    now[0] = 30.0
    assert limiter.charge(40).status == 200
    refused = limiter.charge(10)
    assert refused.status == 429 and refused.retry_after == 30  # the first 60 leave the window at t=60
    now[0] = 61.0
    assert limiter.charge(10).status == 200  # backed off long enough: allowed again
    assert limiter.peek() == 50
    assert limiter.charge(60).status == 429
    assert limiter.charge(60).status == 429  # one violation during the back-off
    ban = limiter.charge(60)  # second violation: banned
    assert ban.status == 418 and ban.retry_after == 120
    now[0] = 61.0 + 119
    assert limiter.charge(1).status == 418
    now[0] = 61.0 + 121
    assert limiter.charge(1).status == 200


def test_agg_trades_of_a_history_minute_match_its_kline_and_a_range_over_an_hour_is_refused() -> None:
    start = 1_709_683_200_000  # 2024-03-06 00:00 UTC
    venue = Venue(seed=3, symbols=3, start_ms=start)
    minute = start - 90 * 60_000  # in the history before the start: no real trades there
    params = {"symbol": "BTCUSDT", "interval": "1m", "startTime": str(minute), "limit": "1"}
    kline = msgspec.json.decode(cast(Reply, answer(venue, "/fapi/v1/klines", params)).body)[0]
    o, h, low, c = (float(x) for x in kline[1:5])

    def trades(lo: int, hi: int) -> list[dict[str, Any]]:
        q = {"symbol": "BTCUSDT", "startTime": str(lo), "endTime": str(hi)}
        reply = answer(venue, "/fapi/v1/aggTrades", q)
        assert isinstance(reply, Reply) and reply.status == 200, reply
        rows: list[dict[str, Any]] = msgspec.json.decode(reply.body)
        return rows

    whole = trades(minute, minute + 59_999)
    prices = [float(t["p"]) for t in whole]
    assert (prices[0], max(prices), min(prices), prices[-1]) == (o, h, low, c)
    assert all(minute <= t["T"] < minute + 60_000 for t in whole)
    assert [t["a"] for t in whole] == sorted({t["a"] for t in whole})
    later = trades(minute + 20_000, minute + 59_999)  # inclusive bounds: only the part after 20 s
    assert later == [t for t in whole if t["T"] >= minute + 20_000] and 0 < len(later) < len(whole)
    # the history's ids stay below the live trades' (fromId paging runs forward across the start)
    venue.step(lambda _: True)
    while not len(venue.publisher.recent[0]):
        venue.step(lambda _: True)
    assert whole[-1]["a"] < (venue.publisher.recent[0].first_id or 0)
    refused = answer(
        venue,
        "/fapi/v1/aggTrades",
        {"symbol": "BTCUSDT", "startTime": str(minute), "endTime": str(minute + 3_600_000)},
    )
    assert isinstance(refused, Reply) and refused.status == 400
    assert msgspec.json.decode(refused.body)["code"] == -1127


def _agg_trades(venue: Venue, **params: Any) -> list[dict[str, Any]]:
    reply = answer(
        venue, "/fapi/v1/aggTrades", {"symbol": "BTCUSDT", **{k: str(v) for k, v in params.items()}}
    )
    assert isinstance(reply, Reply) and reply.status == 200, reply
    rows: list[dict[str, Any]] = msgspec.json.decode(reply.body)
    return rows


def test_from_id_serves_the_widest_gap_tapewatch_fills_and_counts_older_requests() -> None:
    """fromId paging reaches back FILL_MAX_PAGES * FILL_PAGE_SIZE ids (the widest gap tapewatch fills); an
    older fromId starts at the oldest kept trade, and that shortfall is counted, not silent."""
    venue = Venue(2, 1, 1_767_571_200_000)
    sym = venue.market.symbols[0]
    widest = FILL_MAX_PAGES * FILL_PAGE_SIZE
    for _ in range(15):  # 15 steps of 1 000 taker fills each, as a busy minute would bring
        first, t = sym.agg_id, venue.now_ms
        sym.trades.extend(
            (first + k, sym.top[0], 1 + k % 5, sym.trade_id + k, sym.trade_id + k, t, k % 2 == 0)
            for k in range(1000)
        )
        sym.agg_id += 1000
        sym.trade_id += 1000
        venue.step(lambda _: False)
    newest = sym.agg_id - 1
    from_id = newest - widest + 1
    page = _agg_trades(venue, fromId=from_id, limit=1000)
    assert [r["a"] for r in page] == list(range(from_id, from_id + 1000))
    assert venue.agg_trades_from_id_too_old == 0
    oldest = venue.publisher.recent[0].first_id
    assert oldest is not None and oldest <= from_id
    older = _agg_trades(venue, fromId=oldest - 5, limit=3)
    assert [r["a"] for r in older] == [oldest, oldest + 1, oldest + 2]
    assert venue.agg_trades_from_id_too_old == 1
    assert [r["a"] for r in _agg_trades(venue, limit=2)] == [newest - 1, newest]
    t = page[10]["T"]
    assert all(t <= r["T"] <= t + 50 for r in _agg_trades(venue, startTime=t, endTime=t + 50, limit=1000))
