"""Swing points, RSI divergences and support/resistance levels from candles (spec 7.1 optional conditions).

A **swing high** is a candle whose high is the highest of the window of ``k`` candles on each side (a swing
low likewise with lows). Ties count once: the candle must be strictly above the ``k`` before it and at least
equal to the ``k`` after it, so the first candle of a flat top is the swing. The last ``k`` candles are never
swings: their right side has not printed yet (no look-ahead).

DESIGN §4: divergences over the last 30 candles by swing points; support/resistance are the swing lows/highs
within 1 ATR of price.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np

from tapewatch.events import Candle
from tapewatch.indicators import check_candles, check_period

Divergence = Literal["bullish", "bearish"]


class SwingPoint(NamedTuple):
    """A swing high or low: its position in the candles passed, the candle's open time and the price."""

    position: int
    open_time: int
    price: float


class Levels(NamedTuple):
    """The nearest swing low at or below price and swing high at or above it, each within the ATR band."""

    support: float | None
    resistance: float | None


def _swings(values: list[float], k: int) -> list[int]:
    """Positions of the swing highs of ``values`` (negate them for swing lows), vectorised: O(n·k)."""
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n < 2 * k + 1:
        return []
    centre = x[k : n - k]
    # running maxima of the k neighbours on each side, built from shifted views (no per-bar Python loop)
    left = x[k - 1 : n - k - 1].copy()
    right = x[k + 1 : n - k + 1].copy()
    for j in range(2, k + 1):
        np.maximum(left, x[k - j : n - k - j], out=left)
        np.maximum(right, x[k + j : n - k + j], out=right)
    return [int(i) + k for i in np.flatnonzero((centre > left) & (centre >= right))]


def _highs(candles: Sequence[Candle], k: int) -> list[SwingPoint]:
    return [
        SwingPoint(i, candles[i].open_time, candles[i].high) for i in _swings([c.high for c in candles], k)
    ]


def _lows(candles: Sequence[Candle], k: int) -> list[SwingPoint]:
    return [
        SwingPoint(i, candles[i].open_time, candles[i].low) for i in _swings([-c.low for c in candles], k)
    ]


def swing_highs(candles: Sequence[Candle], k: int = 2) -> list[SwingPoint]:
    """Swing highs of ``candles`` (oldest first), oldest first."""
    check_period(k, "k")
    check_candles(candles)
    return _highs(candles, k)


def swing_lows(candles: Sequence[Candle], k: int = 2) -> list[SwingPoint]:
    """Swing lows of ``candles`` (oldest first), oldest first."""
    check_period(k, "k")
    check_candles(candles)
    return _lows(candles, k)


def _rsi_at(rsi_values: Sequence[float | None], i: int) -> float | None:
    value = rsi_values[i]
    # None (warm-up) and NaN (the pandas way of saying the same) both mean "no RSI here"
    return None if value is None or math.isnan(value) else value


def _last_pair(
    points: list[SwingPoint], rsi_values: Sequence[float | None]
) -> tuple[SwingPoint, float, SwingPoint, float] | None:
    if len(points) < 2:
        return None
    first, second = points[-2], points[-1]
    r1, r2 = _rsi_at(rsi_values, first.position), _rsi_at(rsi_values, second.position)
    if r1 is None or r2 is None:
        return None
    return first, r1, second, r2


def divergence(
    candles: Sequence[Candle],
    rsi_values: Sequence[float | None],
    lookback: int = 30,
    k: int = 2,
) -> Divergence | None:
    """RSI divergence between the last two swing points within the last ``lookback`` candles.

    ``rsi_values[i]`` is the RSI at candle ``i`` (same length as ``candles``, e.g. :func:`rsi_series` of
    their closes; None or NaN where there is none). Bullish: the later swing low is lower in price but
    higher in RSI. Bearish: the later swing high is higher in price but lower in RSI. Equal prices or equal
    RSI values are no divergence. When both appear, the one completed by the more recent swing wins (the
    same candle: None, it is ambiguous). Swings are found over all candles passed, so one near the start of
    the lookback window still sees its left side. Raises ValueError on mismatched lengths or bad arguments.
    """
    check_period(lookback, "lookback")
    check_period(k, "k")
    check_candles(candles)
    if len(rsi_values) != len(candles):
        raise ValueError(
            f"rsi_values must align with candles: {len(rsi_values)} values for {len(candles)} candles"
        )
    start = len(candles) - lookback
    lows = [p for p in _lows(candles, k) if p.position >= start]
    highs = [p for p in _highs(candles, k) if p.position >= start]
    bullish_at = bearish_at = -1
    pair = _last_pair(lows, rsi_values)
    if pair is not None:
        first, r1, second, r2 = pair
        if second.price < first.price and r2 > r1:
            bullish_at = second.position
    pair = _last_pair(highs, rsi_values)
    if pair is not None:
        first, r1, second, r2 = pair
        if second.price > first.price and r2 < r1:
            bearish_at = second.position
    if bullish_at > bearish_at:
        return "bullish"
    if bearish_at > bullish_at:
        return "bearish"
    return None


def _check_price_atr(price: float, atr: float) -> None:
    if not math.isfinite(price) or price <= 0:
        raise ValueError(f"price must be finite and > 0, got {price!r}")
    if not math.isfinite(atr) or atr < 0:
        raise ValueError(f"atr must be finite and >= 0, got {atr!r}")


def support_resistance(
    candles: Sequence[Candle], price: float, atr: float, k: int = 2, band: float = 1.0
) -> Levels:
    """The nearest swing low in ``[price - band·atr, price]`` and swing high in ``[price, price + band·atr]``.

    Either is None when no swing lies in its band. Candles oldest first (the context, e.g. the last 100
    closed 15m candles). Raises ValueError for a non-positive/NaN price or a negative/NaN ATR or band.
    """
    _check_price_atr(price, atr)
    if not math.isfinite(band) or band < 0:
        raise ValueError(f"band must be finite and >= 0, got {band!r}")
    check_period(k, "k")
    check_candles(candles)
    reach = band * atr
    support = max(
        (p.price for p in swing_lows(candles, k) if price - reach <= p.price <= price), default=None
    )
    resistance = min(
        (p.price for p in swing_highs(candles, k) if price <= p.price <= price + reach), default=None
    )
    return Levels(support, resistance)


def testing_support(price: float, support: float | None, atr: float, tolerance: float = 1.0) -> bool:
    """True when price sits on or above ``support`` by at most ``tolerance`` ATR (spec 7.1 ``support_level``).

    A price below the support has broken it: not a test. No support: False.
    """
    _check_price_atr(price, atr)
    return support is not None and support <= price <= support + tolerance * atr


def testing_resistance(price: float, resistance: float | None, atr: float, tolerance: float = 1.0) -> bool:
    """True when price sits on or below ``resistance`` by at most ``tolerance`` ATR (spec 7.1
    ``resistance_level``). A price above the resistance has broken it: not a test. No resistance: False."""
    _check_price_atr(price, atr)
    return resistance is not None and resistance - tolerance * atr <= price <= resistance
