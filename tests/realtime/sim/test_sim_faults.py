"""Each injectable fault happens: from Python, from the HTTP control endpoint, and on a schedule."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import orjson
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from realtime.sim import FaultConfig, SimExchange, parse_duration, parse_faults
from tapewatch.book import NeedsResync, OrderBook
from tapewatch.events import DepthSnapshot, DepthUpdate
from tapewatch.parse import FrameDecoder

from .support import connect, run


async def _until_closed(ws: object) -> ConnectionClosed:
    try:
        async with asyncio.timeout(5):
            while True:
                await ws.recv()  # type: ignore[attr-defined]
    except ConnectionClosed as exc:
        return exc
    raise AssertionError("not closed")


def test_drop_connections_cuts_every_socket_without_a_close_frame() -> None:
    async def scenario() -> tuple[int, list[ConnectionClosed]]:
        async with (
            SimExchange(port=0, symbols=3, speed=10) as sim,
            connect(f"{sim.ws_public_url}/ws/btcusdt@bookTicker") as a,
            connect(f"{sim.ws_market_url}/ws/btcusdt@aggTrade") as b,
        ):
            await a.recv()
            dropped = sim.faults.drop_connections()
            return dropped, [await _until_closed(a), await _until_closed(b)]

    dropped, closed = run(scenario())
    assert dropped == 2
    assert all(exc.rcvd is None for exc in closed)  # abnormal closure (1006)


@pytest.mark.parametrize("client_lag_ms", [0, 8_000])
def test_gap_makes_the_clients_book_see_a_sequence_gap(client_lag_ms: int) -> None:
    """A gap on a synced book is a sequence gap, however far behind the client reads its stream.

    A client on a loaded machine reads diffs long after they were sent: those queued before its snapshot
    are dropped as old. So the gap is injected once the book is synced (injected after a fixed number of
    diffs, it could eat the very diff that spans the snapshot: "snapshot too old", not "gap"), and the diffs
    are read up to a simulated time past it (a fixed number could all be older than the gap).
    ``client_lag_ms`` makes such a client at will: it fetches its snapshot that much simulated time after
    its first diff, about one queued diff per 100 ms."""

    async def next_diff(ws: object, decoder: FrameDecoder) -> DepthUpdate:
        payload = await ws.recv(decode=False)  # type: ignore[attr-defined]
        frame = decoder.decode_payload(0, "btcusdt@depth@100ms", payload)
        assert frame is not None and isinstance(frame.event, DepthUpdate)
        return frame.event

    async def scenario() -> tuple[list[str], list[str], int]:
        decoder = FrameDecoder()
        book = OrderBook("BTCUSDT")
        async with (
            SimExchange(port=0, symbols=3, speed=10) as sim,
            connect(f"{sim.ws_public_url}/ws/btcusdt@depth@100ms") as ws,
            httpx.AsyncClient() as rest,
        ):
            # the procedure: buffer the stream (its first diff is in the book's buffer), then the snapshot
            book.apply(await next_diff(ws, decoder))
            await sim.wait_until(sim.now_ms + client_lag_ms)  # the diffs meanwhile queue up unread
            snap = (
                await rest.get(f"{sim.rest_url}/fapi/v1/depth", params={"symbol": "BTCUSDT", "limit": 1000})
            ).content
            event = decoder.decode_payload(0, "rest:/fapi/v1/depth?symbol=BTCUSDT&limit=1000", snap)
            assert event is not None and isinstance(event.event, DepthSnapshot)
            outcome, synced_diffs = book.load_snapshot(event.event), 0
            while not isinstance(outcome, NeedsResync) and synced_diffs < 5:  # synced, then 5 diffs applied
                outcome = book.apply(await next_diff(ws, decoder))
                synced_diffs += book.synced
            if isinstance(outcome, NeedsResync):
                return [outcome.reason], [], book.dropped
            gap_at = sim.now_ms
            sim.faults.gap("BTCUSDT")  # the next diff sent is lost
            after: list[str] = []
            while True:  # every diff sent until 3 simulated seconds after the gap (each queued one first)
                diff = await next_diff(ws, decoder)
                outcome = book.apply(diff)
                if isinstance(outcome, NeedsResync):
                    after.append(outcome.reason)
                if diff.event_time >= gap_at + 3_000:
                    return [], after, book.dropped

    before, after, dropped = run(scenario())
    assert before == []  # nothing out of sync before the gap: a client following the procedure syncs
    assert len(after) == 1 and after[0].startswith("gap"), after
    if client_lag_ms:
        assert dropped > 40  # the lagging client dropped more old diffs than the 40 a fixed count read


async def _streams_for(ws: object, seconds: float) -> list[str]:
    """The stream names of the frames received during the next ``seconds``."""
    out: list[str] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            out.append(orjson.loads(await asyncio.wait_for(ws.recv(), left))["stream"])  # type: ignore[attr-defined]
        except TimeoutError:
            break
    return out


def test_stale_stream_goes_quiet_while_the_connection_and_other_streams_go_on() -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        async with SimExchange(port=0, symbols=3, speed=20) as sim:
            url = f"{sim.ws_public_url}/stream?streams=btcusdt@bookTicker/ethusdt@bookTicker"
            async with connect(url) as ws:
                await ws.recv()
                sim.faults.stale("btcusdt@bookTicker", seconds=0.6)
                await _streams_for(ws, 0.1)  # frames already on the way
                during = await _streams_for(ws, 0.4)
                await _streams_for(ws, 0.2)
                after = await _streams_for(ws, 0.4)
                return during, after

    during, after = run(scenario())
    assert set(during) == {"ethusdt@bookTicker"} and len(during) > 5
    assert set(after) == {"btcusdt@bookTicker", "ethusdt@bookTicker"}


def test_malformed_frames_are_counted_by_tapewatchs_decoder_under_their_reason() -> None:
    async def scenario() -> tuple[dict[str, int], list[int]]:
        decoder = FrameDecoder()
        sent = []
        async with (
            SimExchange(port=0, symbols=3, speed=10) as sim,
            connect(f"{sim.ws_market_url}/stream?streams=btcusdt@aggTrade") as ws,
        ):
            await ws.recv()
            for kind in ("invalid_json", "nan_price", "negative_qty", "unknown_stream"):
                sent.append(sim.faults.malformed(kind, "btcusdt@aggTrade"))
            for _ in range(30):
                decoder.decode_ws_frame(0, await ws.recv())
        return dict(decoder.rejected), sent

    rejected, sent = run(scenario())
    assert sent == [1, 1, 1, 1]
    assert rejected == {"malformed_json": 1, "bad_value": 2, "unknown_stream": 1}


def test_rest_errors_and_slow_snapshots() -> None:
    async def scenario() -> tuple[list[httpx.Response], float, float]:
        async with (
            SimExchange(port=0, symbols=3, speed=20) as sim,
            httpx.AsyncClient(base_url=sim.rest_url) as c,
        ):
            sim.faults.rest_error(503, count=2)
            out = [await c.get("/fapi/v1/time") for _ in range(3)]
            sim.faults.rest_error(429)
            out.append(await c.get("/fapi/v1/ping"))
            sim.faults.rest_error(418, path="/fapi/v1/depth")
            out.append(await c.get("/fapi/v1/ping"))
            out.append(await c.get("/fapi/v1/depth", params={"symbol": "BTCUSDT"}))
            # a fault for one symbol leaves another symbol's request alone and waits for its own
            sim.faults.rest_error(503, path="/fapi/v1/openInterest", symbol="ETHUSDT")
            out.append(await c.get("/fapi/v1/openInterest", params={"symbol": "BTCUSDT"}))
            out.append(await c.get("/fapi/v1/openInterest", params={"symbol": "ETHUSDT"}))
            out.append(await c.get("/fapi/v1/openInterest", params={"symbol": "ETHUSDT"}))
            sim.faults.slow_snapshots(0.5, count=1)
            t0 = time.monotonic()
            slow = await c.get("/fapi/v1/depth", params={"symbol": "BTCUSDT", "limit": 5})
            t1 = time.monotonic()
            fast = await c.get("/fapi/v1/depth", params={"symbol": "BTCUSDT", "limit": 5})
            t2 = time.monotonic()
            assert slow.status_code == fast.status_code == 200
            return out, t1 - t0, t2 - t1

    out, slow, fast = run(scenario())
    assert [r.status_code for r in out] == [503, 503, 200, 429, 200, 418, 200, 503, 200]
    assert out[0].json()["code"] == -1001
    assert int(out[3].headers["retry-after"]) > 0 and int(out[5].headers["retry-after"]) > 0
    assert slow >= 0.5 > fast


def test_lifetime_can_be_shortened_on_open_connections() -> None:
    async def scenario() -> int | None:
        async with (
            SimExchange(port=0, symbols=2, speed=10) as sim,
            connect(f"{sim.ws_public_url}/ws/btcusdt@bookTicker") as ws,
        ):
            await ws.recv()
            sim.faults.cut_connections_after(0.2)
            exc = await _until_closed(ws)
            return exc.rcvd.code if exc.rcvd else None

    assert run(scenario()) == 1001


def test_a_hold_refuses_reconnects_until_released_or_over() -> None:
    """A dropped connection, then an outage: every handshake fails (HTTP 503) while REST is answered, until
    the hold is released (from Python or over HTTP) or its time is up."""

    async def handshake(sim: SimExchange) -> int | None:
        try:
            async with connect(f"{sim.ws_market_url}/ws/btcusdt@aggTrade"):
                return None
        except InvalidStatus as exc:
            return exc.response.status_code

    async def scenario() -> dict[str, object]:
        async with (
            SimExchange(port=0, symbols=2, speed=10) as sim,
            httpx.AsyncClient(base_url=sim.rest_url) as c,
            connect(f"{sim.ws_public_url}/ws/btcusdt@bookTicker") as ws,
        ):
            await ws.recv()
            sim.faults.hold()
            out: dict[str, object] = {"dropped": sim.faults.drop_connections()}
            out["closed"] = (await _until_closed(ws)).rcvd
            out["held"] = [await handshake(sim), (await c.get("/fapi/v1/ping")).status_code]
            out["state"] = (await c.get("/sim/faults")).json()["held"]
            sim.faults.release()
            out["released"] = await handshake(sim)
            await c.post("/sim/faults", params={"action": "hold"})
            out["held_over_http"] = await handshake(sim)
            await c.post("/sim/faults", params={"action": "release"})
            out["released_over_http"] = await handshake(sim)
            sim.faults.hold(0.3)
            out["timed"] = await handshake(sim)
            await asyncio.sleep(0.35)
            out["over"] = await handshake(sim)
            out["counts"] = sim.faults.counts
            return out

    out = run(scenario())
    assert out["dropped"] == 1 and out["closed"] is None  # cut without a close frame
    assert out["held"] == [503, 200] and out["state"] is True
    assert out["released"] is None
    assert (out["held_over_http"], out["released_over_http"]) == (503, None)
    assert (out["timed"], out["over"]) == (503, None)
    assert out["counts"] == {"hold": 3, "drop": 1}


def test_http_control_endpoint_triggers_faults_from_another_process() -> None:
    async def scenario() -> dict[str, httpx.Response]:
        async with (
            SimExchange(port=0, symbols=3, speed=10) as sim,
            httpx.AsyncClient(base_url=sim.rest_url) as c,
            connect(f"{sim.ws_public_url}/ws/btcusdt@bookTicker") as ws,
        ):
            await ws.recv()
            out = {
                "gap": await c.post("/sim/faults", params={"action": "gap", "symbol": "BTCUSDT"}),
                "rest": await c.post(
                    "/sim/faults", params={"action": "rest_error", "status": "502", "symbol": "BTCUSDT"}
                ),
                "miss": await c.get("/fapi/v1/ping"),  # no symbol: not this fault's
                "hit": await c.get("/fapi/v1/depth", params={"symbol": "BTCUSDT", "limit": 5}),
                "state": await c.get("/sim/faults"),
                "bad": await c.post("/sim/faults", params={"action": "explode"}),
                "drop": await c.post("/sim/faults", params={"action": "drop"}),
                "status": await c.get("/sim/status"),
                "episodes": await c.get("/sim/episodes"),
            }
            await _until_closed(ws)
            return out

    r = run(scenario())
    assert r["gap"].status_code == 200 and "btcusdt@depth@100ms" in r["gap"].json()["pending_gaps"]
    assert r["rest"].json()["rest_errors"] == [
        {"status": 502, "count": 1, "path": "/fapi/", "symbol": "BTCUSDT"}
    ]
    assert r["miss"].status_code == 200 and r["hit"].status_code == 502
    assert r["state"].json()["counts"] == {"gap": 1, "rest_error": 1}
    assert r["bad"].status_code == 400 and "unknown action" in r["bad"].json()["error"]
    assert r["drop"].json() == {"dropped": 1}
    assert r["status"].json()["symbols"] == 3
    assert r["episodes"].json() == []


def test_scheduled_faults_from_the_config_happen() -> None:
    config = FaultConfig(gap_every=0.05, malformed_every=0.05, rest_error_rate=1.0)

    async def scenario() -> tuple[dict[str, int], int]:
        async with (
            SimExchange(port=0, symbols=3, speed=10, faults=config) as sim,
            connect(f"{sim.ws_public_url}/ws/btcusdt@bookTicker"),
            httpx.AsyncClient() as c,
        ):
            await asyncio.sleep(0.4)
            status = (await c.get(f"{sim.rest_url}/fapi/v1/ping")).status_code
            return dict(sim.faults.counts), status

    counts, status = run(scenario())
    assert counts["gap"] >= 2 and counts["malformed"] >= 2
    assert status in (500, 502, 503, 504)


def test_fault_specs_and_durations_parse() -> None:
    config = parse_faults(
        "gap=30s, drop=5m,stale=2m,stale-for=20s,malformed=1m,rest5xx=0.02,slow-snapshot=2s,cut=1h"
    )
    assert config == FaultConfig(
        drop_every=300, gap_every=30, stale_every=120, stale_for=20, malformed_every=60, rest_error_rate=0.02,
        slow_snapshot=2, max_connection_age=3600,
    )  # fmt: skip
    assert parse_faults("") == FaultConfig()
    assert [parse_duration(x) for x in ("250ms", "30", "2h", "1d")] == [0.25, 30, 7200, 86400]
    for bad in ("boom=1s", "gap", "rest5xx=2", "gap=-1s", "cut=soon"):
        with pytest.raises(ValueError):
            parse_faults(bad)
    with pytest.raises(ValueError, match="unknown malformed kind"):
        SimExchange(port=0, symbols=1).faults.malformed("garbage")
    with pytest.raises(ValueError, match="status"):
        SimExchange(port=0, symbols=1).faults.rest_error(200)
    assert json.dumps(SimExchange(port=0, symbols=1).faults.state())
