"""Spec 7.2 quality score and tiers, and the spec 8.1 priority levels as a typed table from settings.

Score (0-100), exactly as spec 7.2:

- order-book imbalance ``|imbalance|``: ``> 0.4`` → 35, ``> 0.3`` → 25, else 15;
- volume intensity: ``>= 2.0`` → 30, ``>= 1.5`` → 20, else 10 (the score keeps its own breakpoints, while the
  required condition uses ``volume_confirmation_multiplier``, DESIGN §4);
- large trades ``n = max(large_buys, large_sells)``: ``min(n * 8, 35)``.

Tiers: HIGH ``>= 80``, MEDIUM ``>= 65``, LOW ``>= 50`` by default; the breakpoints are the settings
``quality_high_min`` / ``quality_medium_min`` / ``quality_low_min`` (:func:`breakpoints`), which monthly tuning
may tighten. Below the LOW minimum is not a signal: the setup is logged as a candidate with the fate
"low_quality".
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec

from tapewatch.features import Features
from tapewatch.settings import Settings

Tier = Literal["HIGH", "MEDIUM", "LOW"]
TIERS: tuple[Tier, ...] = ("HIGH", "MEDIUM", "LOW")

#: Lowest score of each tier by default (spec 8.1 ``min_quality``), highest tier first.
MIN_QUALITY: dict[Tier, int] = {"HIGH": 80, "MEDIUM": 65, "LOW": 50}


class Breakpoints(msgspec.Struct, frozen=True, kw_only=True):
    """The lowest score of each tier; ``0 <= low < medium < high <= 100`` (else ValueError)."""

    high: int = MIN_QUALITY["HIGH"]
    medium: int = MIN_QUALITY["MEDIUM"]
    low: int = MIN_QUALITY["LOW"]

    def __post_init__(self) -> None:
        if not 0 <= self.low < self.medium < self.high <= 100:
            raise ValueError(
                "quality breakpoints must be ordered 0 <= low < medium < high <= 100; "
                f"got low={self.low}, medium={self.medium}, high={self.high}"
            )

    def minimum(self, tier: Tier) -> int:
        """The lowest score of ``tier``."""
        return {"HIGH": self.high, "MEDIUM": self.medium, "LOW": self.low}[tier]


#: The spec's breakpoints (80 / 65 / 50).
DEFAULT_BREAKPOINTS = Breakpoints()


def breakpoints(settings: Settings) -> Breakpoints:
    """The tier breakpoints in force in ``settings``."""
    return Breakpoints(
        high=settings.quality_high_min, medium=settings.quality_medium_min, low=settings.quality_low_min
    )


class QualityScore(msgspec.Struct, frozen=True, kw_only=True):
    """The spec 7.2 score with its three parts; ``tier`` is None below the LOW minimum (a candidate, not a
    signal)."""

    imbalance_points: int
    volume_points: int
    large_trade_points: int
    score: int
    tier: Tier | None


def imbalance_points(imbalance: float) -> int:
    """35 above 0.4, 25 above 0.3, else 15, on ``|imbalance|`` (strict, as spec 7.2)."""
    size = abs(_finite("imbalance", imbalance))
    if size > 0.4:
        return 35
    if size > 0.3:
        return 25
    return 15


def volume_points(volume_intensity: float) -> int:
    """30 from 2.0, 20 from 1.5, else 10 (inclusive, as spec 7.2)."""
    v = _finite("volume_intensity", volume_intensity)
    if v < 0:
        raise ValueError(f"volume_intensity must be >= 0; got {v}")
    if v >= 2.0:
        return 30
    if v >= 1.5:
        return 20
    return 10


def large_trade_points(large_buys: int, large_sells: int) -> int:
    """``min(max(large_buys, large_sells) * 8, 35)``."""
    if large_buys < 0 or large_sells < 0:
        raise ValueError(f"large trade counts must be >= 0; got buys={large_buys}, sells={large_sells}")
    return min(max(large_buys, large_sells) * 8, 35)


def tier_for(score: int, breakpoints: Breakpoints = DEFAULT_BREAKPOINTS) -> Tier | None:
    """The tier of ``score``: HIGH from ``breakpoints.high`` (80), MEDIUM from ``.medium`` (65), LOW from
    ``.low`` (50); None below ``.low`` (not a signal)."""
    if not 0 <= score <= 100:
        raise ValueError(f"quality score must be within [0, 100]; got {score}")
    if score >= breakpoints.high:
        return "HIGH"
    if score >= breakpoints.medium:
        return "MEDIUM"
    if score >= breakpoints.low:
        return "LOW"
    return None


def score_quality(
    imbalance: float,
    volume_intensity: float,
    large_buys: int,
    large_sells: int,
    breakpoints: Breakpoints = DEFAULT_BREAKPOINTS,
) -> QualityScore:
    """The spec 7.2 score of these values, with its parts and tier."""
    parts = (
        imbalance_points(imbalance),
        volume_points(volume_intensity),
        large_trade_points(large_buys, large_sells),
    )
    total = sum(parts)
    return QualityScore(
        imbalance_points=parts[0],
        volume_points=parts[1],
        large_trade_points=parts[2],
        score=total,
        tier=tier_for(total, breakpoints),
    )


def score_features(features: Features, breakpoints: Breakpoints = DEFAULT_BREAKPOINTS) -> QualityScore:
    """The spec 7.2 score of a feature vector, tiered by ``breakpoints``. Raises ValueError when volume
    intensity is unknown: a setup without it cannot pass the required conditions, so it is never scored."""
    if features.volume_intensity is None:
        raise ValueError(f"{features.symbol}: volume_intensity is unknown; cannot score quality")
    return score_quality(
        features.imbalance_top10,
        features.volume_intensity,
        features.large_buys,
        features.large_sells,
        breakpoints,
    )


class PriorityLevel(msgspec.Struct, frozen=True, kw_only=True):
    """One row of spec 8.1 ``PRIORITY_LEVELS``, in event-time milliseconds where it is a duration."""

    tier: Tier
    min_quality: int
    max_daily: int
    response_window_ms: int
    hold_min_ms: int
    hold_max_ms: int

    @property
    def hold_mid_ms(self) -> int:
        """The middle of the hold band: the expected hold time when no history is known."""
        return (self.hold_min_ms + self.hold_max_ms) // 2


def priority_levels(settings: Settings) -> dict[Tier, PriorityLevel]:
    """The spec 8.1 table (max daily, response window, hold band per tier) as configured in ``settings``."""
    s = settings
    bp = breakpoints(settings)
    rows: dict[Tier, tuple[int, float, float, float]] = {
        "HIGH": (s.max_daily_high, s.response_window_high, s.hold_time_high_min, s.hold_time_high_max),
        "MEDIUM": (
            s.max_daily_medium,
            s.response_window_medium,
            s.hold_time_medium_min,
            s.hold_time_medium_max,
        ),
        "LOW": (s.max_daily_low, s.response_window_low, s.hold_time_low_min, s.hold_time_low_max),
    }
    return {
        tier: PriorityLevel(
            tier=tier,
            min_quality=bp.minimum(tier),
            max_daily=max_daily,
            response_window_ms=round(window_s * 1000),
            hold_min_ms=round(hold_min * 60_000),
            hold_max_ms=round(hold_max * 60_000),
        )
        for tier, (max_daily, window_s, hold_min, hold_max) in rows.items()
    }


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}")
    return value
