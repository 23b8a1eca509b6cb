"""The batch (authoritative) outcome of finished signals from 1-minute candles, and how it is compared with
the live tracker's. Pure: the Dagster asset fetches the candles and stores the results.

- A signal is **due** for its batch outcome once event time ``now`` has passed its last possible end:
  ``created + response window + upper hold bound`` of its tier (after that, whatever happened, it is over).
- Its candles are the 1-minute klines from the minute of its creation to that end (one REST request).
- Only candles that are closed count (a forming candle's range can still grow). When the candles do not
  reach the end (the exchange has no data for part of the window), the outcome is **incomplete** and is not
  stored: the live value, if any, stays until a later run has the data.
- A **disagreement** is a live outcome that is finished and differs from the batch one in its final state,
  or in P&L by more than ``tolerance_r`` R. The batch value is stored either way (batch beats live); the
  disagreement is reported. Trades and candles legitimately differ when one minute holds both the stop and
  a target (candles count the stop), so a few disagreements are expected; many mean a bug or bad data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import msgspec

from tapewatch.outcome import (
    MINUTE_MS,
    Bar,
    OpenSignal,
    Outcome,
    OutcomeParams,
    OutcomeState,
    evaluate_candles,
)

#: Binance serves at most this many klines per request; the longest window (LOW: 15 + 180 min) fits.
MAX_KLINES = 1500


class KlineWindow(msgspec.Struct, frozen=True, kw_only=True):
    """The 1-minute klines a signal's outcome needs: open times from ``start_ms`` to ``end_ms``."""

    symbol: str
    start_ms: int
    end_ms: int
    limit: int


class Disagreement(msgspec.Struct, frozen=True, kw_only=True):
    """A finished live outcome that the batch outcome contradicts (the batch value stands)."""

    signal_id: str
    symbol: str
    event_time: int
    live_state: OutcomeState
    batch_state: OutcomeState
    live_pnl_r: float
    batch_pnl_r: float

    def describe(self) -> str:
        return (
            f"{self.symbol} {self.signal_id}: live {self.live_state.value} {self.live_pnl_r:+.4f} R, "
            f"batch {self.batch_state.value} {self.batch_pnl_r:+.4f} R"
        )


def last_end(signal: OpenSignal, params: OutcomeParams) -> int:
    """The latest event time at which ``signal`` can still be open: creation + response window + hold bound."""
    return signal.created + params.response_ms[signal.tier] + params.hold_ms[signal.tier]


def is_due(signal: OpenSignal, params: OutcomeParams, now_ms: int) -> bool:
    """True once ``now_ms`` is past the signal's last possible end (its outcome cannot change any more)."""
    return now_ms > last_end(signal, params)


def kline_window(signal: OpenSignal, params: OutcomeParams) -> KlineWindow:
    """The klines request of ``signal``: from the minute of its creation to the minute of its last end."""
    start = signal.created - signal.created % MINUTE_MS
    end_time = last_end(signal, params)
    end = end_time - end_time % MINUTE_MS
    limit = (end - start) // MINUTE_MS + 1
    if limit > MAX_KLINES:
        raise ValueError(
            f"{signal.symbol}: the outcome window of {limit} minutes exceeds {MAX_KLINES} klines; "
            "lower the response window or hold time of its tier"
        )
    return KlineWindow(symbol=signal.symbol, start_ms=start, end_ms=end, limit=limit)


def batch_outcome(signal: OpenSignal, candles: Iterable[Bar], params: OutcomeParams) -> Outcome | None:
    """The outcome of ``signal`` from its closed 1-minute candles; None when they stop short of its end
    (incomplete data: nothing to store). Raises ValueError on an impossible candle."""
    bars = sorted(candles, key=lambda b: b.open_time)
    closed = [b for b in bars if getattr(b, "closed", True)]
    if not closed:
        return None
    outcome = evaluate_candles(signal, closed, params)
    return outcome if outcome.finished else None


def disagreement(live: Outcome, batch: Outcome, tolerance_r: float) -> Disagreement | None:
    """The disagreement between a live and a batch outcome of the same signal, or None when they agree
    (same final state and P&L within ``tolerance_r``) or the live one never finished (a gap, not a
    contradiction: the live tracker missed the end)."""
    if live.signal.signal_id != batch.signal.signal_id:
        raise ValueError(f"outcomes of different signals: {live.signal.signal_id}, {batch.signal.signal_id}")
    if not (math.isfinite(tolerance_r) and tolerance_r >= 0):
        raise ValueError(f"tolerance_r must be finite and >= 0; got {tolerance_r}")
    if not live.finished:
        return None
    if live.state is batch.state and abs(live.pnl_r - batch.pnl_r) <= tolerance_r:
        return None
    return Disagreement(
        signal_id=batch.signal.signal_id,
        symbol=batch.signal.symbol,
        event_time=batch.signal.created,
        live_state=live.state,
        batch_state=batch.state,
        live_pnl_r=live.pnl_r,
        batch_pnl_r=batch.pnl_r,
    )


class BatchRun(msgspec.Struct, kw_only=True):
    """What one batch pass did, for the asset's metadata: counts and the disagreements found."""

    due: int = 0
    written: int = 0
    filled: int = 0  # no live outcome, or an unfinished one: the live tracker missed the end
    agreed: int = 0
    incomplete: int = 0  # candles stop short of the end: nothing written
    failed: dict[str, str] = msgspec.field(default_factory=dict)  # signal id -> error
    disagreements: list[Disagreement] = msgspec.field(default_factory=list)

    def record(self, live: Outcome | None, batch: Outcome | None, tolerance_r: float) -> None:
        """Count one signal's result (``batch`` None: incomplete data)."""
        if batch is None:
            self.incomplete += 1
            return
        self.written += 1
        if live is None or not live.finished:
            self.filled += 1
            return
        found = disagreement(live, batch, tolerance_r)
        if found is None:
            self.agreed += 1
        else:
            self.disagreements.append(found)


__all__ = [
    "MAX_KLINES",
    "BatchRun",
    "Disagreement",
    "KlineWindow",
    "batch_outcome",
    "disagreement",
    "is_due",
    "kline_window",
    "last_end",
]
