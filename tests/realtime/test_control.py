"""Control commands: the control loop against real Redis, then against the running service and the simulator
(universe live, pause, max_universe, Redis going away and coming back)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import pytest
import redis

from realtime.control import ControlConfig, ControlLoop, TradableSymbols, first_n, known_symbols
from realtime.sim.server import SimExchange
from realtime.timebase import Timebase
from tapewatch.adapters.embedded import start_redis, stop_redis
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import AsyncRedisState, RedisState
from tapewatch.engine import EngineOutput
from tapewatch.errors import FeedError
from tapewatch.signal import Candidate
from tapewatch.streams import symbol_streams
from tests.realtime.control_helpers import all_synced, running_service, sim_settings, wait_for

START = ["AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT"]
TRADABLE = frozenset([*START, "EEEUSDT", "FFFUSDT"])


# --- pure parts ----------------------------------------------------------------------------------------------


def test_first_n_keeps_the_order_and_no_limit_keeps_all() -> None:
    assert first_n(START, 2) == ("AAAUSDT", "BBBUSDT")
    assert first_n(START, None) == tuple(START)
    assert first_n(START, 10) == tuple(START)


def test_known_symbols_keeps_order_drops_repeats_and_lists_the_others() -> None:
    kept, ignored = known_symbols(["EEEUSDT", "NOPEUSDT", "AAAUSDT", "EEEUSDT", "NOPEUSDT"], TRADABLE)
    assert kept == ("EEEUSDT", "AAAUSDT")
    assert ignored == ("NOPEUSDT",)


def test_config_rejects_non_positive_times() -> None:
    with pytest.raises(ValueError, match="reread_every"):
        ControlConfig(reread_every=0)
    with pytest.raises(ValueError, match="retry_cap"):
        ControlConfig(retry_cap=-1)


# --- the loop against real Redis, steering a recording target ------------------------------------------------


class Target:
    """A stand-in service: records what the control loop asked of it."""

    def __init__(self) -> None:
        self.universe = list(START)
        self.paused: str | None = None
        self.backup = False
        self.calls: list[tuple[str, object]] = []

    def set_universe(self, symbols: list[str]) -> None:
        self.universe = list(symbols)
        self.calls.append(("universe", tuple(symbols)))

    def set_paused(self, reason: str | None) -> None:
        self.paused = reason
        self.calls.append(("paused", reason))

    async def set_backup_feed(self, on: bool) -> None:
        self.backup = on
        self.calls.append(("backup", on))


async def _tradable() -> Collection[str]:
    return TRADABLE


async def _with_loop(
    redis_url: str,
    keys: Keyspace,
    target: Target,
    config: ControlConfig,
    tradable: TradableSymbols = _tradable,
    fixed: Collection[str] = (),
) -> tuple[AsyncRedisState, ControlLoop, asyncio.Task[None]]:
    state = AsyncRedisState.from_url(redis_url, keys=keys)
    loop = ControlLoop(state, target, tradable=tradable, config=config, fixed=fixed)
    return state, loop, asyncio.create_task(loop.run())


async def _stop(state: AsyncRedisState, task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await state.aclose()


def test_state_at_start_then_every_command_on_its_event(
    redis_url: str, redis_keys: Keyspace, redis_state: RedisState, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="realtime.control")
    redis_state.pause("maintenance", source="ops")  # set before the loop starts

    async def scenario() -> None:
        target = Target()
        # A long re-read period: only the events can explain a quick reaction.
        state, loop, task = await _with_loop(redis_url, redis_keys, target, ControlConfig(reread_every=60))
        try:
            await wait_for(lambda: target.paused == "maintenance", "the pause set before start")
            await asyncio.to_thread(redis_state.set_universe, ["EEEUSDT", "AAAUSDT"], source="dashboard")
            took = await wait_for(lambda: target.universe == ["EEEUSDT", "AAAUSDT"], "the new universe")
            assert took < 2.0
            await asyncio.to_thread(redis_state.set_max_universe, 1, source="dagster")
            await wait_for(lambda: target.universe == ["EEEUSDT"], "the first symbol only")
            await asyncio.to_thread(redis_state.set_max_universe, None, source="dagster")
            await wait_for(lambda: target.universe == ["EEEUSDT", "AAAUSDT"], "the full universe back")
            await asyncio.to_thread(redis_state.set_backup_feed, True, source="sensor")
            await wait_for(lambda: target.backup, "the backup feed on")
            await asyncio.to_thread(redis_state.resume, source="ops")
            await wait_for(lambda: target.paused is None, "resumed")
            await asyncio.to_thread(redis_state.set_universe, None, source="dashboard")
            await wait_for(lambda: target.universe == START, "the start-up universe back")
            await asyncio.to_thread(redis_state.set_backup_feed, False, source="sensor")
            await wait_for(lambda: not target.backup, "the websockets back")
            assert loop.applied is not None and loop.applied.source == "start"
            assert loop.counters["applied_universe"] == 4
            assert loop.counters["applied_max_universe"] == 2
            assert loop.counters["applied_pause"] == loop.counters["applied_resume"] == 1
            assert loop.counters["applied_backup_feed_on"] == loop.counters["applied_backup_feed_off"] == 1
            assert loop.metrics()["control_commands"] == 10
        finally:
            await _stop(state, task)
        # each change applied exactly once, nothing re-applied by later reads
        assert target.calls == [
            ("paused", "maintenance"),
            ("universe", ("EEEUSDT", "AAAUSDT")),
            ("universe", ("EEEUSDT",)),
            ("universe", ("EEEUSDT", "AAAUSDT")),
            ("backup", True),
            ("paused", None),
            ("universe", tuple(START)),
            ("backup", False),
        ]

    asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records if r.name == "realtime.control"]
    assert any("signalling paused: 'maintenance' (start)" in line for line in lines)
    assert any(
        "universe now 1 of 2 symbols (control key, max_universe 1): -AAAUSDT" in line for line in lines
    )
    assert any("switched to the backup feed" in line and "backup_feed by sensor" in line for line in lines)


def test_a_change_without_its_event_is_applied_by_the_periodic_reread(
    redis_url: str, redis_keys: Keyspace, redis_client: redis.Redis
) -> None:
    async def scenario() -> None:
        target = Target()
        state, loop, task = await _with_loop(redis_url, redis_keys, target, ControlConfig(reread_every=0.3))
        try:
            await wait_for(lambda: loop.applied is not None, "the first read")
            # written behind the platform's back: no control event wakes the loop
            await asyncio.to_thread(redis_client.set, redis_keys.control_paused, "set by hand")
            await wait_for(lambda: target.paused == "set by hand", "the re-read", within=5)
            assert loop.counters["reads"] >= 2
        finally:
            await _stop(state, task)

    asyncio.run(scenario())


def test_unknown_symbols_are_ignored_and_a_universe_of_none_is_refused(
    redis_url: str, redis_keys: Keyspace, redis_state: RedisState, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="realtime.control")

    async def scenario() -> None:
        target = Target()
        state, loop, task = await _with_loop(redis_url, redis_keys, target, ControlConfig(reread_every=0.1))
        try:
            await asyncio.to_thread(
                redis_state.set_universe, ["NOPEUSDT", "FFFUSDT", "DELISTEDUSDT"], source="dashboard"
            )
            await wait_for(lambda: target.universe == ["FFFUSDT"], "the tradable symbol only")
            await asyncio.sleep(0.5)  # several periodic re-reads of the same value
            await asyncio.to_thread(redis_state.set_universe, ["NOPEUSDT"], source="dashboard")
            await wait_for(lambda: loop.counters["rejected"] == 1, "the all-unknown universe refused")
            await asyncio.sleep(0.3)
            assert target.universe == ["FFFUSDT"]  # kept
            assert loop.counters["ignored_symbols"] == 3
            metrics = loop.metrics()  # the refusal reaches the metrics hash
            assert (metrics["control_rejected"], metrics["control_ignored_symbols"]) == (1, 3)
        finally:
            await _stop(state, task)

    asyncio.run(scenario())
    ignored = [r for r in caplog.records if "ignoring" in r.getMessage()]
    assert len(ignored) == 2  # once per command, not once per re-read
    assert "NOPEUSDT, DELISTEDUSDT" in ignored[0].getMessage()
    assert sum("names no tradable symbol" in r.getMessage() for r in caplog.records) == 1


def test_a_fixed_universe_follows_its_exclusions_but_never_a_score_based_universe(
    redis_url: str, redis_keys: Keyspace, redis_state: RedisState, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="realtime.control")

    async def scenario() -> None:
        target = Target()
        state, loop, task = await _with_loop(
            redis_url, redis_keys, target, ControlConfig(reread_every=0.1), fixed=START
        )
        try:
            # the rescan publishes the fixed list, an exclusion removes BBBUSDT from it: followed
            await asyncio.to_thread(redis_state.set_universe, START, source="universe_rescan")
            await asyncio.to_thread(
                redis_state.set_universe, ["AAAUSDT", "CCCUSDT", "DDDUSDT"], source="emergency_exclusion"
            )
            await wait_for(lambda: target.universe == ["AAAUSDT", "CCCUSDT", "DDDUSDT"], "the exclusion")
            # a platform choosing by score (Dagster not told of the fixed list): refused, the fixed list stands
            await asyncio.to_thread(
                redis_state.set_universe, ["EEEUSDT", "AAAUSDT"], source="universe_rescan"
            )
            await wait_for(lambda: loop.counters["rejected"] == 1, "the score-based universe refused")
            await asyncio.sleep(0.4)  # several periodic re-reads of the same value
            assert target.universe == START and loop.counters["rejected"] == 1
            assert loop.applied is not None and loop.applied.source == "start"
        finally:
            await _stop(state, task)

    asyncio.run(scenario())
    refused = [r.getMessage() for r in caplog.records if "outside the fixed universe" in r.getMessage()]
    assert (
        len(refused) == 1 and "names 1 symbols outside" in refused[0] and "--symbols): EEEUSDT;" in refused[0]
    )


def test_an_empty_universe_is_refused(
    redis_url: str, redis_keys: Keyspace, redis_state: RedisState, caplog: pytest.LogCaptureFixture
) -> None:
    # whoever writes it (a bug, an exclusion that removed everything): watching nothing is never meant
    caplog.set_level(logging.INFO, logger="realtime.control")

    async def scenario() -> None:
        target = Target()
        state, loop, task = await _with_loop(redis_url, redis_keys, target, ControlConfig(reread_every=0.1))
        try:
            await asyncio.to_thread(redis_state.set_universe, [], source="dagster")
            await wait_for(lambda: loop.counters["rejected"] == 1, "the empty universe refused")
            await asyncio.sleep(0.3)
            assert target.universe == START and target.calls == []
        finally:
            await _stop(state, task)

    asyncio.run(scenario())
    assert sum("the universe is empty" in r.getMessage() for r in caplog.records) == 1


def test_a_universe_waits_until_exchange_info_can_check_it(
    redis_url: str, redis_keys: Keyspace, redis_state: RedisState
) -> None:
    failures = [FeedError("exchangeInfo: HTTP 503"), FeedError("exchangeInfo: timeout")]

    async def flaky() -> Collection[str]:
        if failures:
            raise failures.pop(0)
        return TRADABLE

    redis_state.set_universe(["EEEUSDT"], source="dashboard")
    redis_state.pause("checking", source="ops")

    async def scenario() -> None:
        target = Target()
        config = ControlConfig(reread_every=60, recheck_after=0.1)
        state, loop, task = await _with_loop(redis_url, redis_keys, target, config, tradable=flaky)
        try:
            # the pause does not wait for exchangeInfo; the universe does
            await wait_for(lambda: target.paused == "checking", "the pause")
            assert target.universe == START
            await wait_for(lambda: target.universe == ["EEEUSDT"], "the universe once checked", within=5)
            assert loop.counters["universe_unchecked"] == 2
            assert loop.metrics()["control_universe_unchecked"] == 2  # reaches the metrics hash
        finally:
            await _stop(state, task)

    asyncio.run(scenario())


class FailsOnce(Target):
    """A service whose first universe change raises (a bug, a full connection table, ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    def set_universe(self, symbols: list[str]) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("subscribe failed")
        super().set_universe(symbols)


def test_a_command_that_fails_is_logged_and_retried_without_ending_the_loop(
    redis_url: str, redis_keys: Keyspace, redis_state: RedisState, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        target = FailsOnce()
        config = ControlConfig(reread_every=60, retry_base=0.05)
        state, loop, task = await _with_loop(redis_url, redis_keys, target, config)
        try:
            await wait_for(lambda: loop.applied is not None, "the first read")
            await asyncio.to_thread(redis_state.set_universe, ["EEEUSDT"], source="dashboard")
            await wait_for(lambda: target.universe == ["EEEUSDT"], "applied on the retry")
            assert loop.counters["errors"] == 1 and not task.done()
        finally:
            await _stop(state, task)

    asyncio.run(scenario())
    failed = [r for r in caplog.records if "applying the control state failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None


def test_redis_down_keeps_the_state_logs_once_and_backs_off(
    server_tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="realtime.control")
    sleeps: list[float] = []

    async def no_wait(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.sleep(0)

    async def scenario() -> None:
        target = Target()
        nowhere = f"unix://{server_tmp_path / 'no-redis.sock'}"
        state = AsyncRedisState.from_url(nowhere, keys=Keyspace(prefix="twtest:down:"))
        config = ControlConfig(retry_base=1.0, retry_cap=8.0)
        timebase = Timebase(sleep=no_wait, random=lambda: 0.5)
        loop = ControlLoop(state, target, tradable=_tradable, config=config, timebase=timebase)
        assert not await loop.sync()
        task = asyncio.create_task(loop.run())
        try:
            await wait_for(lambda: len(sleeps) >= 6, "six retries")
            assert not task.done()
        finally:
            await _stop(state, task)
        # never read: the pause is unknown, so signalling is paused (fail closed), once
        assert len(target.calls) == 1 and target.calls[0][0] == "paused" and target.universe == START
        held = str(target.calls[0][1])
        assert held == "control state unknown: Redis unreachable"
        assert loop.counters["redis_errors"] >= 7
        assert loop.metrics()["control_redis_up"] == 0
        assert loop.info() == {"control": "not read yet", "paused": held}

    asyncio.run(scenario())
    # full jitter (random 0.5) of a doubling, capped ceiling (8 s: 4 s drawn), and at most 2 s while the
    # control state is unknown
    assert sleeps[:6] == [0.5, 1.0, 2.0, 2.0, 2.0, 2.0]
    warnings = [r for r in caplog.records if r.name == "realtime.control" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Redis unavailable" in warnings[0].getMessage()


# --- against the running service -----------------------------------------------------------------------------


def _streams(symbols: list[str]) -> set[str]:
    return {s for sym in symbols for s in symbol_streams(sym, 100, ("1m", "15m"))}


@pytest.mark.e2e
@pytest.mark.slow
def test_commands_steer_the_running_service_without_reconnecting(
    tmp_path: Path, redis_url: str, redis_keys: Keyspace, redis_state: RedisState
) -> None:
    async def scenario() -> None:
        async with SimExchange(port=0, seed=11, symbols=10) as sim:
            settings = sim_settings(sim, tmp_path, redis_keys.prefix, universe_size=4)
            async with running_service(settings, redis_url) as run:
                service = run.service
                start = list(service.universe)
                await wait_for(lambda: all_synced(service), "books synced")
                connects = service.pool.stats.connects
                others = sorted(await service.tradable_symbols() - set(start))[:2]
                wanted = [start[0], start[2], *others]

                # a new universe (with a name the exchange does not list): live, no reconnect
                await asyncio.to_thread(redis_state.set_universe, [*wanted, "NOPEUSDT"], source="test")
                await wait_for(lambda: service.universe == wanted, "the new universe")
                assert service.pool.streams() == _streams(wanted)
                await wait_for(lambda: all_synced(service), "the new symbols' books synced")
                assert sim.hub.wants(f"{others[0].lower()}@aggTrade")
                assert not sim.hub.wants(f"{start[1].lower()}@aggTrade")
                assert service.pool.stats.connects == connects

                # pause: the risk gate's flag; published in the heartbeat and the metrics
                await asyncio.to_thread(redis_state.pause, "data anomaly", source="sensor")
                await wait_for(lambda: service.engine.risk.paused, "paused")
                beat = await _eventually(lambda: redis_state.heartbeat("realtime"), "paused", "data anomaly")
                assert beat is not None and beat.info["paused"] == "data anomaly"
                await asyncio.to_thread(redis_state.resume, source="sensor")
                await wait_for(lambda: not service.engine.risk.paused, "resumed")

                # shrink to the first 2 and back
                await asyncio.to_thread(redis_state.set_max_universe, 2, source="sensor")
                await wait_for(lambda: service.universe == wanted[:2], "shrunk to 2")
                assert service.pool.streams() == _streams(wanted[:2])
                metrics = await _eventually(lambda: redis_state.metrics(), "control_max_universe", 2.0)
                assert metrics["control_universe_symbols"] == 2.0
                await asyncio.to_thread(redis_state.set_max_universe, None, source="sensor")
                await wait_for(lambda: service.universe == wanted, "the full universe back")

                # no universe key: the start-up choice again
                await asyncio.to_thread(redis_state.set_universe, None, source="test")
                await wait_for(lambda: service.universe == start, "the start-up universe")
                await wait_for(lambda: all_synced(service), "all books synced")
                assert service.pool.stats.connects == connects
                assert service.control is not None
                assert service.control.counters["applied_universe"] == 4
                assert run.alive()

    asyncio.run(scenario())


async def _eventually(read: Callable[[], object], key: str, value: object, within: float = 5.0) -> Any:
    """Poll a sync Redis read (in a thread) until its ``key`` (a dict key or a heartbeat info key) has ``value``."""
    found: list[object] = []

    async def check() -> bool:
        got = await asyncio.to_thread(read)
        info = getattr(got, "info", got)
        if isinstance(info, dict) and info.get(key) == value:
            found.append(got)
            return True
        return False

    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"{key} never became {value!r}"
        await asyncio.sleep(0.1)
    return found[0]


class ListSink:
    def __init__(self) -> None:
        self.outputs: list[EngineOutput] = []

    def accept(self, output: EngineOutput) -> None:
        self.outputs.append(output)


@pytest.mark.e2e
@pytest.mark.slow
def test_a_paused_service_keeps_evaluating_and_stores_candidates_as_paused(
    tmp_path: Path, redis_url: str, redis_keys: Keyspace, redis_state: RedisState
) -> None:
    """An accelerated market with planted episodes, paused from the start: candidates, none a signal."""
    redis_state.pause("paused for the test", source="test")
    sink = ListSink()

    async def scenario() -> None:
        async with SimExchange(port=0, seed=1, symbols=6, speed=60.0, episode_rate_scale=30.0) as sim:
            settings = sim_settings(sim, tmp_path, redis_keys.prefix, universe_size=5, capture_enabled=False)
            async with running_service(settings, redis_url, sink=sink) as run:
                control = run.service.control
                await wait_for(lambda: control is not None and control.applied is not None, "the first read")
                assert run.service.engine.risk.paused
                await wait_for(lambda: len(_candidates(sink)) >= 2, "two candidates", within=40)

    asyncio.run(scenario())
    fates = {c.fate for c in _candidates(sink)}
    assert fates == {"paused"}
    assert not [s for out in sink.outputs for s in out.signals if s.signal_type == "ENTRY"]


def _candidates(sink: ListSink) -> list[Candidate]:
    return [c for out in sink.outputs for c in out.candidates]


@pytest.mark.e2e
@pytest.mark.slow
def test_redis_going_away_does_not_stop_the_service(
    tmp_path: Path, server_tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="realtime.control")
    redis_dir = server_tmp_path / "redis"
    url = start_redis(redis_dir)
    keys = Keyspace(prefix="twtest:gone:")
    state = RedisState.from_url(url, keys=keys)

    async def scenario() -> None:
        async with SimExchange(port=0, seed=4, symbols=6) as sim:
            settings = sim_settings(sim, tmp_path, keys.prefix, universe_size=3, capture_enabled=False)
            control = ControlConfig(retry_base=0.1, retry_cap=0.5)
            async with running_service(settings, url, control=control) as run:
                service = run.service
                assert service.control is not None
                await wait_for(lambda: all_synced(service), "books synced")
                await asyncio.to_thread(state.set_max_universe, 2, source="test")
                await wait_for(lambda: len(service.universe) == 2, "shrunk before the outage")

                await asyncio.to_thread(stop_redis, redis_dir)
                await wait_for(
                    lambda: service.control is not None and not service.control.redis_up, "noticed"
                )
                messages = service.market.messages
                await wait_for(
                    lambda: service.control is not None and service.control.counters["redis_errors"] >= 4,
                    "retries",
                )
                assert run.alive() and len(service.universe) == 2  # the applied state is kept
                await wait_for(lambda: service.market.messages > messages, "the feed goes on")
                await wait_for(lambda: service.counters["redis_errors"] >= 1, "the publisher noticed too")
                assert run.alive()

                await asyncio.to_thread(start_redis, redis_dir)
                await wait_for(lambda: service.control is not None and service.control.redis_up, "Redis back")
                await asyncio.to_thread(state.pause, "after the outage", source="test")
                await wait_for(lambda: service.engine.risk.paused, "a command after the outage")
                assert run.alive()

    try:
        asyncio.run(scenario())
    finally:
        state.close()
        stop_redis(redis_dir)
    messages = [r.getMessage() for r in caplog.records if r.name == "realtime.control"]
    assert sum("Redis unavailable" in m for m in messages) == 1
    assert sum("Redis reachable again" in m for m in messages) == 1


def test_shards_split_the_global_universe_and_its_cap(redis_url: str, redis_keys: Keyspace) -> None:
    from tapewatch.adapters.redis_state import ControlState
    from tapewatch.sharding import Shard

    async def scenario() -> list[list[str]]:
        state = AsyncRedisState.from_url(redis_url, keys=redis_keys)
        try:
            parts = []
            for index in range(2):
                target = Target()
                loop = ControlLoop(state, target, tradable=_tradable, shard=Shard(index, 2))
                await loop.apply(ControlState(universe=tuple(sorted(TRADABLE))))
                whole = list(target.universe)
                await loop.apply(ControlState(universe=tuple(sorted(TRADABLE)), max_universe=3))
                capped = list(target.universe)
                parts.append(whole)
                assert set(capped) == set(whole) & set(sorted(TRADABLE)[:3])
            return parts
        finally:
            await state.aclose()

    first, second = asyncio.run(scenario())
    assert not set(first) & set(second)
    assert sorted(first + second) == sorted(TRADABLE)
    assert first and second
