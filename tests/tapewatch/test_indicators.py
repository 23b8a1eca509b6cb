"""RSI and ATR: hand-computed cases, flat edge cases, a pandas reference on random data, bad input."""

from __future__ import annotations

import math
import random
from collections import deque

import pandas as pd
import pytest

from tapewatch.events import Candle
from tapewatch.indicators import WilderATR, WilderRSI, atr, check_candles, rsi, rsi_series

from .candle_helpers import make_candle, random_walk, series, unchecked


def reference_rsi(closes: list[float], period: int) -> float:
    """Wilder RSI the textbook way with pandas: SMA seed of the first `period` changes, then alpha=1/period."""
    delta = pd.Series(closes).diff().iloc[1:]
    gain, loss = delta.clip(lower=0), -delta.clip(upper=0)
    avg = []
    for s in (gain, loss):
        seeded = pd.concat([pd.Series([s.iloc[:period].mean()]), s.iloc[period:]], ignore_index=True)
        avg.append(seeded.ewm(alpha=1 / period, adjust=False).mean().iloc[-1])
    avg_gain, avg_loss = avg
    if avg_loss == 0:
        return 50.0 if avg_gain == 0 else 100.0
    return float(100 - 100 / (1 + avg_gain / avg_loss))


def reference_atr(candles: list[Candle], period: int) -> float:
    df = pd.DataFrame(
        {"h": [c.high for c in candles], "l": [c.low for c in candles], "c": [c.close for c in candles]}
    )
    prev = df["c"].shift()
    tr = pd.concat([df["h"] - df["l"], (df["h"] - prev).abs(), (df["l"] - prev).abs()], axis=1).max(axis=1)
    tr = tr.iloc[1:]  # the first candle has no previous close
    seeded = pd.concat([pd.Series([tr.iloc[:period].mean()]), tr.iloc[period:]], ignore_index=True)
    return float(seeded.ewm(alpha=1 / period, adjust=False).mean().iloc[-1])


# --- RSI ------------------------------------------------------------------------------------------


def test_rsi_hand_computed() -> None:
    # changes +1 +1 -1: avg gain 2/3, avg loss 1/3 -> RS 2 -> RSI 66.67
    assert rsi([1.0, 2.0, 3.0, 2.0], period=3) == pytest.approx(200 / 3)
    # then +1: gain (2/3*2 + 1)/3 = 7/9, loss (1/3*2)/3 = 2/9 -> RS 3.5 -> RSI 100 - 100/4.5
    assert rsi([1.0, 2.0, 3.0, 2.0, 3.0], period=3) == pytest.approx(100 - 100 / 4.5)
    # then -2: gain (7/9*2)/3 = 14/27, loss (2/9*2 + 2)/3 = 22/27 -> RS 14/22
    assert rsi([1.0, 2.0, 3.0, 2.0, 3.0, 1.0], period=3) == pytest.approx(100 - 100 / (1 + 14 / 22))


def test_rsi_flat_cases() -> None:
    assert rsi([float(x) for x in range(1, 11)], 9) == 100.0  # only gains
    assert rsi([float(x) for x in range(10, 0, -1)], 9) == 0.0  # only losses
    assert rsi([5.0] * 10, 9) == 50.0  # no movement
    # a loss long ago keeps a (decaying but) positive average loss: below 100
    value = rsi([2.0, 1.0, *[float(x) for x in range(2, 30)]], 3)
    assert value is not None and 99 < value < 100


def test_rsi_needs_period_plus_one_closes() -> None:
    assert rsi([], 9) is None
    assert rsi([1.0], 9) is None
    assert rsi([float(x) for x in range(9)], 9) is None  # 9 closes = 8 changes
    assert rsi([float(x) for x in range(10)], 9) == 100.0  # 10 closes = 9 changes: first value


@pytest.mark.parametrize("period", [1, 2, 9, 14])
def test_rsi_matches_pandas_reference_on_random_walks(period: int) -> None:
    rng = random.Random(period)
    for trial in range(20):
        n = rng.randint(period + 1, 300)
        closes = [c.close for c in random_walk(n, seed=trial * 100 + period)]
        assert rsi(closes, period) == pytest.approx(reference_rsi(closes, period), rel=1e-9, abs=1e-9)


def test_rsi_series_aligns_with_closes_and_agrees_with_rsi_on_every_prefix() -> None:
    closes = [c.close for c in random_walk(60, seed=3)]
    values = rsi_series(closes, 9)
    assert len(values) == len(closes)
    assert values[:9] == [None] * 9
    for i in range(len(closes)):
        assert values[i] == rsi(closes[: i + 1], 9)
    assert rsi_series([], 9) == []


def test_incremental_rsi_equals_batch_and_peek_does_not_change_state() -> None:
    closes = [c.close for c in random_walk(120, seed=11)]
    calc = WilderRSI(9)
    for i, close in enumerate(closes):
        forming = close * 1.003
        before = calc.value
        assert calc.peek(forming) == rsi([*closes[:i], forming], 9)  # closed bars plus the forming one
        assert calc.value == before
        assert calc.update(close) == rsi(closes[: i + 1], 9)
    assert WilderRSI(9).peek(100.0) is None  # nothing to compare with yet


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_rsi_rejects_non_finite_closes_naming_the_index(bad: float) -> None:
    with pytest.raises(ValueError, match=r"closes\[2\] must be finite"):
        rsi([1.0, 2.0, bad, 3.0], 2)
    with pytest.raises(ValueError, match=r"closes\[0\] must be finite"):
        rsi_series([bad], 2)
    calc = WilderRSI(2)
    with pytest.raises(ValueError, match="close must be finite"):
        calc.update(bad)
    calc.update(1.0)
    with pytest.raises(ValueError, match="close must be finite"):
        calc.update(bad)
    with pytest.raises(ValueError, match="close must be finite"):
        calc.peek(bad)


@pytest.mark.parametrize("period", [0, -3, 2.5, True, None])
def test_bad_periods_are_rejected(period: object) -> None:
    with pytest.raises(ValueError, match="period must be an integer >= 1"):
        rsi([1.0, 2.0, 3.0], period)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="period must be an integer >= 1"):
        WilderATR(period)  # type: ignore[arg-type]


# --- ATR ------------------------------------------------------------------------------------------


def test_atr_hand_computed() -> None:
    candles = series(highs=[10, 11, 12, 20, 13], lows=[8, 9, 10, 18, 11], closes=[9, 10, 11, 19, 12])
    # TRs from candle 1: max(2, 2, 0)=2; max(2, 2, 0)=2; gap up max(2, 9, 7)=9; gap down max(2, 6, 8)=8
    assert atr(candles[:2], 2) is None
    assert atr(candles[:3], 2) == 2.0  # mean of the first two TRs
    assert atr(candles[:4], 2) == 5.5  # (2*1 + 9) / 2
    assert atr(candles, 2) == 6.75  # (5.5*1 + 8) / 2


def test_atr_of_identical_candles_is_their_range_and_flat_candles_give_zero() -> None:
    assert atr(series([11.0] * 15, [9.0] * 15, [10.0] * 15), 14) == 2.0
    assert atr(series([10.0] * 15, [10.0] * 15), 14) == 0.0


def test_atr_needs_period_plus_one_candles() -> None:
    candles = random_walk(15, seed=1)
    assert atr([], 14) is None
    assert atr(candles[:14], 14) is None
    assert atr(candles, 14) is not None


@pytest.mark.parametrize("period", [1, 5, 14])
def test_atr_matches_pandas_reference_on_random_walks(period: int) -> None:
    rng = random.Random(period)
    for trial in range(20):
        candles = random_walk(rng.randint(period + 1, 300), seed=trial * 7 + period)
        assert atr(candles, period) == pytest.approx(reference_atr(candles, period), rel=1e-9)


def test_incremental_atr_equals_batch() -> None:
    candles = random_walk(100, seed=5)
    calc = WilderATR(14)
    for i, c in enumerate(candles):
        assert calc.update(c) == atr(candles[: i + 1], 14)


def test_atr_rejects_bad_candles() -> None:
    good = random_walk(20, seed=2)
    nan_high = [*good[:5], make_candle(good[5].open_time, math.nan, 1.0, 1.0), *good[6:]]
    with pytest.raises(ValueError, match=r"candle\[5\]\.high must be finite"):
        atr(nan_high, 14)
    with pytest.raises(ValueError, match=r"candle\[3\] has high 1\.0 below low 2\.0"):
        atr(
            [
                *good[:3],
                unchecked(make_candle(good[3].open_time, 2.0, 1.0, 1.5), high=1.0, low=2.0),
                *good[4:],
            ],
            14,
        )
    with pytest.raises(ValueError, match="oldest first"):
        atr(list(reversed(good)), 14)
    with pytest.raises(ValueError, match="oldest first"):
        atr([good[0], good[0]], 1)  # the same bar twice
    with pytest.raises(ValueError, match=r"\.close must be finite"):
        WilderATR(14).update(unchecked(make_candle(0, 2.0, 1.0, 1.5), close=math.inf))


def test_check_candles_accepts_real_shaped_candles() -> None:
    check_candles(random_walk(300, seed=9))
    check_candles([])


def test_atr_reads_a_deque_as_the_candle_series_keeps_it() -> None:
    candles = random_walk(40, seed=6)
    assert atr(deque(candles), 14) == atr(candles, 14)
