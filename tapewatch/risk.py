"""The risk gate of spec 8.1 ``RISK_CONTROLS``: which candidates become signals. Pure; event time only.

Each rule is a small function returning None (pass) or the rejection reason. :func:`gate` applies them in
this order and the first that rejects decides (one reason per candidate):

1. ``paused`` — signaling is paused by the platform;
2. ``cooldown`` — the symbol had a stop-out (a loss, see :attr:`Outcome.stopped_out`) and this is one of the
   next ``cooldown_after_loss`` (3) candidates on it. Only candidates that reach this rule use up the
   cooldown, so each of the 3 is suppressed for this reason and nothing else, and candidates held back
   while paused do not shorten it;
3. ``tier_daily_cap`` — the candidate's tier already has ``max_daily`` signals (HIGH 20, MEDIUM 40, LOW 20)
   on the UTC day of the candidate's event time (days start at 00:00:00.000 UTC);
4. ``daily_cap`` — ``max_daily_signals`` (80) signals of all tiers that day;
5. ``concurrency`` — ``max_concurrent_signals`` (5) signals are open (issued and not yet finished, waiting
   for their trigger included);
6. ``correlation`` — an open signal in the same direction moves with this symbol: the correlation of their
   1-minute log returns (the injected function, e.g. :func:`tapewatch.correlation.return_correlation` over
   240 minutes) is **above** ``correlation_threshold`` (0.6; exactly 0.6 passes). The reason names the most
   correlated one: ``correlated with ETHUSDT r=0.83``. An open signal on the same symbol and direction counts
   as r = 1. An unknown correlation (None or NaN: too little data) does not reject. Checked last because it
   is the costly one.

:func:`gate` only reads the state; the caller records the decision (:meth:`RiskState.record`), and reports
each finished signal (:meth:`RiskState.finish`), which is what opens and closes signals, counts the day and
starts a cooldown. Keeping the gate side-effect free lets monthly tuning re-score stored candidates.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Literal, Protocol

import msgspec

from tapewatch.errors import StorageUnavailable
from tapewatch.events import Candle
from tapewatch.outcome import OpenSignal, Outcome, check_kind
from tapewatch.quality import TIERS, Tier, priority_levels
from tapewatch.rules import Direction
from tapewatch.settings import Settings

log = logging.getLogger(__name__)

DAY_MS = 86_400_000

Rule = Literal["paused", "cooldown", "tier_daily_cap", "daily_cap", "concurrency", "correlation"]
#: The order :func:`gate` applies the rules in.
RULES: tuple[Rule, ...] = ("paused", "cooldown", "tier_daily_cap", "daily_cap", "concurrency", "correlation")

#: ``correlation(symbol_a, symbol_b)``: return correlation of two symbols now, or None when unknown.
Correlation = Callable[[str, str], float | None]
#: Fate of a candidate that passed the local gate but could not be checked against the other shards.
FATE_SHARED_GATE_UNAVAILABLE = "shared_gate_unavailable"


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """What the gate judges: a setup that passed the required conditions and has a tier, at ``event_time``
    (ms). ``signal_id`` is the id the signal will have if it passes (DESIGN §3)."""

    signal_id: str
    symbol: str
    direction: Direction
    tier: Tier
    event_time: int

    def __post_init__(self) -> None:
        if not self.symbol:
            raise ValueError("candidate symbol must not be empty")
        check_kind(self.symbol, self.direction, self.tier)
        if self.event_time < 0:
            raise ValueError(f"{self.symbol}: event_time must be epoch ms >= 0; got {self.event_time}")

    @property
    def day(self) -> int:
        """UTC day number of the event time (days since 1970-01-01)."""
        return utc_day(self.event_time)


class RiskParams(msgspec.Struct, frozen=True, kw_only=True):
    """The limits of spec 8.1, defaults as the spec."""

    max_daily: dict[Tier, int] = msgspec.field(default_factory=lambda: {"HIGH": 20, "MEDIUM": 40, "LOW": 20})
    max_daily_signals: int = 80
    max_concurrent_signals: int = 5
    correlation_threshold: float = 0.6
    cooldown_after_loss: int = 3

    def __post_init__(self) -> None:
        for tier in TIERS:
            if self.max_daily.get(tier, -1) < 0:
                raise ValueError(f"max_daily needs a count >= 0 for {tier}; got {self.max_daily}")
        for name in ("max_daily_signals", "max_concurrent_signals", "cooldown_after_loss"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
        if not (math.isfinite(self.correlation_threshold) and -1 <= self.correlation_threshold <= 1):
            raise ValueError(
                f"correlation_threshold must be within [-1, 1]; got {self.correlation_threshold}"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> RiskParams:
        return cls(
            max_daily={tier: level.max_daily for tier, level in priority_levels(settings).items()},
            max_daily_signals=settings.max_daily_signals,
            max_concurrent_signals=settings.max_concurrent_signals,
            correlation_threshold=settings.correlation_threshold,
            cooldown_after_loss=settings.cooldown_after_loss,
        )


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """The gate's verdict: passed when ``rule`` is None, else the rule that rejected and its reason."""

    candidate: Candidate
    rule: Rule | None = None
    reason: str | None = None

    @property
    def passed(self) -> bool:
        return self.rule is None


def utc_day(event_time: int) -> int:
    """Days since 1970-01-01 UTC of an event time in ms (Unix time has no leap seconds: exact)."""
    return event_time // DAY_MS


# --- the rules --------------------------------------------------------------------------------------------


def check_paused(paused: bool) -> str | None:
    return "signaling paused" if paused else None


def check_cooldown(symbol: str, remaining: int) -> str | None:
    """Reject while ``remaining`` (candidates still to suppress on ``symbol``, this one included) is > 0."""
    if remaining <= 0:
        return None
    return f"cooldown after a stop-out on {symbol} ({remaining} of the next candidates to skip)"


def check_tier_cap(tier: Tier, count: int, cap: int) -> str | None:
    """Reject when ``count`` signals of ``tier`` today already reach ``cap``."""
    return f"daily cap of {tier} reached ({count}/{cap})" if count >= cap else None


def check_daily_cap(count: int, cap: int) -> str | None:
    """Reject when ``count`` signals of all tiers today already reach ``cap``."""
    return f"total daily cap reached ({count}/{cap})" if count >= cap else None


def check_concurrency(open_count: int, cap: int) -> str | None:
    """Reject when ``open_count`` open signals already reach ``cap``."""
    return f"concurrent signals at the cap ({open_count}/{cap})" if open_count >= cap else None


def check_correlation(
    candidate: Candidate, open_signals: Iterable[Candidate], correlation: Correlation, threshold: float
) -> str | None:
    """Reject when an open signal in the same direction correlates above ``threshold``; the reason names the
    most correlated one (the first of equals). Same symbol counts as r = 1; None or NaN is unknown: skipped."""
    worst: tuple[float, str] | None = None
    for other in open_signals:
        if other.direction != candidate.direction:
            continue
        if other.symbol == candidate.symbol:
            r: float | None = 1.0
        else:
            r = correlation(candidate.symbol, other.symbol)
        if r is None or not math.isfinite(r):
            continue
        if r > threshold and (worst is None or r > worst[0]):
            worst = (r, other.symbol)
    if worst is None:
        return None
    return f"correlated with {worst[1]} r={worst[0]:.2f}"


# --- state and the gate -----------------------------------------------------------------------------------


class RiskState:
    """What the rules remember: the pause flag, open signals, signals per tier per UTC day, cooldowns.

    Mutated only through :meth:`record`, :meth:`finish` and the rebuild methods (:meth:`open`,
    :meth:`count`, :meth:`start_cooldown`) a restarting service uses to restore it from PostgreSQL.
    """

    __slots__ = ("_cooldowns", "_days", "_open", "paused")

    def __init__(self, *, paused: bool = False) -> None:
        self.paused = paused
        self._open: dict[str, Candidate] = {}
        self._days: dict[int, dict[Tier, int]] = {}
        self._cooldowns: dict[str, int] = {}

    @property
    def open_signals(self) -> tuple[Candidate, ...]:
        return tuple(self._open.values())

    def signals_on(self, day: int, tier: Tier | None = None) -> int:
        """Signals counted on UTC ``day`` (see :func:`utc_day`), of ``tier`` or of all tiers."""
        counts = self._days.get(day, {})
        return counts.get(tier, 0) if tier is not None else sum(counts.values())

    def cooldown_left(self, symbol: str) -> int:
        return self._cooldowns.get(symbol, 0)

    def open(self, candidate: Candidate) -> None:
        """Hold ``candidate`` as an open signal (for concurrency and correlation)."""
        self._open[candidate.signal_id] = candidate

    def count(self, candidate: Candidate) -> None:
        """Count ``candidate`` as a signal of its tier on its UTC day."""
        day = candidate.day
        counts = self._days.setdefault(day, dict.fromkeys(TIERS, 0))
        counts[candidate.tier] += 1
        # only today and yesterday matter (events arrive in order, give or take a late one at midnight)
        latest = max(self._days)
        for old in [d for d in self._days if d < latest - 1]:
            del self._days[old]

    def start_cooldown(self, symbol: str, candidates: int) -> None:
        """Suppress the next ``candidates`` candidates on ``symbol`` (a running cooldown is not shortened)."""
        if candidates > 0:
            self._cooldowns[symbol] = max(self._cooldowns.get(symbol, 0), candidates)

    def record(self, decision: Decision) -> None:
        """Apply a decision of :func:`gate`: a passed candidate becomes an open signal counted on its day;
        a candidate rejected by the cooldown uses one of it up. Other rejections change nothing."""
        candidate = decision.candidate
        if decision.passed:
            self.count(candidate)
            self.open(candidate)
        elif decision.rule == "cooldown":
            left = self._cooldowns.get(candidate.symbol, 0) - 1
            if left > 0:
                self._cooldowns[candidate.symbol] = left
            else:
                self._cooldowns.pop(candidate.symbol, None)

    def finish(self, outcome: Outcome, params: RiskParams) -> bool:
        """A signal reached its end: it is no longer open, and a stop-out starts the symbol's cooldown.
        Returns whether the signal was open here."""
        return self.close(outcome.signal.signal_id, outcome.signal.symbol, outcome.stopped_out, params)

    def close(self, signal_id: str, symbol: str, stopped_out: bool, params: RiskParams) -> bool:
        """:meth:`finish` of the signal ``signal_id`` on ``symbol`` from what its end was (monthly tuning has
        the stored outcome's facts, not an :class:`Outcome`)."""
        was_open = self._open.pop(signal_id, None) is not None
        if stopped_out:
            self.start_cooldown(symbol, params.cooldown_after_loss)
        return was_open


def gate(candidate: Candidate, state: RiskState, params: RiskParams, correlation: Correlation) -> Decision:
    """Judge ``candidate`` by the rules in the order of the module docstring; reads ``state`` only."""
    day = candidate.day
    checks: tuple[tuple[Rule, Callable[[], str | None]], ...] = (
        ("paused", lambda: check_paused(state.paused)),
        ("cooldown", lambda: check_cooldown(candidate.symbol, state.cooldown_left(candidate.symbol))),
        (
            "tier_daily_cap",
            lambda: check_tier_cap(
                candidate.tier, state.signals_on(day, candidate.tier), params.max_daily[candidate.tier]
            ),
        ),
        ("daily_cap", lambda: check_daily_cap(state.signals_on(day), params.max_daily_signals)),
        ("concurrency", lambda: check_concurrency(len(state.open_signals), params.max_concurrent_signals)),
        (
            "correlation",
            lambda: check_correlation(
                candidate, state.open_signals, correlation, params.correlation_threshold
            ),
        ),
    )
    for rule, check in checks:
        reason = check()
        if reason is not None:
            return Decision(candidate=candidate, rule=rule, reason=reason)
    return Decision(candidate=candidate)


class SharedGate(Protocol):
    """The limits that span realtime shards (``tapewatch run --shard I/N``), judged after :func:`gate` passed.

    :class:`tapewatch.adapters.risk_ledger.RiskLedger` is the implementation: the daily caps, concurrency and
    correlation against every shard's open signals, atomically. ``reserve`` returns the verdict (a passed one
    holds the slot until ``release`` or ``expires_at``, event time ms; reserving the same ``signal_id`` again
    passes without counting twice) and raises :class:`tapewatch.errors.StorageUnavailable` when it cannot be
    checked; ``release`` frees the slot at event time ``at`` (False when it was not held) and raises
    StorageUnavailable when it cannot do so now — the implementation keeps such a release and retries it until
    it is written (a finished signal must not hold a slot of every shard until its expiry)."""

    def reserve(self, candidate: Candidate, expires_at: int, correlation: Correlation) -> Decision: ...

    def release(self, signal_id: str, at: int) -> bool: ...


def reserve_shared(
    shared: SharedGate, candidate: Candidate, expires_at: int, correlation: Correlation
) -> Decision | None:
    """``shared.reserve`` of a candidate the local gate passed; None (logged) when the shared gate cannot be
    reached — the caller then does not issue the signal (fail closed)."""
    try:
        return shared.reserve(candidate, expires_at, correlation)
    except StorageUnavailable as exc:
        log.warning(
            "candidate not issued: the global risk ledger is unreachable: %s",
            exc,
            extra={"symbol": candidate.symbol},
        )
        return None


def release_shared(shared: SharedGate, signal: OpenSignal, at: int) -> bool | None:
    """``shared.release`` of a finished signal; None (logged) when the shared gate cannot write it now — it
    keeps the release and retries it (see :class:`SharedGate`)."""
    try:
        return shared.release(signal.signal_id, at)
    except StorageUnavailable as exc:
        log.warning(
            "cannot release the signal in the global risk ledger now (kept, retried until written): %s",
            exc,
            extra={"symbol": signal.symbol},
        )
        return None


def closes_as_candles(closes: Sequence[tuple[int, float]], interval: str = "1m") -> list[Candle]:
    """Flat closed candles from (open time, close) pairs: all the return correlation reads of another shard's
    symbol (see :data:`tapewatch.engine.RemoteCloses`)."""
    return [
        Candle(
            open_time=t,
            close_time=t + 59_999,
            interval=interval,
            open=c,
            close=c,
            high=c,
            low=c,
            volume=0.0,
            trades=0,
            closed=True,
            quote_volume=0.0,
        )
        for t, c in closes
    ]
