"""A Redis that comes back empty (restarted without persistence, flushed) must not lift an operator's pause nor
drop the platform's universe: the control loop keeps what it applied, says so, counts it and writes it back."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis

from realtime.control import ControlConfig, ControlLoop
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import AsyncRedisState, ControlState, RedisState
from tapewatch.sharding import Shard
from tests.helpers import lose_redis_data
from tests.realtime.control_helpers import wait_for
from tests.realtime.test_control import Target, _stop, _tradable, _with_loop

LOST = "Redis lost its data"


async def _reads(loop: ControlLoop, more: int) -> None:
    """Wait until the loop has read the control keys ``more`` more times."""
    target = loop.counters["reads"] + more
    await wait_for(lambda: loop.counters["reads"] >= target, f"{more} more reads", within=5)


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "realtime.control" and r.levelno >= logging.ERROR
    ]


def test_a_redis_that_comes_back_empty_keeps_the_pause_and_the_universe_and_writes_them_back(
    redis_url: str,
    redis_keys: Keyspace,
    redis_state: RedisState,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="realtime.control")
    redis_state.pause("maintenance", source="ops")
    redis_state.set_universe(["EEEUSDT", "AAAUSDT", "NOPEUSDT"], source="dagster")
    redis_state.set_max_universe(1, source="sensor")
    redis_state.set_backup_feed(True, source="sensor")

    async def scenario() -> None:
        target = Target()
        state, loop, task = await _with_loop(redis_url, redis_keys, target, ControlConfig(reread_every=0.1))
        try:
            await wait_for(lambda: target.paused == "maintenance" and target.backup, "the state applied")
            assert target.universe == ["EEEUSDT"]
            calls = list(target.calls)

            await asyncio.to_thread(lose_redis_data, redis_client, redis_keys)
            await _reads(loop, 3)  # the periodic re-read finds the keys gone
            assert target.paused == "maintenance"  # not resumed behind the operator's back
            assert target.universe == ["EEEUSDT"] and target.backup
            assert target.calls == calls  # nothing re-applied, nothing undone
            assert loop.metrics()["control_state_lost"] == 1  # once, not once per re-read
            # written back, so that the dashboard and Dagster see it again
            assert await asyncio.to_thread(redis_state.read_control) == ControlState(
                universe=("EEEUSDT", "AAAUSDT"), paused_reason="maintenance", backup_feed=True, max_universe=1
            )
            events = await asyncio.to_thread(redis_state.control_events)
            assert sorted((e.command, e.source) for e in events) == [
                ("backup_feed", "realtime (restored)"),
                ("max_universe", "realtime (restored)"),
                ("paused", "realtime (restored)"),
                ("universe", "realtime (restored)"),
            ]
        finally:
            await _stop(state, task)

    asyncio.run(scenario())
    errors = _errors(caplog)
    assert len(errors) == 1 and errors[0].startswith(f"control: {LOST} (restarted without persistence?)")
    assert (
        "paused='maintenance', universe=2 symbols (control key), max_universe=1, backup_feed=on" in errors[0]
    )
    assert "enable persistence (appendonly yes) on Redis" in errors[0]
    assert not [r for r in caplog.records if "signalling resumed" in r.getMessage()]


def test_a_real_resume_still_resumes_and_keeps_the_marker(
    redis_url: str, redis_keys: Keyspace, redis_state: RedisState, redis_client: redis.Redis
) -> None:
    redis_state.pause("maintenance", source="ops")

    async def scenario() -> None:
        target = Target()
        state, loop, task = await _with_loop(redis_url, redis_keys, target, ControlConfig(reread_every=0.1))
        try:
            await wait_for(lambda: target.paused == "maintenance", "paused")
            await asyncio.to_thread(redis_state.resume, source="dashboard")
            await wait_for(lambda: target.paused is None, "resumed")
            await _reads(loop, 3)
            assert target.paused is None and loop.metrics()["control_state_lost"] == 0
            assert redis_client.exists(redis_keys.control_marker)  # a resume deletes only its own key
            assert redis_client.get(redis_keys.control_paused) is None
        finally:
            await _stop(state, task)

    asyncio.run(scenario())


def test_a_first_start_on_an_empty_redis_is_not_a_loss(
    redis_url: str, redis_keys: Keyspace, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="realtime.control")

    async def scenario() -> None:
        target = Target()
        state, loop, task = await _with_loop(redis_url, redis_keys, target, ControlConfig(reread_every=0.1))
        try:
            await wait_for(lambda: loop.applied is not None, "the first read")
            await _reads(loop, 3)
            assert loop.metrics()["control_state_lost"] == 0 and target.calls == []
            assert redis_client.exists(redis_keys.control_marker)  # set on the first read
            assert redis_client.xlen(redis_keys.control_events) == 0  # nothing written back
        finally:
            await _stop(state, task)

    asyncio.run(scenario())
    assert _errors(caplog) == []


def test_a_command_written_after_the_loss_wins_over_the_restored_state(
    redis_url: str,
    redis_keys: Keyspace,
    redis_state: RedisState,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis_state.pause("maintenance", source="ops")
    redis_state.set_universe(["EEEUSDT", "AAAUSDT"], source="dagster")

    async def scenario() -> None:
        target = Target()
        # No periodic re-read in time: the command's event is what wakes the loop after the loss.
        state, loop, task = await _with_loop(redis_url, redis_keys, target, ControlConfig(reread_every=60))
        try:
            await wait_for(lambda: target.universe == ["EEEUSDT", "AAAUSDT"], "the state applied")
            await asyncio.to_thread(lose_redis_data, redis_client, redis_keys)
            # the write recreates the marker, but not the one the service knew
            await asyncio.to_thread(redis_state.set_universe, ["FFFUSDT"], source="dagster")
            await wait_for(lambda: target.universe == ["FFFUSDT"], "the new universe")
            assert target.paused == "maintenance" and loop.metrics()["control_state_lost"] == 1
            control = await asyncio.to_thread(redis_state.read_control)
            assert (control.universe, control.paused_reason) == (("FFFUSDT",), "maintenance")
        finally:
            await _stop(state, task)

    asyncio.run(scenario())
    assert len(_errors(caplog)) == 1


def test_a_resume_written_after_the_loss_is_not_undone_by_the_restore(
    redis_url: str, redis_keys: Keyspace, redis_state: RedisState, redis_client: redis.Redis
) -> None:
    """Redis lost its data, then an operator resumed before the service noticed: the resume deletes an absent
    key, so only its event says it happened. The events stream was lost with the keys, so that event is newer
    than the loss: the restore must leave the pause lifted (it wrote it back, and kept the service paused)."""
    redis_state.pause("maintenance", source="ops")

    async def scenario() -> None:
        target = Target()
        state, loop, task = await _with_loop(redis_url, redis_keys, target, ControlConfig(reread_every=60))
        try:
            await wait_for(lambda: target.paused == "maintenance", "the pause applied")
            await asyncio.to_thread(lose_redis_data, redis_client, redis_keys)
            await asyncio.to_thread(redis_state.resume, source="dashboard")
            await wait_for(lambda: target.paused is None, "the resume applied")
            assert loop.metrics()["control_state_lost"] == 1  # the loss was noticed, and nothing undone
            assert (await asyncio.to_thread(redis_state.read_control)).paused_reason is None
            events = await asyncio.to_thread(redis_state.control_events)
            assert [(e.command, e.source) for e in events] == [("paused", "dashboard")]  # nothing restored
        finally:
            await _stop(state, task)

    asyncio.run(scenario())


def test_two_shards_restore_each_value_once(
    redis_url: str, redis_keys: Keyspace, redis_state: RedisState, redis_client: redis.Redis
) -> None:
    redis_state.pause("maintenance", source="ops")
    redis_state.set_universe(["EEEUSDT", "AAAUSDT", "FFFUSDT"], source="dagster")

    async def scenario() -> None:
        targets = [Target(), Target()]
        states = [AsyncRedisState.from_url(redis_url, keys=redis_keys) for _ in targets]
        loops = [
            ControlLoop(s, t, tradable=_tradable, config=ControlConfig(reread_every=0.05), shard=Shard(i, 2))
            for i, (s, t) in enumerate(zip(states, targets, strict=True))
        ]
        tasks = [asyncio.create_task(loop.run()) for loop in loops]
        try:
            await wait_for(lambda: all(t.paused == "maintenance" for t in targets), "both paused")
            universes = [list(t.universe) for t in targets]
            await asyncio.to_thread(lose_redis_data, redis_client, redis_keys)
            await wait_for(lambda: any(loop.counters["state_lost"] for loop in loops), "the loss noticed")
            for loop in loops:
                await _reads(loop, 3)
            assert [t.paused for t in targets] == ["maintenance", "maintenance"]
            assert [list(t.universe) for t in targets] == universes
            assert [loop.metrics()["control_state_lost"] for loop in loops] == [1, 1]  # both saw it
            events = await asyncio.to_thread(redis_state.control_events)
            assert sorted(e.command for e in events) == ["paused", "universe"]  # each written once
            assert {e.source for e in events} <= {"realtime-0of2 (restored)", "realtime-1of2 (restored)"}
            control = await asyncio.to_thread(redis_state.read_control)
            assert control.paused_reason == "maintenance"
            assert control.universe == ("EEEUSDT", "AAAUSDT", "FFFUSDT")
        finally:
            for state, task in zip(states, tasks, strict=True):
                await _stop(state, task)

    asyncio.run(scenario())
