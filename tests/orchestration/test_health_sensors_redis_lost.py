"""A Redis that comes back empty (restarted without persistence) while a health sensor holds a pause or a
universe cap: the realtime service writes what it applied back (``restore_control``, source
``realtime (restored)``), and the sensor still lifts its own action on recovery, whether the restore comes
before or after its recovery tick. Real Redis and PostgreSQL, as in ``test_health_sensors``."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import redis

from orchestration.health_load import performance_sensor
from orchestration.health_quality import PAUSE_PREFIX, data_quality_sensor
from tapewatch.adapters.db import Database
from tapewatch.adapters.health_store import list_health_incidents, open_health_incidents
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import AsyncRedisState, ControlState, RedisState, SymbolFeed
from tests.helpers import lose_redis_data
from tests.orchestration.health_support import resources, tick

RESTORED = "realtime (restored)"  # the source of the realtime service's restore (realtime.control)
SENSOR = "dagster:health"
# the performance sensor trips and clears at the first check; never below 2 symbols
QUICK = {"performance_trip_checks": "1", "performance_clear_checks": "1", "min_universe_under_load": "2"}


@pytest.fixture
def res(migrated_database_url: str, redis_url: str, redis_keys: Keyspace, tmp_path: Path) -> dict[str, Any]:
    """The sensors' resources: judging data quality after 3 samples, clearing after 1 clean check; the
    performance sensor as in ``QUICK``."""
    settings = {"anomaly_min_samples": "3", "data_quality_clean_checks": "1", **QUICK}
    return resources(migrated_database_url, redis_url, redis_keys, var_dir=str(tmp_path), **settings)


def _service_restores(redis_url: str, keys: Keyspace, state: ControlState) -> list[str]:
    """The realtime service writing back the control state it had applied (the keys absent only); the
    commands it wrote."""

    async def main() -> list[str]:
        service = AsyncRedisState.from_url(redis_url, keys=keys)
        try:
            _, written = await service.restore_control(state, source=RESTORED)
            return written
        finally:
            await service.aclose()

    return asyncio.run(main())


def _publish(redis_url: str, keys: Keyspace, minute: int, resyncs: int, rng: random.Random) -> None:
    """Four calm symbols and the service's totals at ``minute``, as the realtime service publishes them."""
    now = 1_800_000_000.0 + minute * 60

    async def main() -> None:
        state = AsyncRedisState.from_url(redis_url, keys=keys, clock=lambda: now)
        try:
            for i, symbol in enumerate(("AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT")):
                feed = SymbolFeed(
                    state="synced",
                    messages=minute * 700 + rng.randint(-20, 20),
                    last_price=(10.0 + i) * (1 + rng.gauss(0, 0.0003)),
                    spread=0.0002 + rng.gauss(0, 0.00001),
                )
                await state.publish_feed(symbol, feed)
            await state.publish_metrics({"messages": minute * 3000, "resyncs": resyncs})
        finally:
            await state.aclose()

    asyncio.run(main())


ORDERS = ["restored before the recovery tick", "restored after the recovery tick"]


@pytest.mark.parametrize("order", ORDERS)
def test_data_quality_lifts_its_pause_that_redis_lost_and_the_service_wrote_back(
    res: dict[str, Any],
    redis_url: str,
    redis_keys: Keyspace,
    redis_client: redis.Redis,
    redis_state: RedisState,
    db: Database,
    order: str,
) -> None:
    rng = random.Random(9)

    def quality_at(cursor: str | None, minute: int, resyncs: int) -> dg.SensorResult:
        _publish(redis_url, redis_keys, minute, resyncs, rng)
        return tick(data_quality_sensor, cursor, res)

    cursor = None
    for minute in range(1, 6):
        cursor = quality_at(cursor, minute, 0).cursor
    result = quality_at(cursor, 6, 500)  # a resync storm
    assert "-> paused" in str(result.skip_reason)
    reason = redis_state.read_control().paused_reason
    assert reason is not None and reason.startswith(PAUSE_PREFIX)

    lose_redis_data(redis_client, redis_keys)
    lost = ControlState(paused_reason=reason)  # what the service had applied
    if order == ORDERS[0]:
        assert _service_restores(redis_url, redis_keys, lost) == ["paused"]
    result = quality_at(result.cursor, 7, 0)  # clean: the recovery
    [closed] = list_health_incidents(db, kind="data_quality")
    assert closed.ended_at is not None
    if order == ORDERS[1]:
        assert "lost with Redis's data" in str(result.skip_reason), result.skip_reason
        assert _service_restores(redis_url, redis_keys, lost) == ["paused"]
        assert redis_state.read_control().paused_reason == reason
        result = quality_at(result.cursor, 8, 0)
    assert "-> resumed" in str(result.skip_reason), result.skip_reason
    assert not redis_state.read_control().paused
    assert [(e.command, e.value, e.source) for e in redis_state.control_events()] == [
        ("paused", reason, RESTORED),
        ("paused", "", SENSOR),
    ]
    # nothing more to do at the next clean check
    result = quality_at(result.cursor, 9, 0)
    assert "-> " not in str(result.skip_reason) and not redis_state.read_control().paused


# (operator's cap before the overload, followed universe, cap the sensor set)
CAPS = [(40, None, 20), (None, 16, 8)]


@pytest.mark.parametrize(("operator_cap", "universe", "cap"), CAPS, ids=["operator cap 40", "no cap"])
@pytest.mark.parametrize("order", ORDERS)
def test_system_performance_lifts_its_cap_that_redis_lost_and_the_service_wrote_back(
    res: dict[str, Any],
    redis_url: str,
    redis_keys: Keyspace,
    redis_client: redis.Redis,
    redis_state: RedisState,
    db: Database,
    order: str,
    operator_cap: int | None,
    universe: int | None,
    cap: int,
) -> None:
    load = [95.0]
    sensor = performance_sensor(lambda: (load[0], 40.0))
    symbols = None if universe is None else tuple(f"S{i}USDT" for i in range(universe))
    if operator_cap is not None:
        redis_state.set_max_universe(operator_cap, source="dashboard:alice")
    if symbols is not None:
        redis_state.set_universe(symbols, source="dagster")
    result = tick(sensor, None, res)
    assert redis_state.read_control().max_universe == cap

    lose_redis_data(redis_client, redis_keys)
    lost = ControlState(universe=symbols, max_universe=cap)  # what the service had applied
    load[0] = 10.0
    if order == ORDERS[0]:
        assert "max_universe" in _service_restores(redis_url, redis_keys, lost)
    result = tick(sensor, result.cursor, res)  # the recovery
    [closed] = list_health_incidents(db, kind="system_performance")
    assert closed.ended_at is not None
    if order == ORDERS[1]:
        assert "lost with Redis's data" in str(result.skip_reason), result.skip_reason
        _service_restores(redis_url, redis_keys, lost)  # writes the cap back if it is still absent
        result = tick(sensor, result.cursor, res)
    assert redis_state.read_control().max_universe == operator_cap, result.skip_reason
    # nothing more to do at the next check
    result = tick(sensor, result.cursor, res)
    assert "-> " not in str(result.skip_reason)
    assert redis_state.read_control().max_universe == operator_cap


def test_an_overload_while_redis_is_empty_keeps_the_operators_cap_to_restore(
    res: dict[str, Any],
    redis_url: str,
    redis_keys: Keyspace,
    redis_client: redis.Redis,
    redis_state: RedisState,
    db: Database,
) -> None:
    load = [95.0]
    sensor = performance_sensor(lambda: (load[0], 40.0))
    redis_state.set_max_universe(40, source="dashboard:alice")
    result = tick(sensor, None, res)
    assert redis_state.read_control().max_universe == 20
    lose_redis_data(redis_client, redis_keys)
    # still overloaded before the service noticed: the sensor's cap 20 is lost, not the operator's doing
    result = tick(sensor, result.cursor, res)
    assert "universe capped at 10 (was 20)" in str(result.skip_reason), result.skip_reason
    # the service's restore keeps the cap written since the loss
    assert _service_restores(redis_url, redis_keys, ControlState(max_universe=20)) == []
    [incident] = open_health_incidents(db)
    assert incident.values["previous_cap"] == 40
    load[0] = 10.0
    result = tick(sensor, result.cursor, res)
    assert "universe cap back to 40" in str(result.skip_reason), result.skip_reason
    assert redis_state.read_control().max_universe == 40


def test_a_cap_the_operator_set_again_to_the_same_value_is_theirs(
    res: dict[str, Any], redis_state: RedisState, db: Database
) -> None:
    load = [95.0]
    sensor = performance_sensor(lambda: (load[0], 40.0))
    redis_state.set_max_universe(40, source="dashboard:alice")
    result = tick(sensor, None, res)
    assert redis_state.read_control().max_universe == 20
    redis_state.set_max_universe(20, source="dashboard:alice")  # the operator keeps it at 20 on purpose
    load[0] = 10.0
    result = tick(sensor, result.cursor, res)
    assert "left as is" in str(result.skip_reason), result.skip_reason
    assert redis_state.read_control().max_universe == 20
    [closed] = list_health_incidents(db, kind="system_performance")
    assert closed.ended_at is not None and "left as is" in str(closed.recovery)


def test_data_quality_lifts_its_lost_pause_after_its_cursor_is_lost_too(
    res: dict[str, Any],
    redis_url: str,
    redis_keys: Keyspace,
    redis_client: redis.Redis,
    redis_state: RedisState,
) -> None:
    rng = random.Random(9)

    def quality_at(cursor: str | None, minute: int, resyncs: int) -> dg.SensorResult:
        _publish(redis_url, redis_keys, minute, resyncs, rng)
        return tick(data_quality_sensor, cursor, res)

    cursor = None
    for minute in range(1, 6):
        cursor = quality_at(cursor, minute, 0).cursor
    assert "-> paused" in str(quality_at(cursor, 6, 500).skip_reason)
    reason = redis_state.read_control().paused_reason
    lose_redis_data(redis_client, redis_keys)
    # the cursor is reset as well: the open incident's reason is the pause's
    result = quality_at(None, 7, 0)
    assert "lost with Redis's data" in str(result.skip_reason), result.skip_reason
    _service_restores(redis_url, redis_keys, ControlState(paused_reason=reason))
    result = quality_at(result.cursor, 8, 0)
    assert "-> resumed" in str(result.skip_reason), result.skip_reason
    assert not redis_state.read_control().paused


def test_system_performance_restores_the_operators_cap_after_redis_and_its_cursor_are_lost(
    res: dict[str, Any],
    redis_url: str,
    redis_keys: Keyspace,
    redis_client: redis.Redis,
    redis_state: RedisState,
) -> None:
    load = [95.0]
    sensor = performance_sensor(lambda: (load[0], 40.0))
    redis_state.set_max_universe(40, source="dashboard:alice")
    tick(sensor, None, res)
    assert redis_state.read_control().max_universe == 20
    lose_redis_data(redis_client, redis_keys)
    load[0] = 10.0
    result = tick(sensor, None, res)  # reset, and the load is gone
    assert "universe cap 20 taken back as this sensor's (to restore: 40)" in str(result.skip_reason)
    assert "universe cap back to 40" in str(result.skip_reason), result.skip_reason
    assert _service_restores(redis_url, redis_keys, ControlState(max_universe=20)) == []
    assert redis_state.read_control().max_universe == 40
