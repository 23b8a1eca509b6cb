"""Notifiers of published signals (webhook, Telegram) and :class:`Notifications`, which feeds them.

The outbox relay calls :meth:`Notifications.offer` with the rows it has just published (its
``on_published`` callback); each notifier gets each signal on its own queue and task
(:class:`~tapewatch.adapters.notifiers.base.NotifierWorker`), at most once (the ``notifications`` table).
At start, :meth:`Notifications.run` first offers the published rows of the last ``notify_max_age`` seconds
that a notifier never claimed (what a process stopped between publishing and notifying left undone), left
``folded`` (a digest the stop did not send) or ``failed`` (re-offered once); older ones it only counts and logs.
Rows the relay publishes meanwhile are held until that backlog is read, then everything is queued in outbox
order (``seq``): an EXIT is never notified before its ENTRY. At a stop, :meth:`Notifications.aclose` sends
the digests the notifiers hold (within its grace).

:meth:`Notifications.produced` notes the wall-clock time the service hands each signal to dispatch; the notice
of that signal carries it, so a notification held by an outage is labelled DELAYED when it finally goes
(``notify_late_after``; see ``notifiers.base``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.exc import SQLAlchemyError

from tapewatch.adapters.db import Database
from tapewatch.adapters.notifiers.base import (
    Clock,
    Deliveries,
    Delivery,
    Notice,
    Notifier,
    NotifierWorker,
    Status,
    WorkerStats,
)
from tapewatch.adapters.notifiers.telegram import TelegramNotifier
from tapewatch.adapters.notifiers.webhook import WebhookNotifier, sign, verify_signature
from tapewatch.adapters.outbox import OutboxRow
from tapewatch.errors import StorageUnavailable
from tapewatch.settings import Settings
from tapewatch.signal import Signal

log = logging.getLogger(__name__)

__all__ = [
    "Deliveries",
    "Delivery",
    "Notice",
    "Notifications",
    "Notifier",
    "NotifierWorker",
    "TelegramNotifier",
    "WebhookNotifier",
    "WorkerStats",
    "notifiers_from_settings",
    "sign",
    "verify_signature",
]

_RESTART_PAUSE = 5.0
#: Production times kept for signals not yet published (older ones are forgotten: their notices are then
#: dated by their outbox rows). Signals are a few a minute; this covers hours of an outage.
_PRODUCED_MAX = 10_000


@dataclass(slots=True)
class _Backlog:
    """What one notifier left undone before the start: rows never claimed, rows to take back, stale ones."""

    unclaimed: list[OutboxRow] = field(default_factory=list)
    unfinished: list[tuple[OutboxRow, Status]] = field(default_factory=list)
    too_old: int = 0


class Notifications:
    """Hands published signals to every notifier worker; one worker failing never touches the others."""

    def __init__(
        self,
        workers: Sequence[NotifierWorker],
        deliveries: Deliveries,
        *,
        max_age_s: float = 900.0,
        clock: Clock = time.time,
        restart_pause: float = _RESTART_PAUSE,
    ) -> None:
        names = [w.name for w in workers]
        if len(set(names)) != len(names):
            raise ValueError(f"notifier names must be unique; got {names}")
        self.workers = list(workers)
        self.deliveries = deliveries
        self.max_age_s = max_age_s
        self.bad_payloads = 0
        self._clock = clock
        self._restart_pause = restart_pause
        self._produced: OrderedDict[str, float] = OrderedDict()  # signal id -> wall clock (epoch s)
        # live rows offered while the backlog is read (from the start of offer_backlog, which run starts with,
        # synchronously: before the relay can publish): held, then queued with the backlog in seq order
        self._held: list[tuple[int, Notice]] | None = None
        self._backlog_queued = asyncio.Event()

    @classmethod
    def from_settings(cls, settings: Settings, db: Database) -> Notifications:
        """The notifiers ``settings`` configure (possibly none), each on its own worker."""
        deliveries = Deliveries(db)
        workers = [
            NotifierWorker(n, deliveries, queue_size=settings.notify_queue_size)
            for n in notifiers_from_settings(settings)
        ]
        return cls(workers, deliveries, max_age_s=settings.notify_max_age)

    def produced(self, signals: Iterable[Signal]) -> None:
        """Note that the service produced ``signals`` now (wall clock): what their notifications' delay is
        measured from, however long PostgreSQL or Redis then hold them (never blocks)."""
        if not self.workers:
            return
        now = self._clock()
        for signal in signals:
            self._produced.setdefault(signal.signal_id, now)  # a repeat keeps the first time
        while len(self._produced) > _PRODUCED_MAX:
            self._produced.popitem(last=False)

    def offer(self, rows: Sequence[OutboxRow]) -> None:
        """Queue published rows for every notifier (never blocks; the relay's ``on_published`` callback).
        While :meth:`run` reads the backlog, the rows are held and then queued with it, in outbox order."""
        if not self.workers:
            return
        for row in rows:
            try:
                notice = Notice.from_row(row, self._produced.pop(row.signal_id, None))
            except ValueError as exc:
                self.bad_payloads += 1
                log.error(
                    "outbox row %d (signal %s) is not a valid signal, not notified: %s",
                    row.seq,
                    row.signal_id,
                    exc,
                )
                continue
            if self._held is not None:
                self._held.append((row.seq, notice))
                continue
            for worker in self.workers:
                worker.offer(notice)

    def _read_backlog(self, worker: NotifierWorker) -> _Backlog:
        name, age = worker.name, self.max_age_s
        return _Backlog(
            self.deliveries.unnotified(name, age),
            self.deliveries.unfinished(name, age),
            self.deliveries.too_old(name, age),
        )

    async def offer_backlog(self) -> int:
        """Offer each worker what it left undone before the start (see the module docstring) merged with the
        live rows held meanwhile, all in outbox order; then live rows go straight to the workers. How many
        backlog notices were offered. Live rows are released even when reading the backlog fails (raised)."""
        offered = 0
        self._held = self._held or []  # before any await: a row published from now on waits for the backlog
        try:
            backlogs = [(w, await asyncio.to_thread(self._read_backlog, w)) for w in self.workers]
        except BaseException:
            self._release([])
            raise
        self._release(backlogs)
        for worker, backlog in backlogs:
            offered += len(backlog.unclaimed) + len(backlog.unfinished)
            if backlog.too_old:
                log.warning(
                    "%s: %d signals published in the last 24 h were never notified and are now older than "
                    "notify_max_age (%g s): not sent (stale); see the signals table or the dashboard",
                    worker.name,
                    backlog.too_old,
                    self.max_age_s,
                    extra={"notifier": worker.name},
                )
        if offered:
            log.info("notifying %d signals published before the last stop", offered)
        return offered

    def _release(self, backlogs: Sequence[tuple[NotifierWorker, _Backlog]]) -> None:
        """Queue each worker's backlog and the live rows held meanwhile, by ``seq`` (a row in both once), and
        let later live rows go straight to the workers. Synchronous: nothing is offered in between."""
        held, self._held = self._held or [], None
        by_worker = dict(backlogs)
        for worker in self.workers:
            backlog = by_worker.get(worker, _Backlog())
            merged: dict[int, Notice] = {}
            for row in backlog.unclaimed:
                notice = self._notice(row, None)
                if notice is not None:
                    merged[row.seq] = notice
            merged |= dict(held)  # the live notice of a row knows when it was produced
            for row, left in backlog.unfinished:
                notice = self._notice(row, left)
                if notice is not None:
                    merged[row.seq] = notice
            for seq in sorted(merged):
                worker.offer(merged[seq])
        self._backlog_queued.set()

    def _notice(self, row: OutboxRow, left: Status | None) -> Notice | None:
        try:
            return Notice.from_row(row, retry=left)
        except ValueError:
            self.bad_payloads += 1
            return None

    async def run(self) -> None:
        """Offer the backlog, then run every worker until cancelled; a worker that crashes (a bug) is counted
        (its ``crashes``), logged and restarted after a pause, the others keep running."""
        try:
            await self.offer_backlog()
        except (StorageUnavailable, SQLAlchemyError) as exc:
            # the backlog is a nicety: a database that refuses it (a grant, a failover) must not stop dispatch
            log.warning("could not read the notification backlog: %s", exc)
        if self.workers:
            await asyncio.gather(*(self._supervise(w) for w in self.workers))

    async def _supervise(self, worker: NotifierWorker) -> None:
        while True:
            try:
                await worker.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                worker.stats.crashes += 1
                log.exception(
                    "notifier %s crashed (%d times since start); restarting it in %g s",
                    worker.name,
                    worker.stats.crashes,
                    self._restart_pause,
                    extra={"notifier": worker.name},
                )
                await asyncio.sleep(self._restart_pause)

    async def join(self) -> None:
        """Return when every notice offered so far is handled by every worker (once :meth:`run` has queued the
        backlog, when rows were offered before)."""
        if self._held:
            await self._backlog_queued.wait()
        await asyncio.gather(*(w.join() for w in self.workers))

    async def aclose(self, grace: float = 5.0) -> None:
        """Send what the notifiers hold (a digest), within ``grace`` s in all, then close their HTTP clients.
        What the grace cuts short stays ``folded``: the next start re-offers it."""
        try:
            async with asyncio.timeout(grace):
                for worker in self.workers:
                    await worker.flush(force=True)
        except TimeoutError:
            log.warning("stopping before the notifiers' held digests were sent: the next start sends them")
        for worker in self.workers:
            try:
                await worker.notifier.aclose()
            except Exception:
                log.exception("closing notifier %s failed", worker.name)


def notifiers_from_settings(settings: Settings) -> list[Notifier]:
    """The webhook when ``webhook_url`` is set, Telegram when ``telegram_bot_token`` is set."""
    notifiers: list[Notifier] = []
    if settings.webhook_url:
        notifiers.append(WebhookNotifier.from_settings(settings))
    if settings.telegram_bot_token is not None:
        notifiers.append(TelegramNotifier.from_settings(settings))
    return notifiers
