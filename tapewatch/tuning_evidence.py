"""Whether a tuning change is real, pure: seeded one-sided permutation tests on the judged week.

The best of hundreds of parameter sets in-sample is picked as readily for noise as for an effect, so only the
judged week, which the choice never saw, can tell. Under the null hypothesis that a signal's R does not depend
on what the change looks at (its features, its quality score), the R values of the judged signals are
exchangeable among them: shuffling them over the signals — which set keeps each, which tier it is in, held
fixed — gives the statistic's distribution by chance alone. The p-value is (1 + shuffles that do at least as
well as the real outcome) / (1 + :data:`SHUFFLES`). The generator is seeded with :data:`SEED`, so re-scoring
the same samples gives the same p-value.

A proposal can change the thresholds and the tier breakpoints; each change is tested at :data:`LEVEL`, half of
:data:`SIGNIFICANCE` (Bonferroni), so outcomes that are pure noise make a proposal at most
:data:`SIGNIFICANCE` of the time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

#: The chance that outcomes which are pure noise still make a proposal (thresholds or tiers): at most this.
SIGNIFICANCE = 0.05
#: The level each of the two tests (thresholds, tier breakpoints) is run at: p <= LEVEL passes.
LEVEL = SIGNIFICANCE / 2
#: Shuffles per test (the p-value's resolution: 1 / 4001).
SHUFFLES = 4000
#: Fixed: the same samples always give the same p-value (a re-scored proposal is the same proposal).
SEED = 20_240_501
_CHUNK = 500  # shuffles drawn at a time (bounded memory for a busy judged week)

Stat = Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]


def improvement_p(r: Sequence[float], proposed: Sequence[bool], current: Sequence[bool]) -> float:
    """One-sided p-value that the proposed set's mean R per signal beats the current set's on the judged
    signals: ``r`` each signal's R, ``proposed`` / ``current`` whether each set keeps it (every signal is kept
    by at least one). 1.0 when either set keeps none."""
    values = np.asarray(r, dtype=float)
    mp, mc = np.asarray(proposed, dtype=bool), np.asarray(current, dtype=bool)
    if not mp.any() or not mc.any():
        return 1.0

    def stat(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.asarray(x[..., mp].mean(axis=-1) - x[..., mc].mean(axis=-1), dtype=np.float64)

    return _p_value(values, stat)


def ordering_p(r: Sequence[float], tiers: Sequence[str], pairs: Sequence[tuple[str, str]]) -> float:
    """One-sided p-value that the tiers are in order on the judged signals: ``r`` each signal's R, ``tiers``
    its tier, ``pairs`` the (upper, lower) tier pairs claimed in order; the statistic is the smallest gap of
    the pairs' mean R (upper minus lower). 1.0 without a pair or with a pair's tier empty."""
    values = np.asarray(r, dtype=float)
    labels = np.asarray(tiers, dtype=object)
    masks = [(labels == upper, labels == lower) for upper, lower in pairs]
    if not masks or any(not (u.any() and lo.any()) for u, lo in masks):
        return 1.0

    def stat(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        gaps = [x[..., u].mean(axis=-1) - x[..., lo].mean(axis=-1) for u, lo in masks]
        return np.asarray(np.min(gaps, axis=0), dtype=np.float64)

    return _p_value(values, stat)


def _p_value(values: npt.NDArray[np.float64], stat: Stat) -> float:
    """(1 + shuffles of ``values`` whose ``stat`` reaches the real one) / (1 + SHUFFLES), seeded."""
    observed = float(stat(values))
    rng = np.random.default_rng(SEED)
    reached = 0
    for start in range(0, SHUFFLES, _CHUNK):
        rows = min(_CHUNK, SHUFFLES - start)
        shuffled = rng.permuted(np.tile(values, (rows, 1)), axis=1)
        reached += int(np.count_nonzero(stat(shuffled) >= observed - 1e-12))
    return (1 + reached) / (1 + SHUFFLES)
