"""Scale-out (``tapewatch run --shard I/N``): two shards on one machine against the simulator keep the global
risk limits and duplicate nothing; the pieces they rely on (closes in Redis, per-shard names and captures) and
the late frames of a shrinking universe, which are counted as such and never as malformed."""

from __future__ import annotations

import asyncio
import collections
import gzip
import os
import signal
import time
import uuid
from pathlib import Path

import orjson
import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from realtime.control import ControlConfig
from realtime.main import capture_dir, exchange_settings, remote_closes_reader, run_service
from realtime.service_publish import component_name
from tapewatch.adapters.db import Database
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import AsyncRedisState, RedisState, combine_metrics, realtime_shards
from tapewatch.adapters.risk_ledger import RiskLedger
from tapewatch.errors import ConfigError
from tapewatch.risk import Candidate, RiskParams
from tapewatch.settings import Settings, load_settings
from tapewatch.sharding import Shard, shard_of
from tests.realtime.control_helpers import all_synced, running_service, wait_for
from tests.realtime.processes import (
    count,
    free_port,
    processes,
    service_env,
    start_cli,
    start_sim,
    wait_while_running,
)

# --- the pieces ------------------------------------------------------------------------------------------------


def test_names_and_capture_directories_per_shard(tmp_path: Path) -> None:
    settings = load_settings(var_dir=tmp_path)
    assert component_name(Shard(0, 1)) == "realtime" and component_name(Shard(1, 3)) == "realtime-1of3"
    assert capture_dir(settings, Shard(0, 1)) == settings.capture_dir
    assert capture_dir(settings, Shard(0, 2)) == settings.capture_dir / "shard-0of2"
    assert capture_dir(settings, Shard(0, 2)) != capture_dir(settings, Shard(1, 2))
    assert realtime_shards(["dagster", "realtime-1of2", "realtime", "realtime-0of2"]) == [
        "realtime-0of2",
        "realtime-1of2",
    ]
    shard_a = {"signals": 2.0, "signal_latency_ms_p99": 9.0, "loop_lag_ms_max": 3.0, "updated_ms": 50.0}
    shard_b = {"signals": 3.0, "signal_latency_ms_p99": 4.0, "loop_lag_ms_max": 7.0, "updated_ms": 40.0}
    assert combine_metrics([shard_a, shard_b]) == {
        "signals": 5.0,  # counters add up
        "signal_latency_ms_p99": 9.0,  # latencies and lags: the worst shard's
        "loop_lag_ms_max": 7.0,
        "updated_ms": 40.0,  # the oldest snapshot
    }


def test_a_shard_without_postgresql_or_redis_is_refused(tmp_path: Path) -> None:
    settings = load_settings(var_dir=tmp_path, shard="1/2")
    with pytest.raises(ConfigError, match="TAPEWATCH_DATABASE_URL and TAPEWATCH_REDIS_URL"):
        asyncio.run(run_service(settings, redis_url="redis://127.0.0.1:1", database_url=None))


@pytest.mark.db
def test_closes_go_through_redis_and_bad_ones_read_as_unknown(redis_url: str, redis_keys: Keyspace) -> None:
    bars = [(1_700_000_040_000 + i * 60_000, 100.0 + i) for i in range(241)]

    async def publish() -> None:
        state = AsyncRedisState.from_url(redis_url, keys=redis_keys)
        try:
            await state.publish_closes({"BTCUSDT": bars}, ttl_s=60)
        finally:
            await state.aclose()

    asyncio.run(publish())
    state = RedisState.from_url(redis_url, keys=redis_keys)
    try:
        read = remote_closes_reader(state)
        assert read("BTCUSDT") == bars
        assert read("ETHUSDT") is None  # never published
        state.client.set(redis_keys.closes("ETHUSDT"), "not json")
        assert read("ETHUSDT") is None  # unreadable: unknown, logged
        assert 0 < state.client.pttl(redis_keys.closes("BTCUSDT")) <= 60_000
    finally:
        state.close()
    down = RedisState.from_url("redis://127.0.0.1:1", keys=redis_keys)
    try:
        assert remote_closes_reader(down)("BTCUSDT") is None  # Redis away: unknown, never a crash
    finally:
        down.close()


# --- late frames of a shrinking universe ---------------------------------------------------------------------


@pytest.mark.db
@pytest.mark.e2e
@pytest.mark.slow
def test_frames_of_symbols_that_just_left_are_late_not_malformed(
    tmp_path: Path, redis_url: str, redis_keys: Keyspace
) -> None:
    port = free_port()
    with processes(tmp_path, "sim.log") as (procs, (log,)):
        # the simulator in its own process: it keeps sending while the service's loop stalls below
        start_sim(port, dict(os.environ), log, procs, "--seed", "11", "--symbols", "12")
        base = load_settings(
            var_dir=tmp_path,
            redis_prefix=redis_keys.prefix,
            ws_connect_interval=0.05,
            resync_min_interval=0.2,
            universe_size=10,
        )
        asyncio.run(_shrink_while_frames_flow(exchange_settings(base, "sim", port=port), redis_url))


async def _shrink_while_frames_flow(settings: Settings, redis_url: str) -> None:
    # no periodic re-read: the universe is changed below as the control loop would change it
    async with running_service(settings, redis_url, control=ControlConfig(reread_every=600)) as run:
        service = run.service
        start = list(service.universe)
        await wait_for(lambda: all_synced(service), "books synced", within=30)
        frames_before = service.market.messages
        # A rescan cuts the universe to 2 symbols with a backlog in flight: the loop stalls half a second
        # (the simulator's frames of every stream pile up in the sockets), then the universe shrinks, as the
        # control loop shrinks it on a rescan.
        time.sleep(0.5)  # noqa: ASYNC251 - the stall is the point
        service.set_universe(start[:2])
        frozen = {s: service.market.state(s).book.last_update_id for s in start[2:]}
        await asyncio.sleep(2.0)  # the backlog is read, the UNSUBSCRIBEs are sent and answered
        metrics = service.metrics()
        assert metrics["late_unsubscribed"] > 0
        # every unowned frame was one of a stream just let go: none of an unknown stream
        stats = service.pool.stats
        assert metrics["malformed"] == 0 and stats.unowned_frames == stats.late_unsubscribed
        assert service.market.messages > frames_before
        # nothing of the symbols that left reached their books after they left
        assert {s: service.market.state(s).book.last_update_id for s in start[2:]} == frozen
        assert run.alive()


# --- the ledger under clock skew -----------------------------------------------------------------------------


@pytest.mark.db
def test_a_shard_behind_in_event_time_still_sees_the_slot_taken_ahead(migrated_database_url: str) -> None:
    def cand(symbol: str, t: int) -> Candidate:
        sid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{symbol}{t}"))
        return Candidate(signal_id=sid, symbol=symbol, direction="LONG", tier="HIGH", event_time=t)

    db = Database(migrated_database_url)
    try:
        params = RiskParams(max_concurrent_signals=1)
        ahead, behind = RiskLedger(db, params, shard="0/2"), RiskLedger(db, params, shard="1/2")
        t0 = 1_700_000_000_000
        assert ahead.reserve(cand("AUSDT", t0 + 50), t0 + 3_600_000, lambda a, b: None).passed
        # shard 1's feed lags 50 ms: its candidate is earlier in event time, but the one slot is gone
        late = behind.reserve(cand("BUSDT", t0), t0 + 3_600_000, lambda a, b: None)
        assert late.rule == "concurrency" and (late.reason or "").endswith("(all shards)")
    finally:
        db.dispose()


# --- two shards against the simulator ------------------------------------------------------------------------

CONCURRENT = 3
DAILY = 6


def _capture_symbols(root: Path) -> set[str]:
    symbols = set()
    for path in root.rglob("*.jsonl.gz"):
        with gzip.open(path, "rb") as fh:
            for line in fh:
                stream = orjson.loads(line)["stream"]
                if not stream.startswith(("rest:", "control:")):
                    symbols.add(stream.split("@", 1)[0].upper())
    return symbols


@pytest.mark.db
@pytest.mark.e2e
@pytest.mark.slow
def test_two_shards_keep_the_global_limits_and_duplicate_nothing(
    tmp_path: Path, migrated_database_url: str, engine: Engine, redis_url: str, redis_keys: Keyspace
) -> None:
    port = free_port()
    var = tmp_path / "var"
    # tight limits, so that they bind; far stops (service_env), so signals stay open and overlap
    env = service_env(
        database_url=migrated_database_url,
        redis_url=redis_url,
        keys=redis_keys,
        var_dir=var,
        sim_port=port,
        universe_size=10,
        TAPEWATCH_MAX_CONCURRENT_SIGNALS=str(CONCURRENT),
        TAPEWATCH_MAX_DAILY_SIGNALS=str(DAILY),
    )
    global_rejections = "SELECT count(*) FROM candidates WHERE fate_detail LIKE '%(all shards)'"
    entries = "SELECT count(*) FROM signals WHERE signal_type = 'ENTRY'"
    # a held-back setup takes a freed slot at once, so which shard wins the slots is a race: wait for both
    shards = "SELECT count(DISTINCT shard) FROM risk_reservations"
    with processes(tmp_path, "sim.log", "shard0.log", "shard1.log") as (procs, logs):
        sim_args = ["--seed", "3", "--symbols", "10", "--speed", "30", "--episode-rate", "30"]
        start_sim(port, env, logs[0], procs, *sim_args)
        for index in range(2):
            procs.append(
                start_cli(["run", "--exchange", "sim", "--shard", f"{index}/2"], env, logs[1 + index])
            )
        # until the limits have bound across shards and each shard holds a signal. How soon the market makes
        # enough signals depends on the machine's load (a loaded suite run needed over 100 s), so the bound is
        # generous: it only costs time when the test would fail anyway
        reached = wait_while_running(
            "global limits reached",
            lambda: (
                count(engine, global_rejections) >= 2
                and count(engine, entries) >= CONCURRENT
                and count(engine, shards) == 2
            ),
            240,
            procs,
        )
        assert reached, (
            f"in 240 s: {count(engine, global_rejections)} candidates turned away by the shared caps, "
            f"{count(engine, entries)} ENTRY signals, {count(engine, shards)} shards holding reservations"
        )
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        try:
            components = client.smembers(redis_keys.components)
            shard_metrics = [client.hgetall(redis_keys.metrics(f"realtime-{i}of2")) for i in range(2)]
        finally:
            client.close()
        wait_while_running(
            "every stored signal published",
            lambda: count(engine, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0,
            20,
            procs,
        )
        for proc in procs[1:]:
            proc.send_signal(signal.SIGTERM)
        for proc in procs[1:]:
            assert proc.wait(30) == 0
        procs[1:] = []
    shard_logs = [(tmp_path / f"shard{i}.log").read_text(errors="replace") for i in range(2)]

    # each shard beat under its own name and followed only its own symbols; together, all of them
    assert {"realtime-0of2", "realtime-1of2"} <= components and "realtime" not in components
    followed = [int(float(m.get("symbols", 0))) for m in shard_metrics]
    assert all(followed) and sum(followed) == 10, (followed, shard_logs[0][-2000:])
    captured = [_capture_symbols(var / "capture" / f"shard-{i}of2") for i in range(2)]
    assert captured[0] and captured[1] and not captured[0] & captured[1]
    assert all(shard_of(s, 2) == i for i in range(2) for s in captured[i])
    assert not list((var / "capture").glob("[0-9]*"))  # nothing written outside the shard directories

    with engine.connect() as conn:
        ids = [str(r[0]) for r in conn.execute(sa.text("SELECT signal_id FROM signals"))]
        reservations = conn.execute(
            sa.text(
                "SELECT signal_id::text, symbol, tier, event_time, day, expires_at, released_at, shard "
                "FROM risk_reservations ORDER BY event_time"
            )
        ).all()
        entry_ids = {
            str(r[0])
            for r in conn.execute(sa.text("SELECT signal_id FROM signals WHERE signal_type = 'ENTRY'"))
        }
        rejected = [
            r[0]
            for r in conn.execute(
                sa.text("SELECT fate_detail FROM candidates WHERE fate_detail LIKE '%(all shards)'")
            )
        ]
    # no signal twice, in PostgreSQL or in the Redis stream; every ENTRY was reserved by the shard owning it
    assert len(ids) == len(set(ids)) and len(entry_ids) >= 2
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        stream = client.xrange(redis_keys.signals_stream)
    finally:
        client.close()
    published = collections.Counter(fields["signal_id"] for _, fields in stream)
    assert published and max(published.values()) == 1 and set(published) == set(ids)
    assert {r.signal_id for r in reservations} == entry_ids
    assert all(r.shard == f"{shard_of(r.symbol, 2)}/2" for r in reservations)
    assert {r.shard for r in reservations} == {"0/2", "1/2"}, "both shards issued signals"

    # the caps held across both shards: per UTC day, and at every moment. A slot is held from the signal's
    # event time to its release (or expiry); the shards' event clocks differ by their feed lag, so a release
    # is allowed TOLERANCE ms of event time (a fraction of a wall second at speed 30)
    per_day = collections.Counter(r.day for r in reservations)
    assert max(per_day.values()) <= DAILY
    tolerance = 10_000
    for r in reservations:
        holding = [
            o
            for o in reservations
            if o.event_time
            <= r.event_time
            < (o.released_at if o.released_at is not None else o.expires_at) - tolerance
        ]
        assert len(holding) <= CONCURRENT, (r, holding)
    # and the limits were reached globally: candidates were turned away by the ledger, for all shards
    assert rejected and any("concurrent" in d or "daily cap" in d for d in rejected), rejected
