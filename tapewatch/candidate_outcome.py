"""The would-be signal of a candidate that did not become one, pure: what its would-be outcome is computed from.

Every candidate with a trade plan (sql/0012: all but ``no_plan``) keeps the plan its signal has or would have
had. A candidate the risk gate or the quality floor turned away is followed as the signal it would have been:
same id (a candidate shares the id of its signal, DESIGN §3), same levels, position size and creation time,
by the code that settles signals (:func:`tapewatch.outcome_batch.batch_outcome`, from 1-minute klines and the
deciding minutes' aggTrades). The response window and upper hold bound are its tier's; a ``low_quality``
candidate has no tier and takes LOW's (:data:`TIER_OF_LOW_QUALITY`), the tier it would have had had the LOW
minimum admitted it.
"""

from __future__ import annotations

from tapewatch.outcome_models import OpenSignal
from tapewatch.quality import TIERS, Tier

#: The tier whose response window and hold bound a candidate without a tier (``low_quality``) is followed with.
TIER_OF_LOW_QUALITY: Tier = "LOW"


def would_be_tier(tier: str | None) -> Tier:
    """The tier a candidate's would-be outcome is followed with: its own, LOW when it has none."""
    if tier is None:
        return TIER_OF_LOW_QUALITY
    for known in TIERS:
        if tier == known:
            return known
    raise ValueError(f"tier must be HIGH, MEDIUM, LOW or None; got {tier!r}")


def would_be_signal(
    *,
    candidate_id: str,
    symbol: str,
    direction: str,
    tier: str | None,
    event_time: int,
    entry: float,
    stop: float,
    tp1: float,
    tp2: float,
    position_size: float,
    quality_score: int,
    created_after_agg_id: int | None = None,
) -> OpenSignal:
    """The open signal a stored candidate would have been (see the module docstring). Raises ValueError on a
    plan the outcome cannot follow (a price <= 0, levels on the wrong side of the entry)."""
    if direction not in ("LONG", "SHORT"):
        raise ValueError(f"{symbol}: direction must be LONG or SHORT; got {direction!r}")
    return OpenSignal(
        signal_id=candidate_id,
        symbol=symbol,
        direction="LONG" if direction == "LONG" else "SHORT",
        tier=would_be_tier(tier),
        created=event_time,
        entry=entry,
        stop=stop,
        tp1=tp1,
        tp2=tp2,
        position_size=position_size,
        quality_score=quality_score,
        created_after_agg_id=created_after_agg_id,
    )
