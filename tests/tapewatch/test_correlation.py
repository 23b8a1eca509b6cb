"""Log returns, Pearson correlation and the 240-minute aligned return correlation of the risk gate."""

from __future__ import annotations

import math
import random

import numpy as np
import pandas as pd
import pytest

from tapewatch.correlation import aligned_closes, log_returns, pearson, return_correlation
from tapewatch.events import Candle

from .candle_helpers import M1, make_candle


def minutes(closes: list[float], start_minute: int = 0, skip: frozenset[int] = frozenset()) -> list[Candle]:
    return [
        make_candle((start_minute + i) * M1, c * 1.001, c * 0.999, c, length_ms=M1)
        for i, c in enumerate(closes)
        if start_minute + i not in skip
    ]


def walk(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    out, price = [], 100.0
    for _ in range(n):
        price *= math.exp(rng.gauss(0, 0.002))
        out.append(price)
    return out


# --- log returns ------------------------------------------------------------------------------------


def test_log_returns() -> None:
    assert log_returns([100.0, 110.0, 99.0]) == pytest.approx([math.log(1.1), math.log(0.9)])
    assert log_returns([]).size == 0
    assert log_returns([5.0]).size == 0
    assert log_returns(np.array([1.0, math.e])) == pytest.approx([1.0])


@pytest.mark.parametrize(
    ("closes", "message"),
    [
        ([1.0, 0.0], r"closes\[1\] must be > 0"),
        ([-1.0, 2.0], r"closes\[0\] must be > 0"),
        ([1.0, math.nan], r"closes\[1\] must be finite"),
        ([math.inf], r"closes\[0\] must be finite"),
        ([[1.0, 2.0]], "must be one-dimensional"),
    ],
)
def test_log_returns_reject_bad_closes(closes: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        log_returns(closes)


# --- pearson ----------------------------------------------------------------------------------------


def test_pearson_matches_numpy_on_random_data() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(30, 400))
        x = rng.normal(size=n)
        y = 0.5 * x + rng.normal(size=n)
        assert pearson(x, y) == pytest.approx(float(np.corrcoef(x, y)[0, 1]), abs=1e-12)


def test_pearson_perfect_and_bounded() -> None:
    x = [float(i) for i in range(40)]
    assert pearson(x, [2 * v + 3 for v in x]) == 1.0
    assert pearson(x, [-v for v in x]) == -1.0


def test_pearson_needs_min_points() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=30), rng.normal(size=30)
    assert pearson(x[:29], y[:29]) is None
    assert pearson(x, y) is not None  # exactly 30
    assert pearson(x[:5], y[:5], min_points=5) is not None
    assert pearson([], []) is None
    with pytest.raises(ValueError, match="min_points must be an integer >= 1"):
        pearson(x, y, min_points=0)


def test_pearson_of_a_constant_series_is_none_even_with_rounding_noise() -> None:
    y = list(np.random.default_rng(3).normal(size=50))
    assert pearson([0.0] * 50, y) is None
    assert pearson(y, [0.1] * 50) is None  # mean of 0.1s is not exactly 0.1: must still be None


def test_pearson_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="same length, got 31 and 30"):
        pearson([0.0] * 31, [0.0] * 30)
    with pytest.raises(ValueError, match=r"b\[4\] must be finite"):
        pearson([1.0] * 30, [1.0] * 4 + [math.nan] * 26)


# --- aligned return correlation ---------------------------------------------------------------------


def reference_return_correlation(a: list[Candle], b: list[Candle], window: int = 240) -> float:
    sa = pd.Series({c.open_time: c.close for c in a})
    sb = pd.Series({c.open_time: c.close for c in b})
    df = pd.concat([sa, sb], axis=1, join="inner").sort_index()
    end = df.index.max()
    first = int((df.index > end - window * M1).argmax())
    df = df.iloc[max(first - 1, 0) :]  # the close before the window is the base of its first return
    rets = np.log(df).diff().dropna()
    return float(rets[0].corr(rets[1]))


def test_return_correlation_matches_a_pandas_reference_with_missing_minutes() -> None:
    base = walk(400, seed=1)
    noise = walk(400, seed=2)
    a = minutes([b * n / 100 for b, n in zip(base, noise, strict=True)], skip=frozenset({50, 300, 301, 390}))
    b = minutes(base, skip=frozenset({120, 250, 399}))
    got = return_correlation(a, b)
    assert got is not None and 0.3 < got < 0.95
    assert got == pytest.approx(reference_return_correlation(a, b), abs=1e-12)


def test_only_the_last_240_minutes_count_and_end_time_selects_an_earlier_window() -> None:
    closes = walk(500, seed=3)
    a = minutes(closes)
    # b moves against a for the first 260 minutes, then with it: log returns -r, then 2r
    b = minutes([1e4 / c if i < 260 else c**2 / closes[259] ** 3 * 1e4 for i, c in enumerate(closes)])
    xa, xb = aligned_closes(a, b)
    assert len(xa) == len(xb) == 241 and xa[0] == closes[259]  # the base of the first return, then 260..499
    assert return_correlation(a, b) == pytest.approx(1.0)
    end = 260 * M1  # minutes 20..259 closed within (end - 240 min, end]; minute 19's close is their base
    xa, _ = aligned_closes(a, b, end_time=end)
    assert len(xa) == 241 and xa[0] == closes[19] and xa[-1] == closes[259]
    assert return_correlation(a, b, end_time=end) == pytest.approx(-1.0)


@pytest.mark.parametrize("offset", [0, 1, 30_000, M1 - 2])  # M1 - 1: minute 300 would have closed
def test_a_full_window_gives_240_returns_at_any_time_within_the_minute(offset: int) -> None:
    closes = walk(300, seed=6)
    a, b = minutes(closes), minutes([c * 1.5 for c in closes])
    now = 300 * M1 + offset  # minute 299 closed at 300 * M1 - 1; minute 300 is forming (not passed)
    xa, xb = aligned_closes(a, b, end_time=now)
    assert len(log_returns(xa)) == len(log_returns(xb)) == 240
    assert xa[0] == closes[59] and xa[-1] == closes[299]


def test_a_candle_closing_after_end_time_is_left_out_and_an_old_base_is_not_taken() -> None:
    closes = walk(300, seed=7)
    a, b = minutes(closes), minutes([c * 0.5 for c in closes])
    xa, _ = aligned_closes(a, b, end_time=300 * M1 - 2)  # minute 299 closes 1 ms later
    assert len(xa) == 241 and xa[-1] == closes[298] and xa[0] == closes[58]
    # minute 59 (the base) missing: minute 58 closed more than one candle before the window, no base
    gap = minutes(closes, skip=frozenset({59}))
    xa, _ = aligned_closes(gap, b, end_time=300 * M1)
    assert len(xa) == 240 and xa[0] == closes[60]
    # minute 60 (the first of the window) missing: 59 is the base, its return spans to minute 61
    gap = minutes(closes, skip=frozenset({60}))
    xa, _ = aligned_closes(gap, b, end_time=300 * M1)
    assert len(xa) == 240 and xa[0] == closes[59] and xa[1] == closes[61]


def test_too_few_common_minutes_gives_none() -> None:
    closes = walk(100, seed=4)
    a = minutes(closes)
    b = minutes([c * 2 for c in closes])
    assert return_correlation(a[:30], b[:30]) is None  # 30 closes: 29 returns
    assert return_correlation(a[:31], b[:31]) == pytest.approx(1.0)  # 30 returns
    assert return_correlation(a[:50], minutes(closes[:50], start_minute=60)) is None  # no common minute
    assert return_correlation([], b) is None
    flat = minutes([100.0] * 100)
    assert return_correlation(a, flat) is None  # zero variance


def test_return_correlation_rejects_bad_candles() -> None:
    a = minutes(walk(40, seed=5))
    with pytest.raises(ValueError, match="oldest first"):
        return_correlation(list(reversed(a)), a)
    with pytest.raises(ValueError, match="window_ms must be an integer >= 1"):
        return_correlation(a, a, window_ms=0)
