"""The checks of the universe between full rescans (spec 4.2), pure: no I/O, no clock.

- :func:`quick_check`: the hourly check — minimums only, on the current universe's fresh statistics; a spread
  above the maximum in the one REST snapshot must be confirmed by the live spread.
- :func:`emergency_check`: the live check — the realtime service's spread, depth and volume, with strikes
  (a symbol must break a rule on ``strikes`` checks in a row).

Both exclude nobody when more than ``max_share`` of the universe breaks a minimum at once: that is the market
(a flash move widening every spread, a feed connection carrying half the symbols dropping), not the symbols,
and a universe emptied by it would watch nothing until the next full rescan.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from tapewatch.settings import Settings
from tapewatch.universe import Minimums, Reason, SymbolStats, fmt_usd, minimum_failure, usable

#: Default of ``universe_live_stale_after``: live values published longer ago than this (s) are stale and
#: count for nothing (no strike, no forgiving). The realtime service publishes every second; five missed
#: publishes mean it stopped or stalls, while a busy event loop (late by up to a second or two) and a small
#: clock difference between the sensor's host and the service's stay inside. Dead values otherwise live on
#: until their 60 s expiry.
FEED_STALE_AFTER_S = 5.0
#: Default of ``max_exclusion_share``: more than half of the universe breaking a minimum at once is the market.
MAX_EXCLUSION_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class Exclusion:
    """A symbol that leaves the universe at once: why, and the values that broke the rule."""

    symbol: str
    reason: Reason
    detail: str
    values: dict[str, float | None] = field(default_factory=dict)


def market_wide(
    failing: Mapping[str, Reason], universe_size: int, max_share: float, check: str
) -> str | None:
    """Why excluding ``failing`` (symbol → reason) at once would be wrong, or None when it is not: more than
    ``max_share`` of the universe breaking a minimum together is a market-wide condition."""
    if not failing or len(failing) <= max_share * universe_size:
        return None
    reasons = ", ".join(f"{r.value} ×{n}" for r, n in Counter(failing.values()).most_common())
    return (
        f"market-wide: {len(failing)} of {universe_size} symbols break a minimum at once in the {check} "
        f"(more than {max_share:.0%}; {reasons}); nobody is excluded for it"
    )


@dataclass(frozen=True, slots=True)
class QuickCheck:
    """The hourly check of the current universe: who stays, who leaves, who could not be measured.

    ``unconfirmed``: symbols whose REST spread was above the maximum but whose live spread was not (or was
    not known fresh), judged on the rest. ``market_wide`` says why nobody leaves when too many would at
    once; ``held`` are the exclusions it held back."""

    kept: tuple[str, ...]
    excluded: tuple[Exclusion, ...]
    unknown: tuple[str, ...]
    unconfirmed: tuple[str, ...] = ()
    market_wide: str | None = None
    held: tuple[Exclusion, ...] = ()


def quick_check(
    universe: Sequence[str],
    stats: Mapping[str, SymbolStats],
    minimums: Minimums,
    *,
    live_spread: Mapping[str, float],
    max_share: float = MAX_EXCLUSION_SHARE,
) -> QuickCheck:
    """Minimums only, on the symbols of ``universe`` (order kept). A symbol lacking a statistic the minimums
    need (and breaking none it has) is *kept* and listed as unknown: a failed request between rescans must not
    empty the universe. Score inputs (ATR/price, trades per second) play no part here.

    The REST spread is one depth snapshot, one moment: a spread above ``max_spread`` there excludes only when
    the live spread (``live_spread``: symbol → fresh spread the realtime service published) is above it too.
    Otherwise the live spread (None when not known fresh: then the spread is unknown) stands in for it and
    the other minimums decide. When more than ``max_share`` of the universe would leave, nobody does."""
    kept: list[str] = []
    excluded: list[Exclusion] = []
    unknown: list[str] = []
    unconfirmed: list[str] = []
    for symbol in universe:
        s = stats.get(symbol)
        failure = None if s is None else minimum_failure(s, minimums)
        if s is not None and failure is not None and failure[0] is Reason.SPREAD_TOO_WIDE:
            live = usable(live_spread.get(symbol))
            if live is not None and live > minimums.max_spread:
                failure = (Reason.SPREAD_TOO_WIDE, f"{failure[1]}, confirmed by the live spread {live:.4%}")
            else:
                unconfirmed.append(symbol)
                s = replace(s, spread=live)
                failure = minimum_failure(s, minimums)
        if s is None or (failure is not None and failure[0] is Reason.MISSING_STATISTIC):
            kept.append(symbol)
            unknown.append(symbol)
        elif failure is not None:
            excluded.append(Exclusion(symbol, failure[0], failure[1], s.as_dict()))
        else:
            kept.append(symbol)
    why = market_wide({e.symbol: e.reason for e in excluded}, len(universe), max_share, "quick check")
    if why is not None:
        return QuickCheck(tuple(universe), (), tuple(unknown), tuple(unconfirmed), why, tuple(excluded))
    return QuickCheck(tuple(kept), tuple(excluded), tuple(unknown), tuple(unconfirmed))


def confirm_spreads(
    stats: Sequence[SymbolStats], live_spread: Mapping[str, float], max_spread: float
) -> tuple[list[SymbolStats], tuple[str, ...]]:
    """The full rescan's spreads, judged as the quick check judges them: a REST snapshot spread above
    ``max_spread`` is one moment, so where the symbol's fresh live spread (``live_spread``, from the realtime
    service) is known and within the maximum, the live spread replaces it; where no live spread is known the
    snapshot stands (a rescan measures symbols nobody follows, and those must still pass on the snapshot).

    Returns the statistics (order kept) and the symbols whose snapshot spread the live one overruled."""
    out: list[SymbolStats] = []
    overruled: list[str] = []
    for s in stats:
        rest = usable(s.spread)
        live = usable(live_spread.get(s.symbol))
        if rest is not None and rest > max_spread and live is not None and 0 < live <= max_spread:
            out.append(replace(s, spread=live))
            overruled.append(s.symbol)
        else:
            out.append(s)
    return out, tuple(overruled)


def fresh_spreads(live: Mapping[str, LiveLiquidity], now_ms: int, stale_after_s: float) -> dict[str, float]:
    """The live spreads of ``live`` published at most ``stale_after_s`` before ``now_ms`` (the quick
    check's confirmation)."""
    spreads: dict[str, float] = {}
    for symbol, values in live.items():
        spread = usable(values.spread)
        if spread is not None and not _stale(values, now_ms, stale_after_s):
            spreads[symbol] = spread
    return spreads


@dataclass(frozen=True, slots=True)
class LiveLiquidity:
    """What the realtime service publishes about one symbol's market right now (None = not known).

    ``last_event_ms`` is the exchange time of the symbol's newest market event received (a depth diff, held
    or applied, a polled snapshot, a trade: a book waiting for a resync snapshot still receives its diffs and
    trades, and that is no silence), ``updated_ms`` the wall clock
    when the service published these values, ``quiet_s`` the seconds the service has received nothing for
    the symbol while others flow (None when it is not quiet), ``window_covered_s`` the seconds of trades
    ``quote_volume_window`` covers (less than the window for a while after the service started or the symbol
    joined: its trades are counted from then on), ``shard`` the realtime instance that published them
    (``I/N``; None when not known: a service that predates the field)."""

    symbol: str
    spread: float | None = None
    depth_1pct_usd: float | None = None
    quote_volume_window: float | None = None
    last_event_ms: int | None = None
    updated_ms: int | None = None
    quiet_s: float | None = None
    window_covered_s: float | None = None
    shard: str | None = None


def silent_seconds(live: LiveLiquidity) -> float | None:
    """How long nothing has arrived from the exchange for the symbol, as of its publication: the larger of
    ``updated_ms - last_event_ms`` and ``quiet_s``; None when neither is known."""
    ages: list[float] = []
    if live.last_event_ms is not None and live.updated_ms:
        ages.append((live.updated_ms - live.last_event_ms) / 1000)
    quiet = usable(live.quiet_s)
    if quiet is not None:
        ages.append(quiet)
    return max(ages) if ages else None


def _stale(live: LiveLiquidity, now_ms: int, stale_after_s: float) -> bool:
    """Published more than ``stale_after_s`` before ``now_ms`` (an unknown publish time is not judged)."""
    return bool(live.updated_ms) and (now_ms - (live.updated_ms or 0)) / 1000 > stale_after_s


@dataclass(frozen=True, slots=True)
class EmergencyRules:
    """When a live symbol breaks the minimums: its spread above ``max_spread``, its depth within 1 % below
    ``min_depth_1pct_usd``, or its quote volume over the trade window, scaled to 24 h, below
    ``volume_fraction`` × ``min_24h_volume`` — for ``strikes`` checks in a row (one bad read is noise).

    A symbol silent (no event) for longer than the window has a window volume of 0, whatever the service
    still publishes: its trade window forgets old trades only when a new one arrives. The volume is judged
    only once it covers the whole window. Values published more than ``stale_after_s`` ago are ignored;
    more than ``max_share`` of the universe breaking a rule at once is the market: nobody is struck."""

    max_spread: float
    min_depth_1pct_usd: float
    min_24h_volume: float
    volume_fraction: float
    window_seconds: float
    strikes: int
    max_share: float = MAX_EXCLUSION_SHARE
    stale_after_s: float = FEED_STALE_AFTER_S


@dataclass(frozen=True, slots=True)
class EmergencyCheck:
    """Symbols to exclude now, and the strike counts to carry to the next check.

    ``unknown``: no usable live value; ``stale``: values published too long ago (ignored: their strikes
    are carried as they were); ``market_wide``: why nobody was struck this time, when too many broke a rule
    at once (their strikes are carried too); ``silent_shards``: the realtime shards none of whose symbols had
    an event within the trade window (their feed is down: the silence rule spares their symbols)."""

    exclusions: tuple[Exclusion, ...]
    strikes: dict[str, int]
    unknown: tuple[str, ...]
    stale: tuple[str, ...] = ()
    market_wide: str | None = None
    silent_shards: tuple[str, ...] = ()


def _silent(live: LiveLiquidity, rules: EmergencyRules) -> float | None:
    """``live``'s silence in seconds when it is longer than the trade window, else None."""
    silent = silent_seconds(live)
    return (
        silent if silent is not None and rules.window_seconds > 0 and silent > rules.window_seconds else None
    )


def window_volume(live: LiveLiquidity, rules: EmergencyRules) -> float | None:
    """The window's quote volume when it covers the whole trade window, else None (unknown).

    Right after the service (re)starts or the symbol joins, the window holds only the seconds since: scaled
    to a day as if it were full, a healthy symbol looks like a dead one. Scaling by the seconds covered
    instead would judge a borderline symbol on a minute of trades; five minutes without the volume rule
    cost little (spread, depth and silence still apply, and the strikes take 90 s anyway)."""
    window = usable(live.quote_volume_window)
    covered = usable(live.window_covered_s)
    if window is None or covered is None or rules.window_seconds <= 0 or covered < rules.window_seconds:
        return None
    return window


def live_violation(
    live: LiveLiquidity, rules: EmergencyRules, market_flows: bool = True
) -> tuple[Reason, str] | None:
    """The first rule ``live`` breaks now, or None (also when the values are unknown).

    ``market_flows`` False (no symbol the same feed carries had an event within the window: the feed, not
    the symbol, is down) turns off the silence rule."""
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
    window = window_volume(live, rules)
    if window is not None:
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
    *,
    now_ms: int,
) -> EmergencyCheck:
    """Which symbols of ``universe`` to exclude now, given the live values, the strikes so far and the
    sensor's wall clock ``now_ms``.

    A symbol without live values, or with all of them unknown (None), is neither excluded nor struck, and
    its count is forgotten. Values published more than ``rules.stale_after_s`` before ``now_ms`` (a service
    that stopped publishing) are ignored: no strike, the count carried as it was. The silence rule applies
    to a symbol only while its feed flows: some symbol published by the same realtime shard (``shard``; of
    the universe when not known) had an event within the trade window. When all of a shard's symbols are
    silent its feed is down (one instance of ``tapewatch run --shard I/N`` lost the exchange while the others
    flow), and that never excludes its symbols (``silent_shards`` names it). When more than ``rules.max_share`` of
    the universe breaks a rule on this check, it is the market: nobody is struck or excluded (counts carried)
    and ``market_wide`` says why."""
    fresh: dict[str, LiveLiquidity] = {}
    stale: list[str] = []
    for symbol in universe:
        values = live.get(symbol)
        if values is not None and _stale(values, now_ms, rules.stale_after_s):
            stale.append(symbol)
        elif values is not None:
            fresh[symbol] = values
    # the feeds that flow: the shards with a symbol that had an event within the window
    flowing = {
        v.shard
        for v in fresh.values()
        if (age := silent_seconds(v)) is not None and age <= rules.window_seconds
    }
    # the shards none of whose symbols flows, one at least known silent past the window (a shard that has
    # received nothing since it started is not named: its silence is not known yet)
    silent_shards = sorted(
        {v.shard for v in fresh.values() if v.shard is not None and _silent(v, rules) is not None} - flowing
    )
    unknown: list[str] = []
    violations: dict[str, tuple[Reason, str]] = {}
    for symbol in universe:
        values = fresh.get(symbol)
        if symbol in stale:
            continue
        # a symbol whose shard is not known is judged against every feed (the universe flows)
        market_flows = bool(flowing) if values is None or values.shard is None else values.shard in flowing
        if values is None or (
            all(usable(v) is None for v in (values.spread, values.depth_1pct_usd))
            and window_volume(values, rules) is None
            and (not market_flows or _silent(values, rules) is None)
        ):
            unknown.append(symbol)
            continue
        violation = live_violation(values, rules, market_flows)
        if violation is not None:
            violations[symbol] = violation
    carried = {s: strikes[s] for s in stale if s in strikes}
    why = market_wide(
        {s: v[0] for s, v in violations.items()}, len(universe), rules.max_share, "emergency check"
    )
    if why is not None:
        carried.update({s: strikes[s] for s in violations if s in strikes})
        return EmergencyCheck((), carried, tuple(unknown), tuple(stale), why, tuple(silent_shards))
    exclusions: list[Exclusion] = []
    counts = carried
    for symbol, (reason, detail) in violations.items():
        values = fresh[symbol]
        count = strikes.get(symbol, 0) + 1
        if count >= rules.strikes:
            recorded = {
                "spread": values.spread,
                "depth_1pct_usd": values.depth_1pct_usd,
                "quote_volume_window": values.quote_volume_window,
                "window_covered_s": values.window_covered_s,
                "silent_s": silent_seconds(values),
                "strikes": float(count),
            }
            exclusions.append(Exclusion(symbol, reason, detail, recorded))
        else:
            counts[symbol] = count
    return EmergencyCheck(
        tuple(exclusions), counts, tuple(unknown), tuple(stale), silent_shards=tuple(silent_shards)
    )


def emergency_rules_from(settings: Settings) -> EmergencyRules:
    """The emergency-exclusion rules of ``settings`` (the window is ``trade_history_window``)."""
    return EmergencyRules(
        max_spread=settings.max_spread,
        min_depth_1pct_usd=settings.min_depth_1pct_usd,
        min_24h_volume=settings.min_24h_volume,
        volume_fraction=settings.emergency_volume_fraction,
        window_seconds=float(settings.trade_history_window),
        strikes=settings.emergency_strikes,
        max_share=settings.max_exclusion_share,
        stale_after_s=settings.universe_live_stale_after,
    )
