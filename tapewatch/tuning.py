"""Monthly tuning, pure: re-score stored candidates over a grid of signal thresholds, walk-forward.

Every candidate is stored with its feature vector (DESIGN §4) and, unless no plan could be made (``no_plan``),
the trade plan its signal has or would have had. A candidate that became a signal has a known outcome
(``signal_outcomes.pnl_r`` once finished); one the risk gate or the quality floor turned away has its
would-be outcome (``candidate_outcomes``, from the same klines by the same code, once finished). Only a
candidate without a plan, or whose outcome is not finished yet, is **unknown**: counted (``unknown_outcome``)
and left out. A parameter set keeps a scored sample when the sample's features still meet the set's required
conditions (spec 7.1), and (given ``risk``) the risk gate re-run over the set's candidates in time order
admits it (:mod:`tapewatch.tuning_gate`: the other signals open at each moment differ per set):

- ``|imbalance_top10| > orderbook_imbalance_threshold`` on the sample's side (positive LONG, negative SHORT);
- large trades on its side ``>= min_large_trades``;
- ``volume_intensity > volume_confirmation_multiplier``.

A tier is re-computed under the set's breakpoints from the candidate's stored quality score (spec 7.2); a
candidate whose score falls below the set's LOW minimum is no longer a signal.

Stored candidates passed the thresholds in force when they were recorded, so a looser threshold would admit
setups that were never stored: the grid only **tightens** from the current values (thresholds up, counts up,
``large_trade_size`` up, quality breakpoints up). Among the stored candidates each tightening only removes
signals or moves them down a tier — but the engine running the tighter set would not only remove signals
(see *Tighter sets are under-counted* below):

- ``large_trade_size``: each feature vector keeps the sizes of its largest large trades per side
  (:data:`tapewatch.features.LARGE_SIZES_KEPT`), so large trades are re-counted at a larger size, the required
  ``min_large_trades`` re-applied and the quality score's large-trade points re-computed. Each candidate is
  re-counted from the size it was itself counted at (stored with it; one stored before that was recorded is
  taken as counted at the current size). A candidate stored before the sizes were recorded cannot be
  re-counted, nor can any candidate at a size below the one it was counted at (the size was lowered since):
  it is left out of every such set (counted as ``undecided`` in that set's result, and said in the note).
- Quality breakpoints: ``quality_low_min`` decides which candidates are signals, so it is part of the search
  above. ``quality_high_min`` / ``quality_medium_min`` only move signals between tiers and cannot change the
  mean R; they are chosen afterwards, for the chosen thresholds, to **separate** the tiers: most adjacent
  tiers (HIGH over MEDIUM, MEDIUM over LOW) whose in-sample mean R is in order, each with at least
  :func:`min_out_of_sample` signals, then the widest smallest gap; a change stands only if it puts at least
  one tier pair in order out of sample (each tier with that many signals in the judged week: a change never
  judged is never proposed), keeps as many tiers in order there as the current breakpoints, and the tier
  pairs it claims (in order in-sample, judged out of sample) are in order in the judged week beyond chance
  (:func:`tapewatch.tuning_evidence.ordering_p` <= :data:`~tapewatch.tuning_evidence.LEVEL`). A re-tiered
  signal keeps the outcome tracked under its original tier (response window and hold differ per tier): the
  per-tier results are an estimate.

Walk-forward: the window is ``weeks`` weeks of event time ending at ``now``; all weeks but the last fit (pick
the set with the best mean R per signal among those keeping ``min_samples`` signals in-sample), the last week
judges. The proposal stands only if the chosen set beats the current one in-sample, keeps at least
:func:`min_out_of_sample` signals in the judged week (the in-sample minimum per fitting week; fewer:
``insufficient_data``, a set never judged is never proposed) and does **significantly** better there than the
current set: a seeded one-sided permutation test of its mean R per signal against the current set's on the
judged signals (:func:`tapewatch.tuning_evidence.improvement_p` <= ``LEVEL``, 0.025). The best of 768 sets
in-sample is as likely to be picked for noise as for an effect; "no worse in the judged week" let outcomes
that were pure noise make a proposal in 27 % to 63 % of the months (15 to 100 candidates a week); the tests
keep it to at most :data:`~tapewatch.tuning_evidence.SIGNIFICANCE` (5 %). Otherwise the current thresholds
are kept (``no_change``, the note gives both means and the p-value) — the tier breakpoints may still be
proposed.

Tighter sets are under-counted. Only the candidates stored under the current set are re-scored, and the engine
stores one candidate per symbol and direction while a setup persists, at its first passing check. Under a
tighter set that first check often fails while a later check of the same setup, seconds later and stronger,
passes: the engine would signal it (with another entry and outcome), tuning cannot see it. So a tighter
set's predicted signal count is an under-count, and its R is that of other trades: in one backtest (README,
monthly tuning) tuning's model of ``volume_confirmation_multiplier`` 2.25 kept 8 signals at +0.62 R where the
backtest of that set gave 19 at +9.32 R. Every proposal of tighter thresholds says so in its note
(:data:`UNDER_COUNTED`).

Win rate is the one of spec 9.1 (``tapewatch.metrics``): wins over **triggered** signals, a win being a
triggered signal with P&L above 0 R; mean and total R are over every signal (an untriggered one counts 0 R).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from tapewatch.quality import Breakpoints
from tapewatch.risk import RiskParams
from tapewatch.tuning_evidence import LEVEL, SIGNIFICANCE, improvement_p
from tapewatch.tuning_gate import risk_gate
from tapewatch.tuning_grid import BREAKPOINT_STEPS, COUNT_STEPS, RATIO_STEPS, grid, tier_grid
from tapewatch.tuning_params import (
    TUNABLE,
    TuningError,
    UnknownProposal,
    check_parameters,
    current_parameters,
)
from tapewatch.tuning_score import (
    Gate,
    Params,
    Result,
    Sample,
    View,
    _breakpoints,
    kept_views,
    score,
    score_views,
)
from tapewatch.tuning_tiers import choose_breakpoints, separation

# Sample, View, Result, score and score_views live in tuning_score, the tunable names, their validation and the
# errors in tuning_params, the grids in tuning_grid, separation in tuning_tiers; all are re-exported here
__all__ = [
    "BREAKPOINT_STEPS",
    "COUNT_STEPS",
    "RATIO_STEPS",
    "SIGNIFICANCE",
    "TUNABLE",
    "WEEK_MS",
    "Params",
    "Result",
    "Sample",
    "Status",
    "Tuning",
    "TuningError",
    "UnknownProposal",
    "View",
    "check_parameters",
    "current_parameters",
    "grid",
    "min_out_of_sample",
    "score",
    "score_views",
    "separation",
    "tier_grid",
    "tune",
]

WEEK_MS = 7 * 86_400_000

#: Said with every proposal of tighter thresholds (why: the module docstring, "Tighter sets are under-counted").
UNDER_COUNTED = (
    "predicted signal counts of a tighter set are under-counted: only the stored candidates are re-scored, "
    "and under tighter thresholds the engine often signals the same setup at a later check that was never "
    "stored (README, monthly tuning)"
)

Status = Literal["proposed", "no_change", "insufficient_data"]


@dataclass(frozen=True, slots=True)
class Tuning:
    """A tuning run's outcome: what to store as a proposal."""

    status: Status
    window_start: int
    split_at: int
    window_end: int
    parameters: Params
    current: Params
    in_sample: Result
    out_of_sample: Result
    current_in_sample: Result
    current_out_of_sample: Result
    counts: dict[str, int]
    note: str


def tune(
    samples: Sequence[Sample],
    current: Mapping[str, float | int],
    *,
    now_ms: int,
    weeks: int,
    min_samples: int,
    risk: RiskParams | None = None,
) -> Tuning:
    """Walk-forward search of :func:`grid` over the samples of the ``weeks`` weeks before ``now_ms``, then of
    :func:`tier_grid` for the chosen thresholds. With ``risk``, every set's candidates go through the risk gate
    again (:mod:`tapewatch.tuning_gate`): a set scores the ones it would have admitted."""
    if weeks < 2 or min_samples < 1:
        raise ValueError(f"weeks must be >= 2 and min_samples >= 1; got {weeks}, {min_samples}")
    start, split = now_ms - weeks * WEEK_MS, now_ms - WEEK_MS
    fit = [s for s in samples if start <= s.event_time < split]
    judge = [s for s in samples if split <= s.event_time < now_ms]
    scored = [s for s in fit if s.pnl_r is not None]
    known = len(scored) + sum(1 for s in judge if s.pnl_r is not None)
    without_sizes = sum(
        1
        for s in fit + judge
        if s.pnl_r is not None and (s.large_buy_sizes is None or s.large_sell_sizes is None)
    )
    base = dict(current)
    # counted at another size than the current one (changed while the window was stored)
    other_size = sum(
        1 for s in fit + judge if s.pnl_r is not None and s.large_trade_size != base["large_trade_size"]
    )
    gate = None if risk is None else risk_gate(risk)

    def score_of(samples: Iterable[Sample], params: Mapping[str, float | int]) -> Result:
        return score(samples, params, gate)

    cur_in, cur_out = score_of(fit, base), score_of(judge, base)
    candidates = grid(base)
    counts = {
        "candidates": len(fit) + len(judge),
        "known_outcome": known,
        "unknown_outcome": len(fit) + len(judge) - known,
        "fit_candidates": len(fit),
        "judge_candidates": len(judge),
        "grid": len(candidates),
        "tier_grid": len(tier_grid(base)),
        "without_sizes": without_sizes,
        "other_size": other_size,
    }
    views: dict[tuple[float, Breakpoints], list[View]] = {}

    def fit_score(params: Params) -> Result:
        # the grid has few sizes and breakpoint sets: each sample is re-counted and re-tiered once per pair
        key = (params["large_trade_size"], _breakpoints(params))
        if key not in views:
            views[key] = [s.view(*key) for s in scored]
        return score_views(views[key], params, gate)

    def make(status: Status, params: Params, note: str) -> Tuning:
        if without_sizes:
            note += (
                f"; {without_sizes} scored candidates were stored without large-trade sizes: left out of "
                "every set whose large_trade_size is not the one they were counted at"
            )
        if other_size:
            note += (
                f"; {other_size} scored candidates were counted at another large_trade_size than "
                f"{base['large_trade_size']:g}: each is re-counted from its own, and left out of every set "
                "below it"
            )
        return Tuning(
            status, start, split, now_ms, params, base, score_of(fit, params), score_of(judge, params),
            cur_in, cur_out, counts, note,
        )  # fmt: skip

    if cur_in.signals < min_samples:
        return make(
            "insufficient_data",
            base,
            f"{cur_in.signals} scored signals in the fitting weeks < tuning_min_samples ({min_samples})",
        )
    status, chosen, note = _thresholds(
        fit_score, score_of, judge, base, cur_in, cur_out, candidates, min_samples, weeks, gate
    )
    tiers, tier_note = choose_breakpoints(
        fit_score, score_of, judge, chosen, min_out_of_sample(min_samples, weeks), gate
    )
    if chosen != base:
        note += "; " + UNDER_COUNTED
    if tiers != chosen:
        return make("proposed", tiers, f"{note}; {tier_note}")
    return make(status, chosen, f"{note}; {tier_note}" if tier_note else note)


def _thresholds(
    fit_score: Callable[[Params], Result],
    score_of: Callable[[Iterable[Sample], Mapping[str, float | int]], Result],
    judge: Sequence[Sample],
    base: Params,
    cur_in: Result,
    cur_out: Result,
    candidates: Sequence[Params],
    min_samples: int,
    weeks: int,
    gate: Gate | None = None,
) -> tuple[Status, Params, str]:
    """The walk-forward choice among the grid: (status, the chosen set — ``base`` unless proposed, note)."""
    best, best_in = base, cur_in
    for params in candidates[1:]:
        result = fit_score(params)
        if result.signals >= min_samples and _better(result, best_in):
            best, best_in = params, result
    if best == base:
        return "no_change", base, "no set in the grid beats the current thresholds in-sample"
    best_out = score_of(judge, best)
    needed = min_out_of_sample(min_samples, weeks)
    if best_out.signals < needed or best_out.mean_r is None or cur_out.mean_r is None:
        return (
            "insufficient_data",
            base,
            f"the best in-sample set ({_describe(best)}) kept {best_out.signals} signals in the judged week "
            f"< {needed} needed to judge it out of sample; current thresholds kept",
        )
    if best_out.mean_r < cur_out.mean_r:
        return (
            "no_change",
            base,
            f"the best in-sample set ({_describe(best)}) did worse out of sample "
            f"({best_out.mean_r:.3f} R vs {cur_out.mean_r:.3f} R per signal); current thresholds kept",
        )
    p = improvement_p(*_judged(judge, best, base, gate))
    out = (
        f"out of sample {cur_out.mean_r:.3f} -> {best_out.mean_r:.3f} R per signal "
        f"({cur_out.signals} -> {best_out.signals} signals; one-sided permutation test p = {p:.3f}"
    )
    if p > LEVEL:
        return (
            "no_change",
            base,
            f"the best in-sample set ({_describe(best)}) did not do significantly better out of sample: "
            f"{out} > {LEVEL:g}); current thresholds kept",
        )
    return (
        "proposed",
        best,
        f"mean R per signal in-sample {cur_in.mean_r:.3f} -> {best_in.mean_r:.3f}, {out} <= {LEVEL:g})",
    )


def _judged(
    judge: Sequence[Sample], best: Params, base: Params, gate: Gate | None = None
) -> tuple[list[float], list[bool], list[bool]]:
    """The judged signals either set keeps (and ``gate`` admits): their R, whether ``best`` keeps each, whether
    ``base`` does."""
    scored = [s for s in judge if s.pnl_r is not None]
    in_best, in_base = _kept_ids(scored, best, gate), _kept_ids(scored, base, gate)
    r: list[float] = []
    kept_best: list[bool] = []
    kept_base: list[bool] = []
    for s in scored:
        b, c = id(s) in in_best, id(s) in in_base
        if b or c:
            r.append(s.pnl_r)  # type: ignore[arg-type]  # scored: not None
            kept_best.append(b)
            kept_base.append(c)
    return r, kept_best, kept_base


def _kept_ids(samples: Sequence[Sample], params: Params, gate: Gate | None) -> set[int]:
    size, bp = params["large_trade_size"], _breakpoints(params)
    kept, _, _ = kept_views([s.view(size, bp) for s in samples], params, gate)
    return {id(v.sample) for v in kept}


def min_out_of_sample(min_samples: int, weeks: int) -> int:
    """Signals the judged week must keep: the in-sample minimum per fitting week, at least 1."""
    return max(1, math.ceil(min_samples / (weeks - 1)))


def _better(a: Result, b: Result) -> bool:
    # None (no signal) is worst; a mean of exactly 0.0 R is a real value, not a missing one
    ma = a.mean_r if a.mean_r is not None else -math.inf
    mb = b.mean_r if b.mean_r is not None else -math.inf
    return ma > mb + 1e-12 or (abs(ma - mb) <= 1e-12 and a.signals > b.signals)


def _describe(params: Mapping[str, float | int]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in params.items())
