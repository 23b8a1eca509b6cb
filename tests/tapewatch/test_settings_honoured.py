"""Spec CONFIG / DATA_CONFIG keys are honoured or refused at load, never accepted and ignored: ``context_tf`` is
the VWAP window, ``primary_tf`` other than 15m is refused, ``kline_history_bars`` stays within one Binance
request, and universe score weights that are all 0 are refused."""

from __future__ import annotations

import pytest

from tapewatch.adapters.binance_weights import klines_weight
from tapewatch.errors import ConfigError
from tapewatch.market_klines import history_klines
from tapewatch.settings import load_settings
from tapewatch.universe import ScoreComponents, score, weights_from
from tests.tapewatch.engine_rig import SYM, T0, Rig

WEIGHTS = (
    "universe_weight_volume",
    "universe_weight_liquidity",
    "universe_weight_volatility",
    "universe_weight_activity",
)


@pytest.mark.parametrize("value", ["5m", "1h", "7m"])
def test_a_primary_timeframe_other_than_15m_is_refused_with_the_reason(value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(primary_tf=value)
    message = str(err.value)
    assert f"primary_tf (TAPEWATCH_PRIMARY_TF) = {value!r}" in message
    assert "only 15m is supported: RSI, ATR and levels are read on 15m candles (DESIGN §4)" in message
    assert load_settings(primary_tf="15m").primary_tf == "15m"


def _vwap_after_two_trades(context_tf: str) -> float | None:
    """VWAP after a trade of 1 at 100 and, 20 minutes later, one of 1 at 200 (the clock moved market-wide)."""
    rig = Rig(context_tf=context_tf)
    rig.trade(T0, 100.0, 1.0)
    rig.clock(T0 + 1_200_000)
    rig.trade(T0 + 1_200_000, 200.0, 1.0)
    return rig.market.symbols[SYM].vwap.vwap


def test_context_tf_is_the_vwap_window() -> None:
    # 20 minutes apart: both trades are within an hour, only the newer within 15 minutes
    assert _vwap_after_two_trades("1h") == pytest.approx(150.0)
    assert _vwap_after_two_trades("15m") == pytest.approx(200.0)
    assert _vwap_after_two_trades("30m") == pytest.approx(150.0)
    assert load_settings(context_tf="4h").context_tf_ms == 14_400_000


@pytest.mark.parametrize("value", ["5m", "6h", "1d", "1M"])
def test_a_context_timeframe_outside_15m_to_4h_is_refused_naming_the_allowed_values(value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(context_tf=value)
    message = str(err.value)
    assert f"context_tf (TAPEWATCH_CONTEXT_TF) = {value!r}" in message
    assert "allowed: one of 15m, 30m, 1h, 2h, 4h" in message and "VWAP window" in message


def test_kline_history_bars_stay_within_one_binance_request() -> None:
    with pytest.raises(ConfigError, match=r"kline_history_bars .* = 1500: .*allowed: >= 1 and <= 1499"):
        load_settings(kline_history_bars=1500)
    s = load_settings(kline_history_bars=1499)
    for _, limit in history_klines(s.kline_history_bars):
        assert klines_weight(limit) > 0  # raised ValueError for the 1501 that 1500 bars asked


def test_universe_weights_that_are_all_zero_are_refused_naming_the_keys() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, **dict.fromkeys(WEIGHTS, 0))
    message = str(err.value)
    assert all(key in message for key in WEIGHTS) and "at least one must be above 0" in message
    # one weight is enough: the score is that component alone
    s = load_settings(None, **dict.fromkeys(WEIGHTS[:3], 0))
    assert score(ScoreComponents(1.0, 1.0, 1.0, 0.5), weights_from(s)) == pytest.approx(50.0)
