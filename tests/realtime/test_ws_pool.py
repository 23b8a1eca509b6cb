"""StreamPool against a real local Binance-like websockets server: routing, sizing, pacing, live
(un)subscription, refused requests, delivery and its bounds."""

from __future__ import annotations

import asyncio
import itertools
import time

from realtime.ws_config import TransportConfig
from realtime.ws_delivery import Received, StreamsStarted
from realtime.ws_pool import StreamPool
from tapewatch.settings import Settings
from tests.realtime.binance_ws_server import BinanceWsServer, eventually, run
from tests.realtime.ws_pool_helpers import drain, make_pool, started, stopped, up

PUBLIC = ["btcusdt@depth@100ms", "btcusdt@bookTicker", "ethusdt@trade"]
MARKET = ["btcusdt@aggTrade", "btcusdt@kline_1m", "btcusdt@kline_15m"]


def test_streams_are_routed_by_path_and_delivered_byte_exact() -> None:
    async def body() -> None:
        async with BinanceWsServer() as server, make_pool(server) as pool:
            pool.set_streams(PUBLIC + MARKET)
            await up(server, pool, 2)
            (public,) = server.open_conns("public")
            (market,) = server.open_conns("market")
            assert public.streams == set(PUBLIC) and market.streams == set(MARKET)
            assert server.misrouted == []
            depth = b'{"e":"depthUpdate", "E":1,"b":[["0.00001000","1"]] ,"x":"\\u00e9"}'  # odd spacing kept
            trade = b'{"e":"aggTrade","a":1}'
            await server.publish("btcusdt@depth@100ms", depth)
            await server.publish("btcusdt@aggTrade", trade)
            await eventually(lambda: pool.frames.frames_queued() == 2)
            items = drain(pool.frames)
            frames = [i for i in items if isinstance(i, Received)]
            assert {(f.stream, f.raw) for f in frames} == {
                ("btcusdt@depth@100ms", depth),
                ("btcusdt@aggTrade", trade),
            }
            assert all(abs(f.recv_ms - time.time() * 1000) < 5000 for f in frames)
            assert started(items, "connect") == set(PUBLIC + MARKET)
            for f in frames:  # a stream's start marker precedes its frames
                marker = next(i for i in items if isinstance(i, StreamsStarted) and f.stream in i.streams)
                assert items.index(marker) < items.index(f)
            assert pool.stats.frames["btcusdt@depth@100ms"] == 1 and pool.stats.connections_open == 2

    run(body)


def test_a_path_the_server_does_not_serve_fails_alone() -> None:
    async def body() -> None:
        async with (
            BinanceWsServer(paths=["public"]) as server,
            make_pool(server, backoff_base=0.05, backoff_max=0.1) as pool,
        ):
            pool.set_streams(PUBLIC + MARKET)
            await eventually(lambda: pool.stats.connect_failures >= 2, what="market connects refused")
            assert [c.path for c in server.open_conns()] == ["public"]
            assert any(status == 404 for _, _, status in server.handshakes)
            await server.publish("btcusdt@bookTicker", b'{"u":1}')
            await eventually(lambda: pool.frames.frames_queued() == 1)

    run(body)


def test_450_streams_per_path_take_three_connections_each_opened_at_the_set_pace() -> None:
    symbols = [f"s{i:03d}usdt" for i in range(225)]
    public = [f"{s}@depth@100ms" for s in symbols] + [f"{s}@bookTicker" for s in symbols]
    market = [f"{s}@aggTrade" for s in symbols] + [f"{s}@kline_1m" for s in symbols]

    async def body() -> None:
        async with BinanceWsServer() as server, make_pool(server, connect_interval=0.1) as pool:
            pool.set_streams(public + market)
            await up(server, pool, 6)
            for path, wanted in (("public", public), ("market", market)):
                conns = server.open_conns(path)
                assert sorted(len(c.streams) for c in conns) == [50, 200, 200]
                assert set().union(*(c.streams for c in conns)) == set(wanted)
            assert server.misrouted == [] and all(not c.controls for c in server.conns)  # all by URL
            opened = sorted(t for t, _, status in server.handshakes if status == 101)
            # Paced at the client. The server sees handshakes complete, which a loaded machine may delay one by
            # one (two can land close together), so judge the pace over the whole run: six connections opened
            # one per 0.1 s span at least 0.5 s, give or take one delayed handshake.
            assert opened[-1] - opened[0] >= 5 * 0.1 - 0.1
            await eventually(lambda: all(c.conn_id for c in pool.connections()), what="client side up")
            listed = await pool.list_subscriptions()
            assert sorted(len(v) for v in listed.values()) == [50, 50, 200, 200, 200, 200]
            assert [len(c.streams) <= 200 for c in pool.connections()] == [True] * 6

            # Growth fills the connection with room by SUBSCRIBE, without a new connection.
            more = [f"t{i:03d}usdt@bookTicker" for i in range(100)]
            pool.set_streams(public + market + more)
            await eventually(
                lambda: set(more) <= set().union(*(c.streams for c in server.open_conns("public")))
            )
            assert len(server.conns) == 6 and sorted(len(c.streams) for c in server.open_conns("public")) == [
                150,
                200,
                200,
            ]
            # Dropping every stream of one connection closes it and leaves the others alone.
            first = next(c for c in server.open_conns("market") if len(c.streams) == 200)
            pool.set_streams(public + more + sorted(set(market) - first.streams))
            await eventually(lambda: first.closed_at is not None, what="emptied connection closed")
            assert len(server.open_conns("market")) == 2 and len(server.conns) == 6
            assert pool.stats.reconnects.total() == 0

    run(body)


def test_new_connections_open_at_most_one_per_second_by_default_on_all_paths_together() -> None:
    # Binance limits new connections per IP: the default pace is one a second, and a test fails if it is not.
    assert Settings.model_fields["ws_connect_interval"].default == 1.0
    assert TransportConfig().connect_interval == 1.0
    public = [f"s{i}usdt@bookTicker" for i in range(4)]  # two connections of two streams
    market = ["s0usdt@aggTrade", "s1usdt@aggTrade"]  # and one more on the other path

    async def body() -> None:
        async with BinanceWsServer() as server:
            settings = Settings(
                binance_ws_public_url=server.url("public"),
                binance_ws_market_url=server.url("market"),
                ws_max_streams_per_connection=2,
            )
            async with StreamPool(settings) as pool:  # the connect interval of the settings, not overridden
                interval = pool.config.connect_interval
                assert interval == settings.ws_connect_interval == 1.0
                pool.set_streams(public + market)
                await up(server, pool, 3, within=30)
                opened = sorted(t for t, _, status in server.handshakes if status == 101)
                assert len(opened) == 3 and {c.path for c in server.conns} == {"public", "market"}
                # Paced at the client, seen at the server: a lower bound only (a loaded machine only delays).
                for gap in (b - a for a, b in itertools.pairwise(opened)):
                    assert gap >= 0.9 * interval

    run(body, timeout=60)


def test_changes_are_live_subscriptions_paced_at_three_per_second() -> None:
    first = [f"a{i:02d}usdt@aggTrade" for i in range(10)]
    later = first[5:] + [f"b{i:02d}usdt@aggTrade" for i in range(40)]

    async def body() -> None:
        # The defaults of the settings (3 control messages/s), small batches to force several messages.
        async with BinanceWsServer() as server, make_pool(server, max_params_per_message=10) as pool:
            assert pool.config.control_rate == 3
            pool.set_streams(first)
            await up(server, pool, 1)
            drain(pool.frames)
            pool.set_streams(later)
            (conn,) = server.open_conns()
            await eventually(lambda: conn.streams == set(later), within=4, what="server subscriptions")
            await eventually(lambda: len(conn.controls) >= 5)
            methods = [m["method"] for _, m in conn.controls]
            assert methods == ["UNSUBSCRIBE"] + ["SUBSCRIBE"] * 4  # unsubscribe first, 10 params each
            # Paced at the client, seen at the server, which runs on the same event loop: a loaded machine
            # delays the server's read of one message (once by more than 0.3 s), which shortens the gap after it
            # and lengthens the one before. So any k consecutive messages span at least k - 1 spacings less that
            # read lag; a client that does not pace sends them all within milliseconds.
            sent = [t for t, _ in conn.controls]
            lag = 0.35
            assert all(
                sent[j] - sent[i] >= (j - i) / 3 - lag
                for i in range(len(sent))
                for j in range(i + 1, len(sent))
            ), sent
            assert len(server.conns) == 1 and not conn.rate_violation and pool.stats.reconnects.total() == 0
            assert pool.stats.control_sent == 5
            items = drain(pool.frames)
            assert stopped(items, "unsubscribe") == set(first[:5])
            assert started(items, "subscribe") == set(later) - set(first)
            assert sorted((await pool.list_subscriptions())[conn_id(pool)]) == sorted(later)
            # Frames of an unsubscribed stream that still arrive are not delivered.
            conn.streams.add(first[0])
            await server.publish(first[0], b"{}")
            await eventually(lambda: pool.stats.unowned_frames == 1)
            assert pool.frames.frames_queued() == 0

    run(body)


def conn_id(pool: StreamPool) -> str:
    (info,) = pool.connections()
    assert info.conn_id is not None
    return info.conn_id


def test_refused_subscriptions_are_counted_retried_and_given_up() -> None:
    async def body() -> None:
        async with (
            BinanceWsServer() as server,
            make_pool(server, control_rate=8, max_params_per_message=1, max_control_retries=2) as pool,
        ):
            server.refuse_subscribe = {"b@aggTrade": 1, "bad@aggTrade": 99}
            pool.set_streams(["a@aggTrade"])
            await up(server, pool, 1)
            pool.set_streams(["a@aggTrade", "b@aggTrade", "bad@aggTrade"])
            (conn,) = server.open_conns()
            await eventually(lambda: pool.failed_streams() == ["bad@aggTrade"], what="bad given up")
            await eventually(lambda: "b@aggTrade" in conn.streams, what="b retried")
            assert pool.stats.control_errors == 1 + 3  # b once; bad: first try and two retries
            assert pool.stats.control_gave_up == 1
            assert stopped(drain(pool.frames), "subscribe_error") == {"b@aggTrade", "bad@aggTrade"}
            await server.publish("b@aggTrade", b'{"a":7}')
            await eventually(lambda: pool.frames.frames_queued() == 1)
            assert pool.snapshot()["failed_streams"] == ["bad@aggTrade"]
            # Setting the streams again gives the refused one a fresh set of retries.
            server.refuse_subscribe["bad@aggTrade"] = 0
            pool.set_streams(["a@aggTrade", "b@aggTrade", "bad@aggTrade"])
            await eventually(lambda: "bad@aggTrade" in conn.streams and not pool.failed_streams())
            assert len(server.conns) == 1

    run(body)


def test_an_unanswered_subscribe_is_retried_after_the_reply_timeout() -> None:
    async def body() -> None:
        async with (
            BinanceWsServer() as server,
            make_pool(server, control_rate=8, reply_timeout=0.3, watchdog_interval=0.05) as pool,
        ):
            server.swallow_subscribe = {"b@aggTrade": 1}
            pool.set_streams(["a@aggTrade"])
            await up(server, pool, 1)
            pool.set_streams(["a@aggTrade", "b@aggTrade"])
            (conn,) = server.open_conns()
            await eventually(lambda: pool.stats.control_timeouts == 1, what="timeout")
            await eventually(lambda: sum(m["method"] == "SUBSCRIBE" for _, m in conn.controls) == 2)
            assert conn.streams == {"a@aggTrade", "b@aggTrade"} and pool.stats.reconnects.total() == 0

    run(body)


def test_a_slow_consumer_costs_counted_drops_never_a_stall() -> None:
    async def body() -> None:
        async with BinanceWsServer() as server, make_pool(server, queue_capacity=5) as pool:
            pool.set_streams(["a@aggTrade"])
            await up(server, pool, 1)
            for i in range(20):
                await server.publish("a@aggTrade", b'{"i":%d}' % i)
            await eventually(lambda: pool.stats.frames_total() == 20, what="all frames read")
            assert pool.frames.drops == 15 and pool.snapshot()["queue_drops"] == 15
            kept = [i.raw for i in drain(pool.frames) if isinstance(i, Received)]
            assert kept == [b'{"i":%d}' % i for i in range(5)]
            # Still reading: the transport never waited for the consumer.
            await server.publish("a@aggTrade", b'{"i":20}')
            await eventually(lambda: pool.frames.frames_queued() == 1)

    run(body)


def test_garbage_from_the_server_and_bad_stream_names_are_counted_not_fatal() -> None:
    async def body() -> None:
        async with BinanceWsServer() as server, make_pool(server) as pool:
            pool.set_streams(["a@aggTrade", "garbage", "btcusdt@nonsense", "BTC USDT@depth"])
            assert pool.stats.invalid_streams == 3
            await up(server, pool, 1)
            (conn,) = server.open_conns()
            for text in (
                "not json",
                "[1,2]",
                '{"result":null,"id":999}',
                '{"error":{"code":3,"msg":"x"}}',
                "{}",
            ):
                await conn.ws.send(text)
            await server.publish("a@aggTrade", b'{"ok":true}')
            await eventually(lambda: pool.frames.frames_queued() == 1)
            stats = pool.stats
            assert (stats.malformed, stats.unexpected_replies, stats.control_errors) == (3, 1, 1)
            assert stats.reconnects.total() == 0 and conn.closed_at is None

    run(body)


def test_server_pings_are_answered() -> None:
    async def body() -> None:
        async with BinanceWsServer() as server, make_pool(server) as pool:
            pool.set_streams(["a@aggTrade"])
            await up(server, pool, 1)
            (conn,) = server.open_conns()
            pong = await conn.ws.ping(b"binance")
            latency = await asyncio.wait_for(pong, 2)
            assert latency < 2

    run(body)


def test_the_server_mimic_closes_a_client_sending_more_than_ten_messages_a_second() -> None:
    from websockets.asyncio.client import connect

    async def body() -> None:
        async with BinanceWsServer() as server:
            async with connect(server.url("market") + "/stream?streams=a@aggTrade") as ws:
                for i in range(11):
                    await ws.send(f'{{"method":"LIST_SUBSCRIPTIONS","id":{i}}}')
                await ws.wait_closed()
                assert ws.close_code == 1008
            assert server.conns[0].rate_violation

    run(body)


def test_close_stops_every_connection_with_markers() -> None:
    async def body() -> None:
        async with BinanceWsServer() as server:
            pool = make_pool(server)
            pool.set_streams(PUBLIC + MARKET)
            await up(server, pool, 2)
            await pool.close()
            await eventually(lambda: not server.open_conns(), what="server sees both closed")
            assert pool.stats.connections_open == 0 and pool.connections() == []
            assert stopped(drain(pool.frames), "stopped") == set(PUBLIC + MARKET)
            await pool.close()  # idempotent

    run(body)
