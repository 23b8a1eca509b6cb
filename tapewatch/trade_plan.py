"""Entry, stop, targets, size, confidence and expected hold of a signal (DESIGN §4), all pure.

- **Entry** at the touch: the best ask for LONG, the best bid for SHORT.
- **Stop**: the tighter of "just beyond the nearest level" (support for LONG, resistance for SHORT, pushed
  ``level_buffer_atr`` ATR past it so a mere test of the level does not stop the trade out) and
  ``stop_atr_multiple`` × ATR(15m) from the entry; never closer than ``min_stop_atr_multiple`` × ATR.
  A level on the wrong side of the entry (support at or above the ask) is ignored.
- **Targets**: TP1 = entry ± ``tp1_r`` R, TP2 = entry ± ``tp2_r`` R, where R = |entry - stop|.
- **Tick grid**: with the symbol's tick size (exchangeInfo ``PRICE_FILTER.tickSize``) the stop is rounded to the
  grid *away* from the entry (never tighter than the rules ask) and R is taken from that stop; the targets are
  rounded *toward* the entry (never further than ``tp1_r``/``tp2_r`` R). The prices are exact multiples of the
  tick (``66938.4``, not ``66938.40000000001``): Binance rejects an order off the grid. The entry is the touch,
  a price of the book, already on it. Without a tick size nothing is rounded.
- **risk_reward_ratio**: expected reward with half the position closed at TP1 and half at TP2, over the risk:
  ``(tp1_r + tp2_r) / 2`` (1.5 with the defaults).
- **suggested_position_size**: the share of capital (notional / capital) whose loss at the stop, the taker fee
  of both sides included (as the outcome charges it), equals ``risk_per_signal``:
  ``risk_per_signal / ((R + fee·(entry + stop)) / entry)``, capped at ``max_position_size``. R stays the stop
  distance (the unit of the targets and of P&L in R), so a stop-out is -1 R less the fees in R, and
  ``risk_per_signal`` of capital.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation

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
#: A price within this share of a tick of a grid point is on it (float noise: 0.3 / 0.1 = 2.9999999999999996).
GRID_TOLERANCE = Decimal("1e-9")


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
    tick_size: Decimal | None = None,
) -> TradePlan:
    """The trade plan of a ``direction`` setup at this touch (see the module docstring for the rules).

    ``level`` is the nearest support (LONG) or resistance (SHORT), or None. ``atr`` must be > 0: without
    ATR(15m) no stop can be placed, and the caller rejects the candidate instead. ``tick_size``: the symbol's
    price step (:func:`parse_tick_size`); None: prices are not rounded. Raises ValueError on a non-finite or
    non-positive price, a crossed book, targets that would fall to zero or below, or a risk too small for the
    tick (a target that rounds onto the entry or onto the other target).
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
    if tick_size is not None:
        stop = on_tick(stop, tick_size, up=not long)  # away from the entry: down for LONG, up for SHORT
        distance = abs(entry - stop)
    tp1 = entry + sign * settings.tp1_r * distance
    tp2 = entry + sign * settings.tp2_r * distance
    if tick_size is not None:
        tp1 = on_tick(tp1, tick_size, up=not long)  # toward the entry: down for LONG, up for SHORT
        tp2 = on_tick(tp2, tick_size, up=not long)
    for name, price in (("stop", stop), ("take_profit_1", tp1), ("take_profit_2", tp2)):
        if not price > 0:
            raise ValueError(
                f"{direction} {name} {price} at entry {entry} with risk {distance} is not a positive price"
            )
    if not sign * entry < sign * tp1 < sign * tp2:
        grid = f" on the tick grid {tick_size}" if tick_size is not None else ""
        raise ValueError(
            f"{direction} targets {tp1} and {tp2}{grid} do not lie apart beyond the entry {entry}: the risk "
            f"{distance} is too small for the price step"
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
            entry, stop, settings.risk_per_signal, settings.max_position_size, taker_fee=settings.taker_fee
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


def parse_tick_size(text: str) -> Decimal:
    """A price step as exchangeInfo gives it (``"0.10"``, ``"1e-07"``), normalised (``0.1``, ``1E-7``).
    Raises ValueError unless it is a finite decimal > 0."""
    try:
        tick = Decimal(text)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"tick size must be a decimal number > 0; got {text!r}") from None
    if not (tick.is_finite() and tick > 0):
        raise ValueError(f"tick size must be a decimal number > 0; got {text!r}")
    return tick.normalize()


def tick_text(tick: float) -> str:
    """A tick size (a float as exchangeInfo's decoder gives it) as the plain decimal it stands for:
    ``0.1`` -> ``"0.1"``, ``1e-07`` -> ``"0.0000001"``, ``10.0`` -> ``"10"``."""
    return format(parse_tick_size(repr(tick)), "f")


def tick_sizes(steps: Iterable[tuple[str, float | None]]) -> dict[str, str]:
    """``{symbol: tick}`` of (symbol, exchangeInfo ``tickSize``) pairs as plain decimals (:func:`tick_text`),
    the body of a ``control:instruments`` line; a symbol without a usable tick size (None, <= 0, not finite) is
    left out (its plans are not rounded)."""
    out: dict[str, str] = {}
    for symbol, tick in steps:
        if tick is not None and math.isfinite(tick) and tick > 0:
            out[symbol] = tick_text(tick)
    return out


def on_tick(price: float, tick: Decimal, *, up: bool) -> float:
    """``price`` on the grid of ``tick``: a price already on it (within float noise) is kept, any other is
    rounded ``up`` (toward +inf) or down. Computed in decimal, so the float returned is the one the grid price
    reads as (``66938.4``), never one a float step off it."""
    steps = Decimal(repr(price)) / tick
    nearest = steps.to_integral_value(ROUND_HALF_EVEN)
    if abs(steps - nearest) > GRID_TOLERANCE:
        nearest = steps.to_integral_value(ROUND_CEILING if up else ROUND_FLOOR)
    return float(nearest * tick)


def net_per_unit(sign: float, entry: float, price: float, taker_fee: float) -> float:
    """P&L per unit of a position opened at ``entry`` and closed at ``price`` (``sign`` 1 LONG, -1 SHORT), after
    the taker fee of both sides: what the outcome charges, what position sizes are computed from."""
    return sign * (price - entry) - taker_fee * (entry + price)


def position_size(
    entry: float, stop: float, risk_per_signal: float, max_position_size: float, *, taker_fee: float
) -> float:
    """Notional as a share of capital that loses ``risk_per_signal`` of capital at the stop, the taker fee of
    both sides included, capped at ``max_position_size``:
    ``min(risk_per_signal / ((|entry - stop| + taker_fee·(entry + stop)) / entry), max_position_size)``."""
    check_price("entry", entry)
    check_price("stop", stop)
    if entry == stop:
        raise ValueError(f"stop {stop} equals the entry: the risk per unit is zero")
    if not (math.isfinite(risk_per_signal) and risk_per_signal > 0):
        raise ValueError(f"risk_per_signal must be finite and > 0; got {risk_per_signal}")
    if not (math.isfinite(max_position_size) and max_position_size > 0):
        raise ValueError(f"max_position_size must be finite and > 0; got {max_position_size}")
    if not (math.isfinite(taker_fee) and taker_fee >= 0):
        raise ValueError(f"taker_fee must be finite and >= 0; got {taker_fee}")
    # per unit at the stop, both sides' fees included (the stop lies on the loss side: below a LONG's entry)
    loss = -net_per_unit(1 if stop < entry else -1, entry, stop, taker_fee)
    return min(risk_per_signal / (loss / entry), max_position_size)


def confidence(
    hits: int, total: int, quality_score: float, prior_weight: float = CONFIDENCE_PRIOR_WEIGHT
) -> float:
    """Chance of reaching TP1 before the stop, estimated as ``(hits + k * q) / (total + k)``.

    ``hits`` of ``total`` past signals of the same tier (a quality band) reached TP1 before their stop;
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
