"""Websocket protocol of the running simulator: paths, routing, envelopes, control messages, limits, pings."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from realtime.sim import FaultConfig, SimExchange

from .support import connect, run


async def _frames(ws: ClientConnection, n: int) -> list[Any]:
    out: list[Any] = []
    async with asyncio.timeout(5):
        while len(out) < n:
            out.append(orjson.loads(await ws.recv()))
    return out


async def _nothing_within(ws: ClientConnection, seconds: float) -> bool:
    try:
        await asyncio.wait_for(ws.recv(), seconds)
    except TimeoutError:
        return True
    return False


def test_raw_frames_are_bare_payloads_and_combined_frames_are_wrapped() -> None:
    async def scenario() -> tuple[list[Any], list[Any]]:
        async with (
            SimExchange(port=0, symbols=4, speed=20) as sim,
            connect(f"{sim.ws_public_url}/ws/btcusdt@bookTicker") as raw,
            connect(f"{sim.ws_public_url}/stream?streams=btcusdt@bookTicker/ethusdt@depth@100ms") as combined,
        ):
            return await _frames(raw, 5), await _frames(combined, 10)

    raw, combined = run(scenario())
    assert all(f["e"] == "bookTicker" and f["s"] == "BTCUSDT" for f in raw)
    assert list(raw[0]) == ["e", "u", "s", "b", "B", "a", "A", "T", "E"]
    assert {f["stream"] for f in combined} == {"btcusdt@bookTicker", "ethusdt@depth@100ms"}
    assert all(list(f) == ["stream", "data"] for f in combined)
    depth = next(f["data"] for f in combined if f["stream"] == "ethusdt@depth@100ms")
    assert list(depth) == ["e", "E", "T", "s", "U", "u", "pu", "b", "a"]


def test_streams_on_the_wrong_path_are_silently_never_delivered() -> None:
    async def scenario() -> tuple[bool, bool, list[Any]]:
        async with (
            SimExchange(port=0, symbols=4, speed=20) as sim,
            connect(f"{sim.ws_public_url}/ws/btcusdt@aggTrade") as wrong_trades,
            connect(f"{sim.ws_market_url}/ws/btcusdt@depth@100ms") as wrong_depth,
            connect(f"{sim.ws_market_url}/ws/btcusdt@aggTrade") as right,
        ):
            got = await _frames(right, 5)
            return await _nothing_within(wrong_trades, 0.3), await _nothing_within(wrong_depth, 0.01), got

    no_trades, no_depth, got = run(scenario())
    assert no_trades and no_depth
    assert all(f["e"] == "aggTrade" for f in got)


def test_subscribe_list_unsubscribe_replies_and_effects() -> None:
    async def scenario() -> dict[str, Any]:
        async with SimExchange(port=0, symbols=4, speed=20) as sim, connect(f"{sim.ws_market_url}/ws") as ws:
            out: dict[str, Any] = {"idle": await _nothing_within(ws, 0.2)}
            await ws.send(
                json.dumps(
                    {"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade", "btcusdt@kline_1m"], "id": 1}
                )
            )
            out["subscribe"] = orjson.loads(await ws.recv())
            out["data"] = await _frames(ws, 5)
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
            await ws.send(
                json.dumps(
                    {"method": "UNSUBSCRIBE", "params": ["btcusdt@aggTrade", "btcusdt@kline_1m"], "id": 3}
                )
            )
            replies: list[Any] = []
            async with asyncio.timeout(5):
                while len(replies) < 2:
                    msg = orjson.loads(await ws.recv())
                    if "id" in msg:
                        replies.append(msg)
            out["list"], out["unsubscribe"] = replies
            out["quiet_after"] = await _nothing_within(ws, 0.3)
            return out

    r = run(scenario())
    assert r["idle"]
    assert r["subscribe"] == {"result": None, "id": 1}
    assert {f["e"] for f in r["data"]} <= {"aggTrade", "kline"}
    assert r["list"] == {"result": ["btcusdt@aggTrade", "btcusdt@kline_1m"], "id": 2}
    assert r["unsubscribe"] == {"result": None, "id": 3}
    assert r["quiet_after"]


def test_bad_control_messages_get_error_replies_and_the_combined_property_switches_framing() -> None:
    async def scenario() -> list[Any]:
        async with SimExchange(port=0, symbols=4, speed=20) as sim, connect(f"{sim.ws_market_url}/ws") as ws:
            out = []
            for msg in (
                "{not json",
                json.dumps({"method": "PUBLISH", "params": [], "id": 5}),
                json.dumps(
                    {"method": "SUBSCRIBE", "params": [f"s{i}usdt@aggTrade" for i in range(1025)], "id": 6}
                ),
                json.dumps({"method": "GET_PROPERTY", "params": ["combined"], "id": 7}),
                json.dumps({"method": "SET_PROPERTY", "params": ["combined", True], "id": 8}),
                json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@aggTrade"], "id": 9}),
            ):
                await ws.send(msg)
                out.append(orjson.loads(await ws.recv()))
            out.append(orjson.loads(await ws.recv()))
            return out

    r = run(scenario())
    assert r[0]["error"]["code"] == 3 and r[0]["id"] is None
    assert r[1]["error"]["code"] == 2 and r[1]["id"] == 5 and "PUBLISH" in r[1]["error"]["msg"]
    assert r[2]["error"]["code"] == 2 and "1024" in r[2]["error"]["msg"]
    assert r[3] == {"result": False, "id": 7}
    assert r[4] == {"result": None, "id": 8}
    assert r[5] == {"result": None, "id": 9}
    assert r[6]["stream"] == "ethusdt@aggTrade" and r[6]["data"]["e"] == "aggTrade"


def test_more_than_ten_messages_a_second_closes_the_connection() -> None:
    async def scenario() -> int | None:
        async with SimExchange(port=0, symbols=2, speed=5) as sim, connect(f"{sim.ws_market_url}/ws") as ws:
            try:
                for i in range(11):
                    await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
                async with asyncio.timeout(5):
                    while True:
                        await ws.recv()
            except ConnectionClosed as exc:
                return exc.rcvd.code if exc.rcvd else None
        return None

    assert run(scenario()) == 1008


def test_paths_outside_binances_are_refused_and_too_many_url_streams_too() -> None:
    async def scenario() -> list[int]:
        async with SimExchange(port=0, symbols=2, speed=5) as sim:
            codes = []
            too_many = "/".join(f"s{i}usdt@aggTrade" for i in range(1025))
            for url in (
                f"ws://127.0.0.1:{sim.port}/ws/btcusdt@aggTrade",
                f"{sim.ws_market_url}/stream?streams={too_many}",
            ):
                with pytest.raises(InvalidStatus) as info:
                    async with connect(url, max_size=None):
                        pass
                codes.append(info.value.response.status_code)
            return codes

    not_found, too_many = run(scenario())
    assert not_found == 404
    assert too_many in (400, 414)  # 1025 names do not even fit in an HTTP request line


async def _raw_client(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A websocket client that never answers pings (to be dropped by the server)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    return reader, writer


async def _read_frames(reader: asyncio.StreamReader) -> list[int]:
    """Opcodes of the frames the server sends until it closes the TCP connection."""
    opcodes = []
    try:
        while True:
            b0, b1 = await reader.readexactly(2)
            length = b1 & 0x7F
            if length == 126:
                length = int.from_bytes(await reader.readexactly(2))
            elif length == 127:
                length = int.from_bytes(await reader.readexactly(8))
            await reader.readexactly(length)
            opcodes.append(b0 & 0x0F)
    except (asyncio.IncompleteReadError, ConnectionError):
        return opcodes


def test_server_pings_and_drops_a_client_that_does_not_pong() -> None:
    config = FaultConfig(ping_interval=0.2, ping_timeout=0.3)

    async def scenario() -> tuple[list[int], bool]:
        async with (
            SimExchange(port=0, symbols=2, speed=5, faults=config) as sim,
            connect(f"{sim.ws_market_url}/ws/btcusdt@aggTrade") as polite,
        ):
            reader, writer = await _raw_client(sim.port, "/market/ws")
            opcodes = await asyncio.wait_for(_read_frames(reader), 5)
            writer.close()
            await polite.recv()  # the client that answers pings is still served
            return opcodes, polite.state.name == "OPEN"

    opcodes, polite_open = run(scenario())
    assert 0x9 in opcodes  # ping
    assert polite_open


def test_connections_are_cut_after_their_lifetime() -> None:
    async def scenario() -> tuple[int | None, str | None, float]:
        loop = asyncio.get_running_loop()
        async with (
            SimExchange(port=0, symbols=2, speed=5, faults=FaultConfig(max_connection_age=0.6)) as sim,
            connect(f"{sim.ws_public_url}/ws/btcusdt@bookTicker") as ws,
        ):
            opened = loop.time()
            try:
                async with asyncio.timeout(5):
                    while True:
                        await ws.recv()
            except ConnectionClosed as exc:
                return (
                    (exc.rcvd.code if exc.rcvd else None),
                    (exc.rcvd.reason if exc.rcvd else None),
                    loop.time() - opened,
                )
        return None, None, 0.0

    code, reason, lasted = run(scenario())
    assert code == 1001 and reason is not None and "lifetime" in reason
    assert 0.5 < lasted < 2.0


def test_manual_mode_moves_time_only_when_told() -> None:
    async def scenario() -> tuple[int, int, list[Any], int]:
        async with (
            SimExchange(port=0, symbols=3, manual=True) as sim,
            connect(f"{sim.ws_market_url}/ws/btcusdt@aggTrade") as ws,
        ):
            before = sim.now_ms
            quiet = await _nothing_within(ws, 0.1)
            await sim.advance(5_000)
            frames = await _frames(ws, 3)
            assert quiet
            return before, sim.now_ms, frames, sim.venue.now_ms - before

    before, after, frames, moved = run(scenario())
    assert moved == 5_000 and after == before + 5_000
    assert all(before <= f["T"] < after for f in frames)


def test_speed_must_be_positive() -> None:
    with pytest.raises(ValueError, match="speed"):
        SimExchange(port=0, symbols=1, speed=0)


def test_subscribe_naming_a_malformed_stream_is_refused_whole_and_counted() -> None:
    """As Binance USD-M: a malformed stream name gets ``{"code": 2, "msg": "Invalid request: invalid stream"}``
    and nothing of that request is subscribed; ``/sim/status`` counts the refusals."""

    async def scenario() -> dict[str, Any]:
        async with SimExchange(port=0, symbols=4, speed=20) as sim, connect(f"{sim.ws_market_url}/ws") as ws:
            out: dict[str, Any] = {}
            for key, msg in (
                (
                    "bad",
                    {"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade", "btcusdt@aggtrades"], "id": 4},
                ),
                ("no_symbol", {"method": "SUBSCRIBE", "params": ["aggTrade"], "id": 5}),
                ("list", {"method": "LIST_SUBSCRIPTIONS", "id": 6}),
                ("good", {"method": "SUBSCRIBE", "params": ["ethusdt@aggTrade"], "id": 7}),
            ):
                await ws.send(json.dumps(msg))
                out[key] = orjson.loads(await ws.recv())
            async with httpx.AsyncClient(base_url=sim.rest_url) as c:
                out["status"] = (await c.get("/sim/status")).json()
            return out

    r = run(scenario())
    assert r["bad"] == {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 4}
    assert r["no_symbol"] == {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 5}
    assert r["list"] == {"result": [], "id": 6}
    assert r["good"] == {"result": None, "id": 7}
    assert r["status"]["invalid_subscribes"] == 2
    assert r["status"]["agg_trades_from_id_too_old"] == 0
