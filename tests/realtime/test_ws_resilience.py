"""StreamPool when things go wrong or get old: reconnect with backoff, stale watchdog, planned rollover."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import defaultdict

import msgspec
import pytest

from realtime.timebase import Timebase
from realtime.ws_delivery import Delivery, FrameQueue, Received, StreamsStarted
from realtime.ws_pool import StreamPool
from tests.realtime.binance_ws_server import BinanceWsServer, eventually, run
from tests.realtime.ws_pool_helpers import drain, make_pool, started, stopped, up

ALWAYS_CEILING = Timebase(random=lambda: 1.0)  # full jitter drawn at its top: delays are exact


def backoff_delays(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The delays the slots decided before their next attempts, as logged ("0.20")."""
    return [
        r.getMessage().rsplit("next attempt in ", 1)[1].removesuffix(" s")
        for r in caplog.records
        if r.name == "realtime.ws_slot" and "next attempt in" in r.getMessage()
    ]


def test_server_close_and_drop_reconnect_only_that_connection_with_growing_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="realtime.ws_slot")

    async def body() -> None:
        async with (
            BinanceWsServer() as server,
            make_pool(server, ALWAYS_CEILING, backoff_base=0.2, backoff_max=5) as pool,
        ):
            pool.set_streams(["a@depth@100ms", "a@aggTrade"])
            await up(server, pool, 2)
            (market,) = server.open_conns("market")
            (public,) = server.open_conns("public")
            drain(pool.frames)

            closed_at = time.monotonic()
            await public.ws.close(1000, "server maintenance")
            await eventually(lambda: len(server.conns) == 3, what="reconnect after close")
            second = server.conns[-1]
            await up(server, pool, 2)
            # The decided delays are exact (jitter drawn at its ceiling); the server sees at least them pass.
            # No upper bound on what the server sees: a loaded machine may take any time to reconnect.
            assert backoff_delays(caplog) == ["0.20"]  # attempt 0: ceiling 0.2 s
            assert second.opened_at - closed_at >= 0.2 - 0.01
            assert pool.stats.reconnects["server_close"] == 1

            assert second.ws.transport is not None
            dropped_at = time.monotonic()
            second.ws.transport.abort()  # no close frame: a network failure
            await eventually(
                lambda: server.conns[-1].path == "public" and len(server.conns) == 4, what="reconnect"
            )
            third = server.conns[-1]
            await up(server, pool, 2)
            assert backoff_delays(caplog) == ["0.20", "0.40"]  # attempt 1: ceiling 0.4 s
            assert third.opened_at - dropped_at >= 0.4 - 0.01
            assert pool.stats.reconnects["error"] == 1

            assert market.closed_at is None and len([c for c in server.conns if c.path == "market"]) == 1
            items = drain(pool.frames)
            assert [(type(i).__name__, i.reason) for i in items if not isinstance(i, Received)] == [
                ("StreamsStopped", "server_close"),
                ("StreamsStarted", "reconnect"),
                ("StreamsStopped", "error"),
                ("StreamsStarted", "reconnect"),
            ]
            assert started(items) == stopped(items) == {"a@depth@100ms"}
            assert pool.stats.connections_open == 2

    run(body)


def test_refused_handshakes_back_off_exponentially(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="realtime.ws_slot")

    async def body() -> None:
        async with BinanceWsServer() as server, make_pool(server, ALWAYS_CEILING, backoff_base=0.05) as pool:
            server.refuse_connections = 3
            pool.set_streams(["a@aggTrade"])
            await up(server, pool, 1)
            times = [t for t, _, _ in server.handshakes]
            assert [status for _, _, status in server.handshakes] == [503, 503, 503, 101]
            gaps = [b - a for a, b in itertools.pairwise(times)]
            assert backoff_delays(caplog) == ["0.05", "0.10", "0.20"]  # doubling from the base
            for gap, expected in zip(gaps, (0.05, 0.1, 0.2), strict=True):
                assert gap >= expected - 0.01  # waited at least that long (a loaded machine: longer)
            assert pool.stats.connect_failures == 3 and pool.stats.connects == 1

    run(body)


def test_stale_watchdog_reconnects_only_the_silent_connection_and_reports_a_silent_trade_stream() -> None:
    async def body() -> None:
        async with (
            BinanceWsServer() as server,
            make_pool(server, stale_after=0.4, watchdog_interval=0.05) as pool,
        ):
            pool.set_streams(["a@depth@100ms", "a@aggTrade", "b@aggTrade"])
            await up(server, pool, 2)
            server.start_feed(["a@depth@100ms", "a@aggTrade"], 0.02)  # b@aggTrade never speaks
            (public,) = server.open_conns("public")
            (market,) = server.open_conns("market")
            # aggTrade of a quiet symbol may be silent for long: reported, never a reconnect
            await eventually(lambda: pool.stale_streams() == ["b@aggTrade"], what="silent stream reported")
            assert pool.stats.stale_stream_reports == 1 and pool.stats.stale_stream_quiet == 0

            public.silenced = True  # open, answers pings, sends no data
            await eventually(lambda: pool.stats.reconnects["stale"] == 1, what="stale reconnect")
            await up(server, pool, 2)
            assert public.closed_at is not None
            assert market.closed_at is None and [c.path for c in server.conns].count("market") == 1
            items = drain(pool.frames)
            assert stopped(items, "stale") == {"a@depth@100ms"}
            assert started(items, "reconnect") == {"a@depth@100ms"}
            assert pool.stale_streams() == ["b@aggTrade"]  # the live connection is still reporting it
            assert pool.stats.reconnects.total() == 1
            assert pool.stats.stale_stream_reconnects == {}  # the whole connection was silent, no one stream

    run(body)


def test_a_silent_depth_stream_on_a_busy_connection_reconnects_that_connection_once_until_it_speaks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="realtime.ws_slot")

    async def body() -> None:
        async with (
            BinanceWsServer() as server,
            make_pool(server, stale_after=0.5, watchdog_interval=0.05) as pool,
        ):
            pool.set_streams(["a@depth@100ms", "a@bookTicker", "a@aggTrade"])
            await up(server, pool, 2)
            (public,) = server.open_conns("public")
            (market,) = server.open_conns("market")
            server.start_feed(["a@bookTicker", "a@aggTrade"], 0.02)  # the depth stream never speaks

            await eventually(
                lambda: pool.stats.reconnects["stale"] == 1, what="reconnect for the depth stream"
            )
            assert pool.stats.stale_stream_reconnects == {"a@depth@100ms": 1}
            await up(server, pool, 2)
            assert public.closed_at is not None
            assert market.closed_at is None and [c.path for c in server.conns].count("market") == 1
            items = drain(pool.frames)
            assert stopped(items, "stale") == started(items, "reconnect") == {"a@depth@100ms", "a@bookTicker"}

            # Still silent on the new connection while bookTicker flows: a quiet market. It is reported and
            # counted at the moment a second reconnect would have come, and no second reconnect comes.
            await eventually(lambda: pool.stale_streams() == ["a@depth@100ms"], what="quiet depth reported")
            assert pool.stats.reconnects["stale"] == 1 and pool.stats.stale_stream_quiet == 1
            assert [c.path for c in server.conns].count("public") == 2
            assert pool.stats.stale_stream_reports == 1 and pool.stats.reconnects.total() == 1

            # Once it has delivered again, its next silence is worth a reconnect again, but a longer one: each
            # repeat reconnect for the same stream needs twice the silence (a sparse market backs off).
            assert await server.publish("a@depth@100ms", b'{"seq":1}') == 1
            await eventually(lambda: pool.stats.reconnects["stale"] == 2, what="reconnect after it spoke")
            assert pool.stats.stale_stream_reconnects == {"a@depth@100ms": 2}
            assert [c.path for c in server.conns].count("market") == 1
            silences = [
                float(r.getMessage().split(" silent for ", 1)[1].split(" s ", 1)[0])
                for r in caplog.records
                if "reconnecting this connection (reconnect 2 for this stream" in r.getMessage()
            ]
            assert len(silences) == 1 and silences[0] >= 2 * 0.5

    run(body)


class Collector:
    """A consumer that records every delivered sequence number per stream and every marker."""

    def __init__(self, queue: FrameQueue) -> None:
        self.queue = queue
        self.seqs: dict[str, list[int]] = defaultdict(list)
        self.markers: list[Delivery] = []

    async def run(self) -> None:
        while True:
            item = await self.queue.get()
            if isinstance(item, Received):
                self.seqs[item.stream].append(msgspec.json.decode(item.raw)["seq"])
            else:
                self.markers.append(item)


@pytest.mark.parametrize("newest_first", [False, True], ids=["old-conn-first", "new-conn-first"])
def test_rollover_hands_over_without_gap_or_duplicate(newest_first: bool) -> None:
    streams = ["a@depth@100ms", "a@bookTicker", "b@bookTicker"]

    async def body() -> None:
        async with (
            BinanceWsServer() as server,
            make_pool(server, rollover_after=0.8, rollover_grace=2.0, watchdog_interval=0.05) as pool,
        ):
            server.newest_first = newest_first
            collector = Collector(pool.frames)
            consumer = asyncio.create_task(collector.run())
            pool.set_streams(streams)
            await up(server, pool, 1)
            sent = server.start_feed(streams, 0.004)
            await eventually(lambda: pool.stats.reconnects["rollover"] >= 2, within=6, what="two rollovers")
            await server.stop_feeds()
            last = {s: sent[s][-1][1] for s in streams}
            await eventually(
                lambda: all(collector.seqs[s][-1:] == [last[s]] for s in streams), what="drained"
            )
            for stream in streams:
                got = collector.seqs[stream]
                first = got[0]
                # Every number the server sent from the first one we got on is received exactly once.
                assert got == [seq for _, seq in sent[stream] if seq >= first]
                assert got == list(range(first, last[stream] + 1))
            conns = server.conns[:3]
            await eventually(lambda: conns[0].closed_at is not None and conns[1].closed_at is not None)
            for old, new in itertools.pairwise(conns):
                assert old.closed_at is not None and new.opened_at < old.closed_at  # overlap, no gap
            assert collector.markers == [StreamsStarted(tuple(sorted(streams)), "public-0#1", "connect")]
            assert pool.stats.rollover_duplicates_dropped > 0
            assert pool.stats.rollover_unmatched_streams == 0
            assert pool.stats.reconnects.total() == pool.stats.reconnects["rollover"]
            consumer.cancel()

    run(body)


def test_rollover_of_quiet_streams_switches_after_the_grace_period() -> None:
    async def body() -> None:
        async with (
            BinanceWsServer() as server,
            make_pool(server, rollover_after=0.3, rollover_grace=0.2, watchdog_interval=0.05) as pool,
        ):
            pool.set_streams(["q@kline_15m"])
            await eventually(lambda: pool.stats.reconnects["rollover"] == 1, what="rollover")
            await up(server, pool, 1)
            assert [type(i) for i in drain(pool.frames)] == [StreamsStarted]  # the first connect only
            await eventually(lambda: pool.stats.connections_open == 1, what="old connection retired")
            assert pool.stats.rollover_unmatched_streams == 0

    run(body)


def test_a_mute_replacement_is_abandoned_and_the_old_connection_kept() -> None:
    async def body() -> None:
        async with (
            BinanceWsServer() as server,
            make_pool(
                server, rollover_after=0.3, rollover_grace=0.2, watchdog_interval=0.05, backoff_max=5
            ) as pool,
        ):
            pool.set_streams(["a@aggTrade"])
            await up(server, pool, 1)
            (old,) = server.open_conns()
            server.silence_new = True
            server.start_feed(["a@aggTrade"], 0.01)
            await eventually(
                lambda: len(server.conns) == 2 and server.conns[1].closed_at is not None, what="abandon"
            )
            assert old.closed_at is None and pool.stats.reconnects.total() == 0
            assert pool.stats.connections_open == 1
            before = pool.frames.frames_queued()
            await eventually(lambda: pool.frames.frames_queued() > before + 3, what="old still delivering")
            assert [i for i in drain(pool.frames) if not isinstance(i, Received | StreamsStarted)] == []

    run(body)


def test_pool_defaults_come_from_the_settings() -> None:
    from tapewatch.settings import Settings

    settings = Settings(ws_rollover_after=12, ws_stale_after=20, ws_max_streams_per_connection=100)
    pool = StreamPool(settings)
    assert pool.config.rollover_after == 12 * 3600
    assert pool.config.stale_after == 20 and pool.config.max_streams_per_connection == 100
    assert pool.config.control_rate == settings.ws_control_rate
    assert pool.frames.capacity == pool.config.queue_capacity
