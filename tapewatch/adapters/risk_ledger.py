"""The global risk ledger in PostgreSQL: spec 8.1's limits held across realtime shards, atomically.

Each shard's engine applies the risk gate to its own state first (pause, cooldown — per symbol, so local);
a candidate that passes is then **reserved** here, where the limits that span shards are checked against
every shard's signals: the tier and total daily caps of its UTC day, the concurrency cap and the
correlation filter. The check and the insert run in one transaction under a PostgreSQL advisory lock, so
two shards can never both take the 5th concurrent slot or the 80th signal of a day.

Reservations are keyed by the signal id (UUIDv5 of symbol, direction, trigger time): a shard that restarts
and re-decides the same candidate gets the same answer without counting it twice. A finished signal is
released by its shard; one whose shard died stops counting at ``expires_at`` (trigger window + upper hold
bound), so a dead shard cannot hold slots forever. When PostgreSQL is unreachable the reservation fails
closed (StorageUnavailable): the caller rejects the candidate and counts it — with shards, a signal that
cannot be checked against the others is not issued.

The calls are synchronous on the realtime service's event loop, so each is bounded: a statement (or the wait
for the lock) longer than ``statement_timeout_s`` is cancelled, and after a failure the ledger fails fast,
without trying, for ``retry_after_s`` — a PostgreSQL outage then costs one connect timeout per
``retry_after_s``, not one per candidate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
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

# "tapewrisk" in ASCII, apart from the migration lock
_LOCK_KEY = 0x7461706577726973

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


@dataclass(frozen=True, slots=True)
class LedgerCounts:
    """What the ledger holds at ``now``: open reservations and the signals of the day per tier."""

    open: tuple[Candidate, ...]
    day: dict[str, int]


class RiskLedger:
    """Reserve and release signals in the shared ledger (one per deployment, in the tapewatch database)."""

    def __init__(
        self,
        db: Database,
        params: RiskParams,
        *,
        shard: str = "0/1",
        statement_timeout_s: float = 2.0,
        retry_after_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.params = params
        self.shard = shard
        self._timeout_ms = max(1, round(statement_timeout_s * 1000))
        self._retry_after_s = retry_after_s
        self._clock = clock
        self._down_until = float("-inf")
        self._down_reason = ""
        #: calls refused without trying while the ledger was failing fast
        self.refused = 0

    @contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        """A bounded transaction; fails fast (StorageUnavailable) within ``retry_after_s`` of a failure."""
        if self._clock() < self._down_until:
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

    def reserve(self, candidate: Candidate, expires_at: int, correlation: Correlation) -> Decision:
        """Judge ``candidate`` against every shard's signals (daily caps, concurrency, correlation) and, if it
        passes, reserve it. Already reserved (a restart) → passed again, counted once. Raises
        StorageUnavailable when PostgreSQL is unreachable or too slow."""
        with self._transaction() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
            if conn.execute(_RESERVED, {"sid": candidate.signal_id}).first() is not None:
                return Decision(candidate=candidate)
            counts = _counts(conn, candidate.event_time, candidate.day)
            decision = judge(candidate, counts, self.params, correlation)
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
            return decision

    def release(self, signal_id: str, at: int) -> bool:
        """Mark ``signal_id`` finished at event time ``at``; False when it was not open here."""
        with self._transaction() as conn:
            return bool(conn.execute(_RELEASE, {"sid": signal_id, "at": at}).rowcount)

    def counts(self, now: int, day: int) -> LedgerCounts:
        """Open reservations at event time ``now`` and the signals per tier of UTC ``day``."""
        with self._transaction() as conn:
            return _counts(conn, now, day)


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
