"""Dispatch: the path of a signal from the engine to PostgreSQL, the Redis stream and the notifiers, as one
object the realtime service creates, feeds and runs.

::

    engine ─► PendingWrites ─► PostgreSQL (signals + outbox, candidates, outcomes)
                                   │ outbox rows
                                   ▼
                              OutboxRelay ─► Redis stream ``signals_stream``
                                   │ published rows
                                   ▼
                              Notifications ─► webhook, Telegram (each on its own worker)

Nothing here blocks the engine: :meth:`Dispatch.add` only queues. :meth:`Dispatch.run` runs the three
tasks; each survives its outages on its own (see their modules). Should one of them end all the same (a bug),
:meth:`Dispatch.run` ends with it, so the service can stop rather than run on without storing or publishing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterable
from dataclasses import asdict
from typing import Any

import redis.asyncio

from tapewatch.adapters.cancels import await_chain, where
from tapewatch.adapters.db import Database
from tapewatch.adapters.notifiers import Notifications
from tapewatch.adapters.outbox import Outbox, OutboxRelay
from tapewatch.adapters.pending_writes import PendingWrites
from tapewatch.adapters.redis_keys import KEYS, Keyspace
from tapewatch.adapters.signal_store import SignalStore
from tapewatch.engine import EngineOutput
from tapewatch.errors import FatalError, StorageUnavailable
from tapewatch.outcome import Outcome
from tapewatch.settings import Settings
from tapewatch.signal import Candidate, Signal

log = logging.getLogger(__name__)

#: Seconds the stop gives the notifiers to send their held digests when storing and publishing used the grace.
_NOTIFY_GRACE_MIN = 2.0


class DispatchStopped(FatalError):
    """The dispatch (storage writer, outbox relay or notifiers) ended while the service ran: signals would no
    longer be stored or published. The service stops with an error so that its supervisor restarts it."""


async def _until_cancelled(name: str, work: Awaitable[None]) -> None:
    await work
    raise DispatchStopped(f"the {name} returned; it should run until cancelled")


def innermost_frame(task: asyncio.Task[Any]) -> str:
    """``file:line in function`` of the innermost coroutine in ``task``'s await chain ("?" when there is none):
    where it waits."""
    chain = await_chain(task)
    return where(chain[-1]) if chain else "?"


class Dispatch:
    """Storage buffer, outbox relay and notifiers, wired together."""

    def __init__(
        self, store: SignalStore, pending: PendingWrites, relay: OutboxRelay, notifications: Notifications
    ):
        self.store = store
        self.pending = pending
        self.relay = relay
        self.notifications = notifications
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def from_settings(
        cls, settings: Settings, db: Database, client: redis.asyncio.Redis, *, keys: Keyspace = KEYS
    ) -> Dispatch:
        """The dispatch of ``settings`` on an open database and an asyncio Redis client (e.g. the
        ``client`` of an ``AsyncRedisState``); notifiers as configured (none is fine)."""
        store = SignalStore(db)
        notifications = Notifications.from_settings(settings, db)
        relay = OutboxRelay.from_settings(
            Outbox(db), client, settings, keys=keys, on_published=notifications.offer
        )
        pending = PendingWrites.from_settings(store, settings, on_signals=relay.wake)
        return cls(store, pending, relay, notifications)

    def add(
        self,
        signals: Iterable[Signal] = (),
        candidates: Iterable[Candidate] = (),
        outcomes: Iterable[Outcome] = (),
    ) -> None:
        """Queue what the engine produced (never blocks): signals in order, candidates, latest outcomes.
        The notifiers note when the signals were handed over (what a late notification is measured from)."""
        signals = list(signals)
        self.notifications.produced(signals)
        self.pending.add_signals(signals)
        self.pending.add_candidates(candidates)
        for outcome in outcomes:
            self.pending.add_outcome(outcome)

    def accept(self, output: EngineOutput) -> None:
        """The realtime service's ``SignalSink``: queue one engine step's candidates, signals and the
        outcomes that changed or finished (never blocks)."""
        self.add(output.signals, output.candidates, [*output.updated, *output.finished])

    async def run(self) -> None:
        """Run the writer, the relay and the notifiers until cancelled. Never returns: if the writer or the
        relay raises or returns (or the notifiers raise), the others are cancelled and the error is raised (an
        ``ExceptionGroup``). The notifiers return at once when none is configured."""
        async with asyncio.TaskGroup() as group:
            self._tasks = [
                group.create_task(
                    _until_cancelled("storage writer", self.pending.run()), name="pending-writes"
                ),
                group.create_task(_until_cancelled("outbox relay", self.relay.run()), name="outbox-relay"),
                group.create_task(self.notifications.run(), name="notifiers"),
            ]

    def running_tasks(self) -> list[asyncio.Task[None]]:
        """The tasks of :meth:`run` that have not ended (after a cancel: those that do not stop)."""
        return [task for task in self._tasks if not task.done()]

    async def aclose(self, grace: float = 10.0) -> bool:
        """Last chance before exit: write what is held and publish what is stored, within ``grace`` s;
        then send the notifiers' held digests (the rest of the grace, at least a moment) and close them. True
        when nothing was left behind. What is left is logged: stored signals are published at the next start;
        held ones are lost with the process; folded ones are notified at the next start."""
        done = False
        deadline = asyncio.get_running_loop().time() + grace
        try:
            async with asyncio.timeout(grace):
                done = await self.pending.flush()
                await self.relay.publish_pending()
                done = done and self.relay.healthy
        except (TimeoutError, StorageUnavailable):
            done = False
        if not done:
            log.warning(
                "stopping with %d signals and %d candidates not written (relay: %s)",
                self.pending.held_signals,
                self.pending.held_candidates,
                self.relay.last_error or "timed out",
            )
        # the digests the notifiers hold go now (what the rest of the grace cuts short stays folded: the next
        # start re-offers it); at least a moment even when storing took the whole grace
        left = max(_NOTIFY_GRACE_MIN, deadline - asyncio.get_running_loop().time())
        with contextlib.suppress(Exception):
            await self.notifications.aclose(grace=left)
        return done

    def metrics(self) -> dict[str, int]:
        """Counters for the metrics hash in Redis: ``pending_*``, ``relay_*``, ``notify_<name>_*``."""
        values = {f"pending_{k}": v for k, v in asdict(self.pending.stats).items()}
        values |= {
            "pending_held_signals": self.pending.held_signals,
            "pending_held_candidates": self.pending.held_candidates,
        }
        values |= {f"relay_{k}": v for k, v in asdict(self.relay.stats).items()}
        values["relay_healthy"] = int(self.relay.healthy)
        for worker in self.notifications.workers:
            values |= {f"notify_{worker.name}_{k}": v for k, v in asdict(worker.stats).items()}
        return values
