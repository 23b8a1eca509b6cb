"""The system performance sensor acts on a load that lasts, and does not flap: it cuts the universe after an
overload of minutes (not two readings), restores it only below the lower restore thresholds, and waits twice
as long after a restore the overload followed; against real Redis and PostgreSQL, with the load the realtime
heartbeat publishes (``host_cpu``: the host's CPU averaged over 60 s)."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestration.health_load import causes_of, performance_sensor
from orchestration.health_quality import data_quality_sensor
from tapewatch.adapters.db import Database
from tapewatch.adapters.health_store import list_health_incidents
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import AsyncRedisState, RedisState, SymbolFeed
from tests.orchestration.health_support import resources, tick

UNIVERSE = [f"S{i}USDT" for i in range(16)]


@pytest.fixture
def res(migrated_database_url: str, redis_url: str, redis_keys: Keyspace, tmp_path: Path) -> Any:
    def make(**settings: str) -> dict[str, Any]:
        return resources(
            migrated_database_url, redis_url, redis_keys, None, var_dir=str(tmp_path), **settings
        )

    return make


#: Cut after one check over a threshold, restored after two calm ones.
QUICK = {"performance_trip_checks": "1", "performance_clear_checks": "2"}


@pytest.fixture
def make_host(res: Any, redis_state: RedisState) -> Callable[..., Host]:
    """A :class:`Host` following :data:`UNIVERSE`, its sensor run with these settings."""

    def make(**settings: str) -> Host:
        redis_state.set_universe(UNIVERSE, source="rescan")
        return Host(redis_state, res(**settings))

    return make


class Host:
    """The realtime host as the sensor reads it: each check, a heartbeat carrying ``host_cpu`` (and memory)."""

    def __init__(self, redis_state: RedisState, settings: dict[str, Any]) -> None:
        self.rs, self.settings = redis_state, settings
        self.cursor: str | None = None
        self.sensor = performance_sensor(lambda: (0.0, 0.0))  # never used: the heartbeat carries the load
        self.reasons: list[str] = []

    def check(self, cpu: float, memory: float = 40.0) -> int | None:
        """One check at this load; the universe cap in force after it."""
        self.rs.beat("realtime", ttl_s=60, info={"host_cpu": cpu, "host_memory": memory})
        result = tick(self.sensor, self.cursor, self.settings)
        self.cursor = result.cursor
        self.reasons.append(str(result.skip_reason))
        return self.rs.read_control().max_universe

    def checks(self, cpu: float, n: int, memory: float = 40.0) -> list[int | None]:
        return [self.check(cpu, memory) for _ in range(n)]


def test_a_busy_demo_host_with_brief_spikes_keeps_its_universe(
    make_host: Callable[..., Host], db: Database
) -> None:
    """The audit's case, with the default settings: the demo host runs at 56-79 %, and now and then two
    checks in a row read just over 80 % (a Dagster run starting). Two such readings cut 15 -> 7, and one
    during the ten calm checks restarted the count, so the universe flapped. An overload must last 3 min."""
    host = make_host()
    calm = [70.0, 76.0, 79.0, 65.0, 72.0, 78.0, 61.0, 74.0, 77.0, 69.0]
    caps = [host.check(cpu) for cpu in [72.0, 81.0, 81.0, *calm, 81.0, 81.0, *calm, 83.0, 84.0, 81.0, *calm]]
    assert caps == [None] * len(caps)
    assert list_health_incidents(db, kind="system_performance") == []
    assert "CPU 81 % > 80 %" in host.reasons[1]  # seen and said, not acted on


def test_a_lasting_overload_cuts_and_a_load_between_the_thresholds_keeps_the_cut(
    make_host: Callable[..., Host], db: Database
) -> None:
    host = make_host()  # cut after 6 checks above 80 %, restore after 10 at or below 70 %
    assert host.checks(90.0, 5) == [None] * 5
    assert host.check(90.0) == 8  # 3 min of overload
    # 75 %: no overload (the cut is not halved again), nor calm enough to put the symbols back
    assert host.checks(75.0, 30) == [8] * 30
    assert "CPU 75 % > 70 % (restore threshold): not calm enough to restore" in host.reasons[-1]
    assert host.checks(65.0, 9) == [8] * 9
    assert "calm checks 9 of 10 before the restore" in host.reasons[-1]
    assert host.check(65.0) is None  # lifted
    # memory the same way: 80 % is below its 85 % cut and above its 75 % restore threshold
    assert host.checks(20.0, 6, memory=90.0)[-1] == 8
    assert host.checks(20.0, 12, memory=80.0) == [8] * 12
    [_, memory] = sorted(list_health_incidents(db, kind="system_performance"), key=lambda i: i.id)
    assert memory.open and "memory 90 % > 85 %" in memory.reason


def test_a_restore_the_overload_followed_makes_the_next_wait_twice_as_long(
    make_host: Callable[..., Host], db: Database
) -> None:
    host = make_host(**QUICK, performance_max_clear_checks="6")
    assert host.check(95.0) == 8
    assert host.checks(10.0, 2) == [8, None]  # restored after 2 calm checks
    assert host.check(95.0) == 8  # overloaded again at once: the restore failed
    assert "restore failed: overloaded again" in host.reasons[-1]
    assert "the next restore waits for 4 calm checks (failed restores in a row: 1)" in host.reasons[-1]
    assert host.checks(10.0, 4) == [8, 8, 8, None]
    assert host.check(95.0) == 8
    assert host.checks(10.0, 6) == [8] * 5 + [None]  # 8, bounded at 6
    assert host.check(95.0) == 8
    assert host.checks(10.0, 6) == [8] * 5 + [None]
    incidents = sorted(list_health_incidents(db, kind="system_performance"), key=lambda i: i.id)
    assert "restore failed" not in incidents[0].reason
    assert "failed restores in a row: 3" in incidents[3].reason


def test_a_cut_long_after_a_restore_waits_as_long_as_the_first(make_host: Callable[..., Host]) -> None:
    host = make_host(**QUICK, performance_relapse_within="0")
    for _ in range(3):
        assert host.check(95.0) == 8
        assert host.checks(10.0, 2) == [8, None]
        assert "restore failed" not in host.reasons[-3]


def test_a_cpu_cut_is_restored_once_the_cpu_calms_on_a_host_whose_memory_sits_between_its_thresholds(
    make_host: Callable[..., Host], db: Database
) -> None:
    """The review's case: memory at a steady 80 % (above its 75 % restore threshold, below its 85 % cut) and a
    CPU overload. The restore asked both resources to be at their restore thresholds, so the memory that did
    not cause the cut kept it for good (2 h of CPU at 20 %: still 8). Only the cause must calm down to its
    restore threshold; the other must stay below its cut."""
    host = make_host(performance_relapse_within="0")  # the memory cut below is no relapse
    assert host.checks(90.0, 6, memory=80.0)[-1] == 8
    (cut,) = list_health_incidents(db, kind="system_performance")
    assert cut.values["causes"] == ["cpu"]
    assert host.checks(75.0, 5, memory=80.0) == [8] * 5  # the cause above its restore threshold: kept
    assert "CPU 75 % > 70 % (restore threshold): not calm enough" in host.reasons[-1]
    assert host.checks(20.0, 10, memory=80.0) == [8] * 9 + [None]
    # a memory cut: the CPU between its thresholds does not hold the restore back, the memory at 80 % does
    assert host.checks(75.0, 6, memory=90.0)[-1] == 8
    assert host.checks(75.0, 12, memory=80.0) == [8] * 12
    assert "memory 80 % > 75 % (restore threshold)" in host.reasons[-1]
    assert host.checks(75.0, 10, memory=70.0) == [8] * 9 + [None]
    # cut by the CPU, halved again by the memory: both are causes, both must calm down
    assert host.checks(90.0, 6, memory=40.0)[-1] == 8
    assert host.checks(20.0, 6, memory=90.0)[-1] == 5  # the floor
    assert host.checks(20.0, 12, memory=80.0) == [5] * 12
    assert host.checks(20.0, 10, memory=70.0) == [5] * 9 + [None]


def test_a_cursor_from_before_the_causes_reads_them_from_the_cuts_incident(
    make_host: Callable[..., Host],
) -> None:
    host = make_host()
    assert host.checks(90.0, 6, memory=80.0)[-1] == 8
    old = json.loads(host.cursor or "{}")
    old.pop("causes")  # as the sensor wrote it before it kept them
    host.cursor = json.dumps(old)
    assert host.checks(20.0, 10, memory=80.0) == [8] * 9 + [None]
    assert "unreadable cursor" not in " ".join(host.reasons)
    # an incident from before the causes were recorded: the resources its problems name
    assert causes_of({"problems": ["CPU 90 % > 80 %"]}) == ("cpu",)
    assert causes_of({"problems": ["CPU 90 % > 80 %", "memory 90 % > 85 %"]}) == ("cpu", "memory")
    assert causes_of({}) == ("cpu", "memory")


#: Message rates (msg/s) of the 15 symbols, the busiest first, falling off with rank as on the exchange.
RATES = [37.1 * 0.85**i for i in range(15)]


def _publish(
    url: str,
    keys: Keyspace,
    now_s: float,
    follow: int,
    counts: list[int],
    rnd: random.Random,
    scale: float = 1.0,
) -> None:
    """One minute of the realtime service as Redis sees it: the feed stats of the ``follow`` symbols it
    follows (those of the symbols cut removed, as its publish loop does) and its metrics hash; ``scale``:
    the share of their usual message rates they get (REST polling: ~1/50)."""

    async def main() -> None:
        state = AsyncRedisState.from_url(url, keys=keys, clock=lambda: now_s)
        try:
            for i, rate in enumerate(RATES):
                if i >= follow:
                    await state.remove_feed(UNIVERSE[i])
                    continue
                counts[i] += max(0, int(rnd.gauss(rate * 60 * scale, (rate * 60 * scale) ** 0.5)))
                feed = SymbolFeed(state="synced", messages=counts[i], last_price=100.0, spread=1e-4)
                await state.publish_feed(UNIVERSE[i], feed, ttl_s=600.0)
            await state.publish_metrics({"messages": sum(counts), "resyncs": 0})
        finally:
            await state.aclose()

    asyncio.run(main())


def test_the_load_sensors_cut_does_not_make_the_data_quality_sensor_pause(
    res: Any, redis_state: RedisState, redis_url: str, redis_keys: Keyspace
) -> None:
    """The audit's chain: the cut 15 -> 7 keeps the busiest symbols, so the service's total rate per symbol
    followed rose 40 % and read as +5 to +12 sd: the data-quality sensor paused signalling after every cut.
    It compares each symbol kept with its own usual rate, and skips the check across the change."""
    redis_state.set_universe(UNIVERSE[:15], source="rescan")
    rnd, counts, dq, start = random.Random(1), [0] * 15, None, 1_800_000_000
    quick = res(performance_trip_checks="1")
    for minute in range(25):  # 25 calm minutes at 15 symbols: every statistic is warm
        _publish(redis_url, redis_keys, start + minute * 60, 15, counts, rnd)
        dq = tick(data_quality_sensor, dq, quick).cursor
    assert '"relative_message_rate":[14,' in str(dq)  # judged from the 11th check on
    host = Host(redis_state, quick)
    cap = host.check(95.0)
    assert cap == 7
    reasons = []
    for minute in range(25, 35):
        _publish(redis_url, redis_keys, start + minute * 60, cap, counts, rnd)
        result = tick(data_quality_sensor, dq, quick)
        dq = result.cursor
        reasons.append(str(result.skip_reason))
        assert redis_state.read_control().paused_reason is None, reasons
    assert "overall message rate not judged: the symbols measured changed (15 -> 7" in reasons[0]
    assert all("no anomaly" in r for r in reasons)


def test_the_backup_feed_neither_pauses_signalling_nor_blinds_the_check_after_it(
    res: Any, redis_state: RedisState, redis_url: str, redis_keys: Keyspace
) -> None:
    """The audit's chain: the connectivity sensor switched to the backup feed, REST polling gave every symbol
    ~1/50 of its streamed messages, and the data-quality sensor paused signalling for it ("message_rate ...
    -16 sd"), then learnt the polled rates: back on the streams, a real fault (a quarter of the rate) went
    unseen for 30 checks. Rates on the backup feed (and across the switch back) are neither judged nor learnt."""
    redis_state.set_universe(UNIVERSE[:15], source="rescan")
    rnd, counts, dq, start = random.Random(2), [0] * 15, None, 1_800_000_000
    settings = res()
    for minute in range(25):  # every statistic warm
        _publish(redis_url, redis_keys, start + minute * 60, 15, counts, rnd)
        dq = tick(data_quality_sensor, dq, settings).cursor
    redis_state.set_backup_feed(True, source="test")
    for minute in range(25, 35):
        _publish(redis_url, redis_keys, start + minute * 60, 15, counts, rnd, scale=0.02)
        result = tick(data_quality_sensor, dq, settings)
        dq = result.cursor
        assert redis_state.read_control().paused_reason is None, result.skip_reason
        assert "message rates not judged" in str(result.skip_reason)
    redis_state.set_backup_feed(False, source="test")
    _publish(redis_url, redis_keys, start + 35 * 60, 15, counts, rnd)  # straddles the switch back
    dq = tick(data_quality_sensor, dq, settings).cursor
    assert redis_state.read_control().paused_reason is None
    _publish(redis_url, redis_keys, start + 36 * 60, 15, counts, rnd, scale=0.25)  # a real fault
    result = tick(data_quality_sensor, dq, settings)
    assert redis_state.read_control().paused_reason is not None, result.skip_reason
