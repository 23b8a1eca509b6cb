"""Redis keys and the typed state wrapper, against a real Redis (the session's, or one of the test's own)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from pathlib import Path

import msgspec
import pytest
import redis

from tapewatch.adapters.embedded import start_redis, stop_redis
from tapewatch.adapters.redis_keys import KEYS, REALTIME, Keyspace
from tapewatch.adapters.redis_state import AsyncRedisState, ControlState, RedisState, SymbolFeed
from tapewatch.errors import ConfigError, StorageUnavailable
from tests.helpers import lose_redis_data

NOW = 1_723_111_200.0  # 2024-08-08 10:00:00 UTC, a fixed wall clock


def clock() -> float:
    return NOW


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- key names (no server) --------------------------------------------------------------------------------


def test_production_key_names() -> None:
    assert KEYS.heartbeat("realtime") == "tw:heartbeat:realtime"
    assert KEYS.symbol_feed("BTCUSDT") == "tw:symbol:BTCUSDT:feed"
    assert KEYS.metrics() == "tw:metrics:realtime"
    assert (KEYS.control_universe, KEYS.control_paused) == ("tw:control:universe", "tw:control:paused")
    assert (KEYS.control_backup_feed, KEYS.control_max_universe) == (
        "tw:control:backup_feed",
        "tw:control:max_universe",
    )
    assert KEYS.control_events == "tw:control:events"
    assert KEYS.control_marker == "tw:control:marker"
    assert KEYS.signals_stream == "tw:stream:signals"
    assert KEYS.pattern == "tw:*"


@pytest.mark.parametrize(
    "make",
    [
        lambda: KEYS.heartbeat(""),
        lambda: KEYS.heartbeat("real time"),
        lambda: KEYS.heartbeat("a:b"),
        lambda: KEYS.metrics("*"),
        lambda: KEYS.symbol_feed("btcusdt"),
        lambda: KEYS.symbol_feed("BTC*"),
        lambda: Keyspace("tw"),
        lambda: Keyspace("tw*:"),
        lambda: Keyspace(""),
    ],
)
def test_names_that_could_collide_or_glob_are_refused(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


# --- heartbeats -------------------------------------------------------------------------------------------


def test_heartbeats_carry_time_pid_and_expire(redis_state: RedisState, redis_client: redis.Redis) -> None:
    state = RedisState(redis_state.client, keys=redis_state.keys, clock=clock)
    assert state.heartbeats() == {}
    state.beat("realtime", ttl_s=15, info={"symbols": 30, "exchange": "sim"})
    beat = state.heartbeat("realtime")
    assert beat is not None
    assert (beat.component, beat.ts, beat.info) == (
        "realtime",
        int(NOW * 1000),
        {"symbols": 30, "exchange": "sim"},
    )
    assert beat.pid > 0 and beat.host
    assert beat.age(int(NOW * 1000) + 2500) == 2.5
    assert 0 < redis_client.pttl(state.keys.heartbeat("realtime")) <= 15_000
    state.beat("dagster")
    assert set(state.heartbeats()) == {"realtime", "dagster"}
    # Expiry is what "down" looks like: the component stays known, its heartbeat is gone.
    redis_client.delete(state.keys.heartbeat("dagster"))
    beats = state.heartbeats()
    assert beats["dagster"] is None and beats["realtime"] == beat
    state.forget_component("dagster")
    assert set(state.heartbeats()) == {"realtime"}


def test_an_unreadable_heartbeat_reads_as_down(redis_state: RedisState, redis_client: redis.Redis) -> None:
    redis_state.beat("realtime")
    redis_client.set(redis_state.keys.heartbeat("realtime"), "{not json")
    assert redis_state.heartbeat("realtime") is None
    assert redis_state.heartbeats() == {"realtime": None}
    with pytest.raises(ValueError):
        redis_state.beat("realtime", ttl_s=0)


# --- feed stats and metrics (written async by the service, read sync by tools) -----------------------------


def test_feed_stats_round_trip_and_replace(
    redis_url: str, redis_state: RedisState, redis_client: redis.Redis
) -> None:
    synced = SymbolFeed(
        state="synced",
        update_id=7_000_001,
        best_bid=64_000.1,
        best_ask=64_000.2,
        imbalance_top10=-0.3125,
        last_event_ms=1_723_111_199_900,
        lag_ms=12.5,
        messages=1200,
        gaps=1,
        resyncs=1,
    )
    resyncing = SymbolFeed(state="resyncing", messages=1300, gaps=2, resyncs=2)

    async def service() -> None:
        state = AsyncRedisState.from_url(redis_url, keys=redis_state.keys, clock=clock)
        try:
            await state.publish_feed("BTCUSDT", synced, ttl_s=60)
            await state.publish_feed("ETHUSDT", resyncing)
            await state.publish_feed("ETHUSDT", resyncing)
        finally:
            await state.aclose()

    asyncio.run(service())
    stamped = int(NOW * 1000)
    assert redis_state.feed("BTCUSDT") == msgspec.structs.replace(synced, updated_ms=stamped)
    assert 0 < redis_client.pttl(redis_state.keys.symbol_feed("BTCUSDT")) <= 60_000
    assert set(redis_state.feeds()) == {"BTCUSDT", "ETHUSDT"}

    async def book_lost() -> None:
        state = AsyncRedisState.from_url(redis_url, keys=redis_state.keys, clock=clock)
        try:
            await state.publish_feed("BTCUSDT", resyncing)
            await state.remove_feed("ETHUSDT")
        finally:
            await state.aclose()

    asyncio.run(book_lost())
    btc = redis_state.feed("BTCUSDT")
    assert btc is not None and btc.state == "resyncing" and btc.best_bid is None and btc.update_id is None
    assert set(redis_state.feeds()) == {"BTCUSDT"}
    assert redis_state.feed("ETHUSDT") is None


def test_unreadable_feed_stats_are_skipped(redis_state: RedisState, redis_client: redis.Redis) -> None:
    keys = redis_state.keys
    redis_client.hset(keys.symbol_feed("BTCUSDT"), mapping={"state": "synced", "update_id": "many"})
    redis_client.sadd(keys.feed_symbols, "BTCUSDT", "XRPUSDT")  # XRPUSDT: listed, but its hash expired
    assert redis_state.feed("BTCUSDT") is None
    assert redis_state.feeds() == {}


def test_metrics_snapshots_replace_each_other(
    redis_url: str, redis_state: RedisState, redis_client: redis.Redis
) -> None:
    async def service() -> None:
        state = AsyncRedisState.from_url(redis_url, keys=redis_state.keys, clock=clock)
        try:
            await state.publish_metrics({"messages": 10, "redis_errors": 1, "old_gauge": 0.5})
            await state.publish_metrics({"messages": 25, "redis_errors": 1, "loop_lag_ms": 3.25})
        finally:
            await state.aclose()

    asyncio.run(service())
    assert redis_state.metrics(REALTIME) == {
        "messages": 25.0,
        "redis_errors": 1.0,
        "loop_lag_ms": 3.25,
        "updated_ms": NOW * 1000,
    }
    redis_client.hset(redis_state.keys.metrics(REALTIME), "broken", "n/a")
    assert "broken" not in redis_state.metrics(REALTIME)
    assert redis_state.metrics("dashboard") == {}


def test_realtime_metrics_are_the_live_services_not_dead_shards(
    redis_url: str, redis_state: RedisState, redis_client: redis.Redis
) -> None:
    """Components are remembered after their heartbeat expires: shards that ran once must not hide the single
    service running now, nor a dead shard's last figures count with the live shards'."""

    async def publish(component: str, messages: int) -> None:
        state = AsyncRedisState.from_url(redis_url, keys=redis_state.keys, clock=clock)
        try:
            await state.beat(component, ttl_s=30)
            await state.publish_metrics({"messages": messages, "loop_lag_ms": messages / 100}, component)
        finally:
            await state.aclose()

    def expire(component: str) -> None:
        redis_client.delete(redis_state.keys.heartbeat(component))

    for shard, messages in (("realtime-0of2", 100), ("realtime-1of2", 200)):
        asyncio.run(publish(shard, messages))
    assert redis_state.realtime_metrics()["messages"] == 300  # both shards live: summed
    expire("realtime-0of2")
    assert redis_state.realtime_metrics()["messages"] == 200  # only the live shard
    expire("realtime-1of2")
    assert redis_state.realtime_metrics()["messages"] == 300  # none alive: their last figures
    asyncio.run(publish(REALTIME, 999_999))
    metrics = redis_state.realtime_metrics()
    assert (metrics["messages"], metrics["loop_lag_ms"]) == (999_999, 9_999.99)  # the single service's


# --- open signals and per-symbol features (written by the service, read by the dashboard) -----------------


def test_open_signals_are_updated_removed_and_rebuilt(
    redis_url: str, redis_state: RedisState, redis_client: redis.Redis
) -> None:
    a = {"signal_id": "a", "symbol": "BTCUSDT", "state": "WAITING", "unrealised_r": 0.0, "entry_price": 10.5}
    b = {"signal_id": "b", "symbol": "ETHUSDT", "state": "TRIGGERED", "unrealised_r": -0.25}

    async def service(*steps: tuple[dict[str, dict[str, object]], list[str], bool]) -> None:
        state = AsyncRedisState.from_url(redis_url, keys=redis_state.keys, clock=clock)
        try:
            for changed, removed, replace in steps:
                await state.update_open_signals(changed, removed, replace=replace)
        finally:
            await state.aclose()

    assert redis_state.open_signals() == {}
    asyncio.run(service(({"a": a, "b": b}, [], False)))
    assert redis_state.open_signals() == {"a": a, "b": b}
    moved = {**a, "state": "TRIGGERED", "unrealised_r": 0.5}
    asyncio.run(service(({"a": moved}, ["b"], False)))
    assert redis_state.open_signals() == {"a": moved}
    # a rebuild at start replaces everything (a signal that finished while the service was down goes)
    asyncio.run(service(({"b": b}, [], True)))
    assert redis_state.open_signals() == {"b": b}
    asyncio.run(service(({}, [], True)))
    assert redis_state.open_signals() == {}
    # a hand-edited entry is skipped, the others are read
    redis_client.hset(
        redis_state.keys.open_signals, mapping={"x": "{not json", "y": "[1]", "b": msgspec.json.encode(b)}
    )
    assert redis_state.open_signals() == {"b": b}


def test_symbol_features_round_trip_with_ttl(
    redis_url: str, redis_state: RedisState, redis_client: redis.Redis
) -> None:
    btc = {"price": 64_000.5, "imbalance_top10": 0.31, "large_buys": 4, "book": "synced"}

    async def service() -> None:
        state = AsyncRedisState.from_url(redis_url, keys=redis_state.keys, clock=clock)
        try:
            await state.publish_features({"BTCUSDT": (1_723_111_199_000, btc), "ETHUSDT": (5, {})}, ttl_s=30)
            with pytest.raises(ValueError, match="ttl"):
                await state.publish_features({"BTCUSDT": (1, btc)}, ttl_s=0)
        finally:
            await state.aclose()

    asyncio.run(service())
    assert redis_state.symbol_features("BTCUSDT") == {"ts": 1_723_111_199_000, "features": btc}
    assert redis_state.symbol_features("ETHUSDT") == {"ts": 5, "features": {}}
    assert 0 < redis_client.pttl(redis_state.keys.symbol_features("BTCUSDT")) <= 30_000
    assert redis_state.symbol_features("XRPUSDT") is None  # never published (or expired)
    redis_client.set(redis_state.keys.symbol_features("XRPUSDT"), "{broken")
    assert redis_state.symbol_features("XRPUSDT") is None
    redis_client.set(redis_state.keys.symbol_features("XRPUSDT"), '{"ts": 1, "features": 3}')
    assert redis_state.symbol_features("XRPUSDT") is None
    with pytest.raises(ValueError):
        redis_state.symbol_features("xrpusdt")


# --- cancellation -----------------------------------------------------------------------------------------


def test_a_cancellation_swallowed_inside_a_call_is_raised_again(redis_url: str, redis_keys: Keyspace) -> None:
    """Python 3.11's wait_for can return normally although the task was cancelled meanwhile (redis-py
    connects and writes through it): the call must not return as if nothing happened."""

    async def scenario() -> tuple[bool, bool]:
        state = AsyncRedisState.from_url(redis_url, keys=redis_keys)
        try:
            await state.ping()  # connected: the later call goes straight to the socket
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            # what wait_for does in the race: the CancelledError is caught and not re-raised, but the request
            # still counts (task.cancelling() == 1)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0)
            raised = False
            try:
                await state.beat("realtime", ttl_s=5)
            except asyncio.CancelledError:
                raised = True
            task.uncancel()
            await state.ping()  # once the request is withdrawn, calls work again
            return raised, task.cancelling() == 0
        finally:
            await state.aclose()

    assert asyncio.run(scenario()) == (True, True)


# --- control ----------------------------------------------------------------------------------------------


def test_control_changes_reach_the_service(redis_url: str, redis_state: RedisState) -> None:
    assert redis_state.read_control() == ControlState()
    redis_state.set_universe(["BTCUSDT", "ETHUSDT"], source="rescan")
    redis_state.pause("data quality: 3 sigma anomaly", source="sensor")
    redis_state.set_backup_feed(True, source="sensor")
    redis_state.set_max_universe(12, source="sensor")

    async def service() -> ControlState:
        state = AsyncRedisState.from_url(redis_url, keys=redis_state.keys)
        try:
            return await state.read_control()
        finally:
            await state.aclose()

    control = asyncio.run(service())
    assert control == ControlState(
        universe=("BTCUSDT", "ETHUSDT"),
        paused_reason="data quality: 3 sigma anomaly",
        backup_feed=True,
        max_universe=12,
    )
    assert control.paused
    events = redis_state.control_events()
    assert [(e.command, e.source) for e in events] == [
        ("universe", "rescan"),
        ("paused", "sensor"),
        ("backup_feed", "sensor"),
        ("max_universe", "sensor"),
    ]
    assert events[0].value == '["BTCUSDT","ETHUSDT"]' and events[3].value == "12"
    redis_state.set_universe(None, source="operator")
    redis_state.resume(source="operator")
    redis_state.set_backup_feed(False, source="operator")
    redis_state.set_max_universe(None, source="operator")
    assert redis_state.read_control() == ControlState()
    assert [e.command for e in redis_state.control_events(events[-1].id)] == [
        "universe",
        "paused",
        "backup_feed",
        "max_universe",
    ]


def test_a_control_change_wakes_a_waiting_service(redis_url: str, redis_state: RedisState) -> None:
    async def service() -> tuple[list[str], float]:
        state = AsyncRedisState.from_url(redis_url, keys=redis_state.keys)
        try:
            after = await state.last_control_event_id()
            assert after == "0-0"
            assert await state.control_events(after) == []  # nothing yet, and no blocking without block_ms
            # The change comes from another process while the service waits.
            operator = threading.Timer(0.05, lambda: redis_state.pause("operator", source="cli"))
            operator.start()
            started = time.monotonic()
            events = await state.control_events(after, block_ms=5000)
            waited = time.monotonic() - started
            operator.join()
            return [e.command for e in events], waited
        finally:
            await state.aclose()

    commands, waited = asyncio.run(service())
    assert commands == ["paused"]
    assert waited < 2.0  # woken by the event, not by the 5 s timeout


def test_hostile_control_values_are_ignored_and_reported(
    redis_state: RedisState, redis_client: redis.Redis
) -> None:
    keys = redis_state.keys
    redis_client.set(keys.control_universe, "BTCUSDT,ETHUSDT")  # not JSON
    redis_client.set(keys.control_backup_feed, "maybe")
    redis_client.set(keys.control_max_universe, "-3")
    redis_client.rpush(keys.control_paused, "oops")  # wrong type: GET fails with WRONGTYPE
    control = redis_state.read_control()
    assert (control.universe, control.backup_feed, control.max_universe, control.paused) == (
        None,
        False,
        None,
        False,
    )
    assert set(control.invalid) == {
        keys.control_universe,
        keys.control_backup_feed,
        keys.control_max_universe,
        keys.control_paused,
    }
    redis_client.set(keys.control_universe, '["BTCUSDT", "btc usdt"]')
    assert redis_state.read_control().universe is None
    # Values an operator types by hand are understood.
    redis_client.set(keys.control_universe, '["SOLUSDT"]')
    redis_client.set(keys.control_backup_feed, "1")
    redis_client.set(keys.control_max_universe, "5")
    redis_client.delete(keys.control_paused)
    assert redis_state.read_control() == ControlState(universe=("SOLUSDT",), backup_feed=True, max_universe=5)


def test_every_control_write_keeps_one_marker_and_a_restore_writes_only_absent_keys(
    redis_url: str, redis_state: RedisState, redis_client: redis.Redis
) -> None:
    keys = redis_state.keys
    redis_state.pause("maintenance", source="ops")
    marker = redis_client.get(keys.control_marker)
    assert marker  # set by the first write
    redis_state.resume(source="ops")
    redis_state.set_universe(["BTCUSDT"], source="dagster")
    assert redis_client.get(keys.control_marker) == marker  # kept, not replaced, by every write

    async def restore(state: ControlState) -> tuple[tuple[ControlState, str | None], tuple[str, list[str]]]:
        service = AsyncRedisState.from_url(redis_url, keys=keys)
        try:
            done = await service.restore_control(state, source="realtime (restored)")
            return await service.read_control_marked(), done
        finally:
            await service.aclose()

    # Redis loses its data (the events stream with the keys); then a universe is written: a new marker
    lose_redis_data(redis_client, keys)
    redis_state.set_universe(["BTCUSDT"], source="dagster")
    lost = ControlState(universe=("ETHUSDT",), paused_reason="maintenance", backup_feed=True, max_universe=3)
    (read, now), (held, written) = asyncio.run(restore(lost))
    assert held == now and held not in (None, marker)  # a new marker: told from the one known before
    # the universe written since the loss is kept; the absent keys are written back, one event each
    assert written == ["paused", "backup_feed", "max_universe"]
    assert read == ControlState(
        universe=("BTCUSDT",), paused_reason="maintenance", backup_feed=True, max_universe=3
    )
    events = redis_state.control_events()[-3:]
    assert [(e.command, e.value, e.source) for e in events] == [
        ("paused", "maintenance", "realtime (restored)"),
        ("backup_feed", "1", "realtime (restored)"),
        ("max_universe", "3", "realtime (restored)"),
    ]
    # a second restorer (another shard) finds everything there: nothing written, the same marker
    (_, again), (held_again, written_again) = asyncio.run(restore(lost))
    assert (held_again, written_again, again) == (held, [], held)
    assert len(redis_state.control_events()) == 4


def test_a_restore_leaves_a_key_whose_command_was_written_since_the_loss(
    redis_url: str, redis_state: RedisState, redis_client: redis.Redis
) -> None:
    """After the loss an operator resumed (the key stays absent, its event is the only trace): the restore
    must not write the pause back. The events stream was lost with the keys, so any event in it is newer."""
    keys = redis_state.keys
    redis_state.pause("maintenance", source="ops")
    lose_redis_data(redis_client, keys)
    redis_state.resume(source="dashboard")

    async def restore() -> list[str]:
        service = AsyncRedisState.from_url(redis_url, keys=keys)
        try:
            _, written = await service.restore_control(
                ControlState(paused_reason="maintenance", max_universe=2), source="realtime (restored)"
            )
            return written
        finally:
            await service.aclose()

    assert asyncio.run(restore()) == ["max_universe"]
    assert redis_state.read_control() == ControlState(max_universe=2)


def test_bad_control_commands_are_refused_before_reaching_redis(redis_state: RedisState) -> None:
    with pytest.raises(TypeError):
        redis_state.set_universe("BTCUSDT", source="cli")
    with pytest.raises(ValueError, match="BTC-USDT"):
        redis_state.set_universe(["BTCUSDT", "BTC-USDT"], source="cli")
    for limit in (0, -1, True):
        with pytest.raises(ValueError):
            redis_state.set_max_universe(limit, source="cli")
    with pytest.raises(ValueError, match="reason"):
        redis_state.pause("", source="cli")
    assert redis_state.read_control() == ControlState()
    assert redis_state.control_events() == []


def test_waiting_longer_than_the_socket_timeout_is_refused(redis_url: str, redis_keys: Keyspace) -> None:
    async def service() -> None:
        state = AsyncRedisState.from_url(redis_url, keys=redis_keys)
        try:
            with pytest.raises(ValueError, match="block_ms"):
                await state.control_events("0-0", block_ms=60_000)
        finally:
            await state.aclose()

    asyncio.run(service())


# --- Redis unreachable or going away ----------------------------------------------------------------------


def test_a_bad_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="redis://"):
        RedisState.from_url("http://127.0.0.1:6379")


def test_an_unreachable_redis_is_storage_unavailable_with_advice() -> None:
    state = RedisState.from_url(f"redis://127.0.0.1:{_free_port()}/0")
    try:
        with pytest.raises(StorageUnavailable) as caught:
            state.ping()
        assert "TAPEWATCH_REDIS_URL" in str(caught.value) and "running" in str(caught.value)
    finally:
        state.close()


@pytest.mark.db
def test_redis_going_away_and_coming_back(server_tmp_path: Path) -> None:
    # A Redis of this test's own: stopping the session's (or the machine's) server would hurt others.
    redis_dir = server_tmp_path / "redis"
    url = start_redis(redis_dir)
    keys = Keyspace("twtest:outage:")
    tool = RedisState.from_url(url, keys=keys)
    try:
        tool.pause("maintenance", source="test")

        async def service_while(up: bool) -> int:
            """Run what the service does each second; count the failures as the service would."""
            state = AsyncRedisState.from_url(url, keys=keys)
            errors = 0
            try:
                for step in (state.beat(), state.publish_metrics({"messages": 1}), state.read_control()):
                    try:
                        result = await step
                        if isinstance(result, ControlState):
                            assert result.paused_reason == "maintenance"
                    except StorageUnavailable as exc:
                        assert "TAPEWATCH_REDIS_URL" in str(exc)
                        errors += 1
                assert up == (errors == 0)
            finally:
                await state.aclose()
            return errors

        assert asyncio.run(service_while(up=True)) == 0
        assert stop_redis(redis_dir)
        assert asyncio.run(service_while(up=False)) == 3
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match="unix://"):
            tool.read_control()
        assert time.monotonic() - started < 2.0  # a short retry, not redis-py's default ~4 s of them
        start_redis(redis_dir)
        assert tool.read_control().paused_reason == "maintenance"  # kept in the append-only file
        assert asyncio.run(service_while(up=True)) == 0
    finally:
        tool.close()
        stop_redis(redis_dir)


def test_a_shards_rebuild_leaves_the_other_shards_open_signals(
    redis_url: str, redis_state: RedisState
) -> None:
    mine_old = {
        "signal_id": "m1",
        "symbol": "BTCUSDT",
        "state": "WAITING",
    }  # finished while this shard was down
    mine_new = {"signal_id": "m2", "symbol": "BTCUSDT", "state": "TRIGGERED"}
    theirs = {"signal_id": "t1", "symbol": "ETHUSDT", "state": "TRIGGERED"}

    async def rebuild() -> None:
        state = AsyncRedisState.from_url(redis_url, keys=redis_state.keys, clock=clock)
        try:
            await state.update_open_signals({"m1": mine_old, "t1": theirs}, [], replace=False)
            await state.update_open_signals({"m2": mine_new}, [], replace=True, owns=lambda s: s == "BTCUSDT")
        finally:
            await state.aclose()

    asyncio.run(rebuild())
    assert redis_state.open_signals() == {"m2": mine_new, "t1": theirs}
