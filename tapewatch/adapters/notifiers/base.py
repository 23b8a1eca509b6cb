"""What every notifier shares: the notice, the delivery record, the ``notifications`` table, and the worker
that isolates one notifier from the others and from the relay.

Each notifier runs in its own :class:`NotifierWorker` (its own queue and task): a slow or failing notifier
delays only itself. Offering a notice never blocks; a full queue drops the notice for that notifier (counted,
logged). Delivery is **at most once** per signal and notifier: before sending, the worker claims the
``(signal_id, notifier)`` row of ``notifications``; a notice whose row exists (already sent, failed, or
claimed by a process that died while sending) is skipped. The row ends ``sent``, ``failed`` (with the last
error) or ``folded`` (waiting for a Telegram digest).

**PostgreSQL failing.** Any database error on the claim or the record (the server gone, or one that refuses
the statement: a read-only standby after a failover, a missing grant) is an outage for the worker, never a
crash: the claim is retried with a growing pause (``claim_attempts``), then the notice is given up (logged);
a record that cannot be written is logged and the claim stays (the signal is never sent twice, only its
final status is unknown). Both count ``storage_errors``.

**Late notifications.** A notice knows when the service produced its signal, in wall-clock time
(``Notice.produced_at``: when this process handed it to dispatch, else when PostgreSQL stored its outbox row).
Never the signal's ``event_time``: that is the exchange's clock, and the simulator's runs at ``--speed`` (the
demo's signals are minutes "old" or in the future the moment they are made). A notifier that sends a notice
more than ``notify_late_after`` seconds after that (PostgreSQL or Redis was down, the process restarted,
Telegram made it wait) labels it (:func:`delayed_banner`) and reports the delay in ``Delivery.late_s``; the
worker counts it (``late``) and logs it with the symbol, the signal id and the delay.

**Failures.** A delivery the notifier gives up on is counted (``failed``; ``failing``: failed since the last
one sent, what ``tapewatch status`` reports) and logged with its symbol. A failure retrying cannot fix (a bad
Telegram token, a chat the bot cannot post to, a webhook answering 4xx) carries what the operator must fix
(``Delivery.fix``): logged once at ERROR, then counted (each further signal failing the same way is logged at
INFO with the count) until a delivery succeeds.

**Re-offered at start.** A row left ``folded`` (the process stopped before its digest went) or ``failed`` within
``notify_max_age`` of its publication is offered again at the next start (``Notice.retry``; a failed one once:
``notifications.retries``); the worker takes it back only while the row is still in that state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Literal, Protocol

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from tapewatch.adapters.db import Database
from tapewatch.adapters.outbox import OutboxRow
from tapewatch.errors import StorageUnavailable
from tapewatch.signal import Signal, decode_signal, exit_signal_id

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
Status = Literal["sent", "failed", "folded"]


@dataclass(frozen=True, slots=True)
class Notice:
    """A published signal to notify: the signal and the exact JSON that was published."""

    signal: Signal
    payload: bytes
    # when the service produced the signal (wall clock, epoch s; see the module docstring); None = unknown
    produced_at: float | None = None
    # an EXIT STOP/EXPIRED: whether its ENTRY hit TP1 before (the stop was then moved); None = unknown
    tp1_hit: bool | None = None
    # a delivery re-offered at start: the state its row was left in ("folded" or "failed"); None = a new one
    retry: Status | None = None

    @classmethod
    def from_row(
        cls, row: OutboxRow, produced_at: float | None = None, *, retry: Status | None = None
    ) -> Notice:
        """The notice of an outbox row; ValueError when its payload is not a valid signal."""
        return cls(decode_signal(row.payload), row.payload.encode(), produced_at, retry=retry)

    @property
    def signal_id(self) -> str:
        return self.signal.signal_id


def late_by(notice: Notice, now: float, late_after: float) -> float | None:
    """Seconds between the production of ``notice``'s signal and ``now`` (wall clock, epoch s) when over
    ``late_after``; None when not late, or when the production time is unknown."""
    if notice.produced_at is None:
        return None
    delay = now - notice.produced_at
    return delay if delay > late_after else None


def format_delay(seconds: float) -> str:
    """A delay as a trader reads it: ``45s``, ``10m 5s``, ``2h 3m`` (whole seconds)."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60}s"
    return f"{whole // 3600}h {whole % 3600 // 60}m"


def delayed_banner(seconds: float) -> str:
    """The first line of a message sent ``seconds`` after its signal was produced (over the threshold)."""
    return f"⚠️ DELAYED {format_delay(seconds)}: sent late after an outage; check the price before acting"


@dataclass(frozen=True, slots=True)
class Delivery:
    """What became of one notice: ``sent`` (``detail`` says how), ``failed`` (``detail``: the last error),
    ``folded`` (held for a digest; a later delivery says sent or failed). ``attempts``: requests made.
    ``late_s``: a notice sent over ``notify_late_after`` seconds after its signal was produced, labelled
    so: that delay; None otherwise. ``fix``: a failure retrying cannot fix, what the operator must do (names
    the settings); empty otherwise."""

    signal_id: str
    status: Status
    attempts: int = 0
    detail: str = ""
    late_s: float | None = None
    fix: str = ""


class Notifier(Protocol):
    """A destination for published signals. ``submit`` delivers one notice (retrying as it sees fit) and
    returns what became of it and of any notice it had held; ``due``/``flush`` serve notifiers that hold
    notices for later (a digest): ``due()`` is the clock time ``flush`` has work, None when nothing is held;
    ``flush(force=True)`` sends all it holds now (at a stop)."""

    name: str

    async def submit(self, notice: Notice) -> list[Delivery]: ...

    def due(self) -> float | None: ...

    async def flush(self, *, force: bool = False) -> list[Delivery]: ...

    async def aclose(self) -> None: ...


class Deliveries:
    """The ``notifications`` table (synchronous; workers call it through ``asyncio.to_thread``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def claim(self, signal_id: str, notifier: str) -> bool:
        """Claim the delivery of ``signal_id`` to ``notifier``; False when it was claimed before."""
        query = sa.text(
            "INSERT INTO notifications (signal_id, notifier) VALUES (:s, :n) "
            "ON CONFLICT DO NOTHING RETURNING signal_id"
        )
        with self.db.begin() as conn:
            return conn.execute(query, {"s": signal_id, "n": notifier}).first() is not None

    def record(self, notifier: str, delivery: Delivery) -> None:
        """Store what became of a claimed delivery."""
        query = sa.text(
            "UPDATE notifications SET status = :status, attempts = attempts + :attempts, detail = :detail, "
            "updated_at = now() WHERE signal_id = :s AND notifier = :n"
        )
        params = {
            "status": delivery.status,
            "attempts": delivery.attempts,
            "detail": delivery.detail[:1000],
            "s": delivery.signal_id,
            "n": notifier,
        }
        with self.db.begin() as conn:
            conn.execute(query, params)

    def get(self, signal_id: str, notifier: str) -> tuple[str, int, str] | None:
        """(status, attempts, detail) of a delivery; None when never claimed."""
        query = sa.text(
            "SELECT status, attempts, detail FROM notifications WHERE signal_id = :s AND notifier = :n"
        )
        with self.db.begin() as conn:
            row = conn.execute(query, {"s": signal_id, "n": notifier}).first()
        return None if row is None else (str(row[0]), int(row[1]), str(row[2]))

    def reclaim(self, signal_id: str, notifier: str, left: Status) -> bool:
        """Take back a delivery re-offered at start: True when its row was still ``left`` (``folded``, or
        ``failed`` and never re-offered before), now ``sending`` again; False otherwise (sent since, or taken)."""
        query = sa.text(
            "UPDATE notifications SET status = 'sending', updated_at = now(), "
            "retries = retries + CASE WHEN status = 'failed' THEN 1 ELSE 0 END "
            "WHERE signal_id = :s AND notifier = :n AND status = :left "
            "AND (status = 'folded' OR retries = 0) RETURNING signal_id"
        )
        with self.db.begin() as conn:
            return conn.execute(query, {"s": signal_id, "n": notifier, "left": left}).first() is not None

    def exists(self, signal_id: str) -> bool:
        """Whether the signal ``signal_id`` is stored (e.g. the TP1 EXIT of an ENTRY)."""
        query = sa.text("SELECT 1 FROM signals WHERE signal_id = CAST(:s AS uuid)")
        with self.db.begin() as conn:
            return conn.execute(query, {"s": signal_id}).first() is not None

    def stored_at(self, signal_id: str) -> float | None:
        """When PostgreSQL stored the outbox row of ``signal_id`` (epoch s, its clock); None when there is none."""
        query = sa.text(
            "SELECT extract(epoch FROM created_at)::float8 FROM outbox WHERE signal_id = CAST(:s AS uuid)"
        )
        with self.db.begin() as conn:
            value = conn.execute(query, {"s": signal_id}).scalar()
        return None if value is None else float(value)

    def unnotified(self, notifier: str, max_age_s: float, limit: int = 1000) -> list[OutboxRow]:
        """Published rows at most ``max_age_s`` old that ``notifier`` never claimed, oldest first: what a
        process that stopped between publishing and notifying left undone."""
        query = sa.text(
            "SELECT o.seq, o.signal_id::text, o.payload, o.attempts FROM outbox o "
            "WHERE o.published_at IS NOT NULL AND o.published_at >= now() - make_interval(secs => :age) "
            "AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.signal_id = o.signal_id AND n.notifier = :n) "
            "ORDER BY o.seq LIMIT :limit"
        )
        with self.db.begin() as conn:
            rows = conn.execute(query, {"n": notifier, "age": max_age_s, "limit": limit})
            return [OutboxRow(*row) for row in rows]

    def unfinished(
        self, notifier: str, max_age_s: float, limit: int = 1000
    ) -> list[tuple[OutboxRow, Status]]:
        """Published rows at most ``max_age_s`` old whose delivery to ``notifier`` was left ``folded`` (the
        process stopped before its digest went) or ``failed`` and never re-offered, with that status, oldest
        first: what a start re-offers (see the module docstring)."""
        query = sa.text(
            "SELECT o.seq, o.signal_id::text, o.payload, o.attempts, n.status FROM outbox o "
            "JOIN notifications n ON n.signal_id = o.signal_id AND n.notifier = :n "
            "WHERE o.published_at IS NOT NULL AND o.published_at >= now() - make_interval(secs => :age) "
            "AND (n.status = 'folded' OR (n.status = 'failed' AND n.retries = 0)) "
            "ORDER BY o.seq LIMIT :limit"
        )
        with self.db.begin() as conn:
            rows = conn.execute(query, {"n": notifier, "age": max_age_s, "limit": limit})
            return [(OutboxRow(*row[:4]), _status(row[4])) for row in rows]

    def too_old(self, notifier: str, max_age_s: float, within_s: float = 86_400.0) -> int:
        """Rows published in the last ``within_s`` seconds but over ``max_age_s`` ago that ``notifier`` never
        claimed: what a start does not notify (stale), counted so it is said."""
        query = sa.text(
            "SELECT count(*) FROM outbox o WHERE o.published_at IS NOT NULL "
            "AND o.published_at < now() - make_interval(secs => :age) "
            "AND o.published_at >= now() - make_interval(secs => :within) "
            "AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.signal_id = o.signal_id AND n.notifier = :n)"
        )
        with self.db.begin() as conn:
            return int(
                conn.execute(query, {"n": notifier, "age": max_age_s, "within": within_s}).scalar() or 0
            )


def _status(value: object) -> Status:
    if value == "folded":
        return "folded"
    if value == "failed":
        return "failed"
    raise ValueError(f"not a re-offered delivery status: {value!r}")


@dataclass(slots=True)
class WorkerStats:
    """Counters of one notifier since start. ``skipped``: notices claimed before (never sent twice);
    ``dropped``: notices refused by a full queue; ``errors``: the notifier raised (a bug, caught); ``late``:
    sent (and labelled) over ``notify_late_after`` seconds after the signal was produced;
    ``storage_errors``: claims and records PostgreSQL failed or refused; ``crashes``: the worker itself
    raised (a bug) and was restarted by its supervisor (:class:`~tapewatch.adapters.notifiers.Notifications`);
    ``failing``: deliveries failed since the last one sent (0 once one is sent: what ``tapewatch status``
    reports); ``retried``: deliveries re-offered at start and taken back (folded or failed before)."""

    offered: int = 0
    dropped: int = 0
    skipped: int = 0
    sent: int = 0
    late: int = 0
    failed: int = 0
    folded: int = 0
    errors: int = 0
    storage_errors: int = 0
    crashes: int = 0
    failing: int = 0
    retried: int = 0


class NotifierWorker:
    """Runs one notifier on its own queue and task, recording each delivery in ``notifications``."""

    def __init__(
        self,
        notifier: Notifier,
        deliveries: Deliveries,
        *,
        queue_size: int = 1000,
        claim_attempts: int = 5,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.notifier = notifier
        self.name = notifier.name
        self.deliveries = deliveries
        self.claim_attempts = claim_attempts
        self.stats = WorkerStats()
        self._queue: asyncio.Queue[Notice] = asyncio.Queue(maxsize=queue_size)
        self._unhandled = 0
        self._symbols: dict[str, str] = {}  # signal id -> symbol of the notices handed to the notifier
        self._fix_logged: dict[str, int] = {}  # fix -> failures since it was logged at ERROR (until a send)
        self._clock = clock
        self._sleep = sleep

    def offer(self, notice: Notice) -> bool:
        """Queue ``notice`` for this notifier without waiting; False (counted, logged) when the queue is full."""
        self.stats.offered += 1
        try:
            self._queue.put_nowait(notice)
        except asyncio.QueueFull:
            self.stats.dropped += 1
            log.warning(
                "%s queue full (%d): signal %s will not be notified there",
                self.name,
                self._queue.maxsize,
                notice.signal_id,
                extra={"notifier": self.name, "symbol": notice.signal.symbol},
            )
            return False
        self._unhandled += 1
        return True

    @property
    def unhandled(self) -> int:
        """Notices offered and not yet handled (queued, or being delivered)."""
        return self._unhandled

    async def join(self) -> None:
        """Return when every notice offered so far has been handled (sent, failed, skipped or folded)."""
        await self._queue.join()

    async def run(self) -> None:
        """Deliver queued notices one by one, and flush held ones (digests) when due. Runs until cancelled."""
        while True:
            due = self.notifier.due()
            timeout = None if due is None else max(0.0, due - self._clock())
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancel that arrives with a
                # notice (it returns the notice instead), and the notifier would then run on forever
                async with asyncio.timeout(timeout):
                    notice = await self._queue.get()
            except TimeoutError:
                await self.flush()
                continue
            try:
                await self.handle(notice)
            finally:
                self._unhandled -= 1
                self._queue.task_done()

    async def handle(self, notice: Notice) -> None:
        """Claim, deliver and record one notice; never raises (a failure is recorded and logged)."""
        if not await self._claim(notice):
            return
        notice = await self._with_production_time(notice)
        notice = await self._with_tp1(notice)
        self._symbols[notice.signal_id] = notice.signal.symbol
        try:
            deliveries = await self.notifier.submit(notice)
        except Exception as exc:
            self.stats.errors += 1
            log.exception(
                "%s failed on signal %s", self.name, notice.signal_id, extra={"notifier": self.name}
            )
            deliveries = [Delivery(notice.signal_id, "failed", 0, f"{type(exc).__name__}: {exc}")]
        await self._record(deliveries)

    async def flush(self, *, force: bool = False) -> None:
        """Send what the notifier holds and is due (a digest), all it holds when ``force`` (at a stop); never
        raises."""
        try:
            deliveries = await self.notifier.flush(force=force)
        except Exception:
            self.stats.errors += 1
            log.exception("%s failed to flush", self.name, extra={"notifier": self.name})
            return
        await self._record(deliveries)

    async def _with_production_time(self, notice: Notice) -> Notice:
        """``notice`` with a production time: a signal this process did not produce (published before a
        restart, or by another process) is dated by its outbox row; unknown when PostgreSQL cannot say."""
        if notice.produced_at is not None:
            return notice
        try:
            stored_at = await asyncio.to_thread(self.deliveries.stored_at, notice.signal_id)
        except (StorageUnavailable, SQLAlchemyError) as exc:
            log.info("%s: when signal %s was stored is unknown: %s", self.name, notice.signal_id, exc)
            return notice
        return notice if stored_at is None else replace(notice, produced_at=stored_at)

    async def _with_tp1(self, notice: Notice) -> Notice:
        """An EXIT STOP/EXPIRED with whether its ENTRY hit TP1 before (its TP1 EXIT is stored): the stop in force
        was then the entry; unknown (None) when PostgreSQL cannot say."""
        signal = notice.signal
        if notice.tp1_hit is not None or signal.exit_reason not in ("STOP", "EXPIRED"):
            return notice
        if signal.parent_signal_id is None:
            return notice
        tp1_id = exit_signal_id(signal.parent_signal_id, "TP1")
        try:
            hit = await asyncio.to_thread(self.deliveries.exists, tp1_id)
        except (StorageUnavailable, SQLAlchemyError) as exc:
            log.info("%s: whether signal %s hit TP1 is unknown: %s", self.name, signal.parent_signal_id, exc)
            return notice
        return replace(notice, tp1_hit=hit)

    async def _claim(self, notice: Notice) -> bool:
        """Claim ``notice``'s delivery; False when claimed before, or when PostgreSQL fails or refuses the claim
        ``claim_attempts`` times in a row (retried with a growing pause; counted, logged: never sent unclaimed)."""
        delay = 0.5
        for attempt in range(1, self.claim_attempts + 1):
            try:
                if notice.retry is None:
                    claimed = await asyncio.to_thread(self.deliveries.claim, notice.signal_id, self.name)
                else:
                    claimed = await asyncio.to_thread(
                        self.deliveries.reclaim, notice.signal_id, self.name, notice.retry
                    )
                    self.stats.retried += claimed
            except (StorageUnavailable, SQLAlchemyError) as exc:
                self.stats.storage_errors += 1
                if attempt == self.claim_attempts:
                    log.error(
                        "%s: signal %s not notified: PostgreSQL could not record its delivery after %d "
                        "attempts (%s)",
                        self.name,
                        notice.signal_id,
                        attempt,
                        _first_line(exc),
                        extra={"notifier": self.name, "symbol": notice.signal.symbol},
                    )
                    return False
                await self._sleep(delay)
                delay *= 2
                continue
            if not claimed:
                self.stats.skipped += 1
            return claimed
        return False

    async def _record(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            symbol = (
                self._symbols.get(delivery.signal_id, "")
                if delivery.status == "folded"
                else self._symbols.pop(delivery.signal_id, "")
            )
            if delivery.status == "sent":
                self.stats.sent += 1
                self.stats.failing = 0
                self._fix_logged.clear()
                if delivery.late_s is not None:
                    self._late(delivery, symbol, delivery.late_s)
            elif delivery.status == "failed":
                self.stats.failed += 1
                self.stats.failing += 1
                self._failed(delivery, symbol)
            else:
                self.stats.folded += 1
            try:
                await asyncio.to_thread(self.deliveries.record, self.name, delivery)
            except (StorageUnavailable, SQLAlchemyError) as exc:
                # the claim stays: the signal is never sent twice; only its final status is unknown
                self.stats.storage_errors += 1
                log.warning(
                    "%s: could not record that signal %s was %s (it stays claimed): %s",
                    self.name,
                    delivery.signal_id,
                    delivery.status,
                    _first_line(exc),
                    extra={"notifier": self.name},
                )

    def _failed(self, delivery: Delivery, symbol: str) -> None:
        """Log a delivery given up: a failure with a fix at ERROR the first time (until a delivery succeeds),
        then at INFO with the count; a transient one (retries exhausted) at WARNING."""
        extra = {"notifier": self.name, "symbol": symbol, "signal_id": delivery.signal_id}
        if not delivery.fix:
            log.warning(
                "%s gave up on signal %s (%s) after %d attempts: %s",
                self.name,
                delivery.signal_id,
                symbol or "?",
                delivery.attempts,
                delivery.detail,
                extra=extra,
            )
            return
        repeats = self._fix_logged.get(delivery.fix)
        if repeats is None:
            self._fix_logged[delivery.fix] = 0
            log.error(
                "%s cannot deliver signals: %s (signal %s, %s, not notified) — %s; further signals failing "
                "the same way are counted (notify_%s_failing) until one is sent",
                self.name,
                delivery.detail,
                delivery.signal_id,
                symbol or "?",
                delivery.fix,
                self.name,
                extra=extra,
            )
            return
        self._fix_logged[delivery.fix] = repeats + 1
        log.info(
            "%s: signal %s (%s) not notified either: %s (%d signals failed so since the error was logged)",
            self.name,
            delivery.signal_id,
            symbol or "?",
            delivery.detail,
            repeats + 1,
            extra=extra,
        )

    def _late(self, delivery: Delivery, symbol: str, delay: float) -> None:
        self.stats.late += 1
        log.warning(
            "%s: signal %s (%s) sent %s after it was produced, labelled DELAYED",
            self.name,
            delivery.signal_id,
            symbol or "?",
            format_delay(delay),
            extra={
                "notifier": self.name,
                "symbol": symbol,
                "signal_id": delivery.signal_id,
                "delay_s": round(delay, 1),
            },
        )


def _first_line(exc: BaseException) -> str:
    """The first line of an error (SQLAlchemy's carry the statement and its parameters on the next ones)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
