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
    """Minimums only, on the symbols of ``universe`` (order kept). A symbol lacking a statistic the minimums
    need (and breaking none it has) is *kept* and listed as unknown: a failed request between rescans must not
    empty the universe. Score inputs (ATR/price, trades per second) play no part here."""
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
    """What the realtime service publishes about one symbol's market right now (None = not known).

    ``last_event_ms`` is the exchange time of the symbol's newest book event, ``updated_ms`` the wall clock
    when the service published these values, ``quiet_s`` the seconds the service has received nothing for
    the symbol while others flow (None when it is not quiet)."""

    symbol: str
    spread: float | None = None
    depth_1pct_usd: float | None = None
    quote_volume_window: float | None = None
    last_event_ms: int | None = None
    updated_ms: int | None = None
    quiet_s: float | None = None


def silent_seconds(live: LiveLiquidity) -> float | None:
    """How long the symbol has had no market event, as of its publication: the larger of ``updated_ms -
    last_event_ms`` and ``quiet_s``; None when neither is known."""
    ages: list[float] = []
    if live.last_event_ms is not None and live.updated_ms:
        ages.append((live.updated_ms - live.last_event_ms) / 1000)
    quiet = usable(live.quiet_s)
    if quiet is not None:
        ages.append(quiet)
    return max(ages) if ages else None


@dataclass(frozen=True, slots=True)
class EmergencyRules:
    """When a live symbol breaks the minimums: its spread above ``max_spread``, its depth within 1 % below
    ``min_depth_1pct_usd``, or its quote volume over the trade window, scaled to 24 h, below
    ``volume_fraction`` × ``min_24h_volume`` — for ``strikes`` checks in a row (one bad read is noise).

    A symbol silent (no event) for longer than the window has a window volume of 0, whatever the service
    still publishes: its trade window forgets old trades only when a new one arrives."""

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


def _silent(live: LiveLiquidity, rules: EmergencyRules) -> float | None:
    """``live``'s silence in seconds when it is longer than the trade window, else None."""
    silent = silent_seconds(live)
    return (
        silent if silent is not None and rules.window_seconds > 0 and silent > rules.window_seconds else None
    )


def live_violation(
    live: LiveLiquidity, rules: EmergencyRules, market_flows: bool = True
) -> tuple[Reason, str] | None:
    """The first rule ``live`` breaks now, or None (also when the values are unknown).

    ``market_flows`` False (no symbol of the universe had an event within the window: the feed, not the
    symbol, is down) turns off the silence rule."""
    spread = usable(live.spread)
    if spread is not None and spread > rules.max_spread:
        return Reason.SPREAD_TOO_WIDE, f"live spread {spread:.4%} > {rules.max_spread:.4%}"
    depth = usable(live.depth_1pct_usd)
    if depth is not None and depth < rules.min_depth_1pct_usd:
        return (
            Reason.BELOW_MIN_DEPTH,
            f"live depth ±1% ${fmt_usd(depth)} < ${fmt_usd(rules.min_depth_1pct_usd)}",
        )
    floor = rules.volume_fraction * rules.min_24h_volume
    silent = _silent(live, rules) if market_flows else None
    if silent is not None and floor > 0:
        return Reason.BELOW_MIN_VOLUME, (
            f"no event for {silent:.0f} s (> the {rules.window_seconds:g} s trade window) while other symbols "
            f"flow: live volume $0 < {rules.volume_fraction:g} × ${fmt_usd(rules.min_24h_volume)}"
        )
    window = usable(live.quote_volume_window)
    if window is not None and rules.window_seconds > 0:
        daily = window * 86_400 / rules.window_seconds
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

    A symbol without live values, or with all of them unknown (None), is neither excluded nor struck. The
    silence rule applies only while the market flows (some symbol of the universe had an event within the
    trade window): when all are silent the feed is down, and that never empties the universe."""
    exclusions: list[Exclusion] = []
    counts: dict[str, int] = {}
    unknown: list[str] = []
    present = [live[s] for s in universe if s in live]
    market_flows = any(
        (age := silent_seconds(v)) is not None and age <= rules.window_seconds for v in present
    )
    for symbol in universe:
        values = live.get(symbol)
        if values is None or (
            all(usable(v) is None for v in (values.spread, values.depth_1pct_usd, values.quote_volume_window))
            and (not market_flows or _silent(values, rules) is None)
        ):
            unknown.append(symbol)
            continue
        violation = live_violation(values, rules, market_flows)
        if violation is None:
            continue
        count = strikes.get(symbol, 0) + 1
        if count >= rules.strikes:
            recorded = {
                "spread": values.spread,
                "depth_1pct_usd": values.depth_1pct_usd,
                "quote_volume_window": values.quote_volume_window,
                "silent_s": silent_seconds(values),
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
