"""Return correlation between symbols, for the risk gate (DESIGN §4, spec 8.1 ``max_correlation``).

Pearson correlation of 1-minute log returns over the last 240 minutes: the two symbols' 1m candles are
aligned by open time, and a return is taken between consecutive *common* minutes, so both series always
measure the same interval even when one misses a candle. The returns are those of the candles that closed
within the window, each from the close before it: 240 closed candles and the one before them, 241 closes,
give the 240 returns.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from tapewatch.events import Candle
from tapewatch.indicators import check_candles, check_period

FloatArray = npt.NDArray[np.float64]

#: Fewest aligned returns a correlation is computed from.
MIN_POINTS = 30
#: The window of 1m candles compared, ms (240 minutes).
WINDOW_MS = 240 * 60_000


def _as_finite_vector(values: npt.ArrayLike, what: str) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{what}[{int(bad[0])}] must be finite, got {arr[bad[0]]!r}")
    return arr


def log_returns(closes: npt.ArrayLike) -> FloatArray:
    """``ln(close[i] / close[i-1])``, one shorter than ``closes`` (empty for fewer than 2).

    Raises ValueError for a NaN/infinite or non-positive close.
    """
    arr = _as_finite_vector(closes, "closes")
    bad = np.flatnonzero(arr <= 0)
    if bad.size:
        raise ValueError(f"closes[{int(bad[0])}] must be > 0, got {arr[bad[0]]!r}")
    if arr.size < 2:
        return np.empty(0, dtype=np.float64)
    return np.diff(np.log(arr))


def pearson(a: npt.ArrayLike, b: npt.ArrayLike, min_points: int = MIN_POINTS) -> float | None:
    """Pearson correlation of two equal-length series, in [-1, 1].

    None with fewer than ``min_points`` points or when either series is constant (zero variance: the
    correlation is undefined, not 0). Raises ValueError for different lengths or a NaN/infinite value.
    """
    check_period(min_points, "min_points")
    x = _as_finite_vector(a, "a")
    y = _as_finite_vector(b, "b")
    if x.size != y.size:
        raise ValueError(f"series must have the same length, got {x.size} and {y.size}")
    if x.size < max(min_points, 2):
        return None
    # exact test for a constant series: a mean-centred one may keep rounding noise and fake a correlation
    if x.max() == x.min() or y.max() == y.min():
        return None
    dx = x - x.mean()
    dy = y - y.mean()
    denom = math.sqrt(float(dx @ dx) * float(dy @ dy))
    if denom == 0.0:  # variance that underflowed
        return None
    return max(-1.0, min(1.0, float(dx @ dy) / denom))


def aligned_closes(
    a: Sequence[Candle], b: Sequence[Candle], window_ms: int = WINDOW_MS, end_time: int | None = None
) -> tuple[FloatArray, FloatArray]:
    """Closes of ``a`` and ``b`` at the open times both have, oldest first, for the returns of ``window_ms``.

    Those of the common candles that closed within ``(end - window_ms, end]`` (by close time), preceded by
    the common close just before them, the base of the first return, when it closed at most one candle
    length before the window (a full 240-minute window of 1m candles: 241 closes, 240 returns). ``end`` is
    ``end_time`` when given (the evaluation's event time; candles closing after it are ignored), else the
    latest common close time. Raises ValueError for bad candles (see
    :func:`tapewatch.indicators.check_candles`) or a non-positive window.
    """
    check_period(window_ms, "window_ms")
    check_candles(a)
    check_candles(b)
    b_close = {c.open_time: c.close for c in b}
    # (open time, close time, close of a, close of b) of the common candles, oldest first
    common = [(c.open_time, c.close_time, c.close, b_close[c.open_time]) for c in a if c.open_time in b_close]
    if end_time is not None:
        common = [row for row in common if row[1] <= end_time]
    empty = np.empty(0, dtype=np.float64)
    if not common:
        return empty, empty.copy()
    end = common[-1][1] if end_time is None else end_time
    start = end - window_ms
    first = bisect.bisect_right([row[1] for row in common], start)
    if first == len(common):  # nothing closed within the window
        return empty, empty.copy()
    if first > 0:
        o, c = common[first - 1][:2]
        if c > start - (c - o + 1):  # the base closed at most one candle length before the window
            first -= 1
    rows = common[first:]
    return (
        np.fromiter((r[2] for r in rows), dtype=np.float64, count=len(rows)),
        np.fromiter((r[3] for r in rows), dtype=np.float64, count=len(rows)),
    )


def return_correlation(
    a: Sequence[Candle],
    b: Sequence[Candle],
    window_ms: int = WINDOW_MS,
    min_points: int = MIN_POINTS,
    end_time: int | None = None,
) -> float | None:
    """Pearson correlation of the log returns of two symbols' aligned 1m closes (see :func:`aligned_closes`).

    Pass closed 1m candles, oldest first. None with fewer than ``min_points`` aligned returns or a flat
    series. A full window gives 240 returns, from 241 closes.
    """
    xa, xb = aligned_closes(a, b, window_ms, end_time)
    return pearson(log_returns(xa), log_returns(xb), min_points)
