"""The service's stop waits for its cancelled signal dispatch a bounded time, and says what does not stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pytest

from realtime import main
from realtime.main import stop_dispatch


async def _swallows_one_cancel() -> None:
    """What redis-py's ``wait_for`` did to the outbox relay on Python 3.11: the first cancel is lost."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(60)
    await asyncio.sleep(60)


async def _group(*children: asyncio.Task[None]) -> None:
    await asyncio.gather(*children)


def test_a_dispatch_task_that_swallows_its_cancel_delays_the_stop_only_by_the_grace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The stop logs the stuck task and where it waits, cancels it once more (a TaskGroup cancels its tasks only
    once) and goes on, instead of waiting for it forever."""

    async def scenario() -> tuple[bool, float, bool]:
        tasks: list[asyncio.Task[None]] = []

        async def dispatch() -> None:
            async with asyncio.TaskGroup() as group:
                tasks.append(group.create_task(_swallows_one_cancel(), name="outbox-relay"))

        outer = asyncio.create_task(dispatch(), name="dispatch")
        await asyncio.sleep(0.05)
        started = time.monotonic()
        stopped = await stop_dispatch(outer, lambda: [t for t in tasks if not t.done()], grace=0.3)
        took = time.monotonic() - started
        await asyncio.wait({outer}, timeout=2)  # cancelled once more, the task ends, and its group with it
        return stopped, took, outer.cancelled()

    with caplog.at_level(logging.ERROR, logger=main.__name__):
        stopped, took, ended = asyncio.run(scenario())
    assert not stopped
    assert took < 2.0
    assert ended
    [record] = [r for r in caplog.records if r.name == main.__name__ and r.levelno == logging.ERROR]
    assert "outbox-relay task did not stop within 0.3 s" in record.getMessage()
    assert "in sleep" in record.getMessage()  # the innermost frame, not the task's outermost coroutine
    assert record.task == "outbox-relay"  # type: ignore[attr-defined]


def test_a_dispatch_that_stops_is_waited_for(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tuple[bool, bool]:
        outer = asyncio.create_task(_group(asyncio.create_task(asyncio.sleep(60))))
        await asyncio.sleep(0)
        return await stop_dispatch(outer, lambda: [], grace=5.0), outer.cancelled()

    with caplog.at_level(logging.ERROR, logger=main.__name__):
        assert asyncio.run(scenario()) == (True, True)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
