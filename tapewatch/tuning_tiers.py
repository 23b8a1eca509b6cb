"""The tier breakpoints of a monthly tuning, pure: how well a result's tiers separate, and the MEDIUM/HIGH
breakpoints that separate them best for chosen thresholds (the rules: :mod:`tapewatch.tuning`, which re-exports
:func:`separation`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence

from tapewatch.tuning_evidence import LEVEL, ordering_p
from tapewatch.tuning_grid import tier_grid
from tapewatch.tuning_score import Gate, Params, Result, Sample, _breakpoints, kept_views

TIERS = ("HIGH", "MEDIUM", "LOW")


def separation(result: Result, tier_min: int) -> tuple[int, float]:
    """How well ``result``'s tiers separate: (adjacent tier pairs — HIGH over MEDIUM, MEDIUM over LOW — both
    with ``tier_min`` signals and the upper's mean R strictly above the lower's, the smallest such gap; 0 when
    none). Higher is better."""
    gaps = list(_gaps(result, tier_min).values())
    return len(gaps), min(gaps, default=0.0)


def _gaps(result: Result, tier_min: int, ordered: bool = True) -> dict[tuple[str, str], float]:
    """(upper, lower) -> the upper's mean R minus the lower's, for the adjacent tier pairs both with
    ``tier_min`` signals; only those strictly in order when ``ordered``."""
    means: dict[str, float] = {}
    for tier in TIERS:
        part = result.by_tier.get(tier, {})
        mean, n = part.get("mean_r"), part.get("signals") or 0
        if mean is not None and n >= tier_min:
            means[tier] = float(mean)
    gaps = {
        (upper, lower): means[upper] - means[lower]
        for upper, lower in itertools.pairwise(TIERS)
        if upper in means and lower in means
    }
    return {pair: gap for pair, gap in gaps.items() if gap > 1e-12 or not ordered}


def choose_breakpoints(
    fit_score: Callable[[Params], Result],
    score: Callable[[Iterable[Sample], Mapping[str, float | int]], Result],
    judge: Sequence[Sample],
    basis: Params,
    tier_min: int,
    gate: Gate | None = None,
) -> tuple[Params, str]:
    """The MEDIUM/HIGH breakpoints that best separate the tiers in-sample for ``basis`` (see
    :mod:`tapewatch.tuning`), with a note; ``basis`` itself (and "" or why not) when none does better."""
    best, best_key = basis, separation(fit_score(basis), tier_min)
    for params in tier_grid(basis)[1:]:
        key = separation(fit_score(params), tier_min)
        if key > best_key:
            best, best_key = params, key
    if best == basis:
        return basis, ""
    was_out = separation(score(judge, basis), tier_min)[0]
    now_out = separation(score(judge, best), tier_min)[0]
    label = f"quality_medium_min={best['quality_medium_min']}, quality_high_min={best['quality_high_min']}"
    if now_out == 0:  # no judged tier pair (too few signals per tier in the judged week): never judged
        return (
            basis,
            f"tier breakpoints kept: {label} orders no tier pair out of sample (each tier needs "
            f"{tier_min} signals in the judged week)",
        )
    if now_out < was_out:
        return (
            basis,
            f"tier breakpoints kept: {label} orders fewer tiers out of sample ({now_out} < {was_out})",
        )
    # the pairs the change claims in order (in-sample) that the judged week can judge: ordered beyond chance?
    claimed = _gaps(fit_score(best), tier_min)
    pairs = [pair for pair in _gaps(score(judge, best), tier_min, ordered=False) if pair in claimed]
    r, tiers = _judged_tiers(judge, best, gate)
    p = ordering_p(r, tiers, pairs)
    if p > LEVEL:
        return (
            basis,
            f"tier breakpoints kept: {label} orders the tiers out of sample no better than chance "
            f"(one-sided permutation test p = {p:.3f} > {LEVEL:g})",
        )
    was_in = separation(fit_score(basis), tier_min)[0]
    return (
        best,
        f"tiers separate better with {label} ({was_in} -> {best_key[0]} of 2 tier pairs in order in-sample; "
        f"out of sample p = {p:.3f} <= {LEVEL:g})",
    )


def _judged_tiers(
    judge: Sequence[Sample], params: Params, gate: Gate | None = None
) -> tuple[list[float], list[str]]:
    """Each judged signal of ``params`` (known outcome, kept by the set, admitted by ``gate``): its R and its tier
    under the set."""
    size, bp = params["large_trade_size"], _breakpoints(params)
    views = [s.view(size, bp) for s in judge if s.pnl_r is not None]
    kept, _, _ = kept_views(views, params, gate)
    r = [v.sample.pnl_r for v in kept if v.tier is not None]
    tiers = [v.tier for v in kept if v.tier is not None]
    return r, tiers  # type: ignore[return-value]  # kept views have an outcome and a tier
