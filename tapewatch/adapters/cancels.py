"""Cancellation that redis-py can swallow on Python 3.11, and how our Redis calls make sure it is honoured.

redis-py 8.1's asyncio ``Connection`` connects and writes each command with ``asyncio.wait_for(...,
socket_timeout)`` (redis/asyncio/connection.py, ``send_packed_command``). On Python 3.11 ``wait_for`` runs the
inner await as a task that finishes at once, and a cancel that lands before ``wait_for`` resumes (any of the
~3 loop steps of every command) is swallowed: it sees the inner task done and returns its result. The command
completes and the cancelled task runs on, its ``Task.cancelling()`` count still raised; a task group then waits
for it forever at shutdown (the outbox relay did: the realtime service's stop hung under load).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")


def cancel_requests() -> int:
    """How many cancel requests the current task has pending (``Task.cancelling``; 0 outside a task)."""
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


async def honouring_cancel(call: Awaitable[T]) -> T:
    """Await a redis-py ``call``; raise CancelledError when, after it, the task has a cancel request pending
    that nothing raised: whatever the call ended with (a reply or a Redis error), a cancel requested during it,
    or swallowed by an earlier await, wins. Code that catches a cancel on purpose and goes on calls
    ``Task.uncancel()`` (as ``asyncio.timeout`` does), so its later calls work."""
    try:
        result = await call
    except Exception:
        if cancel_requests():
            raise asyncio.CancelledError from None
        raise
    if cancel_requests():
        raise asyncio.CancelledError
    return result


def await_chain(task: asyncio.Task[Any]) -> list[FrameType]:
    """The frames of ``task``'s await chain, outermost first: the innermost is where it waits. Python 3.11's
    ``Task.get_stack`` and ``print_stack`` show only the outermost coroutine."""
    frames: list[FrameType] = []
    link: Any = task.get_coro()
    while link is not None and len(frames) < 100:
        frame = (
            getattr(link, "cr_frame", None)
            or getattr(link, "gi_frame", None)
            or getattr(link, "ag_frame", None)
        )
        if frame is None:
            break
        frames.append(frame)
        link = (
            getattr(link, "cr_await", None)
            or getattr(link, "gi_yieldfrom", None)
            or getattr(link, "ag_await", None)
        )
    return frames


def where(frame: FrameType) -> str:
    """``file:line in function`` of a frame."""
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
