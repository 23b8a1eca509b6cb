"""Entry, stop, targets, size, confidence and expected hold of a signal (DESIGN §4), all pure.

- **Entry** at the touch: the best ask for LONG, the best bid for SHORT.
- **Stop**: the tighter of "just beyond the nearest level" (support for LONG, resistance for SHORT, pushed
  ``level_buffer_atr`` ATR past it so a mere test of the level does not stop the trade out) and
  ``stop_atr_multiple`` × ATR(15m) from the entry; never closer than ``min_stop_atr_multiple`` × ATR.
  A level on the wrong side of the entry (support at or above the ask) is ignored.
- **Targets**: TP1 = entry ± ``tp1_r`` R, TP2 = entry ± ``tp2_r`` R, where R = |entry - stop|.
- **risk_reward_ratio**: expected reward with half the position closed at TP1 and half at TP2, over the risk:
  ``(tp1_r + tp2_r) / 2`` (1.5 with the defaults).
- **suggested_position_size**: the share of capital (notional / capital) whose loss at the stop equals
  ``risk_per_signal``: ``risk_per_signal / (R / entry)``, capped at ``max_position_size``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import msgspec

from tapewatch.features import check_price
from tapewatch.quality import PriorityLevel
from tapewatch.rules import Direction
from tapewatch.settings import Settings

#: How far past a support/resistance level the stop goes, in ATR (a stop exactly at the level is hit by
#: the very test of the level the setup may be).
LEVEL_BUFFER_ATR = 0.1
#: Share of the position closed at TP1; the rest at TP2.
TP1_SHARE = 0.5
#: Prior weight ``k`` of :func:`confidence`: how many past signals the quality score is worth.
CONFIDENCE_PRIOR_WEIGHT = 20.0


class TradePlan(msgspec.Struct, frozen=True, kw_only=True):
    """Where to enter, where the trade is wrong, where to take profit, and how much to risk.

    ``stop_basis`` says which rule set the stop: ``"level"`` (beyond support/resistance), ``"atr"`` (the
    widest ATR stop) or ``"min_atr"`` (widened to the closest allowed distance).
    """

    direction: Direction
    entry: float
    stop: float
    take_profit_1: float
    take_profit_2: float
    risk: float
    risk_reward_ratio: float
    suggested_position_size: float
    stop_basis: str


def plan_trade(
    direction: Direction,
    best_bid: float,
    best_ask: float,
    atr: float,
    level: float | None,
    settings: Settings,
    *,
    level_buffer_atr: float = LEVEL_BUFFER_ATR,
) -> TradePlan:
    """The trade plan of a ``direction`` setup at this touch (see the module docstring for the rules).

    ``level`` is the nearest support (LONG) or resistance (SHORT), or None. ``atr`` must be > 0: without
    ATR(15m) no stop can be placed, and the caller rejects the candidate instead. Raises ValueError on a
    non-finite or non-positive price, a crossed book, or targets that would fall to zero or below.
    """
    check_price("best_bid", best_bid)
    check_price("best_ask", best_ask)
    if best_bid >= best_ask:
        raise ValueError(f"best_bid {best_bid} must be below best_ask {best_ask} (crossed book)")
    if not (math.isfinite(atr) and atr > 0):
        raise ValueError(f"ATR must be a finite value > 0 to place a stop; got {atr}")
    if level is not None:
        check_price("level", level)
    if not (math.isfinite(level_buffer_atr) and level_buffer_atr >= 0):
        raise ValueError(f"level_buffer_atr must be finite and >= 0; got {level_buffer_atr}")
    long = direction == "LONG"
    sign = 1.0 if long else -1.0
    entry = best_ask if long else best_bid

    distance = settings.stop_atr_multiple * atr
    basis = "atr"
    if level is not None and (level < entry if long else level > entry):
        level_distance = abs(entry - level) + level_buffer_atr * atr
        if level_distance < distance:
            distance, basis = level_distance, "level"
    floor = settings.min_stop_atr_multiple * atr
    if distance < floor:
        distance, basis = floor, "min_atr"

    stop = entry - sign * distance
    tp1 = entry + sign * settings.tp1_r * distance
    tp2 = entry + sign * settings.tp2_r * distance
    for name, price in (("stop", stop), ("take_profit_1", tp1), ("take_profit_2", tp2)):
        if not price > 0:
            raise ValueError(
                f"{direction} {name} {price} at entry {entry} with risk {distance} is not a positive price"
            )
    return TradePlan(
        direction=direction,
        entry=entry,
        stop=stop,
        take_profit_1=tp1,
        take_profit_2=tp2,
        risk=distance,
        risk_reward_ratio=risk_reward_ratio(settings.tp1_r, settings.tp2_r),
        suggested_position_size=position_size(
            entry, stop, settings.risk_per_signal, settings.max_position_size
        ),
        stop_basis=basis,
    )


def risk_reward_ratio(tp1_r: float, tp2_r: float, tp1_share: float = TP1_SHARE) -> float:
    """Expected reward in R with ``tp1_share`` closed at TP1 and the rest at TP2 (risk is 1 R)."""
    if not (0.0 <= tp1_share <= 1.0):
        raise ValueError(f"tp1_share must be within [0, 1]; got {tp1_share}")
    if not (tp1_r > 0 and tp2_r > 0 and math.isfinite(tp1_r) and math.isfinite(tp2_r)):
        raise ValueError(f"targets in R must be finite and > 0; got tp1_r={tp1_r}, tp2_r={tp2_r}")
    return tp1_share * tp1_r + (1.0 - tp1_share) * tp2_r


def position_size(entry: float, stop: float, risk_per_signal: float, max_position_size: float) -> float:
    """Notional as a share of capital that loses ``risk_per_signal`` of capital at the stop, capped at
    ``max_position_size``: ``min(risk_per_signal / (|entry - stop| / entry), max_position_size)``."""
    check_price("entry", entry)
    check_price("stop", stop)
    if entry == stop:
        raise ValueError(f"stop {stop} equals the entry: the risk per unit is zero")
    if not (math.isfinite(risk_per_signal) and risk_per_signal > 0):
        raise ValueError(f"risk_per_signal must be finite and > 0; got {risk_per_signal}")
    if not (math.isfinite(max_position_size) and max_position_size > 0):
        raise ValueError(f"max_position_size must be finite and > 0; got {max_position_size}")
    return min(risk_per_signal / (abs(entry - stop) / entry), max_position_size)


def confidence(
    hits: int, total: int, quality_score: float, prior_weight: float = CONFIDENCE_PRIOR_WEIGHT
) -> float:
    """Chance of reaching TP1 before the stop, estimated as ``(hits + k * q) / (total + k)``.

    ``hits`` of ``total`` past signals of the same quality band reached TP1 before their stop;
    ``q = quality_score / 100`` is the prior and ``k = prior_weight`` (20) how many observations it is worth.
    With no history the confidence is ``q``; as history accumulates it moves to the observed rate
    ``hits / total`` (at ``total = k`` halfway). Result within [0, 1].
    """
    if total < 0 or not 0 <= hits <= total:
        raise ValueError(f"need 0 <= hits <= total; got hits={hits}, total={total}")
    if not (math.isfinite(quality_score) and 0 <= quality_score <= 100):
        raise ValueError(f"quality_score must be within [0, 100]; got {quality_score}")
    if not (math.isfinite(prior_weight) and prior_weight > 0):
        raise ValueError(f"prior_weight must be finite and > 0; got {prior_weight}")
    q = quality_score / 100.0
    return (hits + prior_weight * q) / (total + prior_weight)


def expected_hold_time(level: PriorityLevel, past_hold_ms: Sequence[int] = ()) -> str:
    """The median of the tier's past hold times (event-time ms) when there are any, else the middle of the
    tier's hold band; formatted as whole minutes like the spec (``"25min"``), at least ``"1min"``."""
    if past_hold_ms:
        bad = [h for h in past_hold_ms if not (math.isfinite(h) and h >= 0)]
        if bad:
            raise ValueError(f"past hold times must be finite and >= 0 ms; got {bad[:3]}")
        ms = float(statistics.median(past_hold_ms))
    else:
        ms = float(level.hold_mid_ms)
    return format_minutes(ms)


def format_minutes(ms: float) -> str:
    """A duration in ms as whole minutes, the spec's ``"25min"`` (rounded half up, at least 1)."""
    return f"{max(1, math.floor(ms / 60_000 + 0.5))}min"
