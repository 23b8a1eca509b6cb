"""A bounded in-memory buffer between the engine and PostgreSQL, so that storage never blocks the engine.

The service hands every signal, candidate and outcome to :class:`PendingWrites` (non-blocking) and runs its
:meth:`~PendingWrites.run` task, which writes them in order through :class:`SignalStore` on a worker thread.
While PostgreSQL is down they are held and written when it returns (each outage is logged once when it
starts and once when it ends, with what was held, written and dropped).

The bound (``pending_writes_max``) counts signals and candidates. Past it, the **oldest candidates** are
dropped and counted; **signals are never dropped**: they stay held past the bound, with an error log, since
losing one would break the no-loss promise of DESIGN §5. Outcomes are kept as the latest one per signal
(a few per open signal), so they do not count toward the bound.

A row PostgreSQL refuses (not an outage: a constraint, a bad value) cannot be written by retrying: it is
logged with its id, counted in ``rejected`` and skipped, so it never blocks the rows behind it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import sqlalchemy.exc as sa_exc

from tapewatch.adapters.signal_store import OutcomeSource, SignalStore
from tapewatch.errors import StorageUnavailable
from tapewatch.outcome import Outcome
from tapewatch.settings import Settings
from tapewatch.signal import Candidate, Signal

log = logging.getLogger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class PendingStats:
    """Counters since start. ``outages`` counts periods PostgreSQL was unavailable."""

    written_signals: int = 0
    duplicate_signals: int = 0
    written_candidates: int = 0
    written_outcomes: int = 0
    dropped_candidates: int = 0
    rejected: int = 0
    storage_errors: int = 0
    outages: int = 0


class PendingWrites:
    """Holds signals, candidates and outcomes until PostgreSQL has them. Use from one event loop."""

    def __init__(
        self,
        store: SignalStore,
        *,
        max_items: int = 10_000,
        batch: int = 500,
        retry_interval: float = 0.5,
        retry_max: float = 30.0,
        sleep: Sleep = asyncio.sleep,
        on_signals: Callable[[list[Signal]], None] | None = None,
    ) -> None:
        if max_items < 1 or batch < 1:
            raise ValueError(f"max_items and batch must be >= 1; got {max_items}, {batch}")
        self.store = store
        self.max_items = max_items
        self.batch = batch
        self.retry_interval = retry_interval
        self.retry_max = retry_max
        self.stats = PendingStats()
        self._sleep = sleep
        self._on_signals = on_signals
        self._signals: deque[Signal] = deque()
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
        """A buffer bounded by ``pending_writes_max``, retrying at most every ``outbox_retry_max`` seconds."""
        return cls(
            store,
            max_items=settings.pending_writes_max,
            retry_max=settings.outbox_retry_max,
            on_signals=on_signals,
        )

    # --- what the engine calls (never blocks, never raises for a full buffer) ------------------------------
    def add_signals(self, signals: Iterable[Signal]) -> None:
        """Queue signals for writing, in order (an EXIT after its ENTRY). Never dropped."""
        self._signals.extend(signals)
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
            self.stats.dropped_candidates += dropped
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
        False when PostgreSQL is unavailable (what is not written stays held)."""
        async with self._lock:
            try:
                while self._signals:
                    await self._write_signals()
                while self._candidates:
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
        ``retry_max`` s). Runs until cancelled."""
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
        try:
            new = list(await asyncio.to_thread(self.store.save_signals, batch))
        except StorageUnavailable:
            self._put_back(self._signals, batch)
            raise
        except sa_exc.SQLAlchemyError:
            self._in_flight -= len(batch)
            new = await self._one_by_one(batch, self._signals, self.store.save_signal, _signal_id)
        else:
            self._in_flight -= len(batch)
        written = [s for s, fresh in zip(batch, new, strict=True) if fresh]
        self.stats.written_signals += len(written)
        self.stats.duplicate_signals += sum(1 for fresh in new if fresh is False)
        if self._on_signals is not None and written:
            try:
                self._on_signals(written)
            except Exception:
                log.exception("the on_signals callback failed (the signals are stored)")

    async def _write_candidates(self) -> None:
        batch = self._take(self._candidates)
        try:
            await asyncio.to_thread(self.store.save_candidates, batch)
        except StorageUnavailable:
            self._put_back(self._candidates, batch)
            raise
        except sa_exc.SQLAlchemyError:
            self._in_flight -= len(batch)
            saved = await self._one_by_one(
                batch, self._candidates, lambda c: self.store.save_candidates([c]) >= 0, _candidate_id
            )
            self.stats.written_candidates += sum(1 for ok in saved if ok is not None)
        else:
            self._in_flight -= len(batch)
            self.stats.written_candidates += len(batch)

    async def _write_outcomes(self) -> None:
        for signal_id, (outcome, source) in list(self._outcomes.items()):
            try:
                await asyncio.to_thread(self.store.save_outcome, outcome, source=source)
            except sa_exc.SQLAlchemyError as exc:
                self.stats.rejected += 1
                log.error(
                    "outcome of signal %s refused by PostgreSQL, skipped: %s", signal_id, _first_line(exc)
                )
            else:
                self.stats.written_outcomes += 1
            # a newer outcome of the same signal may have arrived while this one was written
            if self._outcomes.get(signal_id, (None, None))[0] is outcome:
                del self._outcomes[signal_id]

    async def _one_by_one(
        self, batch: list[T], held: deque[T], write: Callable[[T], bool], ident: Callable[[T], str]
    ) -> list[bool | None]:
        """Write a refused batch item by item, to skip only the rows PostgreSQL refuses: per item, what
        ``write`` returned, or None when the item was refused. An outage puts the rest back and raises."""
        results: list[bool | None] = []
        for i, item in enumerate(batch):
            try:
                results.append(await asyncio.to_thread(write, item))
            except StorageUnavailable:
                held.extendleft(reversed(batch[i:]))
                self._make_room()
                raise
            except sa_exc.SQLAlchemyError as exc:
                self.stats.rejected += 1
                results.append(None)
                log.error("%s refused by PostgreSQL, skipped: %s", ident(item), _first_line(exc))
        return results

    def _take(self, held: deque[T]) -> list[T]:
        batch = [held.popleft() for _ in range(min(self.batch, len(held)))]
        self._in_flight += len(batch)
        return batch

    def _put_back(self, held: deque[T], batch: list[T]) -> None:
        self._in_flight -= len(batch)
        held.extendleft(reversed(batch))
        self._make_room()

    def _storage_failed(self, exc: StorageUnavailable) -> None:
        self.stats.storage_errors += 1
        if self._down_since_errors == 0:
            self.stats.outages += 1
            self._outage_written = (self.stats.written_signals, self.stats.written_candidates)
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
                self.stats.written_signals - signals0,
                self.stats.written_candidates - candidates0,
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


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = ["PendingStats", "PendingWrites"]
