"""Wilder's RSI and ATR over candles, batch and incremental, plus the candle checks the analytics share.

Conventions (the same in the batch functions and the incremental classes, and tested against a pandas
reference):

- **RSI(period)** needs ``period + 1`` closes. The first average gain/loss is the simple mean of the first
  ``period`` changes; after that each average is smoothed as ``(prev * (period - 1) + x) / period``.
  Flat cases: only gains -> 100, only losses -> 0, no movement at all -> 50.
- **ATR(period)** needs ``period + 1`` candles: a true range needs the previous close, so the first candle
  only seeds it (as TA-Lib does). ``TR = max(high - low, |high - prev_close|, |low - prev_close|)``; the
  first ATR is the mean of the first ``period`` true ranges, then Wilder-smoothed like RSI.

Too few values gives ``None``; a NaN/infinite value, a candle with ``high < low``, or candles out of
order raise :class:`ValueError` naming the index (a programming error upstream, never silently averaged).
Wilder smoothing depends on where it starts: the batch functions start at the first value passed, so a
batch over the last 100 bars and an incremental run from an earlier bar differ slightly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tapewatch.events import Candle

_CANDLE_VALUES = ("open", "high", "low", "close", "quote_volume")


def check_period(period: int, name: str = "period") -> None:
    """Raise ValueError unless ``period`` is an int >= 1."""
    if isinstance(period, bool) or not isinstance(period, int) or period < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {period!r}")


def check_finite(values: Sequence[float], what: str) -> None:
    """Raise ValueError naming the first NaN/infinite value of ``values`` (called ``what``)."""
    for i, value in enumerate(values):
        if not math.isfinite(value):
            raise ValueError(f"{what}[{i}] must be finite, got {value!r}")


def check_candles(candles: Sequence[Candle]) -> None:
    """Raise ValueError unless every candle has finite prices and volumes, ``high >= low``, and the
    candles are oldest first with strictly increasing open times."""
    prev_open = None
    for i, c in enumerate(candles):
        # one test for the common case: a sum of finite values (all far below 1e300) is finite
        if not math.isfinite(c.open + c.high + c.low + c.close + c.quote_volume):
            for field in _CANDLE_VALUES:
                value = getattr(c, field)
                if not math.isfinite(value):
                    raise ValueError(f"candle[{i}].{field} must be finite, got {value!r}")
        if c.high < c.low:
            raise ValueError(f"candle[{i}] has high {c.high} below low {c.low}")
        if prev_open is not None and c.open_time <= prev_open:
            raise ValueError(
                f"candles must be oldest first with increasing open times: candle[{i}] opens at "
                f"{c.open_time}, not after {prev_open}"
            )
        prev_open = c.open_time


def rsi_from_averages(avg_gain: float, avg_loss: float) -> float:
    """RSI from the smoothed average gain and loss: 100 - 100 / (1 + gain/loss), with the flat cases
    (no losses -> 100, no gains -> 0, neither -> 50)."""
    if avg_loss == 0.0:
        return 50.0 if avg_gain == 0.0 else 100.0
    return 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)


class WilderRSI:
    """Incremental RSI: :meth:`update` with each closed bar's close, :meth:`peek` with the forming one.

    O(1) per bar. Fed the same closes from the same first bar, it gives exactly what :func:`rsi` gives.
    """

    __slots__ = ("_count", "_gain", "_loss", "_prev", "period")

    def __init__(self, period: int = 9) -> None:
        check_period(period)
        self.period = period
        self._prev: float | None = None
        self._count = 0  # changes seen; while < period, _gain/_loss hold sums, then averages
        self._gain = 0.0
        self._loss = 0.0

    def _step(self, close: float) -> tuple[float, float, int]:
        if not math.isfinite(close):
            raise ValueError(f"close must be finite, got {close!r}")
        assert self._prev is not None
        change = close - self._prev
        up = change if change > 0.0 else 0.0
        down = -change if change < 0.0 else 0.0
        p = self.period
        count = self._count + 1
        if count < p:
            return self._gain + up, self._loss + down, count
        if count == p:
            return (self._gain + up) / p, (self._loss + down) / p, count
        return (self._gain * (p - 1) + up) / p, (self._loss * (p - 1) + down) / p, count

    def update(self, close: float) -> float | None:
        """Add a closed bar's close; returns the RSI after it, or None while fewer than period changes."""
        if self._prev is None:
            if not math.isfinite(close):
                raise ValueError(f"close must be finite, got {close!r}")
            self._prev = close
            return None
        self._gain, self._loss, self._count = self._step(close)
        self._prev = close
        return self.value

    def peek(self, close: float) -> float | None:
        """The RSI if the next bar closed at ``close`` (the forming bar), leaving the state unchanged."""
        if self._prev is None:
            return None
        gain, loss, count = self._step(close)
        return rsi_from_averages(gain, loss) if count >= self.period else None

    @property
    def value(self) -> float | None:
        """The RSI after the last :meth:`update`, or None during warm-up."""
        return rsi_from_averages(self._gain, self._loss) if self._count >= self.period else None


def rsi_series(closes: Sequence[float], period: int = 9) -> list[float | None]:
    """RSI at every close (same length as ``closes``): None for the first ``period`` closes."""
    check_period(period)
    check_finite(closes, "closes")
    n = len(closes)
    out: list[float | None] = [None] * n
    if n <= period:
        return out
    # the same arithmetic as WilderRSI, in one local loop: this runs on every evaluation of a symbol
    gain = loss = 0.0
    for i in range(1, period + 1):
        change = closes[i] - closes[i - 1]
        if change > 0.0:
            gain += change
        elif change < 0.0:
            loss -= change
    gain, loss = gain / period, loss / period
    out[period] = rsi_from_averages(gain, loss)
    keep = period - 1
    for i in range(period + 1, n):
        change = closes[i] - closes[i - 1]
        gain = (gain * keep + (change if change > 0.0 else 0.0)) / period
        loss = (loss * keep + (-change if change < 0.0 else 0.0)) / period
        out[i] = rsi_from_averages(gain, loss)
    return out


def rsi(closes: Sequence[float], period: int = 9) -> float | None:
    """RSI of the last close (Wilder), or None with fewer than ``period + 1`` closes (or none at all).

    For the signal rules pass the closes of the closed 15m candles plus the forming one, oldest first.
    """
    values = rsi_series(closes, period)
    return values[-1] if values else None


def true_range(candle: Candle, prev_close: float) -> float:
    """Wilder's true range of ``candle`` given the previous candle's close."""
    return max(candle.high - candle.low, abs(candle.high - prev_close), abs(candle.low - prev_close))


class WilderATR:
    """Incremental ATR: :meth:`update` with each closed candle, O(1) per candle.

    Fed the same candles from the same first one, it gives exactly what :func:`atr` gives.
    """

    __slots__ = ("_count", "_prev_close", "_value", "period")

    def __init__(self, period: int = 14) -> None:
        check_period(period)
        self.period = period
        self._prev_close: float | None = None
        self._count = 0  # true ranges seen; while < period, _value holds their sum, then the average
        self._value = 0.0

    def update(self, candle: Candle) -> float | None:
        """Add a candle; returns the ATR after it, or None while fewer than ``period`` true ranges.

        Raises ValueError for a candle with a NaN/infinite price or ``high < low``.
        """
        check_candles((candle,))
        if self._prev_close is not None:
            tr = true_range(candle, self._prev_close)
            p = self.period
            self._count += 1
            if self._count < p:
                self._value += tr
            elif self._count == p:
                self._value = (self._value + tr) / p
            else:
                self._value = (self._value * (p - 1) + tr) / p
        self._prev_close = candle.close
        return self.value

    @property
    def value(self) -> float | None:
        """The ATR after the last :meth:`update`, or None during warm-up."""
        return self._value if self._count >= self.period else None


def atr(candles: Sequence[Candle], period: int = 14) -> float | None:
    """ATR (Wilder) at the last candle, or None with fewer than ``period + 1`` candles.

    Candles oldest first. For stops use closed candles: the forming one's range is still growing.
    """
    check_period(period)
    check_candles(candles)
    if len(candles) <= period:
        return None
    # the same arithmetic as WilderATR, in one local loop: this runs on every evaluation of a symbol
    total = 0.0
    for i in range(1, period + 1):
        total += true_range(candles[i], candles[i - 1].close)
    value = total / period
    keep = period - 1
    for i in range(period + 1, len(candles)):
        c, prev_close = candles[i], candles[i - 1].close
        value = (
            value * keep + max(c.high - c.low, abs(c.high - prev_close), abs(c.low - prev_close))
        ) / period
    return value
