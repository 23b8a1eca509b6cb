"""The tier breakpoints of a monthly tuning, pure: how well a result's tiers separate, and the MEDIUM/HIGH
breakpoints that separate them best for chosen thresholds (the rules: :mod:`tapewatch.tuning`, which re-exports
:func:`separation`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from tapewatch.tuning_grid import tier_grid
from tapewatch.tuning_score import Params, Result, Sample, score


def separation(result: Result, tier_min: int) -> tuple[int, float]:
    """How well ``result``'s tiers separate: (adjacent tier pairs — HIGH over MEDIUM, MEDIUM over LOW — both
    with ``tier_min`` signals and the upper's mean R strictly above the lower's, the smallest such gap; 0 when
    none). Higher is better."""
    means: list[float | None] = []
    for tier in ("HIGH", "MEDIUM", "LOW"):
        part = result.by_tier.get(tier, {})
        mean, n = part.get("mean_r"), part.get("signals") or 0
        means.append(float(mean) if mean is not None and n >= tier_min else None)
    gaps = [
        upper - lower
        for upper, lower in itertools.pairwise(means)
        if upper is not None and lower is not None and upper > lower + 1e-12
    ]
    return len(gaps), min(gaps, default=0.0)


def choose_breakpoints(
    fit_score: Callable[[Params], Result], judge: Sequence[Sample], basis: Params, tier_min: int
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
    was_in = separation(fit_score(basis), tier_min)[0]
    return (
        best,
        f"tiers separate better with {label} ({was_in} -> {best_key[0]} of 2 tier pairs in order in-sample)",
    )
