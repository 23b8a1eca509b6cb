"""The universe assets, quick check, exclusion job and emergency sensor against real PostgreSQL, Redis and the
simulated exchange's REST."""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import dagster as dg
import msgspec
import pytest

from assets.universe import UNIVERSE_ASSETS
from orchestration.definitions import defs as universe_definitions
from orchestration.resources import RedisResource
from orchestration.universe import (
    FIRST_RESCAN_TAG,
    emergency_exclusion_sensor,
    rescan_schedule_cron,
    universe_exclusion_job,
    universe_quick_check_job,
    universe_rescan_job,
    universe_rescan_schedule,
)
from realtime.sim.server import SimExchange
from tapewatch.adapters.dagster_home import ROOT
from tapewatch.adapters.dagster_runs import RESCAN_JOB
from tapewatch.adapters.db import Database
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import RedisState
from tapewatch.adapters.redis_values import SymbolFeed
from tapewatch.adapters.universe_store import (
    current_universe,
    exclusions,
    members,
    publish_current,
    recent_rescans,
    save_rescan,
)
from tapewatch.errors import ConfigError
from tapewatch.settings import load_settings
from tapewatch.universe import Reason, SymbolStats, minimums_from, select_universe
from tests.orchestration.universe_support import publish_feeds, publishing_feeds, resources, sim_in_thread

# the first 20 simulated symbols: 15 liquid, ATOM too wide, FIL and ETC thin, MKR low open interest; UNI is
# a wide one whose $50M volume sits at the minimum (either reason keeps it out)
WIDE, THIN, LOW_OI = {"ATOMUSDT"}, {"FILUSDT", "ETCUSDT"}, {"MKRUSDT"}


@pytest.fixture(scope="module")
def _module_sim() -> Iterator[SimExchange]:
    with sim_in_thread(seed=4, symbols=20, speed=1.0) as exchange:
        yield exchange


@pytest.fixture
def sim(_module_sim: SimExchange) -> SimExchange:
    """The module's simulator with a fresh request-weight window: the rescans of the tests before would
    otherwise use up its 2,400 per minute and hold this test's requests back for up to a minute."""
    _module_sim.limiter.reset()
    return _module_sim


Resources = functools.partial[dict[str, Any]]


@pytest.fixture
def res_for(migrated_database_url: str, redis_url: str, redis_keys: Keyspace) -> Resources:
    """``res_for(rest_url, **overrides)``: the resources on this test's PostgreSQL and Redis."""
    return functools.partial(resources, migrated_database_url, redis_url, redis_keys)


def rescan(sim: SimExchange, res_for: Resources, **overrides: str) -> dg.ExecuteInProcessResult:
    res = res_for(sim.rest_url, **{"universe_size": "5", **overrides})
    return dg.materialize(UNIVERSE_ASSETS, resources=res, run_config={})


def test_a_rescan_stores_every_symbol_with_rank_and_reason_and_publishes_the_universe(
    sim: SimExchange, res_for: Resources, db: Database, redis_state: RedisState
) -> None:
    result = rescan(sim, res_for)
    assert result.success
    tradable = result.output_for_node("exchange_symbols")
    assert len(tradable) == 20 and "BTCUSDT_260327" not in tradable and "BTCUSDC" not in tradable
    assert "OLDCOINUSDT" not in tradable  # SETTLING
    current = current_universe(db)
    assert current is not None and current.kind == "full" and current.run_id == result.run_id
    assert len(current.symbols) == 5 and current.added == current.symbols
    assert result.output_for_node("universe") == list(current.symbols)
    rows = {m.symbol: m for m in members(db, current.rescan_id)}
    assert set(rows) == set(tradable)
    ranked = sorted((m for m in rows.values() if m.rank is not None), key=lambda m: m.rank or 0)
    assert [m.rank for m in ranked] == list(range(1, 16))  # the 15 liquid symbols pass the minimums
    assert [m.symbol for m in ranked[:5]] == list(current.symbols)
    assert all(m.reason is Reason.SELECTED for m in ranked[:5])
    assert all(m.reason is Reason.RANK_BEYOND_SIZE for m in ranked[5:])
    scores = [m.score or 0.0 for m in ranked]
    assert scores == sorted(scores, reverse=True) and 0 < scores[-1] <= scores[0] <= 100
    assert {s for s, m in rows.items() if m.reason is Reason.SPREAD_TOO_WIDE} - {"UNIUSDT"} == WIDE
    assert {s for s, m in rows.items() if m.reason is Reason.BELOW_MIN_VOLUME} - {"UNIUSDT"} == THIN
    assert rows["UNIUSDT"].reason in (Reason.SPREAD_TOO_WIDE, Reason.BELOW_MIN_VOLUME)
    assert {s for s, m in rows.items() if m.reason is Reason.BELOW_MIN_OPEN_INTEREST} == LOW_OI
    btc = rows["BTCUSDT"]
    assert btc.stats.quote_volume_24h and btc.stats.quote_volume_24h > 1e9
    assert btc.stats.open_interest_usd and btc.stats.open_interest_usd > 1e8
    assert btc.stats.depth_1pct_usd and btc.stats.atr_ratio and btc.stats.trades_per_second
    assert btc.volume_score == 1.0
    # thin symbols were not measured beyond their ticker (the prefilter saves request weight)
    assert rows["FILUSDT"].stats.depth_1pct_usd is None and rows["FILUSDT"].stats.trades_per_second
    # published to the realtime service
    assert redis_state.read_control().universe == current.symbols
    last = redis_state.last_rescan()
    assert last is not None and last.info["rescan_id"] == current.rescan_id and last.info["symbols"] == 5
    # metadata of the scores asset explains the ranking
    mats = result.asset_materializations_for_node("symbol_scores")
    assert "ranking" in mats[0].metadata


def test_a_failed_call_leaves_one_symbol_out_with_the_error_and_a_second_rescan_diffs(
    sim: SimExchange, res_for: Resources, db: Database
) -> None:
    assert rescan(sim, res_for).success
    # one symbol's call, so that which request reaches the simulator first does not matter
    sim.faults.rest_error(503, count=1, path="/fapi/v1/openInterest", symbol="BTCUSDT")
    second = rescan(sim, res_for, universe_size="6")
    assert second.success
    history = recent_rescans(db)
    assert len(history) == 2 and history[0].run_id == second.run_id
    rows = members(db, history[0].rescan_id)
    broken = [m for m in rows if m.reason is Reason.MISSING_STATISTIC]
    assert [m.symbol for m in broken] == ["BTCUSDT"]
    assert "open interest" in broken[0].detail and "503" in broken[0].detail
    assert broken[0].stats.open_interest_usd is None
    assert len(history[0].symbols) == 6
    assert set(history[0].added) == set(history[0].symbols) - set(history[1].symbols)


def test_a_fixed_universe_is_published_exactly_with_every_score_and_the_checks_still_remove_a_broken_symbol(
    sim: SimExchange, res_for: Resources, db: Database, redis_state: RedisState
) -> None:
    """TAPEWATCH_SYMBOLS fixes the universe: the rescan publishes exactly that list, in its order, whatever
    the scores and minimums say (before, it ignored the list and published the top by score, which the
    realtime service then followed), records every symbol's score and why it is in or out; the quick check
    still removes a fixed symbol that breaks a minimum (safety first)."""
    fixed = "FILUSDT,BTCUSDT,ATOMUSDT,NOPEUSDT"  # thin, liquid, too wide, not listed
    result = rescan(sim, res_for, symbols=fixed)
    assert result.success
    current = current_universe(db)
    assert current is not None and current.symbols == ("FILUSDT", "BTCUSDT", "ATOMUSDT")
    assert redis_state.read_control().universe == current.symbols
    assert current.params["fixed"] == fixed.split(",")
    rows = {m.symbol: m for m in members(db, current.rescan_id)}
    for position, symbol in enumerate(current.symbols, start=1):
        m = rows[symbol]
        assert m.selected and m.reason is Reason.SELECTED and m.rank == position
        assert m.detail.startswith(f"fixed by TAPEWATCH_SYMBOLS (position {position}; by score: ")
        assert m.score is not None  # measured in full, below the volume minimum too
    assert "by score: out, 24h volume" in rows["FILUSDT"].detail
    assert "by score: out, spread" in rows["ATOMUSDT"].detail
    nope = rows["NOPEUSDT"]
    assert not nope.selected and nope.reason is Reason.MISSING_STATISTIC and "not a tradable" in nope.detail
    others = [m for s, m in rows.items() if s not in fixed.split(",")]
    assert len(others) == 17 and not any(m.selected or m.rank is not None for m in others)
    assert all(m.detail.startswith("not in the fixed list (TAPEWATCH_SYMBOLS); by score: ") for m in others)
    assert sum(m.score is not None for m in others) >= 10  # the liquid ones keep their scores
    # the quick check removes the fixed symbol below the volume minimum
    quick = universe_quick_check_job.execute_in_process(resources=res_for(sim.rest_url, symbols=fixed))
    assert quick.success
    after = current_universe(db)
    assert after is not None and after.removed == ("FILUSDT",)
    assert redis_state.read_control().universe == ("BTCUSDT", "ATOMUSDT")


def test_a_rescan_takes_the_live_spread_over_a_wide_snapshot_where_the_service_publishes_one(
    sim: SimExchange,
    res_for: Resources,
    db: Database,
    redis_url: str,
    redis_keys: Keyspace,
) -> None:
    """One REST snapshot's spread is one moment: where the realtime service publishes a fresh live spread
    within the maximum, it counts (as in the quick check); where it publishes none, the snapshot stands."""
    live = SymbolFeed(state="synced", spread=0.0001, depth_1pct_usd=5e6)
    with publishing_feeds(redis_url, redis_keys, {"ATOMUSDT": live}):
        result = rescan(sim, res_for, universe_size="20")
    assert result.success
    current = current_universe(db)
    assert current is not None
    rows = {m.symbol: m for m in members(db, current.rescan_id)}
    atom = rows["ATOMUSDT"]
    assert atom.reason is Reason.SELECTED and atom.stats.spread == 0.0001
    (mat,) = result.asset_materializations_for_node("symbol_scores")
    assert "ATOMUSDT" in mat.metadata["snapshot spread overruled by the live spread"].value  # type: ignore[operator]
    # no live spread for the others: a wide snapshot still keeps a symbol out
    assert rows["UNIUSDT"].reason in (Reason.SPREAD_TOO_WIDE, Reason.BELOW_MIN_VOLUME)


def test_an_empty_selection_fails_and_leaves_the_universe_unchanged(
    sim: SimExchange, res_for: Resources, db: Database, redis_state: RedisState
) -> None:
    res = res_for(sim.rest_url, min_24h_volume="1e15")
    result = dg.materialize(UNIVERSE_ASSETS, resources=res, raise_on_error=False)
    assert not result.success
    assert current_universe(db) is None and redis_state.read_control().universe is None


def test_quick_check_and_emergency_exclusion_remove_symbols_as_runs(
    sim: SimExchange,
    res_for: Resources,
    db: Database,
    redis_url: str,
    redis_keys: Keyspace,
    redis_state: RedisState,
) -> None:
    res = res_for(sim.rest_url, universe_size="5")
    # before any rescan the quick check has nothing to do
    assert universe_quick_check_job.execute_in_process(resources=res).success
    assert current_universe(db) is None
    assert dg.materialize(UNIVERSE_ASSETS, resources=res).success
    first = current_universe(db)
    assert first is not None
    # the quick check with a minimum between the two smallest 24h volumes of the universe: the smallest leaves
    # (the spread limit is loosened so that a simulated major whose spread touches it at that moment stays)
    chosen = sorted(
        (m for m in members(db, first.rescan_id) if m.selected), key=lambda m: m.stats.quote_volume_24h or 0
    )
    smallest, next_up = (m.stats.quote_volume_24h or 0.0 for m in chosen[:2])
    strict = res_for(sim.rest_url, min_24h_volume=str((smallest * next_up) ** 0.5), max_spread="0.01")
    quick = universe_quick_check_job.execute_in_process(resources=strict)
    assert quick.success
    after_quick = current_universe(db)
    assert (
        after_quick is not None and after_quick.kind == "quick" and after_quick.removed == (chosen[0].symbol,)
    )
    (record,) = exclusions(db)
    assert record.source == "quick_check" and record.reason is Reason.BELOW_MIN_VOLUME
    assert redis_state.read_control().universe == after_quick.symbols

    # the emergency sensor: the best symbol's live spread is far too wide, the second is unknown
    top, second = after_quick.symbols[0], after_quick.symbols[1]
    feeds = {
        top: SymbolFeed(state="synced", spread=0.01, depth_1pct_usd=5e6, quote_volume_window=5e6),
        second: SymbolFeed(state="resyncing"),
    }
    for s in after_quick.symbols[2:]:
        feeds[s] = SymbolFeed(state="synced", spread=0.00005, depth_1pct_usd=5e6, quote_volume_window=5e6)
    publish_feeds(redis_url, redis_keys, feeds)
    cursor = None
    for strike in (1, 2):  # emergency_strikes = 3 by default
        ctx = dg.build_sensor_context(cursor=cursor, resources=res)
        out = emergency_exclusion_sensor(ctx)
        assert isinstance(out, dg.SensorResult) and not out.run_requests
        assert f"{top}×{strike}" in str(out.skip_reason) and "1 unknown" in str(out.skip_reason)
        cursor = out.cursor
    out = emergency_exclusion_sensor(dg.build_sensor_context(cursor=cursor, resources=res))
    assert isinstance(out, dg.SensorResult)
    (request,) = out.run_requests or []
    assert request.tags["tapewatch/symbol"] == top and request.tags["tapewatch/reason"] == "spread_too_wide"
    run = universe_exclusion_job.execute_in_process(run_config=request.run_config, resources=res)
    assert run.success
    after = current_universe(db)
    assert after is not None and after.kind == "emergency" and after.removed == (top,)
    assert top not in (redis_state.read_control().universe or ())
    (emergency,) = [e for e in exclusions(db) if e.source == "emergency"]
    assert emergency.symbol == top and emergency.run_id == run.run_id and emergency.values["spread"] == 0.01
    # the same request again (a retried run) changes nothing
    assert universe_exclusion_job.execute_in_process(run_config=request.run_config, resources=res).success
    assert current_universe(db) == after


def unreachable_redis(res: dict[str, Any], keys: Keyspace) -> dict[str, Any]:
    """``res`` with a Redis nobody listens on: every publish fails (StorageUnavailable)."""
    return {**res, "redis": RedisResource(url="redis://127.0.0.1:1/0", prefix=keys.prefix)}


def test_a_retried_exclusion_publishes_what_the_failed_try_stored(
    res_for: Resources, db: Database, redis_keys: Keyspace, redis_state: RedisState
) -> None:
    """The first try stores the exclusion, then Redis refuses the publish: the retry finds the symbol already
    out and must still hand the stored universe to the service (it used to succeed doing nothing)."""
    symbols = ("AUSDT", "BUSDT", "CUSDT")
    save_healthy_universe(db, symbols)
    res = res_for()
    publish_current(db, redis_state, source="test")  # as the rescan did
    assert redis_state.read_control().universe == symbols
    config = exclusion_config("BUSDT")
    first = universe_exclusion_job.execute_in_process(
        run_config=config, resources=unreachable_redis(res, redis_keys), raise_on_error=False
    )
    assert not first.success
    stored = current_universe(db)
    assert stored is not None and stored.symbols == ("AUSDT", "CUSDT")
    assert redis_state.read_control().universe == symbols  # the service still follows BUSDT
    assert universe_exclusion_job.execute_in_process(run_config=config, resources=res).success
    assert redis_state.read_control().universe == ("AUSDT", "CUSDT")
    last = redis_state.last_rescan()
    assert last is not None and last.info["rescan_id"] == stored.rescan_id
    assert current_universe(db) == stored  # nothing stored twice
    # once published, another no-op run publishes nothing (no control event, no fresh "last rescan")
    events = len(redis_state.control_events())
    assert universe_exclusion_job.execute_in_process(run_config=config, resources=res).success
    assert len(redis_state.control_events()) == events


def exclusion_config(symbol: str) -> dict[str, Any]:
    """The run config of ``universe_exclusion_job`` excluding ``symbol`` for a wide live spread."""
    return {
        "ops": {
            "universe_exclusion": {
                "config": {"symbol": symbol, "reason": "spread_too_wide", "detail": "live spread wide"}
            }
        }
    }


def test_a_retried_quick_check_publishes_what_the_failed_try_stored(
    sim: SimExchange, res_for: Resources, db: Database, redis_keys: Keyspace, redis_state: RedisState
) -> None:
    assert rescan(sim, res_for).success
    first = current_universe(db)
    assert first is not None and redis_state.read_control().universe == first.symbols
    chosen = sorted(
        (m for m in members(db, first.rescan_id) if m.selected), key=lambda m: m.stats.quote_volume_24h or 0
    )
    smallest, next_up = (m.stats.quote_volume_24h or 0.0 for m in chosen[:2])
    strict = res_for(sim.rest_url, min_24h_volume=str((smallest * next_up) ** 0.5), max_spread="0.01")
    failed = universe_quick_check_job.execute_in_process(
        resources=unreachable_redis(strict, redis_keys), raise_on_error=False
    )
    assert not failed.success
    stored = current_universe(db)
    assert stored is not None and stored.removed == (chosen[0].symbol,)
    assert redis_state.read_control().universe == first.symbols
    # the retry: the smallest is no longer in the universe, nothing new to exclude, the stored version goes out
    retry = universe_quick_check_job.execute_in_process(resources=strict)
    assert retry.success and current_universe(db) == stored
    assert redis_state.read_control().universe == stored.symbols
    (output,) = [e for e in retry.events_for_node("universe_quick_check") if e.is_successful_output]
    assert output.step_output_data.metadata["published version"].value == stored.rescan_id


@pytest.mark.parametrize(
    ("loose", "reason", "out"),
    [
        # a rescan without the open-interest minimum lets the low-open-interest symbol in; the quick check at
        # the default minimum ($10M) takes it out
        ({"min_open_interest": "0"}, Reason.BELOW_MIN_OPEN_INTEREST, LOW_OI),
        # likewise the wide symbol (2-4 ticks by design) with a 1 % spread allowed, then the default 0.02 %
        ({"max_spread": "0.01"}, Reason.SPREAD_TOO_WIDE, WIDE),
    ],
)
def test_quick_check_excludes_on_open_interest_and_spread_not_only_volume(
    sim: SimExchange,
    res_for: Resources,
    db: Database,
    redis_url: str,
    redis_keys: Keyspace,
    redis_state: RedisState,
    loose: dict[str, str],
    reason: Reason,
    out: set[str],
) -> None:
    # the quick check fetches no klines: ATR/price is unknown and must not make every symbol "unknown, kept"
    assert rescan(sim, res_for, universe_size="20", **loose).success
    first = current_universe(db)
    assert first is not None and out <= set(first.symbols)
    # a spread failure of the REST snapshot must be confirmed by the live spread: the wide symbol's is wide
    live = {"state": "synced", "depth_1pct_usd": 5e6}
    feeds = {s: SymbolFeed(**live, spread=0.001 if s in WIDE else 0.0001) for s in first.symbols}  # type: ignore[arg-type]
    res = res_for(sim.rest_url)
    with publishing_feeds(redis_url, redis_keys, feeds):
        run = universe_quick_check_job.execute_in_process(resources=res)
    assert run.success
    after = current_universe(db)
    assert after is not None and after.kind == "quick"
    excluded = {e.symbol: e.reason for e in exclusions(db)}
    assert {s: excluded.get(s) for s in out} == dict.fromkeys(out, reason)
    # others may leave too (UNI's volume sits at the minimum; a major whose REST spread touches the maximum at
    # that moment stays: its live spread does not confirm it): each for a minimum it measurably broke, and
    # every removal recorded
    minimums = {Reason.BELOW_MIN_VOLUME, Reason.BELOW_MIN_OPEN_INTEREST, Reason.SPREAD_TOO_WIDE}
    assert set(excluded.values()) <= minimums and set(after.removed) == set(excluded)
    assert set(after.symbols) == set(first.symbols) - set(excluded)
    (output,) = [e for e in run.events_for_node("universe_quick_check") if e.is_successful_output]
    assert output.step_output_data.metadata["unknown (kept)"].value == []
    assert redis_state.read_control().universe == after.symbols


def save_healthy_universe(db: Database, symbols: tuple[str, ...]) -> None:
    """Store a full rescan that selected ``symbols``, every one comfortably above the minimums."""
    healthy = {
        "quote_volume_24h": 1e9,
        "open_interest_usd": 1e8,
        "spread": 0.0001,
        "depth_1pct_usd": 5e6,
        "atr_ratio": 0.02,
        "trades_per_second": 5.0,
    }
    picked = select_universe(
        [SymbolStats(s, **healthy) for s in symbols],  # type: ignore[arg-type]
        len(symbols),
        minimums_from(load_settings()),
    )
    save_rescan(db, picked.decisions)


def test_a_quick_check_failing_most_of_the_universe_excludes_nobody(
    sim: SimExchange, res_for: Resources, db: Database, redis_state: RedisState
) -> None:
    assert rescan(sim, res_for).success
    first = current_universe(db)
    assert first is not None and len(first.symbols) == 5
    # a minimum nobody meets: that is the market (or a bad setting), not five bad symbols
    run = universe_quick_check_job.execute_in_process(resources=res_for(sim.rest_url, min_24h_volume="1e15"))
    assert run.success
    assert current_universe(db) == first and exclusions(db) == []
    assert redis_state.read_control().universe == first.symbols
    (output,) = [e for e in run.events_for_node("universe_quick_check") if e.is_successful_output]
    metadata = output.step_output_data.metadata
    assert "5 of 5 symbols break a minimum at once" in str(metadata["market-wide (nobody excluded)"].value)
    assert set(metadata["held back"].value) == set(first.symbols)  # type: ignore[arg-type]
    assert metadata["excluded"].value == {}


def test_the_sensor_ignores_values_of_a_service_that_stopped_publishing(
    res_for: Resources, db: Database, redis_url: str, redis_keys: Keyspace
) -> None:
    symbols = ("AUSDT", "BUSDT", "CUSDT")
    save_healthy_universe(db, symbols)
    fine = SymbolFeed(state="synced", spread=0.0001, depth_1pct_usd=5e6)
    feeds = {"AUSDT": msgspec.structs.replace(fine, spread=0.01), "BUSDT": fine, "CUSDT": fine}
    publish_feeds(redis_url, redis_keys, feeds)
    res = res_for(emergency_strikes="2")
    out = emergency_exclusion_sensor(dg.build_sensor_context(resources=res))
    assert isinstance(out, dg.SensorResult) and "AUSDT×1" in str(out.skip_reason)
    # the service dies: its last values live on in Redis until they expire, 20 s old at the next tick
    publish_feeds(redis_url, redis_keys, feeds, age_s=20)
    out = emergency_exclusion_sensor(dg.build_sensor_context(cursor=out.cursor, resources=res))
    assert isinstance(out, dg.SensorResult) and not out.run_requests
    assert "3 stale" in str(out.skip_reason) and "AUSDT×1" in str(out.skip_reason)
    after = current_universe(db)
    assert after is not None and after.symbols == symbols


def test_the_sensor_excludes_a_symbol_that_stopped_trading_though_its_window_volume_looks_healthy(
    res_for: Resources, db: Database, redis_url: str, redis_keys: Keyspace
) -> None:
    # the trade window keeps its last 300 s of volume until a new trade arrives: only the age of the last
    # event shows that a symbol stopped
    save_healthy_universe(db, ("AUSDT", "BUSDT"))
    now = int(time.time() * 1000)  # updated_ms is the publisher's wall clock; 400 s is no timing margin
    live = {"state": "synced", "spread": 0.0001, "depth_1pct_usd": 5e6, "quote_volume_window": 5e6}
    publish_feeds(
        redis_url,
        redis_keys,
        {
            "AUSDT": SymbolFeed(**live, last_event_ms=now - 400_000),  # type: ignore[arg-type]
            "BUSDT": SymbolFeed(**live, last_event_ms=now),  # type: ignore[arg-type]
        },
    )
    res = res_for(emergency_strikes="2")
    out = emergency_exclusion_sensor(dg.build_sensor_context(resources=res))
    assert isinstance(out, dg.SensorResult) and not out.run_requests and "AUSDT×1" in str(out.skip_reason)
    out = emergency_exclusion_sensor(dg.build_sensor_context(cursor=out.cursor, resources=res))
    assert isinstance(out, dg.SensorResult)
    (request,) = out.run_requests or []
    assert request.tags == {"tapewatch/symbol": "AUSDT", "tapewatch/reason": "below_min_volume"}
    config = request.run_config["ops"]["universe_exclusion"]["config"]
    assert "no event for" in config["detail"] and "live volume $0" in config["detail"]
    assert universe_exclusion_job.execute_in_process(run_config=request.run_config, resources=res).success
    after = current_universe(db)
    assert after is not None and after.symbols == ("BUSDT",) and after.removed == ("AUSDT",)


def test_the_sensor_spares_the_symbols_of_a_shard_that_lost_the_exchange(
    res_for: Resources, db: Database, redis_url: str, redis_keys: Keyspace
) -> None:
    """``tapewatch run --shard I/N``: shard 1/2 receives nothing for 400 s while shard 0/2 flows. Its symbols'
    silence is its feed's, not their $0 volume; a symbol silent among shard 0/2's flowing ones still leaves."""
    save_healthy_universe(db, ("AUSDT", "BUSDT", "CUSDT", "DUSDT", "EUSDT", "FUSDT"))
    now = int(time.time() * 1000)
    live = {"state": "synced", "spread": 0.0001, "depth_1pct_usd": 5e6, "quote_volume_window": 5e6}

    def feed(shard: str, age_s: float) -> SymbolFeed:
        return SymbolFeed(**live, shard=shard, last_event_ms=now - int(age_s * 1000))  # type: ignore[arg-type]

    feeds = {s: feed("0/2", 0) for s in ("AUSDT", "BUSDT", "FUSDT")}
    feeds |= {"CUSDT": feed("0/2", 400), "DUSDT": feed("1/2", 400), "EUSDT": feed("1/2", 400)}
    publish_feeds(redis_url, redis_keys, feeds)
    out = emergency_exclusion_sensor(dg.build_sensor_context(resources=res_for(emergency_strikes="1")))
    assert isinstance(out, dg.SensorResult)
    assert [r.tags["tapewatch/symbol"] for r in out.run_requests or []] == ["CUSDT"]
    # shard 0/2 alone left: nothing else to exclude, and the skip reason names the silent shard
    publish_feeds(redis_url, redis_keys, {"CUSDT": feed("0/2", 0)})
    out = emergency_exclusion_sensor(dg.build_sensor_context(resources=res_for(emergency_strikes="1")))
    assert isinstance(out, dg.SensorResult) and not out.run_requests
    assert "realtime shard 1/2" in str(out.skip_reason)


def test_without_a_universe_the_sensor_requests_the_first_rescan_once(
    res_for: Resources, db: Database, redis_keys: Keyspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh deployment has no universe: the quick check and the emergency check would have nothing to check
    until the 6-hourly schedule's first rescan. The sensor requests it, unless a rescan is on its way."""
    res = res_for()
    # the job's resources read their URLs from the environment (EnvVar), as in a deployment; embedded servers
    # (no URL set) included
    monkeypatch.setenv("TAPEWATCH_DATABASE_URL", db.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("TAPEWATCH_REDIS_URL", res["redis"].url)
    with dg.instance_for_test() as instance:
        out = emergency_exclusion_sensor(dg.build_sensor_context(resources=res, instance=instance))
        assert isinstance(out, dg.SensorResult) and not out.skip_reason
        (request,) = out.run_requests or []
        assert (
            request.job_name == RESCAN_JOB and request.run_key and request.run_key.startswith("first-rescan:")
        )
        # the next tick within the hour asks with the same run key: Dagster launches it once
        again = emergency_exclusion_sensor(dg.build_sensor_context(resources=res, instance=instance))
        assert isinstance(again, dg.SensorResult)
        assert [r.run_key for r in again.run_requests or []] == [request.run_key]
        # a rescan on its way (the schedule's, tapewatch rescan's, or the one requested): nothing more
        job = universe_definitions.resolve_job_def(RESCAN_JOB)
        running = instance.create_run_for_job(job_def=job, status=dg.DagsterRunStatus.STARTED)
        out = emergency_exclusion_sensor(dg.build_sensor_context(resources=res, instance=instance))
        assert isinstance(out, dg.SensorResult) and not out.run_requests
        assert "no universe stored yet" in str(out.skip_reason) and running.run_id in str(out.skip_reason)
        # it failed for good: asked again (Dagster takes the request once its run key changes, within the hour)
        instance.report_run_failed(running)
        out = emergency_exclusion_sensor(dg.build_sensor_context(resources=res, instance=instance))
        assert isinstance(out, dg.SensorResult) and [r.job_name for r in out.run_requests or []] == [
            RESCAN_JOB
        ]
        # once a universe is stored the sensor checks it and requests no rescan
        save_healthy_universe(db, ("AUSDT", "BUSDT"))
        out = emergency_exclusion_sensor(dg.build_sensor_context(resources=res, instance=instance))
        assert (
            isinstance(out, dg.SensorResult)
            and not out.run_requests
            and "2 symbols checked" in str(out.skip_reason)
        )
    down = {**res, "redis": type(res["redis"])(url="redis://127.0.0.1:9/0", prefix=redis_keys.prefix)}
    out = emergency_exclusion_sensor(dg.build_sensor_context(resources=down))
    assert isinstance(out, dg.SensorResult) and "storage unavailable" in str(out.skip_reason)


def test_exclusion_requests_name_their_job() -> None:
    # the sensor targets two jobs (exclusions, and the first rescan): every request must say which
    sensor = universe_definitions.resolve_sensor_def("emergency_exclusion_sensor")
    assert {t.job_name for t in sensor.targets} == {universe_exclusion_job.name, RESCAN_JOB}


def test_jobs_and_schedule_are_wired() -> None:
    assert universe_rescan_schedule.cron_schedule == "0 */6 * * *"
    assert universe_rescan_schedule.job_name == universe_rescan_job.name == RESCAN_JOB


def test_the_rescan_cron_follows_the_setting_and_falls_back_on_a_bad_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cron, description = rescan_schedule_cron(lambda: load_settings(universe_rescan_interval=2))
    assert cron == "0 */2 * * *" and "every 2 h" in description
    with caplog.at_level(logging.WARNING):
        cron, description = rescan_schedule_cron(lambda: load_settings(universe_rescan_interval="abc"))
    assert cron == "0 */6 * * *"
    assert "TAPEWATCH_UNIVERSE_RESCAN_INTERVAL" in description and "default 6 h" in description
    assert any("TAPEWATCH_UNIVERSE_RESCAN_INTERVAL" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("hours", [7, 1.5, 0.001])  # 36 h: above the 24-h bound (the test below)
def test_an_interval_cron_cannot_repeat_evenly_is_refused_by_name(
    hours: float, caplog: pytest.LogCaptureFixture
) -> None:
    """36 h used to run daily and 7 h at 00, 07, 14, 21, 00: the schedule says so instead of rounding."""
    with pytest.raises(ConfigError, match="universe_rescan_interval must repeat evenly") as raised:
        load_settings(universe_rescan_interval=hours)
    assert "TAPEWATCH_UNIVERSE_RESCAN_INTERVAL" in str(raised.value) and "1, 2, 3, 4, 6, 8, 12 or 24" in str(
        raised.value
    )
    with caplog.at_level(logging.WARNING):
        cron, description = rescan_schedule_cron(lambda: load_settings(universe_rescan_interval=hours))
    assert cron == "0 */6 * * *" and "repeat evenly" in description


@pytest.mark.parametrize("hours", [36, 48, 168, 7, 0])
def test_a_refused_interval_is_told_the_real_rule(hours: float) -> None:
    """The message used to say "allowed: > 0 and <= 168" while nothing above 24 h was accepted."""
    with pytest.raises(ConfigError) as raised:
        load_settings(universe_rescan_interval=hours)
    message = str(raised.value)
    assert "<= 168" not in message
    assert (
        "allowed: a divisor of 24 hours (1, 2, 3, 4, 6, 8, 12 or 24) or, under 1 hour, of 60 minutes"
        in message
    )
    for fine in (24, 0.25):
        assert load_settings(universe_rescan_interval=fine).universe_rescan_interval == fine


def test_a_bad_setting_never_stops_the_code_location_from_loading() -> None:
    # Dagster imports the code location in a process of its own, with the operator's environment
    env = {**os.environ, "TAPEWATCH_UNIVERSE_RESCAN_INTERVAL": "abc"}
    script = (
        "from orchestration.definitions import defs\n"
        "s = defs.resolve_schedule_def('universe_rescan_schedule')\n"
        "print(s.cron_schedule, '|', s.description)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("0 */6 * * * |") and "TAPEWATCH_UNIVERSE_RESCAN_INTERVAL" in proc.stdout


def test_the_first_rescan_named_is_the_sensor_s_own_not_a_rescan_queued_behind_it(
    res_for: Resources, db: Database, redis_keys: Keyspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    res = res_for()
    monkeypatch.setenv("TAPEWATCH_DATABASE_URL", db.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("TAPEWATCH_REDIS_URL", res["redis"].url)
    job = universe_definitions.resolve_job_def(RESCAN_JOB)
    with dg.instance_for_test() as instance:
        own = instance.create_run_for_job(
            job_def=job, status=dg.DagsterRunStatus.STARTED, tags={FIRST_RESCAN_TAG: "true"}
        )
        # `tapewatch rescan` launched after it, waiting (NOT_STARTED: a QUEUED run needs a code location here)
        queued = instance.create_run_for_job(job_def=job, status=dg.DagsterRunStatus.NOT_STARTED)
        out = emergency_exclusion_sensor(dg.build_sensor_context(resources=res, instance=instance))
        assert isinstance(out, dg.SensorResult) and not out.run_requests
        assert f"the first rescan is STARTED (run {own.run_id})" in str(out.skip_reason)
        assert queued.run_id not in str(out.skip_reason)
        # none of its own on the way: the one that runs first (the oldest), not the newest queued
        instance.report_run_failed(own)
        scheduled = instance.create_run_for_job(job_def=job, status=dg.DagsterRunStatus.NOT_STARTED)
        out = emergency_exclusion_sensor(dg.build_sensor_context(resources=res, instance=instance))
        assert isinstance(out, dg.SensorResult) and f"(run {queued.run_id})" in str(out.skip_reason)
        assert scheduled.run_id not in str(out.skip_reason)
