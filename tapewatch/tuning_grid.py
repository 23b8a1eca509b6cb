"""The parameter sets a monthly tuning tries, pure: each threshold tightened from its current value, and the
tier breakpoints tightened for chosen thresholds (why only tighter: :mod:`tapewatch.tuning`, which re-exports
these names)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

from tapewatch.tuning_score import Params

#: How far the grid tightens each threshold from its current value.
RATIO_STEPS = (1.0, 1.1, 1.25, 1.5)
COUNT_STEPS = (0, 1, 2, 3)
#: Quality points added to a tier breakpoint (spec 7.2 scores move in steps of 5 or more, but for 8 per trade).
BREAKPOINT_STEPS = (0, 5, 10)


def grid(current: Mapping[str, float | int]) -> list[Params]:
    """Every parameter set the search tries: each threshold, ``large_trade_size`` and ``quality_low_min`` at
    its current value and tightened by the steps (kept within its allowed range, LOW below MEDIUM), HIGH and
    MEDIUM at their current values (:func:`tier_grid` varies them). The current set comes first."""
    imb = current["orderbook_imbalance_threshold"]
    vol = current["volume_confirmation_multiplier"]
    large = int(current["min_large_trades"])
    size = current["large_trade_size"]
    low, medium = int(current["quality_low_min"]), int(current["quality_medium_min"])
    imbalances = sorted({round(imb * r, 6) for r in RATIO_STEPS if imb * r < 1})
    volumes = sorted({round(vol * r, 6) for r in RATIO_STEPS if vol * r <= 100})
    counts = sorted({large + c for c in COUNT_STEPS if large + c <= 1000})
    sizes = sorted({round(size * r) if r != 1.0 else size for r in RATIO_STEPS})
    lows = sorted({low + c for c in BREAKPOINT_STEPS if low + c < medium})
    sets = [
        {
            **current,
            "orderbook_imbalance_threshold": i,
            "min_large_trades": n,
            "large_trade_size": z,
            "volume_confirmation_multiplier": v,
            "quality_low_min": q,
        }
        for z, q, i, n, v in itertools.product(sizes, lows, imbalances, counts, volumes)
    ]
    return sorted(sets, key=lambda p: p != dict(current))


def tier_grid(params: Mapping[str, float | int]) -> list[Params]:
    """``params`` with MEDIUM and HIGH at their values and tightened by :data:`BREAKPOINT_STEPS`, kept ordered
    (LOW < MEDIUM < HIGH <= 100); ``params`` itself first."""
    low, medium, high = (
        int(params[k]) for k in ("quality_low_min", "quality_medium_min", "quality_high_min")
    )
    return [
        {**params, "quality_medium_min": m, "quality_high_min": h}
        for m in (medium + c for c in BREAKPOINT_STEPS)
        for h in (high + c for c in BREAKPOINT_STEPS)
        if low < m < h <= 100
    ]
