"""Spec 7.1: the required and optional conditions of a LONG or SHORT setup, with their evidence.

Required (all must hold for a candidate), thresholds from :class:`~tapewatch.settings.Settings`:

- ``orderbook_imbalance``: ``imbalance_top10 > orderbook_imbalance_threshold`` (LONG), ``< -threshold`` (SHORT);
- ``large_buy_trades`` / ``large_sell_trades``: ``large_buys`` / ``large_sells >= min_large_trades``;
- ``volume_intensity``: ``> volume_confirmation_multiplier`` (DESIGN §4: 1.8 supersedes the spec's 1.5);
- ``price_above_vwap`` / ``price_below_vwap``: last trade price against the rolling 1-hour VWAP.

Optional (reported, they do not gate): ``rsi_oversold`` / ``rsi_overbought`` (RSI(9) on 15m ``< 30`` /
``> 70``); ``bullish_divergence`` / ``bearish_divergence``; ``support_level`` / ``resistance_level``: the level
lies within one ATR(15m) below / above the price.

A condition whose input is missing (``None``) is unmet with the reason "no data". Every condition carries its
value, threshold and a one-line reason ("imbalance 0.41 > 0.28"); these lines are the signal's ``reasons``.
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec

from tapewatch.features import Features
from tapewatch.settings import Settings

Direction = Literal["LONG", "SHORT"]
DIRECTIONS: tuple[Direction, ...] = ("LONG", "SHORT")
Op = Literal[">", ">=", "<", "<=", "=", "within"]

#: RSI(9) levels of spec 7.1 (fixed by the spec, not CONFIG keys).
RSI_OVERSOLD = 30.0
RSI_OVERBOUGHT = 70.0
NO_DATA = "no data"
#: Significant digits of prices in reasons: enough to tell a price from the VWAP next to it.
PRICE_DIGITS = 10


class Condition(msgspec.Struct, frozen=True, kw_only=True):
    """One rule checked on one feature vector: what was compared, to what, and whether it held."""

    name: str
    required: bool
    met: bool
    value: float | None
    threshold: float | None
    op: Op
    reason: str


class Evaluation(msgspec.Struct, frozen=True, kw_only=True):
    """Every condition of one direction on one feature vector (spec 7.1), required first."""

    symbol: str
    event_time: int
    direction: Direction
    conditions: list[Condition]

    @property
    def passed(self) -> bool:
        """True when every required condition is met: the setup is a candidate."""
        return all(c.met for c in self.conditions if c.required)

    @property
    def met(self) -> list[Condition]:
        return [c for c in self.conditions if c.met]

    @property
    def unmet(self) -> list[Condition]:
        return [c for c in self.conditions if not c.met]

    @property
    def optional_met(self) -> int:
        """How many optional conditions also hold (RSI, divergence, level test)."""
        return sum(1 for c in self.conditions if c.met and not c.required)

    @property
    def reasons(self) -> list[str]:
        """The one-liners of the conditions that hold, required first: the signal's ``reasons``."""
        return [c.reason for c in self.conditions if c.met]


def evaluate(features: Features, settings: Settings) -> list[Evaluation]:
    """Evaluations of the directions whose required conditions all hold (at most one: the imbalance signs
    exclude each other), each listing every condition met or unmet. Empty when neither direction passes."""
    results = [check(features, settings, direction) for direction in DIRECTIONS]
    return [e for e in results if e.passed]


def check(features: Features, settings: Settings, direction: Direction) -> Evaluation:
    """All conditions of ``direction`` on ``features``, whether or not they pass (for near-miss logs)."""
    long = direction == "LONG"
    f = features
    conditions = [
        _compare(
            "orderbook_imbalance",
            "imbalance",
            f.imbalance_top10,
            ">" if long else "<",
            settings.orderbook_imbalance_threshold * (1 if long else -1),
            required=True,
        ),
        _compare(
            "large_buy_trades" if long else "large_sell_trades",
            "large buys" if long else "large sells",
            float(f.large_buys if long else f.large_sells),
            ">=",
            float(settings.min_large_trades),
            required=True,
        ),
        _compare(
            "volume_intensity",
            "volume intensity",
            f.volume_intensity,
            ">",
            settings.volume_confirmation_multiplier,
            required=True,
        ),
        _compare(
            "price_above_vwap" if long else "price_below_vwap",
            "price vs VWAP 1h",
            f.price,
            ">" if long else "<",
            f.vwap_1h,
            required=True,
            digits=PRICE_DIGITS,
        ),
        _compare(
            "rsi_oversold" if long else "rsi_overbought",
            "RSI(9)",
            f.rsi9,
            "<" if long else ">",
            RSI_OVERSOLD if long else RSI_OVERBOUGHT,
            required=False,
        ),
        _flag(
            "bullish_divergence" if long else "bearish_divergence",
            "bullish divergence" if long else "bearish divergence",
            f.bullish_divergence if long else f.bearish_divergence,
        ),
        _level_test(f, long),
    ]
    return Evaluation(symbol=f.symbol, event_time=f.event_time, direction=direction, conditions=conditions)


def _compare(
    name: str,
    label: str,
    value: float | None,
    op: Op,
    threshold: float | None,
    *,
    required: bool,
    digits: int = 4,
) -> Condition:
    if value is None or threshold is None:
        return Condition(
            name=name,
            required=required,
            met=False,
            value=value,
            threshold=threshold,
            op=op,
            reason=f"{label}: {NO_DATA}",
        )
    met = {
        ">": value > threshold,
        ">=": value >= threshold,
        "<": value < threshold,
        "<=": value <= threshold,
    }[op]
    shown = op if met else _negate(op)
    value_text, threshold_text = fmt_pair(value, threshold, digits)
    if label == "price vs VWAP 1h":
        reason = f"price {value_text} {shown} VWAP 1h {threshold_text}"
    else:
        reason = f"{label} {value_text} {shown} {threshold_text}"
    return Condition(
        name=name, required=required, met=met, value=value, threshold=threshold, op=op, reason=reason
    )


def _flag(name: str, label: str, value: bool | None) -> Condition:
    reason = f"{label}: {NO_DATA}" if value is None else (label if value else f"no {label}")
    return Condition(
        name=name,
        required=False,
        met=bool(value),
        value=None if value is None else float(value),
        threshold=1.0,
        op="=",
        reason=reason,
    )


def _level_test(f: Features, long: bool) -> Condition:
    """Support (LONG) or resistance (SHORT) is being tested when it lies within one ATR of the price, on
    its own side (support at or below the price, resistance at or above)."""
    name, label = ("support_level", "support") if long else ("resistance_level", "resistance")
    level = f.support if long else f.resistance
    if level is None or f.atr_15m is None:
        return Condition(
            name=name,
            required=False,
            met=False,
            value=level,
            threshold=f.atr_15m,
            op="within",
            reason=f"{label} test: {NO_DATA}",
        )
    distance = f.price - level if long else level - f.price
    met = 0.0 <= distance <= f.atr_15m
    where = "within" if met else "not within"
    reason = (
        f"{label} {fmt_num(level, PRICE_DIGITS)} {where} 1 ATR ({fmt_num(f.atr_15m, PRICE_DIGITS)})"
        f" of price {fmt_num(f.price, PRICE_DIGITS)}"
    )
    return Condition(
        name=name, required=False, met=met, value=level, threshold=f.atr_15m, op="within", reason=reason
    )


def _negate(op: Op) -> str:
    return {">": "<=", ">=": "<", "<": ">=", "<=": ">"}.get(op, "!" + op)


def fmt_pair(value: float, threshold: float, digits: int = 4) -> tuple[str, str]:
    """``value`` and ``threshold`` for a comparison in a reason, to ``digits`` significant digits, or as many more
    as it takes to tell them apart: a value just past its threshold never reads ``1.8 > 1.8`` (17 significant
    digits tell any two floats apart; ``repr`` is the last resort)."""
    for shown in range(digits, max(digits, 17) + 1):
        pair = fmt_num(value, shown), fmt_num(threshold, shown)
        if value == threshold or pair[0] != pair[1]:
            return pair
    return repr(value), repr(threshold)


def fmt_num(value: float, digits: int = 4) -> str:
    """A number for a one-line reason: whole numbers as such, others to ``digits`` significant digits,
    never in exponent form (``0.41``, ``3``, ``50010.55``, ``0.00001234``)."""
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    text = f"{value:.{digits}g}"
    if "e" in text:
        text = f"{value:.15f}".rstrip("0").rstrip(".")
    return text
