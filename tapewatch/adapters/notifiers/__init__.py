"""Notifiers of published signals (webhook, Telegram) and :class:`Notifications`, which feeds them.

The outbox relay calls :meth:`Notifications.offer` with the rows it has just published (its
``on_published`` callback); each notifier gets each signal on its own queue and task
(:class:`~tapewatch.adapters.notifiers.base.NotifierWorker`), at most once (the ``notifications`` table).
At start, :meth:`Notifications.run` first offers the published rows of the last ``notify_max_age`` seconds
that a notifier never claimed: what a process stopped between publishing and notifying left undone.

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

from sqlalchemy.exc import SQLAlchemyError

from tapewatch.adapters.db import Database
from tapewatch.adapters.notifiers.base import (
    Clock,
    Deliveries,
    Delivery,
    Notice,
    Notifier,
    NotifierWorker,
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
        """Queue published rows for every notifier (never blocks; the relay's ``on_published`` callback)."""
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
            for worker in self.workers:
                worker.offer(notice)

    async def offer_backlog(self) -> int:
        """Offer each worker the recently published rows it never claimed; how many were offered."""
        offered = 0
        for worker in self.workers:
            rows = await asyncio.to_thread(self.deliveries.unnotified, worker.name, self.max_age_s)
            for row in rows:
                try:
                    notice = Notice.from_row(row)
                except ValueError:
                    self.bad_payloads += 1
                    continue
                offered += worker.offer(notice)
        if offered:
            log.info("notifying %d signals published before the last stop", offered)
        return offered

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
        """Return when every notice offered so far is handled by every worker."""
        await asyncio.gather(*(w.join() for w in self.workers))

    async def aclose(self) -> None:
        """Close the notifiers' HTTP clients."""
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
