"""Re-scoring stored candidates under one parameter set, pure: the samples, their views under a set, and the
result (signals, wins, R, per tier). :mod:`tapewatch.tuning` searches the sets and re-exports these names."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tapewatch.quality import Breakpoints, Tier, large_trade_points, tier_for

Params = dict[str, float | int]


@dataclass(frozen=True, slots=True)
class Sample:
    """One stored candidate as tuning sees it. ``pnl_r``: its signal's outcome in R, or its would-be outcome's
    when it was turned away; None = unknown (no plan, or not finished); ``triggered``: its entry traded (False
    for an unknown outcome or one that expired untriggered).
    ``quality_score`` is the stored spec 7.2 score; ``large_buy_sizes`` / ``large_sell_sizes`` the stored
    large-trade sizes (None: stored before they were recorded); ``large_buys`` / ``large_sells`` were counted
    at ``large_trade_size`` (the candidate's own, stored with it; else the size in force when tuning ran)."""

    event_time: int
    direction: Literal["LONG", "SHORT"]
    imbalance: float
    large_buys: int
    large_sells: int
    volume_intensity: float | None
    tier: str | None
    pnl_r: float | None
    triggered: bool
    quality_score: int
    large_buy_sizes: tuple[int, ...] | None = None
    large_sell_sizes: tuple[int, ...] | None = None
    large_trade_size: float = 50_000.0
    # what the risk gate re-run needs (tapewatch.tuning_gate): the candidate's id and symbol, when its signal
    # (or would-be signal) ended (event time ms; None: unknown), whether it ended stopped out (a loss: the
    # symbol's cooldown), whether signaling was paused when it came
    key: str = ""
    symbol: str = ""
    end_time: int | None = None
    stopped_out: bool = False
    paused: bool = False

    def passes(self, params: Mapping[str, float | int]) -> bool | None:
        """True when the features meet the required conditions of ``params`` and the quality score (large
        trades re-counted at its ``large_trade_size``) reaches its LOW minimum; None when that cannot be
        known (the size changes and the sizes were not stored)."""
        return self.view(params["large_trade_size"], _breakpoints(params)).passes(params)

    def view(self, size: float, breakpoints: Breakpoints) -> View:
        """The sample as seen at ``size`` and ``breakpoints`` (what :meth:`View.passes` then checks)."""
        long = self.direction == "LONG"
        buys = _recount(self.large_buys, self.large_buy_sizes, self.large_trade_size, size)
        sells = _recount(self.large_sells, self.large_sell_sizes, self.large_trade_size, size)
        if buys is None or sells is None:
            return View(self, 0.0, 0, False, None, decided=False)
        own = buys if long else sells
        # the large-trade points cap at 5 trades, and a cut-short list always holds 50: the lower bounds do
        points = large_trade_points(buys[0], sells[0]) - large_trade_points(self.large_buys, self.large_sells)
        quality = min(100, max(0, self.quality_score + points))
        imbalance = self.imbalance if long else -self.imbalance
        return View(self, imbalance, own[0], own[1], tier_for(quality, breakpoints), decided=True)


@dataclass(frozen=True, slots=True)
class View:
    """A sample at one large-trade size and one set of breakpoints: its side's imbalance, large trades (at
    least ``large``; exactly when ``exact``), its tier (None: below LOW, not a signal); ``decided`` False when
    the large trades cannot be re-counted at that size."""

    sample: Sample
    imbalance: float
    large: int
    exact: bool
    tier: Tier | None
    decided: bool

    def passes(self, params: Mapping[str, float | int]) -> bool | None:
        """The required conditions and the LOW minimum under ``params``; None when undecidable."""
        if not self.decided:
            return None
        vol = self.sample.volume_intensity
        if not (
            self.imbalance > params["orderbook_imbalance_threshold"]
            and vol is not None
            and vol > params["volume_confirmation_multiplier"]
            and self.tier is not None
        ):
            return False
        if self.large >= params["min_large_trades"]:
            return True
        return False if self.exact else None


def _recount(
    count: int, sizes: tuple[int, ...] | None, counted_at: float, size: float
) -> tuple[int, bool] | None:
    """(at least n, exactly n?) large trades at ``size``; None when unknown (no sizes, or a smaller size)."""
    if size == counted_at:
        return count, True
    if sizes is None or size < counted_at:
        return None
    n = sum(1 for s in sizes if s >= size)
    return n, not (n == len(sizes) < count)  # every kept size passes, but not all were kept: at least n


def _breakpoints(params: Mapping[str, float | int]) -> Breakpoints:
    return Breakpoints(
        high=int(params["quality_high_min"]),
        medium=int(params["quality_medium_min"]),
        low=int(params["quality_low_min"]),
    )


@dataclass(frozen=True, slots=True)
class Result:
    """How a parameter set's signals did: count, triggered, wins (triggered, R > 0), win rate (wins /
    triggered, as spec 9.1), mean R per signal and total R, per tier; ``undecided``: signals with a known
    outcome left out because the set could not be checked on them (sizes not stored)."""

    signals: int = 0
    wins: int = 0
    total_r: float = 0.0
    by_tier: dict[str, dict[str, float | None]] = field(default_factory=dict)
    triggered: int = 0
    undecided: int = 0
    gated: int = 0

    @property
    def win_rate(self) -> float | None:
        return self.wins / self.triggered if self.triggered else None

    @property
    def mean_r(self) -> float | None:
        return self.total_r / self.signals if self.signals else None

    def to_json(self) -> dict[str, Any]:
        return {
            "signals": self.signals,
            "triggered": self.triggered,
            "wins": self.wins,
            "win_rate": self.win_rate,
            "mean_r": self.mean_r,
            "total_r": self.total_r,
            "by_tier": self.by_tier,
            "undecided": self.undecided,
            "gated": self.gated,
        }


#: Admits the views a set keeps, in event time order, as the risk gate would have (tapewatch.tuning_gate).
Gate = Callable[[Sequence[View]], list[View]]


def score(samples: Iterable[Sample], params: Mapping[str, float | int], gate: Gate | None = None) -> Result:
    """The result of ``params`` on the samples with a known outcome, each tiered by the set's breakpoints;
    with ``gate``, only the samples the risk gate admits (the rest counted in ``gated``)."""
    size, bp = params["large_trade_size"], _breakpoints(params)
    return score_views([s.view(size, bp) for s in samples if s.pnl_r is not None], params, gate)


def kept_views(
    views: Iterable[View], params: Mapping[str, float | int], gate: Gate | None = None
) -> tuple[list[View], int, int]:
    """The views ``params`` keeps (its conditions, then ``gate`` when given), the views left undecided (sizes
    not stored) and those the gate turned away."""
    kept: list[View] = []
    undecided = 0
    for v in views:
        ok = v.passes(params)
        if ok:
            kept.append(v)
        elif ok is None:
            undecided += 1
    if gate is None:
        return kept, undecided, 0
    admitted = gate(kept)
    return admitted, undecided, len(kept) - len(admitted)


def score_views(views: Iterable[View], params: Mapping[str, float | int], gate: Gate | None = None) -> Result:
    """:func:`score` on views already taken at the set's size and breakpoints (the grid shares them)."""
    kept, undecided, gated = kept_views(views, params, gate)
    tiers: dict[str, list[Sample]] = {}
    for v in kept:
        tiers.setdefault(v.tier or "none", []).append(v.sample)
    by_tier: dict[str, dict[str, float | None]] = {}
    for tier, mine in sorted(tiers.items()):
        part = _tally(mine)
        by_tier[tier] = {"signals": part.signals, "win_rate": part.win_rate, "mean_r": part.mean_r}
    whole = _tally([v.sample for v in kept])
    return Result(whole.signals, whole.wins, whole.total_r, by_tier, whole.triggered, undecided, gated)


def _tally(samples: Sequence[Sample]) -> Result:
    r = [0.0 if s.pnl_r is None else s.pnl_r for s in samples]
    wins = sum(1 for s, pnl in zip(samples, r, strict=True) if s.triggered and pnl > 0)
    return Result(len(samples), wins, round(math.fsum(r), 10), {}, sum(1 for s in samples if s.triggered))
