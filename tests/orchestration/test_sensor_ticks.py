"""Each sensor that keeps the platform safe records its last tick in Redis (``orchestration.sensor_ticks``), so
that ``tapewatch status`` and the dashboard can tell a sensor that stopped ticking: through
``build_sensor_context`` against real Redis and PostgreSQL."""

from __future__ import annotations

import logging
import time

import dagster as dg
import pytest

from orchestration.health_connectivity import api_connectivity_sensor
from orchestration.health_load import performance_sensor
from orchestration.health_quality import data_quality_sensor
from orchestration.resources import RedisResource
from orchestration.sensor_ticks import recorded_sensor
from orchestration.universe import emergency_exclusion_sensor
from tapewatch.adapters.redis_keys import SENSORS, Keyspace
from tapewatch.adapters.redis_state import RedisState
from tapewatch.errors import ConfigError
from tests.orchestration.health_support import closed_port_url, resources, tick

pytestmark = pytest.mark.db


def _now_ms() -> int:
    return int(time.time() * 1000)


def test_a_health_sensor_tick_records_its_time_outcome_and_reason(
    migrated_database_url: str, redis_url: str, redis_keys: Keyspace, redis_state: RedisState
) -> None:
    assert redis_state.sensor_ticks() == {}
    before = _now_ms()
    result = tick(data_quality_sensor, None, resources(migrated_database_url, redis_url, redis_keys))
    ticks = redis_state.sensor_ticks()
    assert set(ticks) == {"data_quality_sensor"}
    recorded = ticks["data_quality_sensor"]
    assert before <= recorded.ts <= _now_ms()
    assert recorded.outcome == "skipped" and result.skip_reason is not None
    assert recorded.reason == result.skip_reason.skip_message and "no anomaly" in recorded.reason
    assert recorded.interval_s == 60 and recorded.errors == 0 and recorded.completed_ms == recorded.ts


def test_a_tick_that_handled_an_outage_and_reported_it_is_recorded(
    migrated_database_url: str, redis_url: str, redis_keys: Keyspace, redis_state: RedisState
) -> None:
    res = resources(migrated_database_url, redis_url, redis_keys, rest_url=closed_port_url())
    result = tick(api_connectivity_sensor, None, res)  # REST refused, no realtime heartbeat: reported
    recorded = redis_state.sensor_ticks()["api_connectivity_sensor"]
    assert result.skip_reason is not None and "failures 1" in str(result.skip_reason.skip_message)
    assert recorded.outcome == "skipped" and recorded.reason == result.skip_reason.skip_message
    assert recorded.interval_s == 30 and recorded.errors == 0


def test_a_tick_that_raises_is_recorded_as_an_error_and_counted_until_one_completes(
    migrated_database_url: str, redis_url: str, redis_keys: Keyspace, redis_state: RedisState
) -> None:
    sensor = performance_sensor(lambda: (10.0, 20.0))
    broken = resources(migrated_database_url, redis_url, redis_keys, cpu_threshold="lots")
    for n in (1, 2, 3):
        with pytest.raises(ConfigError):  # raised on to Dagster, which shows the failed tick
            tick(sensor, None, broken)
        recorded = redis_state.sensor_ticks()["system_performance_sensor"]
        assert recorded.outcome == "error" and recorded.errors == n and recorded.completed_ms is None
        assert recorded.reason.startswith("ConfigError:") and "cpu_threshold" in recorded.reason
    tick(sensor, None, resources(migrated_database_url, redis_url, redis_keys))
    recorded = redis_state.sensor_ticks()["system_performance_sensor"]
    assert recorded.outcome == "skipped" and recorded.errors == 0 and recorded.completed_ms == recorded.ts
    assert "CPU 10 %, memory 20 %: fine" in recorded.reason


def test_the_emergency_exclusion_sensor_records_its_ticks(
    migrated_database_url: str, redis_url: str, redis_keys: Keyspace, redis_state: RedisState
) -> None:
    res = resources(migrated_database_url, redis_url, redis_keys)
    with dg.instance_for_test() as instance:
        # no universe stored yet: the tick requests the first rescan
        out = emergency_exclusion_sensor(dg.build_sensor_context(resources=res, instance=instance))
    assert isinstance(out, dg.SensorResult)
    recorded = redis_state.sensor_ticks()["emergency_exclusion_sensor"]
    assert (recorded.outcome, recorded.reason, recorded.interval_s) == ("ok", "1 run(s) requested", 30)


def test_a_tick_whose_redis_is_down_returns_its_result_and_logs_the_tick_not_recorded(
    migrated_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    closed_redis = closed_port_url().replace("http://", "redis://") + "/0"
    res = resources(migrated_database_url, closed_redis, Keyspace("twtest:down:"))
    with caplog.at_level(logging.WARNING, logger="orchestration.sensor_ticks"):
        result = tick(data_quality_sensor, None, res)
    assert result.skip_reason is not None and "Redis unavailable" in str(result.skip_reason.skip_message)
    (record,) = [r for r in caplog.records if r.name == "orchestration.sensor_ticks"]
    assert "tick of data_quality_sensor (skipped) not recorded" in record.getMessage()


def test_every_listed_sensor_records_and_an_unlisted_one_is_refused() -> None:
    from orchestration.definitions import defs

    # the names status lists are the code location's sensors
    assert set(SENSORS) <= {sensor.name for sensor in defs.sensors or ()}
    with pytest.raises(ValueError, match="SENSORS"):

        @recorded_sensor()
        def some_other_sensor(context: dg.SensorEvaluationContext, redis: RedisResource) -> dg.SensorResult:
            return dg.SensorResult()
