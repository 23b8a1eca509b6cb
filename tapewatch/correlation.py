"""Return correlation between symbols, for the risk gate (DESIGN §4, spec 8.1 ``max_correlation``).

Pearson correlation of 1-minute log returns over the last 240 minutes: the two symbols' 1m candles are
aligned by open time, and a return is taken between consecutive *common* minutes, so both series always
measure the same interval even when one misses a candle.
"""

from __future__ import annotations

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
    """Closes of ``a`` and ``b`` at the open times both have, oldest first, within ``window_ms``.

    The window is ``(end - window_ms, end]`` in open time; ``end`` is ``end_time`` when given (the
    evaluation's event time; later candles are ignored), else the latest common open time. Raises ValueError
    for bad candles (see :func:`tapewatch.indicators.check_candles`) or a non-positive window.
    """
    check_period(window_ms, "window_ms")
    check_candles(a)
    check_candles(b)
    b_close = {c.open_time: c.close for c in b}
    common = [(c.open_time, c.close, b_close[c.open_time]) for c in a if c.open_time in b_close]
    if end_time is not None:
        common = [row for row in common if row[0] <= end_time]
    if not common:
        empty = np.empty(0, dtype=np.float64)
        return empty, empty.copy()
    end = common[-1][0] if end_time is None else end_time
    start = end - window_ms
    rows = [row for row in common if row[0] > start]
    return (
        np.fromiter((r[1] for r in rows), dtype=np.float64, count=len(rows)),
        np.fromiter((r[2] for r in rows), dtype=np.float64, count=len(rows)),
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
    series. 240 one-minute candles give 239 returns.
    """
    xa, xb = aligned_closes(a, b, window_ms, end_time)
    return pearson(log_returns(xa), log_returns(xb), min_points)
