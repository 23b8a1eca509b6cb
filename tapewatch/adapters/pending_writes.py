"""A bounded in-memory buffer between the engine and PostgreSQL, so that storage never blocks the engine.

The service hands every signal, candidate and outcome to :class:`PendingWrites` (non-blocking) and runs its
:meth:`~PendingWrites.run` task, which writes them in order through :class:`SignalStore` on a worker thread.
While PostgreSQL is down they are held and written when it returns (each outage is logged once when it
starts and once when it ends, with what was held, written and dropped).

The bound (``pending_writes_max``) counts signals and candidates. Past it, the **oldest candidates** are
dropped and counted; **signals are never dropped**: they stay held past the bound, with an error log, since
losing one would break the no-loss promise of DESIGN §5. Outcomes are kept as the latest one per signal
(a few per open signal), so they do not count toward the bound.

A row PostgreSQL refuses (SQLSTATE class 22 or 23: a constraint, a bad value) cannot be written by retrying:
it is logged with its id, counted in ``rejected`` and skipped, so it never blocks the rows behind it. Every
other database error is an outage (:func:`tapewatch.adapters.db_errors.is_refused_row`): a read-only server,
a statement or lock wait cut by the session limits, a missing table or grant; the rows stay held.

An outcome references its signal (a foreign key), so it is never tried before its signal: an ENTRY that
finishes while the writer is busy on candidates has both added during that write, and each flush writes the
signals held again before every batch of candidates and before the outcomes, which come last. (Tried first, the
outcome was refused by PostgreSQL as a bad row and skipped for good: after a restart the finished signal came
back as open.)

While PostgreSQL is down, :meth:`PendingWrites.run` retries after a pause that doubles from
``retry_interval`` up to ``retry_max`` (at most :data:`RETRY_CAP` seconds): held signals go out within a
few seconds of PostgreSQL's return, and a probe of a server that is down costs one failed connection.

``oldest_held_s`` (in :attr:`PendingWrites.stats`, published as ``pending_oldest_held_s``) is how long the
oldest signal not yet written has been held: it grows while a write is stuck, whatever the cause.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import sqlalchemy.exc as sa_exc

from tapewatch.adapters.db_errors import as_outage, describe, is_refused_row
from tapewatch.adapters.signal_store import OutcomeSource, SignalStore
from tapewatch.errors import StorageUnavailable
from tapewatch.outcome import Outcome
from tapewatch.settings import Settings
from tapewatch.signal import Candidate, Signal

log = logging.getLogger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

#: The longest pause (s) between two attempts while PostgreSQL is down: held signals wait at most this long
#: after it returns.
RETRY_CAP = 2.0


@dataclass(slots=True)
class PendingStats:
    """Counters since start. ``outages`` counts periods PostgreSQL was unavailable; ``oldest_held_s`` is a
    gauge: whole seconds the oldest signal not yet written has been held (0: none)."""

    written_signals: int = 0
    duplicate_signals: int = 0
    written_candidates: int = 0
    written_outcomes: int = 0
    dropped_candidates: int = 0
    rejected: int = 0
    storage_errors: int = 0
    outages: int = 0
    oldest_held_s: int = 0


@dataclass(slots=True)
class _Added:
    """Signals queued by one add_signals call: when, and how many of them are not yet gone."""

    at: float
    count: int


class PendingWrites:
    """Holds signals, candidates and outcomes until PostgreSQL has them. Use from one event loop."""

    def __init__(
        self,
        store: SignalStore,
        *,
        max_items: int = 10_000,
        batch: int = 500,
        retry_interval: float = 0.5,
        retry_max: float = RETRY_CAP,
        sleep: Sleep = asyncio.sleep,
        on_signals: Callable[[list[Signal]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_items < 1 or batch < 1:
            raise ValueError(f"max_items and batch must be >= 1; got {max_items}, {batch}")
        self.store = store
        self.max_items = max_items
        self.batch = batch
        self.retry_interval = retry_interval
        self.retry_max = retry_max
        self._stats = PendingStats()
        self._clock = clock
        self._sleep = sleep
        self._on_signals = on_signals
        self._signals: deque[Signal] = deque()
        self._added: deque[_Added] = deque()  # per add_signals call, oldest first: signals not yet gone
        self._candidates: deque[Candidate] = deque()
        self._outcomes: dict[str, tuple[Outcome, OutcomeSource]] = {}
        self._in_flight = 0  # signals and candidates taken out of the deques by a running write
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._down_since_errors = 0  # failed attempts of the current outage; 0 = PostgreSQL is up
        self._outage_dropped = 0
        self._outage_written = (0, 0)
        self._signals_alarm = 0

    @classmethod
    def from_settings(
        cls,
        store: SignalStore,
        settings: Settings,
        *,
        on_signals: Callable[[list[Signal]], None] | None = None,
    ) -> PendingWrites:
        """A buffer bounded by ``pending_writes_max``; while PostgreSQL is down it retries after at most
        ``outbox_retry_max`` seconds, and never waits more than :data:`RETRY_CAP`."""
        return cls(
            store,
            max_items=settings.pending_writes_max,
            retry_max=min(settings.outbox_retry_max, RETRY_CAP),
            on_signals=on_signals,
        )

    # --- what the engine calls (never blocks, never raises for a full buffer) ------------------------------
    def add_signals(self, signals: Iterable[Signal]) -> None:
        """Queue signals for writing, in order (an EXIT after its ENTRY). Never dropped."""
        before = len(self._signals)
        self._signals.extend(signals)
        if len(self._signals) > before:
            self._added.append(_Added(self._clock(), len(self._signals) - before))
        self._make_room()
        self._wake.set()

    def add_candidates(self, candidates: Iterable[Candidate]) -> None:
        """Queue candidates for writing; past the bound the oldest held candidates are dropped."""
        self._candidates.extend(candidates)
        self._make_room()
        self._wake.set()

    def add_outcome(self, outcome: Outcome, *, source: OutcomeSource = "live") -> None:
        """Queue the outcome of a signal; it replaces an outcome of the same signal not yet written."""
        self._outcomes[outcome.signal.signal_id] = (outcome, source)
        self._wake.set()

    @property
    def stats(self) -> PendingStats:
        """The counters, with ``oldest_held_s`` as of now."""
        self._stats.oldest_held_s = int(self.oldest_held_s)
        return self._stats

    @property
    def oldest_held_s(self) -> float:
        """Seconds the oldest signal not yet written (held or being written) has waited; 0.0 when none."""
        return max(0.0, self._clock() - self._added[0].at) if self._added else 0.0

    def _signals_gone(self, count: int) -> None:
        """``count`` signals, the oldest held, left for good (written, duplicates or refused)."""
        while count > 0 and self._added:
            run = self._added[0]
            taken = min(count, run.count)
            run.count -= taken
            count -= taken
            if run.count == 0:
                self._added.popleft()

    @property
    def held(self) -> int:
        """Signals and candidates held (queued or being written)."""
        return len(self._signals) + len(self._candidates) + self._in_flight

    @property
    def held_signals(self) -> int:
        return len(self._signals)

    @property
    def held_candidates(self) -> int:
        return len(self._candidates)

    @property
    def held_outcomes(self) -> int:
        return len(self._outcomes)

    @property
    def storage_up(self) -> bool:
        """False from a failed write until the next successful one."""
        return self._down_since_errors == 0

    def _make_room(self) -> None:
        over = self.held - self.max_items
        dropped = 0
        while over > 0 and self._candidates:
            self._candidates.popleft()
            dropped += 1
            over -= 1
        if dropped:
            self._stats.dropped_candidates += dropped
            before, self._outage_dropped = self._outage_dropped, self._outage_dropped + dropped
            if _crossed_power_of_ten(before, self._outage_dropped):
                log.warning(
                    "storage buffer full (%d held, bound %d): dropped the oldest candidates, %d so far in "
                    "this outage (signals are never dropped)",
                    self.held,
                    self.max_items,
                    self._outage_dropped,
                )
        if over > 0 and len(self._signals) > self._signals_alarm:
            # Signals alone exceed the bound: keep them, and shout every time their number doubles.
            self._signals_alarm = max(2 * self._signals_alarm, len(self._signals))
            log.error(
                "%d signals held in memory, above the storage buffer bound %d: signals are never dropped, "
                "but they are lost if this process dies before PostgreSQL returns",
                len(self._signals),
                self.max_items,
            )

    # --- writing -----------------------------------------------------------------------------------------
    async def flush(self) -> bool:
        """Write everything held, signals first, then candidates, then outcomes; True when all is written,
        False when PostgreSQL is unavailable (what is not written stays held). Signals added meanwhile are
        written before the next batch of candidates and before the outcomes (an outcome needs its signal)."""
        async with self._lock:
            try:
                while self._signals or self._candidates:
                    while self._signals:
                        await self._write_signals()
                    if self._candidates:
                        await self._write_candidates()
                if self._outcomes:
                    await self._write_outcomes()
            except StorageUnavailable as exc:
                self._storage_failed(exc)
                return False
            self._storage_ok()
            return True

    async def run(self) -> None:
        """Write what is added, as it is added; while PostgreSQL is down retry with a growing pause (up to
        ``retry_max`` s, :data:`RETRY_CAP` by default). Runs until cancelled."""
        delay = self.retry_interval
        while True:
            await self._wake.wait()
            self._wake.clear()
            if await self.flush():
                delay = self.retry_interval
                continue
            self._wake.set()  # held rows remain: try again after the pause
            await self._sleep(delay)
            delay = min(self.retry_max, delay * 2)

    async def _write_signals(self) -> None:
        batch = self._take(self._signals)
        new: list[bool | None]
        outage = None
        try:
            new = list(await asyncio.to_thread(self.store.save_signals, batch))
        except (StorageUnavailable, asyncio.CancelledError):
            # cancelled (a stop) while the thread writes: held again, so the last flush retries or reports it
            # (should the thread commit after all, the retry finds the rows there: duplicates, not new ones)
            self._put_back(self._signals, batch)
            raise
        except sa_exc.SQLAlchemyError as exc:
            if not is_refused_row(exc):
                self._put_back(self._signals, batch)
                raise as_outage(exc) from exc
            self._in_flight -= len(batch)
            new, outage = await self._one_by_one(batch, self._signals, self.store.save_signal, _signal_id)
        else:
            self._in_flight -= len(batch)
        self._signals_gone(len(new))  # new is shorter than batch when an outage stopped the one-by-one
        written = [s for s, fresh in zip(batch, new, strict=False) if fresh]
        self._stats.written_signals += len(written)
        self._stats.duplicate_signals += sum(1 for fresh in new if fresh is False)
        if self._on_signals is not None and written:
            try:
                self._on_signals(written)
            except Exception:
                log.exception("the on_signals callback failed (the signals are stored)")
        if outage is not None:
            raise outage

    async def _write_candidates(self) -> None:
        batch = self._take(self._candidates)
        outage = None
        try:
            await asyncio.to_thread(self.store.save_candidates, batch)
        except (StorageUnavailable, asyncio.CancelledError):  # as for signals
            self._put_back(self._candidates, batch)
            raise
        except sa_exc.SQLAlchemyError as exc:
            if not is_refused_row(exc):
                self._put_back(self._candidates, batch)
                raise as_outage(exc) from exc
            self._in_flight -= len(batch)
            saved, outage = await self._one_by_one(
                batch, self._candidates, lambda c: self.store.save_candidates([c]) >= 0, _candidate_id
            )
            self._stats.written_candidates += sum(1 for ok in saved if ok is not None)
        else:
            self._in_flight -= len(batch)
            self._stats.written_candidates += len(batch)
        if outage is not None:
            raise outage

    async def _write_outcomes(self) -> None:
        for signal_id, (outcome, source) in list(self._outcomes.items()):
            try:
                await asyncio.to_thread(self.store.save_outcome, outcome, source=source)
            except sa_exc.SQLAlchemyError as exc:
                if not is_refused_row(exc):
                    raise as_outage(exc) from exc  # the outcome stays: written when PostgreSQL can again
                self._stats.rejected += 1
                log.error("outcome of signal %s refused by PostgreSQL, skipped: %s", signal_id, describe(exc))
            else:
                self._stats.written_outcomes += 1
            # a newer outcome of the same signal may have arrived while this one was written
            if self._outcomes.get(signal_id, (None, None))[0] is outcome:
                del self._outcomes[signal_id]

    async def _one_by_one(
        self, batch: list[T], held: deque[T], write: Callable[[T], bool], ident: Callable[[T], str]
    ) -> tuple[list[bool | None], StorageUnavailable | None]:
        """Write a refused batch item by item, to skip only the rows PostgreSQL refuses. Returns, per item
        tried, what ``write`` returned (None: refused), and the outage that stopped it, if one did: the items
        from there are back at the front of ``held``; the caller counts what was done, then raises it."""
        results: list[bool | None] = []
        for i, item in enumerate(batch):
            try:
                results.append(await asyncio.to_thread(write, item))
            except asyncio.CancelledError:  # a stop: the items from here are held again, as on an outage
                held.extendleft(reversed(batch[i:]))
                raise
            except (StorageUnavailable, sa_exc.SQLAlchemyError) as exc:
                if not is_refused_row(exc):  # an outage
                    held.extendleft(reversed(batch[i:]))
                    self._make_room()
                    return results, as_outage(exc)
                self._stats.rejected += 1
                results.append(None)
                log.error("%s refused by PostgreSQL, skipped: %s", ident(item), describe(exc))
        return results, None

    def _take(self, held: deque[T]) -> list[T]:
        batch = [held.popleft() for _ in range(min(self.batch, len(held)))]
        self._in_flight += len(batch)
        return batch

    def _put_back(self, held: deque[T], batch: list[T]) -> None:
        self._in_flight -= len(batch)
        held.extendleft(reversed(batch))
        self._make_room()

    def _storage_failed(self, exc: StorageUnavailable) -> None:
        self._stats.storage_errors += 1
        if self._down_since_errors == 0:
            self._stats.outages += 1
            self._outage_written = (self._stats.written_signals, self._stats.written_candidates)
            log.warning(
                "PostgreSQL unavailable: holding %d signals and %d candidates in memory (bound %d) until it "
                "returns: %s",
                len(self._signals),
                len(self._candidates),
                self.max_items,
                exc,
            )
        self._down_since_errors += 1

    def _storage_ok(self) -> None:
        if self._down_since_errors:
            signals0, candidates0 = self._outage_written
            log.warning(
                "PostgreSQL is back after %d failed attempts: wrote %d signals and %d candidates held "
                "meanwhile; %d candidates were dropped",
                self._down_since_errors,
                self._stats.written_signals - signals0,
                self._stats.written_candidates - candidates0,
                self._outage_dropped,
            )
        self._down_since_errors = 0
        self._outage_dropped = 0
        self._signals_alarm = 0


def _crossed_power_of_ten(before: int, after: int) -> bool:
    """True when a power of ten (1, 10, 100, ...) lies in (before, after]: log a growing count sparingly."""
    power = 1
    while power <= after:
        if before < power:
            return True
        power *= 10
    return False


def _signal_id(signal: Signal) -> str:
    return f"signal {signal.signal_id} ({signal.symbol} {signal.signal_type})"


def _candidate_id(candidate: Candidate) -> str:
    return f"candidate {candidate.candidate_id} ({candidate.symbol} {candidate.direction} {candidate.event_time})"


__all__ = ["PendingStats", "PendingWrites"]
