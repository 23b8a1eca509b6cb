"""The health sensors see the realtime service as it runs: its shards (``tapewatch run --shard I/N`` beats as
``realtime-IofN``), each websocket route's silence, and the load of its own host from its heartbeat, against
real Redis, PostgreSQL and the simulated exchange's REST."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from orchestration.health_connectivity import api_connectivity_sensor
from orchestration.health_load import performance_sensor
from tapewatch.adapters.db import Database
from tapewatch.adapters.health_store import open_health_incidents
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import AsyncRedisState, RedisState
from tests.orchestration.health_support import resources, sim_exchange, tick

SHARDS = ("realtime-0of2", "realtime-1of2")


@pytest.fixture
def res(migrated_database_url: str, redis_url: str, redis_keys: Keyspace, tmp_path: Path) -> Any:
    def make(rest_url: str | None = None, **settings: str) -> dict[str, Any]:
        return resources(
            migrated_database_url, redis_url, redis_keys, rest_url, var_dir=str(tmp_path), **settings
        )

    return make


def _instance(
    redis_url: str,
    keys: Keyspace,
    name: str,
    metrics: Mapping[str, int] | None = None,
    info: Mapping[str, str | int | float | bool] | None = None,
    ttl_s: float = 60.0,
) -> None:
    """A realtime instance as the sensors see it: its heartbeat (with ``info``) and its metrics."""

    async def main() -> None:
        state = AsyncRedisState.from_url(redis_url, keys=keys)
        try:
            await state.beat(name, ttl_s=ttl_s, info=info)
            if metrics is not None:
                await state.publish_metrics({"messages": 1000, **metrics}, name)
        finally:
            await state.aclose()

    asyncio.run(main())


def _dead(redis_url: str, keys: Keyspace, name: str) -> None:
    """An instance that beat once and whose heartbeat expired (remembered among the components)."""
    _instance(redis_url, keys, name, ttl_s=0.001)
    time.sleep(0.05)


def test_sharded_realtime_is_judged_by_its_worst_shard(
    res: Any, redis_state: RedisState, db: Database, redis_url: str, redis_keys: Keyspace
) -> None:
    _dead(redis_url, redis_keys, "realtime")  # the single instance of before the shards: not judged
    for name in SHARDS:
        _instance(redis_url, redis_keys, name, {"ws_silent_ms": 300})
    with sim_exchange() as rest_url:
        quick = res(rest_url, timeout_threshold="1", backup_min_dwell="0")
        result = tick(api_connectivity_sensor, None, quick)
        assert "REST and websockets fine" in str(result.skip_reason)
        assert open_health_incidents(db) == []

        # shard 1's /market route is dead while its /public flows and shard 0 is fine: every shard's
        # trades go stale there, so the backup feed (one flag for every shard) goes on
        silent_market = {"ws_silent_ms": 95_000, "ws_silent_public_ms": 200, "ws_silent_market_ms": 95_000}
        _instance(redis_url, redis_keys, SHARDS[1], silent_market)
        result = tick(api_connectivity_sensor, result.cursor, quick)
    assert "-> backup feed on" in str(result.skip_reason)
    assert "for 95 s on /market of realtime-1of2" in str(result.skip_reason)
    assert redis_state.read_control().backup_feed
    [incident] = open_health_incidents(db)
    assert incident.action == "backup feed on" and "/market of realtime-1of2" in incident.reason
    assert incident.values["realtime"] in SHARDS


def test_a_dead_shard_is_reported_and_a_silent_one_still_gets_the_backup_feed(
    res: Any, redis_state: RedisState, db: Database, redis_url: str, redis_keys: Keyspace
) -> None:
    _dead(redis_url, redis_keys, SHARDS[0])
    _instance(redis_url, redis_keys, SHARDS[1], {"ws_silent_ms": 95_000})
    with sim_exchange() as rest_url:
        result = tick(api_connectivity_sensor, None, res(rest_url, timeout_threshold="1"))
    reason = str(result.skip_reason)
    assert "no realtime-0of2 heartbeat" in reason
    assert "websockets delivered nothing for 95 s on realtime-1of2" in reason
    assert "-> backup feed on" in reason  # shard 1 beats: it runs the backup feed
    assert redis_state.read_control().backup_feed


def test_every_shard_down_is_reported_only(
    res: Any, redis_state: RedisState, db: Database, redis_url: str, redis_keys: Keyspace
) -> None:
    for name in SHARDS:
        _dead(redis_url, redis_keys, name)
    with sim_exchange() as rest_url:
        result = tick(api_connectivity_sensor, None, res(rest_url, timeout_threshold="1"))
    assert "no realtime-0of2, realtime-1of2 heartbeat" in str(result.skip_reason)
    assert "not running" in str(result.skip_reason)
    assert not redis_state.read_control().backup_feed


def _load(cpu: float, memory: float) -> dict[str, str | int | float | bool]:
    return {"host_cpu": cpu, "host_memory": memory, "cpu": 97.0, "rss": 512 * 1_048_576}


QUICK = {"performance_trip_checks": "1", "performance_clear_checks": "1", "min_universe_under_load": "2"}


def test_the_load_judged_is_the_realtime_hosts_not_the_sensors(
    res: Any, redis_state: RedisState, db: Database, redis_url: str, redis_keys: Keyspace
) -> None:
    redis_state.set_max_universe(40, source="cli")
    local = performance_sensor(lambda: (10.0, 40.0))  # the Dagster machine: idle
    _instance(redis_url, redis_keys, "realtime", info=_load(95.0, 40.0))
    result = tick(local, None, res(**QUICK))
    assert "CPU 95 % > 80 %" in str(result.skip_reason) and "realtime on " in str(result.skip_reason)
    assert redis_state.read_control().max_universe == 20
    [incident] = open_health_incidents(db)
    assert incident.values["source"].startswith("realtime on ") and incident.values["cpu_percent"] == 95.0
    assert "(realtime on " in incident.reason

    # the realtime host calms down: the cap is restored, whatever the sensor's own machine says
    _instance(redis_url, redis_keys, "realtime", info=_load(20.0, 40.0))
    busy_local = performance_sensor(lambda: (99.0, 99.0))
    result = tick(busy_local, result.cursor, res(**QUICK))
    assert "fine (realtime on " in str(result.skip_reason)
    assert redis_state.read_control().max_universe == 40


def test_the_worst_shard_host_is_judged_and_the_local_machine_without_a_published_load(
    res: Any, redis_state: RedisState, db: Database, redis_url: str, redis_keys: Keyspace
) -> None:
    # no realtime heartbeat with its load (a service that publishes none): the local machine, said so
    _instance(redis_url, redis_keys, SHARDS[0], info={"pid": 1})
    result = tick(performance_sensor(lambda: (91.0, 30.0)), None, res(**QUICK))
    assert "this machine, running the sensor (no live realtime heartbeat carries" in str(result.skip_reason)
    [incident] = open_health_incidents(db)
    assert incident.values["source"].startswith("this machine") and incident.values["cpu_percent"] == 91.0

    # shards on two hosts: each threshold judged on the worst host, both named
    _instance(redis_url, redis_keys, SHARDS[0], info=_load(20.0, 90.0))
    _instance(redis_url, redis_keys, SHARDS[1], info=_load(95.0, 30.0))
    result = tick(performance_sensor(lambda: (1.0, 1.0)), result.cursor, res(**QUICK))
    reason = str(result.skip_reason)
    assert "CPU 95 % > 80 %" in reason and "memory 90 % > 85 %" in reason
    assert "CPU: realtime-1of2 on " in reason and "memory: realtime-0of2 on " in reason
