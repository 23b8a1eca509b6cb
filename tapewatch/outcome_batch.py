"""The batch (authoritative) outcome of finished signals from 1-minute candles, and how it is compared with
the live tracker's. Pure: the Dagster asset fetches the candles and stores the results.

- A signal is **due** for its batch outcome once event time ``now`` has passed its last possible end:
  ``created + response window + upper hold bound`` of its tier (after that, whatever happened, it is over).
- Its candles are the 1-minute klines from the minute of its creation to that end (one REST request per
  1,500 minutes: :func:`kline_windows`).
- **Deciding minutes** (:class:`tapewatch.outcome.MinuteRole`): the candle of the creation minute, of the
  trigger, of the trigger window's deadline and of the hold's deadline cannot be read as one range (part of
  it predates the signal or follows a deadline, or the trigger's time inside it starts the hold). They are
  read from their aggTrades, exactly as the live tracker is fed, or capped when those cannot be had
  (:func:`tapewatch.outcome.evaluate`). Which minutes decide depends on what the earlier ones decided (the
  hold's end follows the trigger's time), so the asset asks step by step: :func:`batch_evaluation` names the
  first minute whose trades it lacks (``wanted``), the asset fetches them (None when not to be had) and asks
  again, until nothing is wanted. Of the creation millisecond's trades, those with an aggTrade id above the
  signal's ``created_after_agg_id`` count (the live tracker followed exactly those); a signal stored without
  it leaves that millisecond out (:func:`tapewatch.outcome.followed`).
- Only candles that are closed count (a forming candle's range can still grow). When the candles do not
  reach the end (the exchange has no data for part of the window), the outcome is **incomplete** and is not
  stored: the live value, if any, stays until a later run has the data.
- **A hole** (a minute missing among the candles the outcome depends on: from the first whole minute after
  creation to the signal's exit) makes it incomplete too, logged with the symbol and the missing minutes:
  the stop may have been hit in exactly that minute. Binance sends a candle for every minute the market was
  open, a zero-volume one (open = high = low = close = the last price) when nothing traded, so a hole is
  either a row the client dropped as bad (``dropped_rows``: a later request may get it right) or an exchange
  outage (no trading: that minute never comes). So a hole is retried by every pass but the last one: the
  day's final pass (and a run by hand, e.g. a backfill) passes ``settle_holes`` and the outcome is then
  **settled from the candles that exist** (during an outage nothing traded, and the candle after it opens at
  the price the market resumed at), logged as a warning naming the holes.
- A **disagreement** is a live outcome that is finished and differs from the batch one in its final state,
  or in P&L by more than ``tolerance_r`` R. The batch value is stored either way (batch beats live); the
  disagreement is reported. Trades and candles legitimately differ when one minute holds both the stop and
  a target (candles count the stop), so a few disagreements are expected; many mean a bug or bad data.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import msgspec

from tapewatch.outcome import (
    MINUTE_MS,
    Bar,
    Evaluation,
    MinuteRead,
    MinuteTrades,
    OpenSignal,
    Outcome,
    OutcomeParams,
    OutcomeState,
    evaluate,
    evaluate_candles,
)

log = logging.getLogger(__name__)

#: Binance serves at most this many klines per request; longer windows take several requests.
MAX_KLINES = 1500
#: Missing minutes named in one log line at most (the count is always given).
_HOLES_LOGGED = 10


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


def kline_windows(signal: OpenSignal, params: OutcomeParams) -> list[KlineWindow]:
    """The klines requests of ``signal``: from the minute of its creation to the minute of its last end, in
    consecutive pages of at most :data:`MAX_KLINES` minutes (a LOW hold may last up to a week)."""
    start = signal.created - signal.created % MINUTE_MS
    end_time = last_end(signal, params)
    end = end_time - end_time % MINUTE_MS
    windows = []
    while start <= end:
        page_end = min(end, start + (MAX_KLINES - 1) * MINUTE_MS)
        limit = (page_end - start) // MINUTE_MS + 1
        windows.append(KlineWindow(symbol=signal.symbol, start_ms=start, end_ms=page_end, limit=limit))
        start = page_end + MINUTE_MS
    return windows


def missing_minutes(signal: OpenSignal, bars: Iterable[Bar], until: int) -> list[int]:
    """Open times of the 1-minute candles missing from ``bars`` among those the outcome reads before event
    time ``until`` (exclusive): from the signal's first whole minute on. The minute of a creation inside a
    minute is not asked for (without its candle, it counts as if nothing traded in it after the signal)."""
    first = signal.created + (-signal.created) % MINUTE_MS  # the creation minute when created on its start
    present = {b.open_time - b.open_time % MINUTE_MS for b in bars}
    return [minute for minute in range(first, until, MINUTE_MS) if minute not in present]


def _minutes_text(minutes: Sequence[int]) -> str:
    shown = ", ".join(
        datetime.fromtimestamp(m / 1000, UTC).strftime("%Y-%m-%d %H:%M") for m in minutes[:_HOLES_LOGGED]
    )
    more = f" and {len(minutes) - _HOLES_LOGGED} more" if len(minutes) > _HOLES_LOGGED else ""
    return f"{len(minutes)} minute(s): {shown}{more} UTC"


def _closed(bars: Iterable[Bar]) -> list[Bar]:
    """The candles that are closed (a forming candle's range can still grow)."""
    return [b for b in bars if getattr(b, "closed", True)]


def batch_evaluation(
    signal: OpenSignal, candles: Iterable[Bar], params: OutcomeParams, trades: MinuteTrades | None = None
) -> Evaluation:
    """:func:`tapewatch.outcome.evaluate` over the closed ``candles`` with the deciding minutes' ``trades``
    fetched so far: its ``wanted`` is the next minute to fetch, its ``minutes`` how each one counted. Raises
    ValueError on an impossible candle."""
    return evaluate(signal, _closed(candles), params, trades=trades)


def batch_outcome(
    signal: OpenSignal,
    candles: Iterable[Bar],
    params: OutcomeParams,
    *,
    trades: MinuteTrades | None = None,
    settle_holes: bool = False,
) -> Outcome | None:
    """The outcome of ``signal`` from its closed 1-minute candles and the ``trades`` of its deciding minutes
    (:func:`batch_evaluation`; a minute without them counts capped); None when the candles stop short of its
    end or miss a minute it depends on (incomplete data: nothing to store, retried by the next pass). With
    ``settle_holes`` (the last pass over the day), a hole is taken as permanent (an exchange outage) and the
    outcome is settled from the candles that exist, with a warning. Raises ValueError on an impossible
    candle."""
    bars = sorted(candles, key=lambda b: b.open_time)
    closed = _closed(bars)
    if not closed:
        return None
    outcome = evaluate_candles(signal, closed, params, trades=trades)
    end = last_end(signal, params)
    # through the exit's own minute: an expiry at a deadline on a minute's start reads that minute's first ms
    until = outcome.exit_time + 1 if outcome.exit_time is not None else end + 1
    holes = missing_minutes(signal, bars, until)  # a forming candle is late, not missing
    if not holes:
        return outcome if outcome.finished else None
    where = {"symbol": signal.symbol, "signal_id": signal.signal_id, "missing_minutes": len(holes)}
    if not settle_holes:
        log.warning(
            "%s %s: klines miss %s; outcome left unsettled, retried by the next pass",
            signal.symbol, signal.signal_id, _minutes_text(holes), extra=where,
        )  # fmt: skip
        return None
    settled = evaluate_candles(
        signal, closed, params, until=end, trades=trades
    )  # the end is past: all there is
    log.warning(
        "%s %s: klines still miss %s on the last pass (an exchange outage: no trading then); "
        "outcome settled from the candles that exist: %s",
        signal.symbol, signal.signal_id, _minutes_text(holes),
        settled.state.value, extra={**where, "settled_with_holes": True},
    )  # fmt: skip
    return settled if settled.finished else None


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
    #: deciding minutes by how they counted, ``<role>_exact`` / ``<role>_capped`` (MinuteRole values)
    minutes: dict[str, int] = msgspec.field(default_factory=dict)
    failed: dict[str, str] = msgspec.field(default_factory=dict)  # signal id -> error
    disagreements: list[Disagreement] = msgspec.field(default_factory=list)

    def record(
        self,
        live: Outcome | None,
        batch: Outcome | None,
        tolerance_r: float,
        minutes: Iterable[MinuteRead] = (),
    ) -> None:
        """Count one signal's result (``batch`` None: incomplete data) and how its deciding minutes counted."""
        for read in minutes:
            key = f"{read.role.value}_{'exact' if read.exact else 'capped'}"
            self.minutes[key] = self.minutes.get(key, 0) + 1
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
    "batch_evaluation",
    "batch_outcome",
    "disagreement",
    "is_due",
    "kline_windows",
    "last_end",
    "missing_minutes",
]
