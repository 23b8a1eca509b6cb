"""Which symbols to watch (spec 4), pure: no I/O, no clock.

- :func:`select_universe`: the full rescan — spec 4.1 score, the minimums, then the top ``universe_size``,
  with the reason every symbol is in or out.
- :mod:`tapewatch.universe_checks`: the checks between rescans (hourly quick check, live emergency check).
- :func:`tradable_perpetuals` / :func:`top_by_volume`: the start-up universe before any rescan (the
  ``universe_size`` USDT-margined perpetuals with the largest 24h quote volume, or ``Settings.symbols``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from tapewatch.events import Instruments
from tapewatch.settings import Settings
from tapewatch.trade_plan import tick_sizes


class SymbolLike(Protocol):
    @property
    def symbol(self) -> str: ...
    @property
    def contract_type(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def quote_asset(self) -> str: ...


class InstrumentLike(SymbolLike, Protocol):
    @property
    def tick_size(self) -> float | None: ...


class TickerLike(Protocol):
    @property
    def symbol(self) -> str: ...
    @property
    def quote_volume(self) -> float: ...


def tradable_perpetuals(symbols: Iterable[SymbolLike]) -> set[str]:
    """Perpetual, trading, USDT-margined contracts."""
    return {
        s.symbol
        for s in symbols
        if s.contract_type == "PERPETUAL" and s.status == "TRADING" and s.quote_asset == "USDT"
    }


def tradable_instruments(symbols: Sequence[InstrumentLike]) -> tuple[set[str], Instruments]:
    """The tradable perpetuals of exchangeInfo's ``symbols`` (:func:`tradable_perpetuals`) and their price steps
    as the ``control:instruments`` line carries them (:func:`~tapewatch.trade_plan.tick_sizes`)."""
    tradable = tradable_perpetuals(symbols)
    return tradable, Instruments(tick_sizes((s.symbol, s.tick_size) for s in symbols if s.symbol in tradable))


def top_by_volume(tradable: set[str], tickers: Iterable[TickerLike], size: int) -> list[str]:
    """The ``size`` tradable symbols with the largest 24h quote volume (ties broken by name)."""
    ranked = sorted(
        ((t.quote_volume, t.symbol) for t in tickers if t.symbol in tradable), key=lambda x: (-x[0], x[1])
    )
    return [symbol for _, symbol in ranked[:size]]


# --- spec 4: scoring and selection ---------------------------------------------------------------------
#
# Normalisation: each score component is the statistic divided by a fixed reference value (the spec's
# $100M volume, $2M depth, ATR ratio, 10 trades/s), capped at 1. It is *absolute*, not relative to the
# other candidates: a symbol's score does not move when another symbol lists or delists, and scores of two
# rescans compare directly. (Min-max across the set would let one outlier rescale everybody.)


class Reason(StrEnum):
    """Why a symbol is in or out of the universe (stored with every rescan; the dashboard shows it)."""

    SELECTED = "selected"
    MISSING_STATISTIC = "missing_statistic"
    BELOW_MIN_VOLUME = "below_min_volume"
    BELOW_MIN_OPEN_INTEREST = "below_min_open_interest"
    SPREAD_TOO_WIDE = "spread_too_wide"
    BELOW_MIN_DEPTH = "below_min_depth"
    RANK_BEYOND_SIZE = "rank_beyond_size"


@dataclass(frozen=True, slots=True)
class SymbolStats:
    """What a rescan measured for one symbol; None where it could not be measured (``errors`` says why).

    ``spread`` is (ask - bid) / mid; ``depth_1pct_usd`` the USD resting within 1 % of mid, both sides;
    ``atr_ratio`` ATR / last price; ``trades_per_second`` the 24h trade count / 86 400."""

    symbol: str
    quote_volume_24h: float | None = None
    open_interest_usd: float | None = None
    spread: float | None = None
    depth_1pct_usd: float | None = None
    atr_ratio: float | None = None
    trades_per_second: float | None = None
    last_price: float | None = None
    errors: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, float | None]:
        """The statistics by name (for storage and asset metadata)."""
        return {name: getattr(self, name) for name in STAT_NAMES}


STAT_NAMES: tuple[str, ...] = (
    "quote_volume_24h",
    "open_interest_usd",
    "spread",
    "depth_1pct_usd",
    "atr_ratio",
    "trades_per_second",
    "last_price",
)


@dataclass(frozen=True, slots=True)
class ScoreWeights:
    """Spec 4.1 weights. They are relative: the score divides by their sum (the spec's sum to 1)."""

    volume: float = 0.35
    liquidity: float = 0.25
    volatility: float = 0.20
    activity: float = 0.20


@dataclass(frozen=True, slots=True)
class ScoreReferences:
    """The value of each statistic that earns a full component (spec 4.1: $100M, $2M, 0.1, 10/s)."""

    volume_usd: float = 100_000_000
    depth_usd: float = 2_000_000
    atr_ratio: float = 0.1
    trades_per_second: float = 10.0


@dataclass(frozen=True, slots=True)
class Minimums:
    """What a symbol needs to be in the universe at all (spec CONFIG; ``min_depth_1pct_usd`` 0 = off)."""

    min_24h_volume: float
    min_open_interest: float
    max_spread: float
    min_depth_1pct_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class ScoreComponents:
    """The four spec 4.1 components, each in [0, 1]."""

    volume: float
    liquidity: float
    volatility: float
    activity: float


@dataclass(frozen=True, slots=True)
class Decision:
    """One symbol's place in a rescan: in or out, why, and its score (None when a statistic is missing).

    ``rank`` is set for every symbol that passes the minimums (1 = best), None otherwise."""

    symbol: str
    selected: bool
    reason: Reason
    detail: str
    rank: int | None
    score: float | None
    components: ScoreComponents | None
    stats: SymbolStats


@dataclass(frozen=True, slots=True)
class Selection:
    """Every candidate's decision: the selected ones first in rank order, then the others by name."""

    decisions: tuple[Decision, ...]

    @property
    def symbols(self) -> list[str]:
        """The universe, best first."""
        return [d.symbol for d in self.decisions if d.selected]

    def reasons(self) -> dict[str, int]:
        """How many symbols each reason covers."""
        counts: dict[str, int] = {}
        for d in self.decisions:
            counts[d.reason.value] = counts.get(d.reason.value, 0) + 1
        return counts


def usable(value: float | None) -> float | None:
    """``value`` if it is a finite number >= 0, else None (NaN, infinity, negative or missing)."""
    if value is None or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def _stat(stats: SymbolStats, name: str) -> float | None:
    value = usable(getattr(stats, name))
    # a zero spread is a locked book or a bad read, never a real market: treat it as not measured
    return None if name == "spread" and value == 0 else value


_SCORE_INPUTS = ("quote_volume_24h", "depth_1pct_usd", "atr_ratio", "trades_per_second")


def score_components(stats: SymbolStats, refs: ScoreReferences) -> ScoreComponents | None:
    """The four components (each ``min(stat / reference, 1)``), or None when a score input is missing."""
    values = [_stat(stats, name) for name in _SCORE_INPUTS]
    if any(v is None for v in values):
        return None
    volume, depth, atr_ratio, tps = (float(v or 0.0) for v in values)
    return ScoreComponents(
        volume=min(volume / refs.volume_usd, 1.0),
        liquidity=min(depth / refs.depth_usd, 1.0),
        volatility=min(atr_ratio, refs.atr_ratio) / refs.atr_ratio,
        activity=min(tps / refs.trades_per_second, 1.0),
    )


def score(components: ScoreComponents, weights: ScoreWeights) -> float:
    """The spec 4.1 score on a 0..100 scale: 100 × Σ weight × component / Σ weight."""
    total = weights.volume + weights.liquidity + weights.volatility + weights.activity
    if not total > 0:
        raise ValueError("universe score weights must not all be zero")
    weighted = (
        weights.volume * components.volume
        + weights.liquidity * components.liquidity
        + weights.volatility * components.volatility
        + weights.activity * components.activity
    )
    return 100.0 * weighted / total


def fmt_usd(value: float) -> str:
    """A USD amount for a reason text: thousands separators, no cents (small values: 6 significant digits)."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.6g}"


def minimum_failure(stats: SymbolStats, minimums: Minimums) -> tuple[Reason, str] | None:
    """The first minimum ``stats`` break (volume, open interest, spread, depth), or None.

    Only what the minimums use is required: 24h volume, open interest, spread, and depth when
    ``min_depth_1pct_usd`` > 0 (the score inputs are :func:`select_universe`'s business, so the quick check,
    which fetches no klines, still judges by the minimums). A measured value that breaks its minimum wins
    over another statistic that is missing (a failed open-interest call never hides a 2 % spread); with no
    measured breach, a required statistic missing or invalid is ``missing_statistic``."""
    volume = _stat(stats, "quote_volume_24h")
    oi = _stat(stats, "open_interest_usd")
    spread = _stat(stats, "spread")
    depth = _stat(stats, "depth_1pct_usd")
    if volume is not None and volume < minimums.min_24h_volume:
        return Reason.BELOW_MIN_VOLUME, f"24h volume ${fmt_usd(volume)} < ${fmt_usd(minimums.min_24h_volume)}"
    if oi is not None and oi < minimums.min_open_interest:
        return (
            Reason.BELOW_MIN_OPEN_INTEREST,
            f"open interest ${fmt_usd(oi)} < ${fmt_usd(minimums.min_open_interest)}",
        )
    if spread is not None and spread > minimums.max_spread:
        return Reason.SPREAD_TOO_WIDE, f"spread {spread:.4%} > {minimums.max_spread:.4%}"
    depth_required = minimums.min_depth_1pct_usd > 0
    if depth_required and depth is not None and depth < minimums.min_depth_1pct_usd:
        return (
            Reason.BELOW_MIN_DEPTH,
            f"depth ±1% ${fmt_usd(depth)} < ${fmt_usd(minimums.min_depth_1pct_usd)}",
        )
    required = {"quote_volume_24h": volume, "open_interest_usd": oi, "spread": spread}
    if depth_required:
        required["depth_1pct_usd"] = depth
    missing = [name for name, value in required.items() if value is None]
    return (Reason.MISSING_STATISTIC, _missing_detail(stats, missing)) if missing else None


def _missing_detail(stats: SymbolStats, names: list[str]) -> str:
    detail = "no valid " + ", ".join(names)
    return detail + (f" ({'; '.join(stats.errors)})" if stats.errors else "")


def select_universe(
    candidates: Iterable[SymbolStats],
    size: int,
    minimums: Minimums,
    weights: ScoreWeights | None = None,
    refs: ScoreReferences | None = None,
) -> Selection:
    """Spec 4: score every candidate, drop those below the minimums, keep the top ``size`` by score.

    Ties in score go to the larger 24h volume, then to the name (A before B), so the result never depends
    on input order. Duplicate symbols keep their first statistics. Never raises on bad statistics: a
    symbol lacking one is out with ``missing_statistic``."""
    if size < 1:
        raise ValueError(f"universe size must be at least 1; got {size}")
    weights, refs = weights or ScoreWeights(), refs or ScoreReferences()
    seen: dict[str, SymbolStats] = {}
    for stats in candidates:
        seen.setdefault(stats.symbol, stats)
    eligible: list[tuple[float, float, str, ScoreComponents]] = []
    failed: list[Decision] = []
    for symbol, stats in seen.items():
        components = score_components(stats, refs)
        value = None if components is None else score(components, weights)
        failure = minimum_failure(stats, minimums)
        if failure is not None or components is None or value is None:
            # past the minimums a full rescan needs every score input; name the missing ones
            reason, detail = failure or (
                Reason.MISSING_STATISTIC,
                _missing_detail(stats, [n for n in _SCORE_INPUTS if _stat(stats, n) is None]),
            )
            failed.append(Decision(symbol, False, reason, detail, None, value, components, stats))
            continue
        eligible.append((value, float(_stat(stats, "quote_volume_24h") or 0.0), symbol, components))
    eligible.sort(key=lambda e: (-round(e[0], 9), -e[1], e[2]))
    ranked: list[Decision] = []
    for rank, (value, _, symbol, components) in enumerate(eligible, start=1):
        inside = rank <= size
        reason = Reason.SELECTED if inside else Reason.RANK_BEYOND_SIZE
        detail = f"score {value:.2f}, rank {rank} " + (f"<= {size}" if inside else f"> size {size}")
        ranked.append(Decision(symbol, inside, reason, detail, rank, value, components, seen[symbol]))
    failed.sort(key=lambda d: d.symbol)
    return Selection(tuple(ranked + failed))


#: Where a fixed universe comes from (``Settings.symbols``), as the rescan's reasons name it.
FIXED_BY = "TAPEWATCH_SYMBOLS"


def fixed_selection(scored: Selection, fixed: Sequence[str]) -> Selection:
    """The rescan of a fixed universe: exactly the symbols of ``fixed`` that were candidates (tradable), in
    its order, whatever their score or minimums; every other candidate is out.

    ``scored`` is the score-based selection of the same candidates: its score, components and statistics are
    kept for every symbol and its verdict is quoted in the detail, so the history still shows what the score
    would have chosen (the quick check and the emergency check still remove a fixed symbol that breaks a
    minimum; the next rescan brings it back). Reasons stay those of the stored history: a fixed symbol is
    ``selected`` ("fixed by TAPEWATCH_SYMBOLS", rank = its position in the list); another keeps the minimum it
    breaks (or ``missing_statistic``), else is ``rank_beyond_size``, its detail starting "not in the fixed
    list"; a fixed symbol that was no candidate (not a tradable USDT perpetual) is out as
    ``missing_statistic``."""
    by_symbol = {d.symbol: d for d in scored.decisions}
    wanted = list(dict.fromkeys(fixed))
    chosen: list[Decision] = []
    absent: list[Decision] = []
    for symbol in wanted:
        d = by_symbol.get(symbol)
        if d is None:
            detail = f"fixed by {FIXED_BY} but not a tradable USDT perpetual (exchangeInfo): not followed"
            absent.append(
                Decision(
                    symbol, False, Reason.MISSING_STATISTIC, detail, None, None, None, SymbolStats(symbol)
                )
            )
            continue
        verdict = d.detail if d.selected or d.reason is Reason.RANK_BEYOND_SIZE else f"out, {d.detail}"
        detail = f"fixed by {FIXED_BY} (position {len(chosen) + 1}; by score: {verdict})"
        chosen.append(
            Decision(symbol, True, Reason.SELECTED, detail, len(chosen) + 1, d.score, d.components, d.stats)
        )
    inside = set(wanted)
    others = [
        Decision(
            d.symbol,
            False,
            Reason.RANK_BEYOND_SIZE if d.reason is Reason.SELECTED else d.reason,
            f"not in the fixed list ({FIXED_BY}); by score: {d.detail}",
            None,
            d.score,
            d.components,
            d.stats,
        )
        for d in scored.decisions
        if d.symbol not in inside
    ]
    return Selection(tuple(chosen + sorted(others + absent, key=lambda d: d.symbol)))


# --- from the settings ---------------------------------------------------------------------------------


def minimums_from(settings: Settings) -> Minimums:
    """The minimums of ``settings`` (spec CONFIG ``min_24h_volume``, ``min_open_interest``, ``max_spread``)."""
    return Minimums(
        settings.min_24h_volume, settings.min_open_interest, settings.max_spread, settings.min_depth_1pct_usd
    )


def weights_from(settings: Settings) -> ScoreWeights:
    """The spec 4.1 weights as configured."""
    return ScoreWeights(
        settings.universe_weight_volume,
        settings.universe_weight_liquidity,
        settings.universe_weight_volatility,
        settings.universe_weight_activity,
    )


def references_from(settings: Settings) -> ScoreReferences:
    """The full-score reference values as configured."""
    return ScoreReferences(
        settings.universe_ref_volume,
        settings.universe_ref_depth,
        settings.universe_ref_atr_ratio,
        settings.universe_ref_trades_per_second,
    )


def rescan_cron(hours: float) -> str:
    """The cron schedule of a full rescan every ``hours`` hours (UTC, aligned to midnight).

    Under an hour: every N minutes (N = round(hours × 60), at least 1). Otherwise every round(hours)
    hours, or every N days from 24 h up. A step that does not divide the day (5 h) restarts at midnight,
    as cron does: 00, 05, 10, 15, 20, then 00 again."""
    if not hours > 0:
        raise ValueError(f"universe_rescan_interval must be > 0 hours; got {hours}")
    if hours < 1:
        minutes = max(1, round(hours * 60))
        return f"*/{minutes} * * * *" if minutes < 60 else "0 * * * *"
    whole = round(hours)
    if whole >= 24:
        days = whole // 24
        return "0 0 * * *" if days == 1 else f"0 0 */{days} * *"
    return "0 * * * *" if whole == 1 else f"0 */{whole} * * *"
