"""The global risk ledger in PostgreSQL: spec 8.1's limits held across realtime shards, atomically.

Each shard's engine applies the risk gate to its own state first (pause, cooldown — per symbol, so local);
a candidate that passes is then **reserved** here, where the limits that span shards are checked against
every shard's signals: the tier and total daily caps of its UTC day, the concurrency cap and the
correlation filter. The check and the insert run in one transaction under a PostgreSQL advisory lock, so
two shards can never both take the 5th concurrent slot or the 80th signal of a day. The lock is held for the
ledger's rows only: the correlations (which read other shards' 1m closes from Redis) are computed before it
is taken, from a read of the open reservations without the lock; should a signal open meanwhile that was not
correlated yet, the lock is let go, that correlation computed, and the check run again.

Reservations are keyed by the signal id (UUIDv5 of symbol, direction, trigger time): a shard that restarts
and re-decides the same candidate gets the same answer without counting it twice. A finished signal is
released by its shard; a release that cannot be written is kept and retried (:meth:`RiskLedger.upkeep`, and
before the shard's next reservation) until it is. At start a shard settles what its earlier run left
(:meth:`RiskLedger.settle`): it releases its reservations whose signals are stored as finished, and deletes
those whose signal was never stored (the process died, or stopped, before writing it): they held a slot and a
count of the day for a signal nobody received. One whose shard died stops counting at ``expires_at`` (trigger
window + upper hold bound), so a dead shard cannot hold slots forever. When PostgreSQL is unreachable the
reservation fails closed (StorageUnavailable): the caller rejects the candidate and counts it — with shards, a
signal that cannot be checked against the others is not issued.

The calls are synchronous on the realtime service's event loop, so each is bounded: a statement (or the wait
for the lock) longer than ``statement_timeout_s`` is cancelled, and after a failure reservations fail fast,
without trying, for ``retry_after_s`` — a PostgreSQL outage then costs one connect timeout per
``retry_after_s``, not one per candidate. A release is never refused that way: within that window it is kept
for :meth:`RiskLedger.upkeep`, which the service runs off the event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa

from tapewatch.adapters.db import Database
from tapewatch.errors import StorageUnavailable
from tapewatch.risk import (
    Candidate,
    Correlation,
    Decision,
    RiskParams,
    Rule,
    check_concurrency,
    check_correlation,
    check_daily_cap,
    check_tier_cap,
)

log = logging.getLogger(__name__)

# "tapewrisk" in ASCII, apart from the migration lock
_LOCK_KEY = 0x7461706577726973
#: Locked checks of one reservation: a signal opening between the read and the lock that was not correlated
#: yet sends it round again; after this many its correlation is unknown (which never rejects).
_ATTEMPTS = 3
#: The rules checked before correlation: a candidate they reject needs no correlation read.
_CAP_RULES: frozenset[Rule] = frozenset({"tier_daily_cap", "daily_cap", "concurrency"})

_RESERVED = sa.text("SELECT 1 FROM risk_reservations WHERE signal_id = CAST(:sid AS uuid)")
# Every unreleased reservation not yet expired counts, even one with a later event time: shards' clocks differ
# by their feed lag, and a shard a few ms behind must still see the slot a shard ahead has just taken.
_OPEN = sa.text(
    "SELECT signal_id::text, symbol, direction, tier, event_time FROM risk_reservations "
    "WHERE released_at IS NULL AND expires_at > :now ORDER BY event_time"
)
_DAY_COUNTS = sa.text("SELECT tier, count(*) FROM risk_reservations WHERE day = :day GROUP BY tier")
_INSERT = sa.text(
    "INSERT INTO risk_reservations "
    "(signal_id, symbol, direction, tier, event_time, day, expires_at, shard) "
    "VALUES (CAST(:sid AS uuid), :symbol, :direction, :tier, :event_time, :day, :expires_at, :shard)"
)
_RELEASE = sa.text(
    "UPDATE risk_reservations SET released_at = :at WHERE signal_id = CAST(:sid AS uuid) AND released_at IS NULL"
)
# An earlier run of this shard: its signals stored as finished are released at their exit...
_SETTLE_FINISHED = sa.text(
    "UPDATE risk_reservations r SET released_at = COALESCE(o.exit_time, o.as_of) FROM signal_outcomes o "
    "WHERE o.signal_id = r.signal_id AND o.finished AND r.released_at IS NULL AND r.shard = :shard "
    "AND NOT (r.signal_id::text = ANY(CAST(:mine AS text[])))"
)
# ... and those it never stored are deleted (a slot and a count of the day for a signal nobody received). Only
# reservations older than the grace: a process of this shard still running (a restart overlapping its
# predecessor) may be writing one right now.
_SETTLE_UNSTORED = sa.text(
    "DELETE FROM risk_reservations r WHERE r.shard = :shard "
    "AND r.created_at < now() - make_interval(secs => :grace) "
    "AND NOT (r.signal_id::text = ANY(CAST(:mine AS text[]))) "
    "AND NOT EXISTS (SELECT 1 FROM signals s WHERE s.signal_id = r.signal_id) "
    "RETURNING r.signal_id::text, r.symbol"
)


@dataclass(frozen=True, slots=True)
class LedgerCounts:
    """What the ledger holds at ``now``: open reservations and the signals of the day per tier."""

    open: tuple[Candidate, ...]
    day: dict[str, int]


@dataclass(frozen=True, slots=True)
class Settled:
    """What :meth:`RiskLedger.settle` changed: reservations of finished signals released, reservations of
    signals never stored deleted."""

    released: int
    deleted: int


class RiskLedger:
    """Reserve and release signals in the shared ledger (one per deployment, in the tapewatch database).

    ``reserve`` and ``release`` run on the service's event loop; :meth:`upkeep` in a thread of its own (the
    releases kept for a retry are guarded by a lock)."""

    def __init__(
        self,
        db: Database,
        params: RiskParams,
        *,
        shard: str = "0/1",
        statement_timeout_s: float = 2.0,
        retry_after_s: float = 10.0,
        unstored_grace_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.params = params
        self.shard = shard
        self._timeout_ms = max(1, round(statement_timeout_s * 1000))
        self._retry_after_s = retry_after_s
        self._grace_s = unstored_grace_s
        self._clock = clock
        self._down_until = float("-inf")
        self._down_reason = ""
        #: calls refused without trying while the ledger was failing fast
        self.refused = 0
        #: releases not written when asked (PostgreSQL failed, or was failing): kept and retried until written
        self.releases_deferred = 0
        self._pending: dict[str, int] = {}  # signal id -> release time (event ms), not written yet
        self._lock = threading.Lock()  # guards _pending and _mine (upkeep runs in a thread)
        self._mine: set[str] = set()  # signal ids this process reserved: settle never touches them
        # clock() once every row of an earlier run is past the grace (set by the first settle)
        self._settle_until: float | None = None
        self._settled = False

    @contextmanager
    def _transaction(self, *, fail_fast: bool = True) -> Iterator[sa.Connection]:
        """A bounded transaction; with ``fail_fast`` it fails at once (StorageUnavailable) within
        ``retry_after_s`` of a failure. A failure opens that window; a success closes it."""
        if fail_fast and self._clock() < self._down_until:
            self.refused += 1
            raise StorageUnavailable(
                f"{self._down_reason} (not retried for {self._retry_after_s:g} s after the last failure)"
            )
        try:
            with self.db.begin() as conn:
                conn.execute(sa.text(f"SET LOCAL statement_timeout = {self._timeout_ms}"))
                conn.execute(sa.text(f"SET LOCAL lock_timeout = {self._timeout_ms}"))
                yield conn
        except StorageUnavailable as exc:
            self._down_until = self._clock() + self._retry_after_s
            self._down_reason = str(exc)
            raise
        self._down_until = float("-inf")

    def reserve(self, candidate: Candidate, expires_at: int, correlation: Correlation) -> Decision:
        """Judge ``candidate`` against every shard's signals (daily caps, concurrency, correlation) and, if it
        passes, reserve it. Already reserved (a restart) → passed again, counted once. Raises
        StorageUnavailable when PostgreSQL is unreachable or too slow.

        ``correlation`` is called outside any transaction (it may read Redis): for the open signals in the
        candidate's direction as read before the lock, and for any that opened before the lock was had."""
        if self._pending:
            self.retry_releases(fail_fast=True)  # this shard's finished signals no longer count against it
        with self._transaction() as conn:
            reserved = conn.execute(_RESERVED, {"sid": candidate.signal_id}).first() is not None
            seen = _counts(conn, candidate.event_time, candidate.day)
        if reserved:  # by an earlier run of this shard: its signal is this process's to store now
            self._own(candidate.signal_id)
            return Decision(candidate=candidate)
        known: dict[str, float | None] = {}
        if judge(candidate, seen, self.params, _unknown).rule not in _CAP_RULES:
            _correlate(candidate, _same_direction(candidate, seen.open), correlation, known)
        for attempt in range(1, _ATTEMPTS + 1):
            missing: set[str] = set()
            last = attempt == _ATTEMPTS
            decision = self._reserve_locked(candidate, expires_at, known, missing, last=last)
            if decision is None:  # a signal opened before the lock that was not correlated: do it, go again
                _correlate(candidate, missing, correlation, known)
                continue
            if decision.passed and missing:
                log.warning(
                    "correlation of %s with %s taken as unknown: signals kept opening while it was read",
                    candidate.symbol,
                    ", ".join(sorted(missing)),
                    extra={"symbol": candidate.symbol},
                )
            return decision
        raise AssertionError("unreachable: the last attempt always decides")

    def _reserve_locked(
        self,
        candidate: Candidate,
        expires_at: int,
        known: dict[str, float | None],
        missing: set[str],
        *,
        last: bool,
    ) -> Decision | None:
        """The check and the insert under the lock, with the correlations ``known`` (computed before it); an
        open signal in the candidate's direction not among them is added to ``missing`` and counts as unknown.
        None (nothing written, the lock let go at once) when the candidate would pass but ``missing`` is not
        empty, unless ``last``."""
        with self._transaction() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
            if conn.execute(_RESERVED, {"sid": candidate.signal_id}).first() is not None:
                decision = Decision(candidate=candidate)
                self._own(candidate.signal_id)
                return decision
            counts = _counts(conn, candidate.event_time, candidate.day)
            decision = judge(candidate, counts, self.params, _lookup(known, missing))
            if decision.passed and missing and not last:
                return None
            if decision.passed:
                conn.execute(
                    _INSERT,
                    {
                        "sid": candidate.signal_id,
                        "symbol": candidate.symbol,
                        "direction": candidate.direction,
                        "tier": candidate.tier,
                        "event_time": candidate.event_time,
                        "day": candidate.day,
                        "expires_at": max(expires_at, candidate.event_time),
                        "shard": self.shard,
                    },
                )
        if decision.passed:
            self._own(candidate.signal_id)
        return decision

    def _own(self, signal_id: str) -> None:
        with self._lock:
            self._mine.add(signal_id)

    def release(self, signal_id: str, at: int) -> bool:
        """Mark ``signal_id`` finished at event time ``at``; False when it was not open here.

        Raises StorageUnavailable when it cannot be written now (PostgreSQL failed, or failed within
        ``retry_after_s``: then it is not tried on the event loop); the release is kept all the same and
        written by :meth:`upkeep` or before the next reservation, whichever comes first."""
        with self._lock:
            self._pending[signal_id] = at
        if self._clock() < self._down_until:
            self.releases_deferred += 1
            raise StorageUnavailable(
                f"{self._down_reason} (the release is kept and retried: PostgreSQL failed within "
                f"{self._retry_after_s:g} s)"
            )
        try:
            with self._transaction(fail_fast=False) as conn:
                done = bool(conn.execute(_RELEASE, {"sid": signal_id, "at": at}).rowcount)
        except StorageUnavailable as exc:
            self.releases_deferred += 1
            raise StorageUnavailable(f"{exc} (the release is kept and retried)") from exc
        self._forget([(signal_id, at)])
        return done

    @property
    def pending_releases(self) -> dict[str, int]:
        """The releases not written yet: signal id → release time (event ms)."""
        with self._lock:
            return dict(self._pending)

    def metrics(self) -> dict[str, int]:
        """What the service publishes of the ledger: releases kept after a failure and not written yet (each holds
        a slot of every shard until it is), releases that could not be written when asked, and calls refused
        without trying while PostgreSQL was failing."""
        return {
            "shared_gate_releases_pending": len(self.pending_releases),
            "shared_gate_releases_deferred": self.releases_deferred,
            "shared_gate_refused": self.refused,
        }

    def retry_releases(self, *, fail_fast: bool = False) -> int:
        """Write the releases kept after a failure, in one transaction; returns how many reservations they
        freed. Raises StorageUnavailable (they stay kept) when PostgreSQL fails."""
        pending = list(self.pending_releases.items())
        if not pending:
            return 0
        with self._transaction(fail_fast=fail_fast) as conn:
            freed = sum(conn.execute(_RELEASE, {"sid": sid, "at": at}).rowcount for sid, at in pending)
        self._forget(pending)
        log.info(
            "%d kept releases written to the global risk ledger (%d reservations freed)", len(pending), freed
        )
        return freed

    def _forget(self, written: Iterable[tuple[str, int]]) -> None:
        with self._lock:
            for sid, at in written:
                if self._pending.get(sid) == at:
                    del self._pending[sid]

    def settle(self) -> Settled:
        """What earlier runs of this shard left: release its reservations whose signals are stored as finished,
        and delete those whose signal was never stored, made over ``unstored_grace_s`` ago (never one this
        process reserved). Raises StorageUnavailable when PostgreSQL fails."""
        if self._settle_until is None:
            self._settle_until = self._clock() + self._grace_s
        with self._lock:
            mine = sorted(self._mine)
        params = {"shard": self.shard, "mine": mine, "grace": self._grace_s}
        with self._transaction(fail_fast=False) as conn:
            released = conn.execute(_SETTLE_FINISHED, params).rowcount
            deleted = conn.execute(_SETTLE_UNSTORED, params).all()
        if released:
            log.info("released %d reservations of signals this shard finished before its restart", released)
        for sid, symbol in deleted:
            log.warning(
                "deleted the reservation of signal %s: it was never stored (the shard stopped before writing "
                "it), so it no longer holds a slot or a count of its day",
                sid,
                extra={"symbol": symbol, "signal_id": sid},
            )
        return Settled(released=released, deleted=len(deleted))

    def upkeep(self) -> int:
        """The service's periodic call, off the event loop: write the kept releases, and settle what earlier
        runs left until the grace after the first call has passed (the first call settles at once). Returns
        the reservations freed or deleted. Raises StorageUnavailable when PostgreSQL fails (tried again next
        time)."""
        freed = self.retry_releases()
        if not self._settled:
            final = self._settle_until is not None and self._clock() >= self._settle_until
            settled = self.settle()
            freed += settled.released + settled.deleted
            self._settled = final
        return freed

    def counts(self, now: int, day: int) -> LedgerCounts:
        """Open reservations at event time ``now`` and the signals per tier of UTC ``day``."""
        with self._transaction() as conn:
            return _counts(conn, now, day)


def _unknown(a: str, b: str) -> float | None:
    return None


def _lookup(known: dict[str, float | None], missing: set[str]) -> Correlation:
    """The correlations computed before the lock; a symbol not among them is noted in ``missing`` (unknown)."""

    def correlation(a: str, b: str) -> float | None:
        if b not in known:
            missing.add(b)
            return None
        return known[b]

    return correlation


def _same_direction(candidate: Candidate, open_: Iterable[Candidate]) -> set[str]:
    """The symbols of ``open_`` the correlation rule compares ``candidate`` with (same direction, another
    symbol: the same symbol counts as r = 1 without a read)."""
    return {o.symbol for o in open_ if o.direction == candidate.direction and o.symbol != candidate.symbol}


def _correlate(
    candidate: Candidate, symbols: Iterable[str], correlation: Correlation, known: dict[str, float | None]
) -> None:
    """Compute, outside any transaction, the correlation of ``candidate`` with each of ``symbols`` not known."""
    for symbol in sorted(set(symbols) - known.keys()):
        known[symbol] = correlation(candidate.symbol, symbol)


def _counts(conn: sa.Connection, now: int, day: int) -> LedgerCounts:
    rows = conn.execute(_OPEN, {"now": now}).all()
    open_ = tuple(
        Candidate(signal_id=sid, symbol=symbol, direction=direction, tier=tier, event_time=event_time)
        for sid, symbol, direction, tier, event_time in rows
    )
    return LedgerCounts(open=open_, day={tier: n for tier, n in conn.execute(_DAY_COUNTS, {"day": day})})


def judge(
    candidate: Candidate, counts: LedgerCounts, params: RiskParams, correlation: Correlation
) -> Decision:
    """The cross-shard rules of :func:`tapewatch.risk.gate`, in its order, on the ledger's counts."""
    checks: tuple[tuple[Rule, Callable[[], str | None]], ...] = (
        (
            "tier_daily_cap",
            lambda: check_tier_cap(
                candidate.tier, counts.day.get(candidate.tier, 0), params.max_daily[candidate.tier]
            ),
        ),
        ("daily_cap", lambda: check_daily_cap(sum(counts.day.values()), params.max_daily_signals)),
        ("concurrency", lambda: check_concurrency(len(counts.open), params.max_concurrent_signals)),
        (
            "correlation",
            lambda: check_correlation(candidate, counts.open, correlation, params.correlation_threshold),
        ),
    )
    for rule, check in checks:
        reason = check()
        if reason is not None:
            return Decision(candidate=candidate, rule=rule, reason=f"{reason} (all shards)")
    return Decision(candidate=candidate)
