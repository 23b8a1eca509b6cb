"""Spec 7.1 conditions: every required threshold at its boundary, optional conditions, missing data."""

from __future__ import annotations

import pytest

from tapewatch.rules import Evaluation, check, evaluate, fmt_num
from tapewatch.settings import Settings, load_settings
from tests.tapewatch.feature_builders import T0, long_setup, short_setup

S = load_settings()


def _by_name(evaluation: Evaluation) -> dict[str, tuple[bool, str]]:
    return {c.name: (c.met, c.reason) for c in evaluation.conditions}


def test_a_long_setup_lists_every_condition_with_its_evidence() -> None:
    [e] = evaluate(long_setup(), S)
    assert (e.symbol, e.event_time, e.direction, e.passed) == ("BTCUSDT", T0, "LONG", True)
    assert _by_name(e) == {
        "orderbook_imbalance": (True, "imbalance 0.41 > 0.28"),
        "large_buy_trades": (True, "large buys 4 >= 3"),
        "volume_intensity": (True, "volume intensity 2.1 > 1.8"),
        "price_above_vwap": (True, "price 100 > VWAP 1h 99.5"),
        "rsi_oversold": (True, "RSI(9) 27 < 30"),
        "bullish_divergence": (True, "bullish divergence"),
        "support_level": (True, "support 99.6 within 1 ATR (0.8) of price 100"),
    }
    assert [c.required for c in e.conditions] == [True] * 4 + [False] * 3
    assert e.optional_met == 3 and e.unmet == []
    assert e.reasons[0] == "imbalance 0.41 > 0.28" and len(e.reasons) == 7
    imbalance = e.conditions[0]
    assert (imbalance.value, imbalance.threshold, imbalance.op) == (0.41, 0.28, ">")


def test_a_short_setup_mirrors_the_long_one() -> None:
    [e] = evaluate(short_setup(), S)
    assert e.direction == "SHORT" and e.passed
    assert _by_name(e) == {
        "orderbook_imbalance": (True, "imbalance -0.41 < -0.28"),
        "large_sell_trades": (True, "large sells 4 >= 3"),
        "volume_intensity": (True, "volume intensity 2.1 > 1.8"),
        "price_below_vwap": (True, "price 100 < VWAP 1h 100.5"),
        "rsi_overbought": (True, "RSI(9) 73 > 70"),
        "bearish_divergence": (True, "bearish divergence"),
        "resistance_level": (True, "resistance 100.4 within 1 ATR (0.8) of price 100"),
    }


def test_the_long_setup_fails_every_short_requirement() -> None:
    e = check(long_setup(), S, "SHORT")
    assert not e.passed
    assert [c.name for c in e.unmet if c.required] == [
        "orderbook_imbalance",
        "large_sell_trades",
        "price_below_vwap",
    ]
    assert "imbalance 0.41 >= -0.28" in [c.reason for c in e.unmet]
    assert "large sells 1 < 3" in [c.reason for c in e.unmet]


@pytest.mark.parametrize(
    ("changes", "long_passes", "short_passes"),
    [
        ({"imbalance_top10": 0.28}, False, False),  # strictly above the threshold
        ({"imbalance_top10": 0.2800001}, True, False),
        ({"large_buys": 3}, True, False),  # at least min_large_trades
        ({"large_buys": 2}, False, False),
        ({"volume_intensity": 1.8}, False, False),  # strictly above the multiplier
        ({"volume_intensity": 1.8000001}, True, False),
        ({"volume_intensity": 1.6}, False, False),  # the spec's 1.5 no longer suffices (DESIGN §4)
        ({"price": 99.5}, False, False),  # at the VWAP is neither above nor below
        ({"price": 99.5000001}, True, False),
    ],
)
def test_long_required_boundaries(changes: dict[str, float], long_passes: bool, short_passes: bool) -> None:
    f = long_setup(**changes)
    assert check(f, S, "LONG").passed is long_passes
    assert check(f, S, "SHORT").passed is short_passes
    assert [e.direction for e in evaluate(f, S)] == (["LONG"] if long_passes else [])


@pytest.mark.parametrize(
    ("changes", "passes"),
    [
        ({"imbalance_top10": -0.28}, False),
        ({"imbalance_top10": -0.2800001}, True),
        ({"large_sells": 3}, True),
        ({"large_sells": 2}, False),
        ({"volume_intensity": 1.8}, False),
        ({"price": 100.5}, False),
        ({"price": 100.4999999}, True),
    ],
)
def test_short_required_boundaries(changes: dict[str, float], passes: bool) -> None:
    assert check(short_setup(**changes), S, "SHORT").passed is passes


def test_thresholds_come_from_settings() -> None:
    strict = Settings(
        orderbook_imbalance_threshold=0.5, min_large_trades=5, volume_confirmation_multiplier=2.5
    )
    e = check(long_setup(imbalance_top10=0.45, large_buys=5, volume_intensity=2.4), strict, "LONG")
    assert _by_name(e)["orderbook_imbalance"] == (False, "imbalance 0.45 <= 0.5")
    assert _by_name(e)["large_buy_trades"] == (True, "large buys 5 >= 5")
    assert _by_name(e)["volume_intensity"] == (False, "volume intensity 2.4 <= 2.5")
    assert evaluate(long_setup(imbalance_top10=0.51, large_buys=5, volume_intensity=2.6), strict)


@pytest.mark.parametrize(
    ("changes", "name", "met", "reason"),
    [
        ({"rsi9": 30.0}, "rsi_oversold", False, "RSI(9) 30 >= 30"),
        ({"rsi9": 29.99}, "rsi_oversold", True, "RSI(9) 29.99 < 30"),
        ({"rsi9": None}, "rsi_oversold", False, "RSI(9): no data"),
        ({"bullish_divergence": False}, "bullish_divergence", False, "no bullish divergence"),
        ({"bullish_divergence": None}, "bullish_divergence", False, "bullish divergence: no data"),
        # support exactly one ATR below the price is still a test of it; further is not
        (
            {"support": 99.0, "atr_15m": 1.0},
            "support_level",
            True,
            "support 99 within 1 ATR (1) of price 100",
        ),
        ({"support": 98.99, "atr_15m": 1.0}, "support_level", False, "support 98.99 not within 1 ATR"),
        ({"support": 100.0}, "support_level", True, "support 100 within 1 ATR"),
        ({"support": 100.01}, "support_level", False, "support 100.01 not within"),  # above the price
        ({"support": None}, "support_level", False, "support test: no data"),
        ({"atr_15m": None}, "support_level", False, "support test: no data"),
    ],
)
def test_long_optional_conditions(changes: dict[str, object], name: str, met: bool, reason: str) -> None:
    [e] = evaluate(long_setup(**changes), S)  # optional conditions never gate
    got_met, got_reason = _by_name(e)[name]
    assert got_met is met
    assert got_reason.startswith(reason)


@pytest.mark.parametrize(
    ("changes", "name", "met"),
    [
        ({"rsi9": 70.0}, "rsi_overbought", False),
        ({"rsi9": 70.01}, "rsi_overbought", True),
        ({"bearish_divergence": None}, "bearish_divergence", False),
        ({"resistance": 100.8, "atr_15m": 0.8}, "resistance_level", True),
        ({"resistance": 100.81, "atr_15m": 0.8}, "resistance_level", False),
        ({"resistance": 99.9}, "resistance_level", False),  # below the price: not a resistance test
    ],
)
def test_short_optional_conditions(changes: dict[str, object], name: str, met: bool) -> None:
    [e] = evaluate(short_setup(**changes), S)
    assert _by_name(e)[name][0] is met


@pytest.mark.parametrize(
    ("changes", "name", "reason"),
    [
        ({"volume_intensity": None}, "volume_intensity", "volume intensity: no data"),
        ({"vwap_1h": None}, "price_above_vwap", "price vs VWAP 1h: no data"),
    ],
)
def test_missing_required_inputs_are_unmet_with_no_data(
    changes: dict[str, object], name: str, reason: str
) -> None:
    f = long_setup(**changes)
    assert evaluate(f, S) == []
    e = check(f, S, "LONG")
    assert _by_name(e)[name] == (False, reason)
    [missing] = [c for c in e.conditions if c.name == name]
    assert missing.value is None or missing.threshold is None


def test_neutral_tape_gives_no_candidate() -> None:
    assert (
        evaluate(long_setup(imbalance_top10=0.0, large_buys=0, large_sells=0, volume_intensity=1.0), S) == []
    )


@pytest.mark.parametrize(
    ("value", "digits", "text"),
    [
        (0.41, 4, "0.41"),
        (3.0, 4, "3"),
        (-0.28, 4, "-0.28"),
        (2.10345, 4, "2.103"),
        (65432.15, 10, "65432.15"),
        (0.00001234, 10, "0.00001234"),
        (1.5e-7, 4, "0.00000015"),
        (float("nan"), 4, "nan"),
    ],
)
def test_fmt_num(value: float, digits: int, text: str) -> None:
    assert fmt_num(value, digits) == text


@pytest.mark.parametrize(
    ("intensity", "reason"),
    [
        (1.800457, "volume intensity 1.8005 > 1.8"),  # a backtest's signal read "1.8 > 1.8"
        (1.8, "volume intensity 1.8 <= 1.8"),  # equal: not met, and shown as equal
        (1.79999999, "volume intensity 1.79999999 <= 1.8"),
        (2.10345, "volume intensity 2.103 > 1.8"),  # apart at four digits: four digits
    ],
)
def test_a_value_next_to_its_threshold_is_shown_with_the_digits_that_tell_them_apart(
    intensity: float, reason: str
) -> None:
    e = check(long_setup(volume_intensity=intensity), S, "LONG")
    (condition,) = [c for c in e.conditions if c.name == "volume_intensity"]
    assert condition.reason == reason


def test_fmt_pair_tells_any_two_floats_apart() -> None:
    from tapewatch.rules import fmt_pair

    assert fmt_pair(1.8000000000000003, 1.8) == ("1.8000000000000003", "1.8")
    assert fmt_pair(2.5, 2.5, 20) == ("2.5", "2.5")  # equal: shown alike, whatever the digits asked
    assert fmt_pair(0.41, -0.28) == ("0.41", "-0.28")
