"""The checks of the universe between full rescans (spec 4.2), pure: no I/O, no clock.

- :func:`quick_check`: the hourly check — minimums only, on the current universe's fresh statistics.
- :func:`emergency_check`: the live check — the realtime service's spread, depth and volume, with strikes
  (a symbol must break a rule on ``strikes`` checks in a row).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tapewatch.settings import Settings
from tapewatch.universe import Minimums, Reason, SymbolStats, fmt_usd, minimum_failure, usable


@dataclass(frozen=True, slots=True)
class Exclusion:
    """A symbol that leaves the universe at once: why, and the values that broke the rule."""

    symbol: str
    reason: Reason
    detail: str
    values: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QuickCheck:
    """The hourly check of the current universe: who stays, who leaves, who could not be measured."""

    kept: tuple[str, ...]
    excluded: tuple[Exclusion, ...]
    unknown: tuple[str, ...]


def quick_check(universe: Sequence[str], stats: Mapping[str, SymbolStats], minimums: Minimums) -> QuickCheck:
    """Minimums only, on the symbols of ``universe`` (order kept). A symbol with a missing statistic is
    *kept* and listed as unknown: a failed request between rescans must not empty the universe."""
    kept: list[str] = []
    excluded: list[Exclusion] = []
    unknown: list[str] = []
    for symbol in universe:
        s = stats.get(symbol)
        failure = None if s is None else minimum_failure(s, minimums)
        if s is None or (failure is not None and failure[0] is Reason.MISSING_STATISTIC):
            kept.append(symbol)
            unknown.append(symbol)
        elif failure is not None:
            excluded.append(Exclusion(symbol, failure[0], failure[1], s.as_dict()))
        else:
            kept.append(symbol)
    return QuickCheck(tuple(kept), tuple(excluded), tuple(unknown))


@dataclass(frozen=True, slots=True)
class LiveLiquidity:
    """What the realtime service publishes about one symbol's market right now (None = not known)."""

    symbol: str
    spread: float | None = None
    depth_1pct_usd: float | None = None
    quote_volume_window: float | None = None


@dataclass(frozen=True, slots=True)
class EmergencyRules:
    """When a live symbol breaks the minimums: its spread above ``max_spread``, its depth within 1 % below
    ``min_depth_1pct_usd``, or its quote volume over the trade window, scaled to 24 h, below
    ``volume_fraction`` × ``min_24h_volume`` — for ``strikes`` checks in a row (one bad read is noise)."""

    max_spread: float
    min_depth_1pct_usd: float
    min_24h_volume: float
    volume_fraction: float
    window_seconds: float
    strikes: int


@dataclass(frozen=True, slots=True)
class EmergencyCheck:
    """Symbols to exclude now, and the strike counts to carry to the next check."""

    exclusions: tuple[Exclusion, ...]
    strikes: dict[str, int]
    unknown: tuple[str, ...]


def live_violation(live: LiveLiquidity, rules: EmergencyRules) -> tuple[Reason, str] | None:
    """The first rule ``live`` breaks now, or None (also when the values are unknown)."""
    spread = usable(live.spread)
    if spread is not None and spread > rules.max_spread:
        return Reason.SPREAD_TOO_WIDE, f"live spread {spread:.4%} > {rules.max_spread:.4%}"
    depth = usable(live.depth_1pct_usd)
    if depth is not None and depth < rules.min_depth_1pct_usd:
        return (
            Reason.BELOW_MIN_DEPTH,
            f"live depth ±1% ${fmt_usd(depth)} < ${fmt_usd(rules.min_depth_1pct_usd)}",
        )
    window = usable(live.quote_volume_window)
    if window is not None and rules.window_seconds > 0:
        daily = window * 86_400 / rules.window_seconds
        floor = rules.volume_fraction * rules.min_24h_volume
        if daily < floor:
            return Reason.BELOW_MIN_VOLUME, (
                f"live volume ${fmt_usd(window)} in {rules.window_seconds:g} s (${fmt_usd(daily)}/24h) "
                f"< {rules.volume_fraction:g} × ${fmt_usd(rules.min_24h_volume)}"
            )
    return None


def emergency_check(
    universe: Sequence[str],
    live: Mapping[str, LiveLiquidity],
    rules: EmergencyRules,
    strikes: Mapping[str, int],
) -> EmergencyCheck:
    """Which symbols of ``universe`` to exclude now, given the live values and the strikes so far.

    A symbol without live values, or with all of them unknown (None), is neither excluded nor struck."""
    exclusions: list[Exclusion] = []
    counts: dict[str, int] = {}
    unknown: list[str] = []
    for symbol in universe:
        values = live.get(symbol)
        if values is None or all(
            usable(v) is None for v in (values.spread, values.depth_1pct_usd, values.quote_volume_window)
        ):
            unknown.append(symbol)
            continue
        violation = live_violation(values, rules)
        if violation is None:
            continue
        count = strikes.get(symbol, 0) + 1
        if count >= rules.strikes:
            recorded = {
                "spread": values.spread,
                "depth_1pct_usd": values.depth_1pct_usd,
                "quote_volume_window": values.quote_volume_window,
                "strikes": float(count),
            }
            exclusions.append(Exclusion(symbol, violation[0], violation[1], recorded))
        else:
            counts[symbol] = count
    return EmergencyCheck(tuple(exclusions), counts, tuple(unknown))


def emergency_rules_from(settings: Settings) -> EmergencyRules:
    """The emergency-exclusion rules of ``settings`` (the window is ``trade_history_window``)."""
    return EmergencyRules(
        max_spread=settings.max_spread,
        min_depth_1pct_usd=settings.min_depth_1pct_usd,
        min_24h_volume=settings.min_24h_volume,
        volume_fraction=settings.emergency_volume_fraction,
        window_seconds=float(settings.trade_history_window),
        strikes=settings.emergency_strikes,
    )
