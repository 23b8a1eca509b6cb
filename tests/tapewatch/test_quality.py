"""Spec 7.2 quality score at each breakpoint, tiers, and the spec 8.1 priority table from settings."""

from __future__ import annotations

import math

import pytest

from tapewatch.errors import ConfigError
from tapewatch.quality import (
    Breakpoints,
    QualityScore,
    breakpoints,
    imbalance_points,
    large_trade_points,
    priority_levels,
    score_features,
    score_quality,
    tier_for,
    volume_points,
)
from tapewatch.settings import load_settings
from tests.tapewatch.feature_builders import long_setup


@pytest.mark.parametrize(
    ("imbalance", "points"),
    [
        (0.4000001, 35),
        (0.4, 25),  # "> 0.4" is strict
        (0.3000001, 25),
        (0.3, 15),  # "> 0.3" is strict
        (0.0, 15),
        (-0.41, 35),  # the size counts, not the sign
        (-0.4, 25),
        (1.0, 35),
    ],
)
def test_imbalance_breakpoints(imbalance: float, points: int) -> None:
    assert imbalance_points(imbalance) == points


@pytest.mark.parametrize(
    ("volume", "points"),
    [(2.0, 30), (1.9999999, 20), (1.5, 20), (1.4999999, 10), (0.0, 10), (9.0, 30)],
)
def test_volume_breakpoints_are_inclusive(volume: float, points: int) -> None:
    assert volume_points(volume) == points


@pytest.mark.parametrize(
    ("buys", "sells", "points"),
    [(0, 0, 0), (1, 0, 8), (3, 1, 24), (4, 2, 32), (0, 4, 32), (5, 0, 35), (2, 5, 35), (40, 0, 35)],
)
def test_large_trade_points_cap_at_35(buys: int, sells: int, points: int) -> None:
    assert large_trade_points(buys, sells) == points


@pytest.mark.parametrize(
    ("score", "tier"),
    [
        (100, "HIGH"),
        (80, "HIGH"),
        (79, "MEDIUM"),
        (65, "MEDIUM"),
        (64, "LOW"),
        (50, "LOW"),
        (49, None),
        (0, None),
    ],
)
def test_tier_boundaries(score: int, tier: str | None) -> None:
    assert tier_for(score) == tier


def test_the_spec_example_scores_high() -> None:
    # spec 8.2 example: imbalance 0.35, volume intensity 2.1, 5 large trades -> 25 + 30 + 35
    assert score_quality(0.35, 2.1, 5, 0) == QualityScore(
        imbalance_points=25, volume_points=30, large_trade_points=35, score=90, tier="HIGH"
    )


def test_the_weakest_passing_setup_is_low_and_a_weak_one_is_no_signal() -> None:
    # the weakest setup the required conditions allow: imbalance just above 0.28, volume just above 1.8, 3 trades
    weakest = score_quality(0.29, 1.81, 3, 0)
    assert (weakest.score, weakest.tier) == (15 + 20 + 24, "LOW")
    weak = score_quality(0.1, 1.0, 3, 0)
    assert (weak.score, weak.tier) == (49, None)
    assert score_quality(0.31, 1.5, 3, 0).score == 69


def test_score_features_uses_the_larger_count() -> None:
    q = score_features(long_setup(imbalance_top10=0.45, volume_intensity=2.0, large_buys=2, large_sells=10))
    assert (q.score, q.tier) == (100, "HIGH")
    with pytest.raises(ValueError, match="volume_intensity is unknown"):
        score_features(long_setup(volume_intensity=None))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: imbalance_points(math.nan), "imbalance must be finite; got nan"),
        (lambda: volume_points(math.inf), "volume_intensity must be finite; got inf"),
        (lambda: volume_points(-1.0), "volume_intensity must be >= 0"),
        (lambda: large_trade_points(-1, 0), "large trade counts must be >= 0"),
        (lambda: tier_for(101), "quality score must be within [0, 100]; got 101"),
        (lambda: tier_for(-1), "quality score must be within [0, 100]"),
    ],
)
def test_bad_inputs_raise(call: object, message: str) -> None:
    with pytest.raises(ValueError) as err:
        call()  # type: ignore[operator]
    assert message in str(err.value)


def test_priority_levels_default_to_spec_8_1() -> None:
    levels = priority_levels(load_settings())
    table = {
        t: (p.min_quality, p.max_daily, p.response_window_ms, p.hold_min_ms, p.hold_max_ms)
        for t, p in levels.items()
    }
    assert table == {
        "HIGH": (80, 20, 60_000, 15 * 60_000, 45 * 60_000),
        "MEDIUM": (65, 40, 300_000, 30 * 60_000, 90 * 60_000),
        "LOW": (50, 20, 900_000, 60 * 60_000, 180 * 60_000),
    }
    assert levels["HIGH"].hold_mid_ms == 30 * 60_000
    assert list(levels) == ["HIGH", "MEDIUM", "LOW"]


def test_priority_levels_follow_settings() -> None:
    s = load_settings(
        max_daily_high=3, response_window_medium=120.5, hold_time_low_min=10, hold_time_low_max=20.5
    )
    levels = priority_levels(s)
    assert levels["HIGH"].max_daily == 3
    assert levels["MEDIUM"].response_window_ms == 120_500
    assert (levels["LOW"].hold_min_ms, levels["LOW"].hold_max_ms) == (600_000, 1_230_000)


def test_signal_management_settings_defaults() -> None:
    s = load_settings()
    assert (s.max_daily_high, s.max_daily_medium, s.max_daily_low) == (20, 40, 20)
    assert (s.response_window_high, s.response_window_medium, s.response_window_low) == (60, 300, 900)
    assert (s.risk_per_signal, s.max_position_size, s.taker_fee) == (0.005, 1.0, 0.0005)
    assert (s.tp1_r, s.tp2_r, s.move_stop_to_entry_at_tp1, s.cooldown_after_loss) == (1.0, 2.0, True, 3)
    assert (s.stop_atr_multiple, s.min_stop_atr_multiple) == (1.5, 0.5)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"hold_time_high_min": 45}, "hold_time_high_max (TAPEWATCH_HOLD_TIME_HIGH_MAX) = 45"),
        ({"hold_time_medium_max": 20}, "must be above hold_time_medium_min (30"),
        ({"tp1_r": 2.0}, "tp2_r (TAPEWATCH_TP2_R) = 2.0: Value error, must be above tp1_r (2.0)"),
        ({"min_stop_atr_multiple": 2}, "must be at most stop_atr_multiple (1.5)"),
        ({"risk_per_signal": 0}, "risk_per_signal (TAPEWATCH_RISK_PER_SIGNAL) = 0"),
        ({"taker_fee": 0.5}, "allowed: >= 0 and < 0.01"),
        ({"max_daily_low": -1}, "allowed: >= 0 and <= 10000"),
    ],
)
def test_inconsistent_signal_settings_fail_clearly(overrides: dict[str, float], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, **overrides)
    assert expected in str(err.value)


def test_tiers_follow_the_breakpoint_settings() -> None:
    s = load_settings(quality_low_min=55, quality_medium_min=70, quality_high_min=85)
    bp = breakpoints(s)
    assert bp == Breakpoints(high=85, medium=70, low=55)
    assert [tier_for(x, bp) for x in (85, 84, 70, 69, 55, 54)] == [
        "HIGH",
        "MEDIUM",
        "MEDIUM",
        "LOW",
        "LOW",
        None,
    ]
    assert score_quality(0.35, 2.1, 2, 0, bp).tier == "MEDIUM"  # 25 + 30 + 16 = 71
    assert score_quality(0.35, 2.1, 2, 0).tier == "MEDIUM" and score_quality(0.45, 2.1, 2, 0).tier == "HIGH"
    assert {t: p.min_quality for t, p in priority_levels(s).items()} == {"HIGH": 85, "MEDIUM": 70, "LOW": 55}
    assert breakpoints(load_settings()) == Breakpoints(high=80, medium=65, low=50)


def test_a_low_score_under_a_raised_low_minimum_is_a_candidate_with_the_minimum_named() -> None:
    from tapewatch.rules import check
    from tapewatch.signal import FATE_LOW_QUALITY, propose

    f = long_setup(imbalance_top10=0.35, volume_intensity=2.1, large_buys=3, large_sells=0)  # 25 + 30 + 24
    s = load_settings(quality_low_min=80, quality_medium_min=90, quality_high_min=95)
    low = propose(f, check(f, s, "LONG"), s)
    assert (low.fate, low.fate_detail, low.signal) == (FATE_LOW_QUALITY, "score 79 < 80", None)
    default = load_settings()
    assert propose(f, check(f, default, "LONG"), default).quality.tier == "MEDIUM"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"quality_medium_min": 50},
            "quality_medium_min (TAPEWATCH_QUALITY_MEDIUM_MIN) = 50: Value error, must be above quality_low_min (50)",
        ),
        ({"quality_high_min": 60}, "must be above quality_medium_min (65)"),
        ({"quality_low_min": 101}, "allowed: >= 0 and <= 100"),
    ],
)
def test_disordered_breakpoints_fail_clearly(overrides: dict[str, int], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, **overrides)
    assert expected in str(err.value)
    with pytest.raises(ValueError, match="ordered 0 <= low < medium < high <= 100; got low=70"):
        Breakpoints(high=80, medium=65, low=70)
