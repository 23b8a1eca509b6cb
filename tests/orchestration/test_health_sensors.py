"""The health sensors through ``build_sensor_context`` against real Redis, PostgreSQL and a real REST endpoint
(the simulated exchange, or a closed port for an unreachable API)."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import dagster as dg
import pytest

from orchestration.health_connectivity import api_connectivity_sensor
from orchestration.health_load import performance_sensor
from orchestration.health_quality import PAUSE_PREFIX, data_quality_sensor
from tapewatch.adapters.db import Database
from tapewatch.adapters.health_store import list_health_incidents, open_health_incidents
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import AsyncRedisState, RedisState, SymbolFeed
from tests.orchestration.health_support import closed_port_url, resources, sim_exchange, tick


class Resources(Protocol):
    def __call__(
        self, rest_url: str | None = None, *, database_url: str | None = None, **settings: str
    ) -> dict[str, Any]:
        """The sensors' resources on this test's PostgreSQL (or ``database_url``), Redis and var directory,
        REST at ``rest_url``, with ``settings`` overridden."""
        ...


@pytest.fixture
def res_for(migrated_database_url: str, redis_url: str, redis_keys: Keyspace, tmp_path: Path) -> Resources:
    def make(
        rest_url: str | None = None, *, database_url: str | None = None, **settings: str
    ) -> dict[str, Any]:
        url = database_url or migrated_database_url
        public = settings.get("binance_ws_public_url")
        if public is not None and "binance_ws_market_url" not in settings:  # the probe checks both routes
            settings["binance_ws_market_url"] = public.removesuffix("/public") + "/market"
        return resources(url, redis_url, redis_keys, rest_url, var_dir=str(tmp_path), **settings)

    return make


@dataclass
class Load:
    """The CPU and memory load (%) that the performance sensor of ``sensor()`` reads at each tick."""

    cpu: float = 10.0
    memory: float = 40.0

    def sensor(self) -> dg.SensorDefinition:
        return performance_sensor(lambda: (self.cpu, self.memory))


def _service(redis_url: str, keys: Keyspace, ws_silent_ms: int) -> None:
    """A live realtime service as the sensor sees it: a heartbeat, and metrics saying how long its websockets
    have delivered nothing."""

    async def main() -> None:
        state = AsyncRedisState.from_url(redis_url, keys=keys)
        try:
            await state.beat("realtime", ttl_s=60)
            await state.publish_metrics({"messages": 1000, "ws_silent_ms": ws_silent_ms})
        finally:
            await state.aclose()

    asyncio.run(main())


def _ws(rest_url: str) -> str:
    """The simulated exchange's public websocket route (same port as its REST)."""
    return rest_url.replace("http://", "ws://") + "/public"


def test_silent_websockets_switch_to_the_backup_feed_and_back(
    res_for: Resources, redis_state: RedisState, db: Database, redis_url: str, redis_keys: Keyspace
) -> None:
    # audit (a): websockets silent while REST answers and the service beats -> backup feed on
    _service(redis_url, redis_keys, ws_silent_ms=400)
    with sim_exchange() as rest_url:
        # no minimum dwell: the recovery checks alone (the dwell has a test of its own)
        up = res_for(rest_url, binance_ws_public_url=_ws(rest_url), backup_min_dwell="0")
        result = tick(api_connectivity_sensor, None, up)
        assert "REST and websockets fine" in str(result.skip_reason)
        cursor = result.cursor

        _service(redis_url, redis_keys, ws_silent_ms=95_000)
        for n in range(1, 5):
            result = tick(api_connectivity_sensor, cursor, up)
            cursor = result.cursor
            assert "websockets delivered nothing for 95 s" in str(result.skip_reason)
            assert f"failures {n}" in str(result.skip_reason)
            assert not redis_state.read_control().backup_feed
        result = tick(api_connectivity_sensor, cursor, up)
        cursor = result.cursor
        assert "-> backup feed on" in str(result.skip_reason)
        assert redis_state.read_control().backup_feed
        [incident] = open_health_incidents(db)
        assert (incident.kind, incident.action) == ("api_connectivity", "backup feed on")
        assert "5 failed checks in a row" in incident.reason and "websockets delivered" in incident.reason

        # on the backup feed the service's websockets are off: the sensor's probe judges them; a dead
        # websocket endpoint keeps the backup feed, and nothing new is opened
        dead_ws = res_for(rest_url, binance_ws_public_url=_ws(closed_port_url()), backup_min_dwell="0")
        for _ in range(6):
            result = tick(api_connectivity_sensor, cursor, dead_ws)
            cursor = result.cursor
        assert "websocket probe got no frame" in str(result.skip_reason)
        assert len(list_health_incidents(db)) == 1
        assert redis_state.read_control().backup_feed

        # /public delivers but /market (trades, klines) is dead: switching back would go straight back into
        # silence, so the backup feed stays
        dead_market = res_for(
            rest_url,
            binance_ws_public_url=_ws(rest_url),
            binance_ws_market_url=_ws(closed_port_url()).removesuffix("/public") + "/market",
            backup_min_dwell="0",
        )
        for _ in range(3):
            result = tick(api_connectivity_sensor, cursor, dead_market)
            cursor = result.cursor
        assert "websocket probe got no frame: /market:" in str(result.skip_reason)
        assert redis_state.read_control().backup_feed

        # recovery takes two checks with the probe receiving frames (api_recovery_checks)
        result = tick(api_connectivity_sensor, cursor, up)
        assert redis_state.read_control().backup_feed
        result = tick(api_connectivity_sensor, result.cursor, up)
        assert "-> primary feed" in str(result.skip_reason)
    assert not redis_state.read_control().backup_feed
    assert open_health_incidents(db) == []
    [closed] = list_health_incidents(db, kind="api_connectivity")
    assert closed.recovery == "primary feed" and closed.ended_at is not None
    assert closed.ended_at >= closed.started_at
    events = [(e.command, e.value, e.source) for e in redis_state.control_events()]
    assert events == [("backup_feed", "1", "dagster:health"), ("backup_feed", "", "dagster:health")]


def test_rest_down_while_websockets_deliver_is_reported_never_switched(
    res_for: Resources, redis_state: RedisState, db: Database, redis_url: str, redis_keys: Keyspace
) -> None:
    # audit (b): the backup feed would switch off the working websockets and poll the dead REST API
    _service(redis_url, redis_keys, ws_silent_ms=300)
    down = res_for(closed_port_url())
    cursor = None
    for _ in range(12):
        result = tick(api_connectivity_sensor, cursor, down)
        cursor = result.cursor
        assert not redis_state.read_control().backup_feed
    assert "Binance REST ping failed" in str(result.skip_reason)
    [incident] = open_health_incidents(db)
    assert incident.kind == "api_connectivity" and "ConnectError" in incident.reason
    assert "reported only" in incident.action and "snapshots and resyncs" in incident.action
    # the websockets die too: both down, still no switch to a feed that polls the dead API
    _service(redis_url, redis_keys, ws_silent_ms=60_000)
    for _ in range(6):
        cursor = tick(api_connectivity_sensor, cursor, down).cursor
    assert not redis_state.read_control().backup_feed
    assert redis_state.control_events() == []
    # everything back: the incident closes
    _service(redis_url, redis_keys, ws_silent_ms=300)
    with sim_exchange() as rest_url:
        up = res_for(rest_url)
        cursor = tick(api_connectivity_sensor, cursor, up).cursor
        result = tick(api_connectivity_sensor, cursor, up)
    assert "REST and websockets fine" in str(result.skip_reason)
    [closed] = list_health_incidents(db, kind="api_connectivity")
    assert closed.ended_at is not None and closed.recovery == "connectivity restored"


def test_a_missing_heartbeat_is_reported_not_answered_with_the_backup_feed(
    res_for: Resources, redis_state: RedisState, db: Database
) -> None:
    with sim_exchange() as rest_url:
        res = res_for(rest_url, timeout_threshold="2")
        first = tick(api_connectivity_sensor, None, res)
        assert "no realtime heartbeat" in str(first.skip_reason)
        second = tick(api_connectivity_sensor, first.cursor, res)
    assert "not running" in str(second.skip_reason)
    assert not redis_state.read_control().backup_feed  # the backup feed runs inside the dead service
    [incident] = open_health_incidents(db)
    assert "no realtime heartbeat" in incident.reason


def _broken_db() -> str:
    return f"postgresql://nobody@{closed_port_url().removeprefix('http://')}/nothing"


# Settings that trip and clear the performance sensor at the first check.
QUICK_PERFORMANCE = {
    "performance_trip_checks": "1",
    "performance_clear_checks": "1",
    "min_universe_under_load": "2",
}


def test_an_action_that_cannot_be_recorded_is_retried_next_tick(
    res_for: Resources, redis_state: RedisState, db: Database, redis_url: str, redis_keys: Keyspace
) -> None:
    _service(redis_url, redis_keys, ws_silent_ms=60_000)
    with sim_exchange() as rest_url:
        ws = _ws(rest_url)
        quick = {"timeout_threshold": "1", "backup_min_dwell": "0"}
        res = res_for(rest_url, database_url=_broken_db(), binance_ws_public_url=ws, **quick)
        result = tick(api_connectivity_sensor, None, res)
        # the switch took effect though PostgreSQL is down: the cursor must know it is in force
        assert redis_state.read_control().backup_feed
        assert "-> backup feed on" in str(result.skip_reason)
        assert "not recorded yet" in str(result.skip_reason) and "PostgreSQL" in str(result.skip_reason)
        good = res_for(rest_url, binance_ws_public_url=ws, **quick)
        result = tick(api_connectivity_sensor, result.cursor, good)
        # the pending incident is written when PostgreSQL is back; the switch is not taken again
        [incident] = open_health_incidents(db)
        assert (incident.kind, incident.action) == ("api_connectivity", "backup feed on")
        assert redis_state.read_control().backup_feed  # one good check of two
        result = tick(api_connectivity_sensor, result.cursor, good)
    assert "-> primary feed" in str(result.skip_reason)
    assert not redis_state.read_control().backup_feed
    [closed] = list_health_incidents(db, kind="api_connectivity")
    assert closed.recovery == "primary feed" and closed.ended_at is not None
    assert [e.value for e in redis_state.control_events()] == ["1", ""]


def _operator_cap_of_40(
    res_for: Resources, redis_state: RedisState
) -> tuple[Load, dg.SensorDefinition, dict[str, Any], dict[str, Any]]:
    """An operator's universe cap of 40; the load the sensor reads (CPU 95 %, overloaded), the sensor, and
    its resources with PostgreSQL up and down."""
    load = Load(cpu=95.0)
    redis_state.set_max_universe(40, source="operator")
    good = res_for(**QUICK_PERFORMANCE)
    return load, load.sensor(), good, res_for(database_url=_broken_db(), **QUICK_PERFORMANCE)


def test_a_shrink_that_cannot_be_recorded_is_remembered(
    res_for: Resources, redis_state: RedisState, db: Database
) -> None:
    load, sensor, good, broken = _operator_cap_of_40(res_for, redis_state)
    result = tick(sensor, None, broken)
    assert redis_state.read_control().max_universe == 20 and "not recorded yet" in str(result.skip_reason)
    result = tick(sensor, result.cursor, good)  # still overloaded: halves again, from 20
    assert redis_state.read_control().max_universe == 10
    [incident] = open_health_incidents(db)
    assert incident.values["previous_cap"] == 40
    load.cpu = 10.0
    result = tick(sensor, result.cursor, good)
    assert "universe cap back to 40" in str(result.skip_reason)
    assert redis_state.read_control().max_universe == 40  # the operator's cap, not the first shrink's


def test_a_recovery_that_cannot_be_recorded_is_remembered(
    res_for: Resources, redis_state: RedisState, db: Database
) -> None:
    load, sensor, good, broken = _operator_cap_of_40(res_for, redis_state)
    result = tick(sensor, None, good)
    assert redis_state.read_control().max_universe == 20
    load.cpu = 10.0
    result = tick(sensor, result.cursor, broken)
    assert redis_state.read_control().max_universe == 40 and "not recorded yet" in str(result.skip_reason)
    # overloaded again: a new shrink of the operator's 40, after the first incident is closed
    load.cpu = 95.0
    result = tick(sensor, result.cursor, good)
    assert "universe capped at 20 (was 40)" in str(result.skip_reason)
    assert redis_state.read_control().max_universe == 20
    first, second = sorted(list_health_incidents(db, kind="system_performance"), key=lambda i: i.id)
    assert first.recovery == "universe cap back to 40" and first.ended_at is not None
    assert second.open and second.values["previous_cap"] == 40


def test_the_operators_backup_feed_is_left_on(
    res_for: Resources, redis_state: RedisState, db: Database, redis_url: str, redis_keys: Keyspace
) -> None:
    settings = {"timeout_threshold": "1", "api_recovery_checks": "1"}
    redis_state.set_backup_feed(True, source="operator")
    _service(redis_url, redis_keys, ws_silent_ms=0)
    with sim_exchange() as rest_url:
        dead_ws = res_for(rest_url, binance_ws_public_url=_ws(closed_port_url()), **settings)
        result = tick(api_connectivity_sensor, None, dead_ws)
        assert "already on" in str(result.skip_reason)
        [incident] = open_health_incidents(db)
        assert "left as is" in incident.action
        good = res_for(rest_url, binance_ws_public_url=_ws(rest_url), **settings)
        result = tick(api_connectivity_sensor, result.cursor, good)
    assert redis_state.read_control().backup_feed  # the operator switched it on: theirs to switch off
    [closed] = list_health_incidents(db, kind="api_connectivity")
    assert closed.ended_at is not None and "left on" in str(closed.recovery)
    assert [(e.value, e.source) for e in redis_state.control_events()] == [("1", "operator")]


QualityTick = Callable[[str | None, int, dict[str, SymbolFeed], int], dg.SensorResult]


def _publish(redis_url: str, keys: Keyspace, minute: int, feeds: dict[str, SymbolFeed], resyncs: int) -> None:
    now = 1_800_000_000.0 + minute * 60

    async def main() -> None:
        state = AsyncRedisState.from_url(redis_url, keys=keys, clock=lambda: now)
        try:
            for symbol, feed in feeds.items():
                await state.publish_feed(symbol, feed)
            await state.publish_metrics({"messages": minute * 3000, "resyncs": resyncs})
        finally:
            await state.aclose()

    asyncio.run(main())


def _quality_ticks(res: dict[str, Any], redis_url: str, keys: Keyspace) -> QualityTick:
    """``(cursor, minute, feeds, resyncs)``: publish that minute's feeds and metrics as the realtime service
    would, then one tick of the data quality sensor on ``res``."""

    def at(cursor: str | None, minute: int, feeds: dict[str, SymbolFeed], resyncs: int) -> dg.SensorResult:
        _publish(redis_url, keys, minute, feeds, resyncs)
        return tick(data_quality_sensor, cursor, res)

    return at


def _calm(minute: int, rng: random.Random, wide: frozenset[str] = frozenset()) -> dict[str, SymbolFeed]:
    out = {}
    for i, symbol in enumerate(("AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT")):
        spread = 0.01 if symbol in wide else 0.0002 + rng.gauss(0, 0.00001)
        out[symbol] = SymbolFeed(
            state="synced",
            messages=minute * 700 + rng.randint(-20, 20),
            last_price=(10.0 + i) * (1 + rng.gauss(0, 0.0003)),
            spread=spread,
        )
    return out


def test_data_quality_pauses_on_anomalies_and_resumes_when_clean(
    res_for: Resources, redis_url: str, redis_keys: Keyspace, redis_state: RedisState, db: Database
) -> None:
    quality_at = _quality_ticks(
        res_for(anomaly_min_samples="5", data_quality_clean_checks="2"), redis_url, redis_keys
    )
    rng = random.Random(5)
    cursor = None
    for minute in range(1, 9):
        result = quality_at(cursor, minute, _calm(minute, rng), 2)
        cursor = result.cursor
        assert "no anomaly" in str(result.skip_reason)
    assert not redis_state.read_control().paused

    # every symbol at once: of four, all must be anomalous (tapewatch.anomaly.symbols_needed)
    everyone = frozenset({"AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT"})
    result = quality_at(cursor, 9, _calm(9, rng, everyone), 2)
    cursor = result.cursor
    assert "-> paused" in str(result.skip_reason)
    reason = redis_state.read_control().paused_reason
    assert reason is not None and reason.startswith(PAUSE_PREFIX) and "spread" in reason
    [incident] = open_health_incidents(db)
    assert incident.kind == "data_quality" and incident.action == "signalling paused"
    assert incident.values["anomalous_symbols"] == 4

    for minute in (10, 11):
        result = quality_at(cursor, minute, _calm(minute, rng), 2)
        cursor = result.cursor
    assert "-> resumed" in str(result.skip_reason)
    assert not redis_state.read_control().paused
    [closed] = list_health_incidents(db, kind="data_quality")
    assert closed.recovery == "signalling resumed"


def test_data_quality_stays_paused_while_the_fault_lasts(
    res_for: Resources, redis_url: str, redis_keys: Keyspace, redis_state: RedisState
) -> None:
    """Every spread blown out for 12 minutes: paused at its first check and never resumed during it (the
    fault's values used to become the statistics' normal within a few checks, and signalling resumed on
    a fault still going on); resumed after the clean checks once it ended."""
    quality_at = _quality_ticks(
        res_for(anomaly_min_samples="5", data_quality_clean_checks="2"), redis_url, redis_keys
    )
    rng = random.Random(6)
    everyone = frozenset({"AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT"})
    cursor, told = None, []
    for minute in range(1, 26):
        feeds = _calm(minute, rng, everyone if 9 <= minute < 21 else frozenset())
        result = quality_at(cursor, minute, feeds, 2)
        cursor = result.cursor
        told.append(str(result.skip_reason))
        assert redis_state.read_control().paused == (9 <= minute < 22), (minute, told[-1])
    assert "-> paused" in told[8] and "(12 checks in a row)" in told[19]
    assert "-> resumed" in told[21] and sum("-> paused" in line for line in told) == 1


def _calm_quality(
    res_for: Resources, redis_url: str, keys: Keyspace
) -> tuple[QualityTick, random.Random, str | None]:
    """Data quality ticks judging after 3 samples and clearing after 1 clean check, the random source, and
    the cursor after five calm minutes."""
    quality_at = _quality_ticks(
        res_for(anomaly_min_samples="3", data_quality_clean_checks="1"), redis_url, keys
    )
    rng = random.Random(9)
    cursor = None
    for minute in range(1, 6):
        cursor = quality_at(cursor, minute, _calm(minute, rng), 0).cursor
    return quality_at, rng, cursor


def test_data_quality_never_lifts_an_operators_own_pause(
    res_for: Resources, redis_url: str, redis_keys: Keyspace, redis_state: RedisState
) -> None:
    quality_at, rng, cursor = _calm_quality(res_for, redis_url, redis_keys)
    result = quality_at(cursor, 6, _calm(6, rng), 500)  # a resync storm: dirty on its own
    assert "-> paused" in str(result.skip_reason) and "resync_rate" in str(result.skip_reason)
    redis_state.pause("maintenance window", source="operator")
    result = quality_at(result.cursor, 7, _calm(7, rng), 500)
    assert "-> pause left in force" in str(result.skip_reason)
    assert redis_state.read_control().paused_reason == "maintenance window"


def test_data_quality_leaves_a_pause_it_found_in_place(
    res_for: Resources, redis_url: str, redis_keys: Keyspace, redis_state: RedisState, db: Database
) -> None:
    quality_at, rng, cursor = _calm_quality(res_for, redis_url, redis_keys)
    redis_state.pause("maintenance window", source="operator")
    result = quality_at(cursor, 6, _calm(6, rng), 500)
    assert "already paused" in str(result.skip_reason)
    assert redis_state.read_control().paused_reason == "maintenance window"
    result = quality_at(result.cursor, 7, _calm(7, rng), 500)
    assert redis_state.read_control().paused_reason == "maintenance window"
    [closed] = list_health_incidents(db, kind="data_quality")
    assert closed.ended_at is not None and "left" in str(closed.recovery)
    assert [e.source for e in redis_state.control_events()] == ["operator"]


def test_a_cap_the_operator_set_while_shrunk_is_not_overwritten_on_recovery(
    res_for: Resources, redis_state: RedisState
) -> None:
    load = Load(cpu=95.0)
    sensor = load.sensor()
    res = res_for(**QUICK_PERFORMANCE)
    redis_state.set_max_universe(40, source="operator")
    result = tick(sensor, None, res)
    assert redis_state.read_control().max_universe == 20
    redis_state.set_max_universe(12, source="operator")
    load.cpu = 10.0
    result = tick(sensor, result.cursor, res)
    assert "left as is" in str(result.skip_reason)
    assert redis_state.read_control().max_universe == 12


def test_data_quality_reports_redis_down_without_losing_its_memory(
    migrated_database_url: str, tmp_path: Path
) -> None:
    res = resources(
        migrated_database_url,
        closed_port_url().replace("http", "redis"),
        Keyspace("twtest:down:"),
        var_dir=str(tmp_path),
    )
    result = tick(
        data_quality_sensor, '{"series": {}, "streak": {"failures": 0, "passes": 1, "tripped": true}}', res
    )
    assert "Redis unavailable" in str(result.skip_reason)
    assert '"tripped":true' in str(result.cursor)


def test_system_performance_halves_the_universe_and_restores_the_operators_cap(
    res_for: Resources, redis_state: RedisState, db: Database
) -> None:
    load = Load(cpu=95.0, memory=40.0)
    sensor = load.sensor()
    res = res_for(performance_trip_checks="2", performance_clear_checks="2", min_universe_under_load="6")
    redis_state.set_max_universe(40, source="operator")
    first = tick(sensor, None, res)
    assert "CPU 95 % > 80 %" in str(first.skip_reason)
    assert redis_state.read_control().max_universe == 40
    second = tick(sensor, first.cursor, res)
    assert "universe capped at 20 (was 40)" in str(second.skip_reason)
    assert redis_state.read_control().max_universe == 20
    cursor = second.cursor
    for _ in range(2):
        cursor = tick(sensor, cursor, res).cursor
    assert redis_state.read_control().max_universe == 10
    for _ in range(2):
        cursor = tick(sensor, cursor, res).cursor
    assert redis_state.read_control().max_universe == 6  # the floor
    for _ in range(2):
        result = tick(sensor, cursor, res)
        cursor = result.cursor
    assert "at the floor, not shrunk" in str(result.skip_reason)
    [incident] = open_health_incidents(db)
    assert incident.kind == "system_performance" and incident.values["previous_cap"] == 40

    load.cpu = 20.0
    cursor = tick(sensor, cursor, res).cursor
    assert redis_state.read_control().max_universe == 6
    result = tick(sensor, cursor, res)
    assert "universe cap back to 40" in str(result.skip_reason)
    assert redis_state.read_control().max_universe == 40
    [closed] = list_health_incidents(db, kind="system_performance")
    assert closed.recovery == "universe cap back to 40"


def test_memory_overload_without_a_cap_shrinks_the_followed_universe_and_lifts_it_after(
    res_for: Resources, redis_state: RedisState
) -> None:
    load = Load(cpu=10.0, memory=91.0)
    sensor = load.sensor()
    res = res_for(performance_trip_checks="1", performance_clear_checks="1")
    redis_state.set_universe([f"S{i}USDT" for i in range(16)], source="operator")
    result = tick(sensor, None, res)
    assert "memory 91 % > 85 %" in str(result.skip_reason)
    assert redis_state.read_control().max_universe == 8
    load.memory = 50.0
    result = tick(sensor, result.cursor, res)
    assert "universe cap lifted" in str(result.skip_reason)
    assert redis_state.read_control().max_universe is None


def test_an_action_redis_refused_is_taken_at_the_next_tick(
    res_for: Resources, redis_state: RedisState, migrated_database_url: str
) -> None:
    load = Load(cpu=95.0)
    sensor = load.sensor()
    redis_state.set_max_universe(40, source="operator")
    settings = {**QUICK_PERFORMANCE, "performance_trip_checks": "2"}
    down = resources(
        migrated_database_url, closed_port_url().replace("http", "redis"), redis_state.keys, **settings
    )
    first = tick(sensor, None, res_for(**settings))  # one overloaded check of two
    result = tick(sensor, first.cursor, down)
    assert "could not trip" in str(result.skip_reason) and "retrying next tick" in str(result.skip_reason)
    assert redis_state.read_control().max_universe == 40
    # one check short of tripping again: the next overloaded tick with Redis back takes the action
    result = tick(sensor, result.cursor, res_for(**settings))
    assert "universe capped at 20 (was 40)" in str(result.skip_reason)
    assert redis_state.read_control().max_universe == 20


def test_a_tick_that_cannot_read_redis_does_not_count_toward_the_primary_feed(
    res_for: Resources,
    redis_state: RedisState,
    migrated_database_url: str,
    redis_url: str,
    redis_keys: Keyspace,
    tmp_path: Path,
) -> None:
    _service(redis_url, redis_keys, ws_silent_ms=95_000)
    with sim_exchange() as rest_url:
        up = res_for(rest_url, binance_ws_public_url=_ws(rest_url), backup_min_dwell="0")
        cursor = None
        for _ in range(5):
            result = tick(api_connectivity_sensor, cursor, up)
            cursor = result.cursor
        assert redis_state.read_control().backup_feed
        # Redis away for a tick: the control state is unknown, so it is no good check of the feed
        redis_away = closed_port_url().replace("http://", "redis://") + "/0"
        no_redis = resources(
            migrated_database_url,
            redis_away,
            redis_keys,
            rest_url,
            var_dir=str(tmp_path),
            binance_ws_public_url=_ws(rest_url),
            backup_min_dwell="0",
        )
        result = tick(api_connectivity_sensor, cursor, no_redis)
        cursor = result.cursor
        # still two good checks with the probe receiving frames before the switch back (api_recovery_checks)
        result = tick(api_connectivity_sensor, cursor, up)
        assert redis_state.read_control().backup_feed, result.skip_reason
        result = tick(api_connectivity_sensor, result.cursor, up)
        assert "-> primary feed" in str(result.skip_reason)
    assert not redis_state.read_control().backup_feed


def _aged(cursor: str | None, seconds: float) -> str | None:
    """``cursor`` as the connectivity sensor finds it ``seconds`` later: its switch happened that much earlier
    (the wall clock the sensor keeps in its cursor; older cursors keep none)."""
    if cursor is None:
        return None
    data = json.loads(cursor)
    if data.get("switched_ms") is not None:
        data["switched_ms"] -= int(seconds * 1000)
    return json.dumps(data)


def test_a_service_whose_own_websockets_stay_silent_does_not_flap_between_feeds(
    res_for: Resources, redis_state: RedisState, db: Database, redis_url: str, redis_keys: Keyspace
) -> None:
    # the service's websockets get nothing (its own network path, say) while the sensor's probe gets frames:
    # on the backup feed the service's websockets are unsubscribed (silence 0, not judged), and back on the
    # primary feed they are silent again. 40 ticks of 30 s (20 minutes).
    switches: list[tuple[int, str]] = []
    with sim_exchange() as rest_url:
        res = res_for(rest_url, binance_ws_public_url=_ws(rest_url))
        cursor = None
        for n in range(40):
            backup = redis_state.read_control().backup_feed
            _service(redis_url, redis_keys, ws_silent_ms=0 if backup else 95_000)
            result = tick(api_connectivity_sensor, cursor, res)
            cursor = _aged(result.cursor, 30)
            if redis_state.read_control().backup_feed != backup:
                switches.append((n, "backup" if not backup else "primary"))
    # on at the 5th silent check; back after the 300 s minimum dwell (10 ticks) with the probe fine; the
    # service silent again at once: a failed switch back, so the next dwell is twice as long (600 s)
    assert switches == [(4, "backup"), (14, "primary"), (19, "backup"), (39, "primary")], switches
    incidents = sorted(list_health_incidents(db, kind="api_connectivity"), key=lambda i: i.id)
    assert [i.action for i in incidents][:2] == ["backup feed on", "backup feed on"]
    assert "switch back failed" in incidents[1].reason and "600 s" in incidents[1].reason
    assert incidents[0].recovery == "primary feed" and incidents[1].recovery == "primary feed"


def test_with_rest_down_this_sensors_backup_feed_goes_before_its_dwell_is_over(
    res_for: Resources, redis_state: RedisState, redis_url: str, redis_keys: Keyspace
) -> None:
    _service(redis_url, redis_keys, ws_silent_ms=95_000)
    with sim_exchange() as rest_url:
        ws = _ws(rest_url)
        result = tick(
            api_connectivity_sensor, None, res_for(rest_url, binance_ws_public_url=ws, timeout_threshold="1")
        )
        assert redis_state.read_control().backup_feed
        # probe fine with REST answering: the dwell (300 s by default) holds the backup feed
        for _ in range(3):
            result = tick(api_connectivity_sensor, result.cursor, res_for(rest_url, binance_ws_public_url=ws))
        assert "minimum dwell 300 s" in str(result.skip_reason)
        assert redis_state.read_control().backup_feed
        # REST goes down: the backup feed would poll a dead API, so back to the websockets at once
        rest_down = res_for(closed_port_url(), binance_ws_public_url=ws)
        result = tick(api_connectivity_sensor, result.cursor, rest_down)
    assert "-> primary feed" in str(result.skip_reason)
    assert not redis_state.read_control().backup_feed


# --- a cursor reset does not orphan what the sensor did -----------------------------------------------------

LOST_CURSORS = [None, "{not json"]  # reset from the UI; unreadable


@pytest.mark.parametrize("lost", LOST_CURSORS, ids=["reset", "unreadable"])
def test_data_quality_lifts_its_own_pause_after_its_cursor_is_lost(
    res_for: Resources,
    redis_url: str,
    redis_keys: Keyspace,
    redis_state: RedisState,
    db: Database,
    lost: str | None,
) -> None:
    quality_at, rng, cursor = _calm_quality(res_for, redis_url, redis_keys)
    result = quality_at(cursor, 6, _calm(6, rng), 500)  # a resync storm
    assert "-> paused" in str(result.skip_reason)
    result = quality_at(lost, 7, _calm(7, rng), 0)  # the cursor is gone; the next check is clean
    assert "taken back as this sensor's" in str(result.skip_reason)
    assert "-> resumed" in str(result.skip_reason)
    assert not redis_state.read_control().paused
    [closed] = list_health_incidents(db, kind="data_quality")
    assert closed.recovery == "signalling resumed"
    assert [e.value for e in redis_state.control_events()][-1] == ""  # resumed by the sensor itself
    # an operator's pause is never taken for the sensor's, reset or not
    redis_state.pause("maintenance window", source="operator")
    result = quality_at(lost, 8, _calm(8, rng), 0)
    assert "taken back" not in str(result.skip_reason)
    assert redis_state.read_control().paused_reason == "maintenance window"


def test_data_quality_recovers_its_pause_from_the_prefix_while_postgresql_is_down(
    res_for: Resources, redis_url: str, redis_keys: Keyspace, redis_state: RedisState
) -> None:
    quality_at, rng, cursor = _calm_quality(res_for, redis_url, redis_keys)
    assert "-> paused" in str(quality_at(cursor, 6, _calm(6, rng), 500).skip_reason)
    no_db = _quality_ticks(
        res_for(database_url=_broken_db(), anomaly_min_samples="3", data_quality_clean_checks="1"),
        redis_url,
        redis_keys,
    )
    result = no_db(None, 7, _calm(7, rng), 0)
    assert "-> resumed" in str(result.skip_reason)
    assert "not read yet" in str(result.skip_reason)  # the incident is read (and closed) later
    assert not redis_state.read_control().paused


def test_the_connectivity_sensor_switches_its_backup_feed_off_after_its_cursor_is_reset(
    res_for: Resources, redis_state: RedisState, db: Database, redis_url: str, redis_keys: Keyspace
) -> None:
    settings = {"timeout_threshold": "1", "api_recovery_checks": "1", "backup_min_dwell": "0"}
    _service(redis_url, redis_keys, ws_silent_ms=95_000)
    with sim_exchange() as rest_url:
        up = res_for(rest_url, binance_ws_public_url=_ws(rest_url), **settings)
        result = tick(api_connectivity_sensor, None, up)
        assert "-> backup feed on" in str(result.skip_reason)
        result = tick(api_connectivity_sensor, None, up)  # reset; the probe receives: back to primary
    assert "backup feed taken back as this sensor's" in str(result.skip_reason)
    assert "-> primary feed" in str(result.skip_reason)
    assert not redis_state.read_control().backup_feed
    assert open_health_incidents(db) == []
    events = [(e.value, e.source) for e in redis_state.control_events()]
    assert events == [("1", "dagster:health"), ("", "dagster:health")]


def test_the_operators_backup_feed_stays_on_after_a_reset(
    res_for: Resources, redis_state: RedisState, db: Database, redis_url: str, redis_keys: Keyspace
) -> None:
    settings = {"timeout_threshold": "1", "api_recovery_checks": "1", "backup_min_dwell": "0"}
    redis_state.set_backup_feed(True, source="operator")
    _service(redis_url, redis_keys, ws_silent_ms=0)
    with sim_exchange() as rest_url:
        dead_ws = res_for(rest_url, binance_ws_public_url=_ws(closed_port_url()), **settings)
        assert "already on" in str(tick(api_connectivity_sensor, None, dead_ws).skip_reason)
        good = res_for(rest_url, binance_ws_public_url=_ws(rest_url), **settings)
        result = tick(api_connectivity_sensor, None, good)  # reset
    assert "open incident" in str(result.skip_reason) and "taken back" in str(result.skip_reason)
    assert redis_state.read_control().backup_feed  # the operator's: still on
    [closed] = list_health_incidents(db, kind="api_connectivity")
    assert closed.ended_at is not None and "left on" in str(closed.recovery)


def test_system_performance_restores_the_operators_cap_after_its_cursor_is_reset(
    res_for: Resources, redis_state: RedisState, db: Database
) -> None:
    load = Load(cpu=95.0)
    sensor = load.sensor()
    res = res_for(**QUICK_PERFORMANCE)
    redis_state.set_max_universe(40, source="operator")
    tick(sensor, None, res)
    assert redis_state.read_control().max_universe == 20
    load.cpu = 10.0
    result = tick(sensor, None, res)  # reset, and the load is gone
    assert "universe cap 20 taken back as this sensor's (to restore: 40)" in str(result.skip_reason)
    assert "universe cap back to 40" in str(result.skip_reason)
    assert redis_state.read_control().max_universe == 40
    [closed] = list_health_incidents(db, kind="system_performance")
    assert closed.recovery == "universe cap back to 40"
