"""A service that cannot read the control keys at start fails closed: signalling is paused until it reads them.

The audit started the service while Redis was unreachable: ``control.sync()`` failed, its False was ignored and
the service issued (and sent by webhook) four ENTRY signals in 70 s while the operator had paused it. Redis here
is real: unreachable is a closed port, and "back" is a forwarder to the test Redis opening on that port
(:mod:`tests.tcp_proxy`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import pytest

from realtime.control import UNKNOWN_PREFIX, ControlConfig, ControlLoop
from realtime.sim.server import SimExchange
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import AsyncRedisState, RedisState
from tapewatch.signal import Candidate
from tests.realtime.control_helpers import running_service, sim_settings, wait_for
from tests.realtime.test_control import ListSink, Target, _tradable
from tests.tcp_proxy import forwarder, free_port, redis_upstream, redis_url_via


def test_a_first_read_that_fails_pauses_until_the_control_keys_are_read(
    redis_url: str, redis_keys: Keyspace, redis_state: RedisState, caplog: pytest.LogCaptureFixture
) -> None:
    """Paused by the platform, started while Redis is unreachable: held paused ('control state unknown'), then
    the platform's own pause once read; resumed by the platform: resumed."""
    caplog.set_level(logging.INFO, logger="realtime.control")
    redis_state.pause("maintenance", source="ops")
    port = free_port()

    async def scenario() -> None:
        target = Target()
        state = AsyncRedisState.from_url(redis_url_via(port, redis_url), keys=redis_keys)
        loop = ControlLoop(state, target, tradable=_tradable, config=ControlConfig(reread_every=60))
        task: asyncio.Task[None] | None = None
        try:
            assert not await loop.sync()  # nothing listens on the port
            assert target.paused is not None and target.paused.startswith(UNKNOWN_PREFIX)
            assert loop.metrics()["control_paused"] == 1 and loop.metrics()["control_unknown_paused"] == 1
            assert loop.info()["paused"] == target.paused
            task = asyncio.create_task(loop.run())
            await asyncio.sleep(0.3)  # still unreachable: the hold stays
            assert target.paused.startswith(UNKNOWN_PREFIX)
            async with forwarder(port, redis_upstream(redis_url)):
                took = await wait_for(lambda: target.paused == "maintenance", "the platform's pause read")
                assert took < 5  # retried every 2 s at most while the pause is unknown
                assert loop.metrics()["control_unknown_paused"] == 0
                await asyncio.to_thread(redis_state.resume, source="ops")
                await wait_for(lambda: target.paused is None, "resumed by the platform")
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await state.aclose()
        assert [c for c in target.calls if c[0] == "paused"] == [
            ("paused", target.calls[0][1]),
            ("paused", "maintenance"),
            ("paused", None),
        ]

    asyncio.run(scenario())
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert sum("signalling paused until it is read" in m for m in errors) == 1  # once, not per retry
    assert any("pause held while it was unknown is lifted; signalling paused: 'maintenance'" in r.getMessage()
               for r in caplog.records)  # fmt: skip


@pytest.mark.e2e
@pytest.mark.slow
def test_a_service_started_while_redis_is_unreachable_issues_no_signal_until_it_reads_the_control_keys(
    tmp_path: Path, redis_url: str, redis_keys: Keyspace
) -> None:
    """The running service, an accelerated market with planted episodes: every candidate while the control
    state is unknown is stored with fate ``paused``, no ENTRY; once Redis answers (no pause set) it resumes."""
    sink = ListSink()
    port = free_port()
    unreachable = redis_url_via(port, redis_url)

    async def scenario() -> None:
        async with SimExchange(port=0, seed=1, symbols=6, speed=60.0, episode_rate_scale=30.0) as sim:
            settings = sim_settings(sim, tmp_path, redis_keys.prefix, universe_size=5, capture_enabled=False)
            async with running_service(settings, unreachable, sink=sink) as run:
                service = run.service
                control = service.control
                assert control is not None
                await wait_for(lambda: control.counters["redis_errors"] >= 1, "the first read failed")
                assert service.engine.risk.paused
                await wait_for(lambda: len(_candidates(sink)) >= 2, "two candidates", within=40)
                assert {c.fate for c in _candidates(sink)} == {"paused"}
                assert not [s for out in sink.outputs for s in out.signals if s.signal_type == "ENTRY"]
                async with forwarder(port, redis_upstream(redis_url)):
                    await wait_for(lambda: not service.engine.risk.paused, "resumed once read", within=30)
                    assert control.applied is not None

    asyncio.run(scenario())


def _candidates(sink: ListSink) -> list[Candidate]:
    return [c for out in sink.outputs for c in out.candidates]
