"""The one-call candle features: the same values as the single functions, on a live-shaped candle series."""

from __future__ import annotations

import math

import pytest

from tapewatch.candle_features import CandleFeatures, candle_features
from tapewatch.candles import CandleSeries
from tapewatch.indicators import atr, rsi, rsi_series
from tapewatch.swings import divergence, support_resistance, swing_lows

from .candle_helpers import make_candle, random_walk


def live_series(n_closed: int, seed: int) -> CandleSeries:
    """A CandleSeries holding ``n_closed`` closed 15m candles and a forming one, as the engine keeps it."""
    walk = random_walk(n_closed + 1, seed)
    series = CandleSeries(keep=100)
    series.extend_history(walk[:-1])
    last = walk[-1]
    series.update(make_candle(last.open_time, last.high, last.low, last.close, open_=last.open, closed=False))
    return series


def test_features_combine_the_single_functions_as_design_reads_them() -> None:
    series = live_series(120, seed=8)
    bars = series.bars(include_forming=True)
    closed = series.bars(include_forming=False)
    assert len(bars) == 101 and not bars[-1].closed
    price = bars[-1].close
    got = candle_features(bars, price)
    assert got.rsi == rsi([c.close for c in bars], 9)  # closed 15m candles plus the forming one
    assert got.atr == atr(closed, 14)  # closed candles only
    assert got.atr is not None and got.atr != atr(bars, 14)
    assert got.divergence == divergence(bars, rsi_series([c.close for c in bars], 9), 30)
    assert (got.support, got.resistance) == support_resistance(bars, price, got.atr)


def test_levels_found_when_price_sits_near_a_swing() -> None:
    bars = live_series(100, seed=3).bars()
    got = candle_features(bars, bars[-1].close)
    assert got.atr is not None
    # put the price half an ATR above a swing low: a swing low at least that high is the support
    wide = support_resistance(bars, bars[-1].close, got.atr * 100)
    assert wide.support is not None
    price = wide.support + got.atr / 2
    near = candle_features(bars, price)
    assert near.support is not None and wide.support <= near.support <= price
    assert near.support in {p.price for p in swing_lows(bars)}


def test_too_few_candles_give_none_everywhere() -> None:
    assert candle_features([], 100.0) == CandleFeatures(None, None, None, None, None)
    few = random_walk(10, seed=1)
    got = candle_features(few, few[-1].close)
    assert got.rsi is not None  # 10 closes are enough for RSI(9)
    assert got.atr is None and got.support is None and got.resistance is None  # ATR(14) needs 15


def test_bad_price_and_bad_candles_are_rejected() -> None:
    bars = random_walk(30, seed=2)
    for price in (math.nan, 0.0, -1.0):
        with pytest.raises(ValueError, match="price must be finite and > 0"):
            candle_features(bars, price)
    with pytest.raises(ValueError, match="oldest first"):
        candle_features(list(reversed(bars)), 100.0)
