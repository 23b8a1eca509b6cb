"""Swing points, divergences and support/resistance on hand-built candles."""

from __future__ import annotations

import math
from collections import deque

import pytest

from tapewatch.indicators import rsi_series
from tapewatch.swings import (
    Levels,
    SwingPoint,
    divergence,
    support_resistance,
    swing_highs,
    swing_lows,
)
from tapewatch.swings import testing_resistance as is_testing_resistance  # aliased: pytest collects test*
from tapewatch.swings import testing_support as is_testing_support

from .candle_helpers import M15, random_walk, series


def positions(points: list[SwingPoint]) -> list[int]:
    return [p.position for p in points]


# --- swing points ---------------------------------------------------------------------------------


def test_swing_high_is_the_extreme_of_k_bars_each_side_and_the_last_k_bars_are_unconfirmed() -> None:
    highs = [1.0, 3, 2, 1, 2, 5, 4, 3, 2, 6, 1]
    candles = series(highs, [h - 0.5 for h in highs])
    assert swing_highs(candles, k=2) == [SwingPoint(5, 5 * M15, 5.0)]  # 6 at index 9 has one bar on its right
    assert positions(swing_highs(candles, k=1)) == [1, 5, 9]
    assert positions(swing_highs(candles, k=3)) == [5]


def test_swing_low_mirrors_swing_high() -> None:
    lows = [5.0, 3, 4, 5, 4, 1, 2, 3, 4, 0.5, 5]
    candles = series([lo + 0.5 for lo in lows], lows)
    assert swing_lows(candles, k=2) == [SwingPoint(5, 5 * M15, 1.0)]
    assert positions(swing_lows(candles, k=1)) == [1, 5, 9]


def test_a_flat_top_or_bottom_counts_once_at_its_first_bar() -> None:
    candles = series([1.0, 2, 5, 5, 2, 1, 1], [0.5, 1, 1, 1, 1, 0.5, 0.5])
    assert positions(swing_highs(candles, k=2)) == [2]
    flat = series([2.0] * 9, [1.0] * 9)
    assert swing_highs(flat) == [] and swing_lows(flat) == []  # a flat market has no swing


def test_too_few_candles_have_no_swings_and_bad_k_is_rejected() -> None:
    assert swing_highs([], 2) == []
    assert swing_lows(series([1.0, 2, 3, 2], [0.5, 1, 2, 1]), 2) == []  # needs 2k + 1 = 5 candles
    for k in (0, -1):
        with pytest.raises(ValueError, match="k must be an integer >= 1"):
            swing_highs(series([1.0] * 5, [0.5] * 5), k)


def test_swings_reject_bad_candles() -> None:
    candles = series([2.0, 3.0, math.nan, 3.0, 2.0], [1.0] * 5, [1.5] * 5)
    with pytest.raises(ValueError, match=r"candle\[2\]\.high must be finite"):
        swing_highs(candles)
    with pytest.raises(ValueError, match="oldest first"):
        swing_lows(list(reversed(series([2.0, 3.0, 4.0], [1.0] * 3))))


# --- divergence -------------------------------------------------------------------------------------

# Swing lows at 3 (10) and 9 (9: a lower low); one swing high only (at 6).
BULL_LOWS = [15.0, 14, 13, 10, 13, 14, 15, 14, 12, 9, 12, 13, 14]
BULL = series([lo + 1 for lo in BULL_LOWS], BULL_LOWS)
# Swing highs at 3 (15) and 9 (16: a higher high); one swing low only (at 6).
BEAR_HIGHS = [10.0, 11, 12, 15, 12, 11, 10, 11, 13, 16, 13, 12, 11]
BEAR = series(BEAR_HIGHS, [h - 1 for h in BEAR_HIGHS])


def rsi_at(n: int, values: dict[int, float | None]) -> list[float | None]:
    return [values.get(i, 50.0) for i in range(n)]


def test_fixtures_have_the_swings_the_divergence_tests_rely_on() -> None:
    assert positions(swing_lows(BULL)) == [3, 9] and positions(swing_highs(BULL)) == [6]
    assert positions(swing_highs(BEAR)) == [3, 9] and positions(swing_lows(BEAR)) == [6]


def test_bullish_divergence_lower_low_in_price_higher_low_in_rsi() -> None:
    assert divergence(BULL, rsi_at(13, {3: 25.0, 9: 30.0})) == "bullish"
    assert divergence(BULL, rsi_at(13, {3: 25.0, 9: 20.0})) is None  # RSI confirms the low: no divergence
    assert divergence(BULL, rsi_at(13, {3: 25.0, 9: 25.0})) is None  # equal RSI: no divergence


def test_bearish_divergence_higher_high_in_price_lower_high_in_rsi() -> None:
    assert divergence(BEAR, rsi_at(13, {3: 75.0, 9: 70.0})) == "bearish"
    assert divergence(BEAR, rsi_at(13, {3: 75.0, 9: 80.0})) is None
    assert divergence(BEAR, rsi_at(13, {3: 75.0, 9: 75.0})) is None


def test_equal_price_swings_are_no_divergence() -> None:
    lows = list(BULL_LOWS)
    lows[9] = 10.0  # a double bottom
    candles = series([lo + 1 for lo in lows], lows)
    assert divergence(candles, rsi_at(13, {3: 25.0, 9: 30.0})) is None


def test_lookback_boundary_includes_a_swing_exactly_lookback_candles_back() -> None:
    rsi = rsi_at(13, {3: 25.0, 9: 30.0})
    assert divergence(BULL, rsi, lookback=10) == "bullish"  # index 3 = 13 - 10: the oldest bar in the window
    assert divergence(BULL, rsi, lookback=9) is None  # only one swing low left


def test_missing_rsi_at_a_swing_gives_no_divergence() -> None:
    assert divergence(BULL, rsi_at(13, {3: None, 9: 30.0})) is None
    assert divergence(BULL, rsi_at(13, {3: math.nan, 9: 30.0})) is None


def test_when_both_appear_the_more_recent_swing_wins_and_the_same_bar_is_ambiguous() -> None:
    highs = [10.0, 11, 12, 15, 12, 11, 10, 11, 12, 13, 14, 17, 14, 13, 12]  # swing highs 3, 11
    lows = [8.0, 8, 8, 8, 8, 5, 8, 8, 8, 4, 8, 8, 8, 8, 8]  # swing lows 5, 9
    candles = series(highs, lows)
    rsi = rsi_at(15, {3: 80.0, 11: 70.0, 5: 20.0, 9: 25.0})
    assert divergence(candles, rsi) == "bearish"  # completed at 11, the bullish one at 9
    lows_later = [8.0, 8, 8, 8, 8, 5, 8, 8, 8, 8, 8, 8, 4, 8, 8]  # swing lows 5, 12
    assert (
        divergence(series(highs, lows_later), rsi_at(15, {3: 80.0, 11: 70.0, 5: 20.0, 12: 25.0})) == "bullish"
    )
    # bar 9 is an outside bar: a higher high and a lower low at once
    outside_highs = [10.0, 11, 12, 15, 12, 11, 10, 11, 12, 16, 12, 11, 10]
    outside_lows = [8.0, 8, 8, 8, 8, 5, 8, 8, 8, 4, 8, 8, 8]
    both = rsi_at(13, {3: 80.0, 5: 20.0, 9: 50.0})
    assert positions(swing_highs(series(outside_highs, outside_lows))) == [3, 9]
    assert divergence(series(outside_highs, outside_lows), both) is None


def test_divergence_runs_on_rsi_series_of_real_shaped_candles() -> None:
    candles = random_walk(100, seed=4)
    result = divergence(candles, rsi_series([c.close for c in candles], 9))
    assert result in ("bullish", "bearish", None)


def test_divergence_rejects_misaligned_rsi_and_bad_lookback() -> None:
    with pytest.raises(ValueError, match="12 values for 13 candles"):
        divergence(BULL, [50.0] * 12)
    with pytest.raises(ValueError, match="lookback must be an integer >= 1"):
        divergence(BULL, [50.0] * 13, lookback=0)
    assert divergence([], []) is None


# --- support and resistance -------------------------------------------------------------------------

# swing lows at 3 (95) and 7 (98); swing highs at 5 (106) and 9 (103)
SR_LOWS = [99.0, 99, 99, 95, 99, 99, 99, 98, 99, 99, 99, 99, 99, 99, 99]
SR_HIGHS = [101.0, 101, 101, 101, 101, 106, 101, 101, 101, 103, 101, 101, 101, 101, 101]
SR = series(SR_HIGHS, SR_LOWS)


def test_support_resistance_nearest_swing_within_one_atr() -> None:
    assert positions(swing_lows(SR)) == [3, 7] and positions(swing_highs(SR)) == [5, 9]
    assert support_resistance(SR, 100.0, 3.0) == Levels(98.0, 103.0)
    assert support_resistance(SR, 100.0, 10.0) == Levels(98.0, 103.0)  # the nearest of several
    assert support_resistance(SR, 100.0, 2.5) == Levels(98.0, None)
    assert support_resistance(SR, 100.0, 1.0) == Levels(None, None)


def test_support_resistance_band_edges_are_inclusive() -> None:
    assert support_resistance(SR, 100.0, 2.0) == Levels(98.0, None)  # 100 - 2 = 98: in
    assert support_resistance(SR, 101.0, 2.0) == Levels(None, 103.0)  # 101 + 2 = 103: in, 101 - 2 = 99 > 98
    assert support_resistance(SR, 98.0, 0.0) == Levels(98.0, None)  # zero ATR: only a level at the price
    assert support_resistance(SR, 100.0, 2.0, band=0.5) == Levels(None, None)


def test_levels_on_the_wrong_side_do_not_count() -> None:
    # price under every swing low: no support, and swing lows above are not resistance (DESIGN §4)
    assert support_resistance(SR, 94.0, 20.0) == Levels(None, 103.0)
    assert support_resistance(SR, 107.0, 20.0) == Levels(98.0, None)


def test_testing_support_and_resistance_predicates() -> None:
    assert is_testing_support(100.0, 98.0, 2.0)  # exactly 1 ATR above
    assert not is_testing_support(100.0, 98.0, 1.9)
    assert is_testing_support(98.0, 98.0, 2.0)  # on the level
    assert not is_testing_support(97.9, 98.0, 2.0)  # broken
    assert not is_testing_support(100.0, None, 2.0)
    assert is_testing_support(99.0, 98.0, 2.0, tolerance=0.5) and not is_testing_support(
        99.1, 98.0, 2.0, tolerance=0.5
    )
    assert is_testing_resistance(101.0, 103.0, 2.0)
    assert not is_testing_resistance(100.9, 103.0, 2.0)
    assert is_testing_resistance(103.0, 103.0, 2.0)
    assert not is_testing_resistance(103.1, 103.0, 2.0)  # broken
    assert not is_testing_resistance(101.0, None, 2.0)


@pytest.mark.parametrize(
    ("price", "atr", "message"),
    [
        (math.nan, 1.0, "price must be finite and > 0"),
        (0.0, 1.0, "price must be finite and > 0"),
        (-5.0, 1.0, "price must be finite and > 0"),
        (100.0, math.nan, "atr must be finite and >= 0"),
        (100.0, -1.0, "atr must be finite and >= 0"),
        (100.0, math.inf, "atr must be finite and >= 0"),
    ],
)
def test_levels_reject_bad_price_and_atr(price: float, atr: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        support_resistance(SR, price, atr)
    with pytest.raises(ValueError, match=message):
        is_testing_support(price, 98.0, atr)
    with pytest.raises(ValueError, match=message):
        is_testing_resistance(price, 103.0, atr)


def test_support_resistance_rejects_a_bad_band_and_handles_no_candles() -> None:
    with pytest.raises(ValueError, match="band must be finite and >= 0"):
        support_resistance(SR, 100.0, 2.0, band=-1.0)
    assert support_resistance([], 100.0, 2.0) == Levels(None, None)


def naive_swings(values: list[float], k: int, highs: bool) -> list[int]:
    """The definition, bar by bar: strictly beyond the k before, at least as far as the k after."""
    s = 1.0 if highs else -1.0
    return [
        i
        for i in range(k, len(values) - k)
        if all(s * values[i] > s * values[j] for j in range(i - k, i))
        and all(s * values[i] >= s * values[j] for j in range(i + 1, i + k + 1))
    ]


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_vectorised_swings_match_the_definition_on_random_candles_with_ties(k: int) -> None:
    for seed in range(10):
        candles = random_walk(150, seed=seed)
        # round to a coarse tick so equal highs/lows (flat tops and bottoms) happen often
        highs = [round(c.high, 0) for c in candles]
        lows = [min(round(c.low, 0), h) for c, h in zip(candles, highs, strict=True)]
        coarse = series(highs, lows)
        assert positions(swing_highs(coarse, k)) == naive_swings(highs, k, highs=True)
        assert positions(swing_lows(coarse, k)) == naive_swings(lows, k, highs=False)


def test_swings_read_a_deque_as_the_candle_series_keeps_it() -> None:
    candles = random_walk(50, seed=1)
    assert swing_highs(deque(candles)) == swing_highs(candles)
    assert support_resistance(deque(candles), candles[-1].close, 5.0) == support_resistance(
        candles, candles[-1].close, 5.0
    )
