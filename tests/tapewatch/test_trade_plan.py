"""Trade plan: entry at the touch, stop rules at their boundaries, targets, size, confidence, hold time."""

from __future__ import annotations

import math

import pytest

from tapewatch.quality import priority_levels
from tapewatch.settings import Settings, load_settings
from tapewatch.trade_plan import (
    confidence,
    expected_hold_time,
    format_minutes,
    plan_trade,
    position_size,
    risk_reward_ratio,
)

S = load_settings()
LEVELS = priority_levels(S)
MIN = 60_000


def test_long_without_a_level_stops_at_one_and_a_half_atr() -> None:
    p = plan_trade("LONG", 99.0, 100.0, 2.0, None, S)
    assert (p.entry, p.stop, p.take_profit_1, p.take_profit_2) == (100.0, 97.0, 103.0, 106.0)
    assert (p.risk, p.stop_basis, p.risk_reward_ratio) == (3.0, "atr", 1.5)
    assert p.suggested_position_size == pytest.approx(0.005 / 0.03)


def test_short_enters_at_the_bid_and_mirrors_the_long() -> None:
    p = plan_trade("SHORT", 100.0, 101.0, 2.0, None, S)
    assert (p.entry, p.stop, p.take_profit_1, p.take_profit_2) == (100.0, 103.0, 97.0, 94.0)
    assert p.direction == "SHORT" and p.stop_basis == "atr"


@pytest.mark.parametrize(
    ("level", "stop", "basis"),
    [
        (98.0, 98.0, "level"),  # 2 away: tighter than the 3 of 1.5 ATR
        (97.0, 97.0, "atr"),  # exactly 1.5 ATR: the same stop, the ATR rule names it
        (96.0, 97.0, "atr"),  # a level further than 1.5 ATR: the ATR stop is tighter
        (99.0, 99.0, "level"),  # exactly 0.5 ATR away: allowed
        (99.5, 99.0, "min_atr"),  # closer than 0.5 ATR: widened to 0.5 ATR
        (100.0, 97.0, "atr"),  # a "support" at the entry is no support below it
        (100.5, 97.0, "atr"),  # above the entry: ignored
    ],
)
def test_long_stop_rules_at_their_boundaries(level: float, stop: float, basis: str) -> None:
    p = plan_trade("LONG", 99.0, 100.0, 2.0, level, S, level_buffer_atr=0.0)
    assert (p.stop, p.stop_basis) == (stop, basis)
    assert p.take_profit_1 == 100.0 + (100.0 - stop)


@pytest.mark.parametrize(
    ("level", "stop", "basis"),
    [(102.0, 102.0, "level"), (103.0, 103.0, "atr"), (105.0, 103.0, "atr"), (100.5, 101.0, "min_atr")],
)
def test_short_stop_rules_at_their_boundaries(level: float, stop: float, basis: str) -> None:
    p = plan_trade("SHORT", 100.0, 100.5, 2.0, level, S, level_buffer_atr=0.0)
    assert (p.stop, p.stop_basis) == (stop, basis)


def test_the_stop_goes_a_buffer_beyond_the_level() -> None:
    p = plan_trade("LONG", 99.0, 100.0, 2.0, 98.0, S)  # default buffer 0.1 ATR = 0.2
    assert p.stop == pytest.approx(97.8) and p.stop_basis == "level"
    p = plan_trade("SHORT", 100.0, 100.5, 2.0, 101.5, S)
    assert p.stop == pytest.approx(101.7) and p.stop_basis == "level"


def test_targets_and_multiples_are_configurable() -> None:
    s = Settings(tp1_r=1.5, tp2_r=3.0, stop_atr_multiple=1.0, min_stop_atr_multiple=0.25)
    p = plan_trade("LONG", 99.0, 100.0, 2.0, None, s)
    assert (p.stop, p.take_profit_1, p.take_profit_2, p.risk_reward_ratio) == (98.0, 103.0, 106.0, 2.25)
    assert plan_trade("LONG", 99.0, 100.0, 2.0, 99.75, s, level_buffer_atr=0.0).stop_basis == "min_atr"


def test_position_size_risks_the_configured_share_and_is_capped() -> None:
    assert position_size(100.0, 98.0, 0.005, 1.0) == pytest.approx(0.25)  # 2 % stop: 0.5 % / 2 %
    assert position_size(100.0, 102.0, 0.005, 1.0) == pytest.approx(0.25)
    assert position_size(100.0, 99.9, 0.005, 1.0) == 1.0  # 0.1 % stop would need 5x: capped
    assert position_size(100.0, 98.0, 0.005, 0.1) == 0.1
    capped = plan_trade("LONG", 99.99, 100.0, 0.01, None, Settings(max_position_size=0.1))
    assert capped.suggested_position_size == 0.1


def test_risk_reward_is_half_at_each_target() -> None:
    assert risk_reward_ratio(1.0, 2.0) == 1.5
    assert risk_reward_ratio(1.0, 3.0, tp1_share=0.25) == 2.5
    with pytest.raises(ValueError, match=r"tp1_share must be within \[0, 1\]"):
        risk_reward_ratio(1.0, 2.0, tp1_share=1.5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("LONG", math.nan, 100.0, 1.0, None), "best_bid must be a finite price > 0; got nan"),
        (("LONG", 99.0, 0.0, 1.0, None), "best_ask must be a finite price > 0; got 0.0"),
        (("SHORT", -1.0, 100.0, 1.0, None), "best_bid must be a finite price > 0; got -1.0"),
        (("LONG", 100.0, 100.0, 1.0, None), "best_bid 100.0 must be below best_ask 100.0 (crossed book)"),
        (("LONG", 99.0, 100.0, 0.0, None), "ATR must be a finite value > 0 to place a stop; got 0.0"),
        (("LONG", 99.0, 100.0, math.nan, None), "ATR must be a finite value > 0"),
        (("LONG", 99.0, 100.0, 1.0, math.nan), "level must be a finite price > 0; got nan"),
        (("LONG", 99.0, 100.0, 1.0, -98.0), "level must be a finite price > 0"),
        (
            ("LONG", 99.0, 100.0, 80.0, None),
            "LONG stop -20.0 at entry 100.0 with risk 120.0 is not a positive price",
        ),
        (("SHORT", 1.0, 1.01, 1.0, None), "SHORT take_profit_1 -0.5 at entry 1.0"),
    ],
)
def test_bad_plan_inputs_raise(args: tuple[str, float, float, float, float | None], message: str) -> None:
    with pytest.raises(ValueError) as err:
        plan_trade(*args, S)  # type: ignore[arg-type]
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((100.0, 100.0, 0.005, 1.0), "stop 100.0 equals the entry"),
        ((100.0, math.nan, 0.005, 1.0), "stop must be a finite price > 0; got nan"),
        ((0.0, 99.0, 0.005, 1.0), "entry must be a finite price > 0"),
        ((100.0, 99.0, 0.0, 1.0), "risk_per_signal must be finite and > 0"),
        ((100.0, 99.0, 0.005, math.inf), "max_position_size must be finite and > 0"),
    ],
)
def test_bad_position_inputs_raise(args: tuple[float, float, float, float], message: str) -> None:
    with pytest.raises(ValueError) as err:
        position_size(*args)
    assert message in str(err.value)


def test_confidence_shrinks_the_observed_rate_toward_the_quality() -> None:
    assert confidence(0, 0, 85) == pytest.approx(0.85)  # no history: the prior
    assert confidence(10, 20, 80) == pytest.approx((10 + 20 * 0.8) / 40)  # k = 20: halfway at 20 signals
    assert confidence(10, 20, 80) == pytest.approx(0.65)
    assert confidence(600, 1000, 90) == pytest.approx((600 + 18) / 1020)  # history dominates
    assert confidence(5, 5, 100) == 1.0 and confidence(0, 5, 0) == 0.0
    assert confidence(1, 2, 50, prior_weight=2) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((3, 2, 80), "need 0 <= hits <= total; got hits=3, total=2"),
        ((-1, 2, 80), "need 0 <= hits <= total"),
        ((1, 2, 101), "quality_score must be within [0, 100]; got 101"),
        ((1, 2, math.nan), "quality_score must be within [0, 100]; got nan"),
    ],
)
def test_bad_confidence_inputs_raise(args: tuple[int, int, float], message: str) -> None:
    with pytest.raises(ValueError) as err:
        confidence(*args)
    assert message in str(err.value)
    with pytest.raises(ValueError, match="prior_weight must be finite and > 0"):
        confidence(1, 2, 50, prior_weight=0)


def test_expected_hold_time_is_the_band_middle_without_history() -> None:
    assert [expected_hold_time(LEVELS[t]) for t in ("HIGH", "MEDIUM", "LOW")] == ["30min", "60min", "120min"]


def test_expected_hold_time_is_the_median_of_history() -> None:
    assert expected_hold_time(LEVELS["HIGH"], [10 * MIN, 40 * MIN, 20 * MIN]) == "20min"
    assert expected_hold_time(LEVELS["HIGH"], [20 * MIN, 30 * MIN]) == "25min"  # even count: the mean of two
    assert expected_hold_time(LEVELS["LOW"], [5_000]) == "1min"  # never "0min"
    with pytest.raises(ValueError, match="past hold times must be finite and >= 0 ms"):
        expected_hold_time(LEVELS["LOW"], [MIN, -1])


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "1min"),
        (29_999, "1min"),
        (90_000, "2min"),
        (149_999, "2min"),
        (25 * MIN, "25min"),
        (181 * MIN, "181min"),
    ],
)
def test_format_minutes(ms: float, text: str) -> None:
    assert format_minutes(ms) == text
