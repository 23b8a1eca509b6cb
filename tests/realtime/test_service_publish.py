"""The realtime metrics hash tells what used to be counted and never shown: setups the engine could not judge,
stale klines, the capture's losses and the signal dispatch's health."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import psutil
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from realtime import service_publish
from realtime.capture import CaptureWriter
from realtime.service import FeedService
from realtime.service_publish import publish_loop
from realtime.ws_pool import StreamPool
from tapewatch.adapters.binance_rest import BinanceRest
from tapewatch.adapters.db import Database
from tapewatch.adapters.dispatch import Dispatch
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import AsyncRedisState, RedisState
from tapewatch.adapters.risk_ledger import RiskLedger
from tapewatch.adapters.signal_store import SignalStore
from tapewatch.adapters.universe_store import live_liquidity
from tapewatch.errors import FeedError, StorageUnavailable
from tapewatch.risk import RiskParams
from tapewatch.settings import load_settings
from tests.adapters.rest_test_server import Reply, RestTestServer
from tests.adapters.signal_builders import entry
from tests.realtime.binance_ws_server import BinanceWsServer, eventually, run
from tests.realtime.ws_pool_helpers import make_pool, up
from tests.tcp_proxy import forwarder, free_port, redis_upstream, redis_url_via

M15 = 900_000


@contextlib.asynccontextmanager
async def publishing(service: FeedService, redis: AsyncRedisState, *, interval: float) -> AsyncIterator[None]:
    """``service``'s publish loop runs every ``interval`` seconds for the block; after it, the loop is stopped
    and the service's pool and ``redis`` (its Redis) are closed."""
    task = asyncio.create_task(publish_loop(service, interval=interval))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await service.pool.close()
        await redis.aclose()


def _kline(i: int) -> bytes:
    k = {"t": i * M15, "T": i * M15 + M15 - 1, "i": "15m", "o": "100", "c": "100", "h": "101", "l": "99",
         "v": "1", "n": 1, "x": True, "q": "100"}  # fmt: skip
    return json.dumps({"e": "kline", "E": i * M15 + M15, "s": "BTCUSDT", "k": k}).encode()


def test_the_metrics_hash_shows_engine_candle_capture_and_dispatch_losses(
    tmp_path: Path, db: Database, engine: Engine, redis_url: str, redis_keys: Keyspace
) -> None:
    settings = load_settings(var_dir=tmp_path)
    capture = CaptureWriter(tmp_path / "capture")

    async def scenario() -> tuple[dict[str, int | float], dict[str, int | float]]:
        client = AsyncRedisState.from_url(redis_url, keys=redis_keys).client
        dispatch = Dispatch.from_settings(settings, db, client, keys=redis_keys)
        service = FeedService(
            settings,
            rest=BinanceRest.from_settings(settings),
            pool=StreamPool(settings),
            capture=capture,
            sink=dispatch,
        )
        try:
            for i in (5, 6, 4):  # the third is older than the newest bar: ignored
                frame = service.decoder.decode_payload(1, "btcusdt@kline_15m", _kline(i))
                assert frame is not None
                service.market.on_frame(frame)
            service.engine.counters.update(bad_features=2, rules_rejected=1, plans_unrounded=3)
            capture.write(1_700_000_000_000, "btcusdt@kline_15m", _kline(7))
            assert capture.flush(5)
            capture.close(5)
            capture.write(1_700_000_000_001, "btcusdt@kline_15m", _kline(8))  # closed: dropped
            healthy = service.metrics()
            # the relay fails a pass (the outbox is away): the hash says so
            SignalStore(db).save_signal(entry())
            with engine.begin() as conn:
                conn.execute(sa.text("ALTER TABLE outbox RENAME TO outbox_away"))
            assert await dispatch.relay.publish_pending() == 0
            return healthy, service.metrics()
        finally:
            await client.aclose()

    healthy, failing = asyncio.run(scenario())
    assert healthy["candle_stale_updates"] == 1
    assert (healthy["bad_features"], healthy["rules_rejected"], healthy["plans_unrounded"]) == (2, 1, 3)
    assert (healthy["capture_lines"], healthy["capture_dropped"], healthy["capture_lost"]) == (1, 1, 0)
    assert healthy["capture_errors"] == healthy["capture_queued"] == 0
    assert healthy["relay_healthy"] == 1 and healthy["pending_held_signals"] == 0
    assert failing["relay_healthy"] == 0 and failing["relay_storage_errors"] == 1


class _BrokenWatch:
    """An incident watch with a bug: every check raises."""

    def __init__(self) -> None:
        self.checks = 0
        self.thrice = asyncio.Event()

    def check(self, *args: object) -> None:
        self.checks += 1
        if self.checks == 3:
            self.thrice.set()
        raise RuntimeError("a bug in the watch")


def test_incident_checks_that_raise_reach_the_metrics_hash() -> None:
    """The incident loop survives a watch that raises (logged, counted): the count must reach the metrics hash, or
    a watch that never works looks like a quiet feed."""
    settings = load_settings()
    service = FeedService(settings, rest=BinanceRest.from_settings(settings), pool=StreamPool(settings))
    watch = service.watch = cast(Any, _BrokenWatch())

    async def scenario() -> None:
        task = asyncio.create_task(service.incident_loop(interval=0))
        await asyncio.wait_for(watch.thrice.wait(), 30)  # a bound, not a timing: a hang fails, not blocks
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert service.metrics()["incident_check_errors"] == watch.checks >= 3


def test_the_rest_clients_refusals_reach_the_metrics_hash() -> None:
    """429, 403 and 418 answers are counted by the REST client: the metrics hash must carry them (``rest_*``)."""
    settings = load_settings()
    service = FeedService(settings, rest=BinanceRest.from_settings(settings), pool=StreamPool(settings))
    stats = service.rest.stats
    stats.rate_limited, stats.waf_blocked, stats.banned = 3, 2, 1
    metrics = service.metrics()
    assert (metrics["rest_rate_limited"], metrics["rest_waf_blocked"], metrics["rest_banned"]) == (3, 2, 1)


def test_a_shards_kept_ledger_releases_reach_the_metrics_hash() -> None:
    """A release the global ledger could not write holds a slot of every shard until the upkeep writes it: the
    metrics hash must say how many are kept, or the shards look full for no visible reason."""
    settings = load_settings(shard="0/2")
    db = Database("postgresql://postgres@127.0.0.1:1/none", connect_timeout=1)  # nothing listens there
    ledger = RiskLedger(db, RiskParams(), retry_after_s=10.0)
    service = FeedService(
        settings, rest=BinanceRest.from_settings(settings), pool=StreamPool(settings), shared_gate=ledger
    )
    try:
        assert service.metrics()["shared_gate_releases_pending"] == 0
        with pytest.raises(StorageUnavailable, match="kept and retried"):
            ledger.release(str(uuid.uuid4()), 1_700_000_000_000)
        with pytest.raises(StorageUnavailable, match="PostgreSQL failed within 10 s"):
            ledger.release(str(uuid.uuid4()), 1_700_000_000_000)  # within the window: not tried, kept too
        metrics = service.metrics()
    finally:
        db.dispose()
    assert metrics["shared_gate_releases_pending"] == 2
    assert metrics["shared_gate_releases_deferred"] == 2
    assert metrics["shared_gate_refused"] == 0  # releases are kept, not refused


def _kline_row(open_time: int, low: str = "90") -> list[Any]:
    return [open_time, "100", "110", low, "105", "1", open_time + 59_999, "100", 5, "0.5", "50", "0"]


def test_the_metrics_hash_shows_refused_subscriptions_silent_streams_and_bad_rest_rows(
    tmp_path: Path,
) -> None:
    """The transport's refusals and stale-stream counters and the REST client's dropped rows were counted and
    never published: the README names them, ``tapewatch status`` and the System page could not show them."""
    t0 = 1_700_000_000_000
    one_bad = json.dumps([_kline_row(t0), _kline_row(t0 + 60_000, low="0"), _kline_row(t0 + 120_000)])
    all_bad = json.dumps([_kline_row(t0, low="0")])

    async def body(rest_url: str) -> None:
        settings = load_settings(var_dir=tmp_path, binance_rest_url=rest_url)
        async with (
            BinanceWsServer() as server,
            make_pool(
                server,
                stale_after=0.4,
                watchdog_interval=0.05,
                control_rate=8,
                max_params_per_message=1,
                max_control_retries=1,
            ) as pool,
            BinanceRest.from_settings(settings) as rest,
        ):
            service = FeedService(settings, rest=rest, pool=pool)
            server.refuse_subscribe = {"bad@aggTrade": 99}
            pool.set_streams(["a@depth@100ms", "a@bookTicker", "a@aggTrade"])
            await up(server, pool, 2)
            # a refused SUBSCRIBE (retried once, then given up); a quiet aggTrade stream; a depth stream
            # silent on a busy connection: reconnected once, then silent again (a quiet market)
            pool.set_streams(["a@depth@100ms", "a@bookTicker", "a@aggTrade", "b@aggTrade", "bad@aggTrade"])
            server.start_feed(["a@bookTicker", "a@aggTrade"], 0.02)
            await eventually(lambda: pool.failed_streams() == ["bad@aggTrade"], what="bad given up")
            await eventually(
                lambda: pool.stale_streams() == ["a@depth@100ms", "b@aggTrade"], within=10, what="quiet depth"
            )
            candles, _ = await rest.klines("BTCUSDT", "1m", limit=3)  # one bad row dropped
            with pytest.raises(FeedError):
                await rest.klines("BTCUSDT", "1m", limit=1)  # every row bad: the answer is rejected
            metrics = service.metrics()
            await server.stop_feeds()

        assert len(candles) == 2
        assert (metrics["ws_control_errors"], metrics["ws_control_gave_up"]) == (2, 1)
        assert metrics["ws_control_timeouts"] == 0
        assert metrics["stale_stream_reports"] == 2 and metrics["stale_stream_quiet"] == 1
        assert metrics["stale_stream_reconnects"] == 1
        assert (metrics["rest_dropped_rows"], metrics["rest_malformed"]) == (1, 1)

    with RestTestServer() as rest_server:
        rest_server.route("/fapi/v1/klines", [Reply(body=one_bad.encode()), Reply(body=all_bad.encode())])
        run(lambda: body(rest_server.url))


def test_a_symbol_that_leaves_the_universe_has_its_feed_stats_removed(
    redis_url: str, redis_keys: Keyspace
) -> None:
    """The feed stats of a symbol cut from the universe stayed in Redis until they expired (60 s), and the
    data-quality sensor counted it as followed: right after the load sensor's cut 15 -> 7 it saw the total
    rate shared by 15 symbols, read as halved, and paused signalling. The publish loop removes them."""
    settings = load_settings()
    followed = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]

    reader = RedisState.from_url(redis_url, keys=redis_keys)

    def shown(symbols: list[str]) -> Callable[[], bool]:
        return lambda: set(reader.feeds()) == set(symbols)

    async def body() -> None:
        redis = AsyncRedisState.from_url(redis_url, keys=redis_keys)
        rest = BinanceRest.from_settings(settings)
        service = FeedService(settings, rest=rest, pool=StreamPool(settings), redis=redis)
        service.universe = list(followed)
        async with publishing(service, redis, interval=0.05):
            await eventually(shown(followed), what="every symbol published")
            service.universe = followed[:2]  # as set_universe leaves it once the cut is applied
            await eventually(shown(followed[:2]), within=2, what="the symbols cut removed")
            service.universe = followed[:3]  # back in: published again
            await eventually(shown(followed[:3]), within=2, what="the symbol back published")

    try:
        run(body)
    finally:
        reader.close()


def test_the_feed_stats_name_the_shard_that_published_them(redis_url: str, redis_keys: Keyspace) -> None:
    """The emergency sensor judges silence per shard (a shard that lost the exchange must not have its symbols
    excluded as "$0 volume" while the other shards flow): each record says which instance wrote it."""
    settings = load_settings(shard="1/3")
    followed = ["BTCUSDT", "ETHUSDT"]

    async def body() -> None:
        redis = AsyncRedisState.from_url(redis_url, keys=redis_keys)
        service = FeedService(
            settings, rest=BinanceRest.from_settings(settings), pool=StreamPool(settings), redis=redis
        )
        service.universe = list(followed)
        try:
            await service_publish.publish_feeds(redis, service, set(), ttl_s=60.0)
        finally:
            await service.pool.close()
            await redis.aclose()

    run(body)
    reader = RedisState.from_url(redis_url, keys=redis_keys)
    try:
        feeds = reader.feeds()
    finally:
        reader.close()
    assert {s: f.shard for s, f in feeds.items()} == dict.fromkeys(followed, "1/3")
    assert {s: v.shard for s, v in live_liquidity(feeds).items()} == dict.fromkeys(followed, "1/3")


def test_the_heartbeat_carries_the_hosts_cpu_averaged_over_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    """The heartbeat's ``host_cpu`` was the host's CPU over the last second: a 2-s burst on a host at 70 %
    read 100 % and the performance sensor cut the universe. It is the average over the last 60 s."""
    times = {"user": 0.0, "system": 0.0, "idle": 0.0}
    clock = [0.0]

    def second(percent: float) -> None:  # one second of a 2-CPU host at ``percent``
        clock[0] += 1
        times["user"] += 2 * percent / 100
        times["idle"] += 2 * (1 - percent / 100)

    monkeypatch.setattr(psutil, "cpu_times", lambda: SimpleNamespace(_asdict=lambda: dict(times)))
    sampler = service_publish.LoadSampler(clock=lambda: clock[0])
    first = sampler.sample()
    assert "host_cpu" not in first and 0 < first["host_memory"] <= 100  # nothing to compare with yet
    for _ in range(120):
        second(70.0)
        sampler.sample()
    second(100.0)
    sampler.sample()
    second(100.0)
    assert sampler.sample()["host_cpu"] == pytest.approx(71.0, abs=0.1)  # not 100
    for _ in range(60):
        second(95.0)
        beat = sampler.sample()
    assert beat["host_cpu"] == pytest.approx(95.0)  # a load that lasts shows in full


def test_a_slow_redis_does_not_let_the_heartbeat_expire(redis_url: str, redis_keys: Keyspace) -> None:
    """Behind a Redis answering 0.3 s late, the publish loop sent one round trip per symbol before the next
    heartbeat: 20 symbols kept the heartbeat (10 s to live) unrenewed for ~7 s, and at 0.7 s a reply it
    vanished for seconds. The feed stats go in one round trip: beats stay about a second and a few replies
    apart, and a symbol cut from the universe still has its stats removed."""
    settings = load_settings()
    followed = [f"S{i:02d}USDT" for i in range(20)]
    port = free_port()
    reader = RedisState.from_url(redis_url, keys=redis_keys)  # reads the server itself, not through the delay
    beats: list[float] = []

    async def body() -> None:
        async with forwarder(port, redis_upstream(redis_url), delay=0.3):
            redis = AsyncRedisState.from_url(redis_url_via(port, redis_url), keys=redis_keys)
            service = FeedService(
                settings, rest=BinanceRest.from_settings(settings), pool=StreamPool(settings), redis=redis
            )
            service.universe = list(followed)
            async with publishing(service, redis, interval=1.0):
                seen: int | None = None
                deadline = time.monotonic() + 10
                while len(beats) < 4 and time.monotonic() < deadline:
                    beat = await asyncio.to_thread(reader.heartbeat, service.component)
                    if beat is not None and beat.ts != seen:
                        seen = beat.ts
                        beats.append(time.monotonic())
                    await asyncio.sleep(0.05)
                gaps = [b - a for a, b in itertools.pairwise(beats)]
                assert len(beats) == 4 and max(gaps) < 3.5, (
                    f"{len(beats)} heartbeats in 10 s, {', '.join(f'{g:.1f}' for g in gaps)} s apart"
                )
                assert set(await asyncio.to_thread(reader.feeds)) == set(followed)
                service.universe = followed[:5]
                await eventually(
                    lambda: set(reader.feeds()) == set(followed[:5]),
                    within=10,
                    what="the symbols cut removed",
                )

    try:
        run(body, timeout=30)
    finally:
        reader.close()
