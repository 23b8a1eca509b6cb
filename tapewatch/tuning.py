"""Monthly tuning, pure: re-score stored candidates over a grid of signal thresholds, walk-forward.

Every candidate is stored with its feature vector (DESIGN §4). A candidate that became a signal has a known
outcome (``signal_outcomes.pnl_r`` once finished); a rejected candidate's would-be outcome is **unknown**
(no plan was tracked for it), so it is counted and left out. A parameter set keeps a scored sample when the
sample's features still meet the set's required conditions (spec 7.1):

- ``|imbalance_top10| > orderbook_imbalance_threshold`` on the sample's side (positive LONG, negative SHORT);
- large trades on its side ``>= min_large_trades``;
- ``volume_intensity > volume_confirmation_multiplier``.

Stored candidates passed the thresholds in force when they were recorded, so a looser threshold would admit
setups that were never stored: the grid only tightens from the current values. ``large_trade_size`` cannot be
re-scored from features (they hold counts at the size in force, not the trade sizes), so it stays at its
current value. The spec 7.2 quality breakpoints are fixed constants (``tapewatch.quality``), not settings, so
they are not tuned; each result is broken down by tier so the operator sees whether the tiers still separate
good from bad signals.

Walk-forward: the window is ``weeks`` weeks of event time ending at ``now``; all weeks but the last fit (pick
the set with the best mean R per signal among those keeping ``min_samples`` signals in-sample), the last week
judges. The proposal stands only if the chosen set beats the current one in-sample, keeps at least
:func:`min_out_of_sample` signals in the judged week (the in-sample minimum per fitting week; fewer:
``insufficient_data``, a set never judged is never proposed) and does not do worse there than the current
set; otherwise the current parameters are kept (``no_change``).

Win rate is the one of spec 9.1 (``tapewatch.metrics``): wins over **triggered** signals, a win being a
triggered signal with P&L above 0 R; mean and total R are over every signal (an untriggered one counts 0 R).
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from tapewatch.errors import FatalError
from tapewatch.settings import Settings, allowed_range

WEEK_MS = 7 * 86_400_000
#: The settings a tuning may change (their names are the spec's CONFIG keys).
TUNABLE: tuple[str, ...] = (
    "orderbook_imbalance_threshold",
    "min_large_trades",
    "large_trade_size",
    "volume_confirmation_multiplier",
)
#: How far the grid tightens each threshold from its current value.
RATIO_STEPS = (1.0, 1.1, 1.25, 1.5)
COUNT_STEPS = (0, 1, 2, 3)

Params = dict[str, float | int]
Status = Literal["proposed", "no_change", "insufficient_data"]


class TuningError(FatalError):
    """A tuning proposal cannot be used as asked (unknown id, nothing to apply, bad parameters)."""


class UnknownProposal(TuningError):
    """No tuning proposal has this id."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One stored candidate as tuning sees it. ``pnl_r`` None = outcome unknown (rejected, or not finished);
    ``triggered``: its entry traded (False for an unknown outcome or a signal that expired untriggered)."""

    event_time: int
    direction: Literal["LONG", "SHORT"]
    imbalance: float
    large_buys: int
    large_sells: int
    volume_intensity: float | None
    tier: str | None
    pnl_r: float | None
    triggered: bool

    def passes(self, params: Mapping[str, float | int]) -> bool:
        """True when the features meet the required conditions of ``params``."""
        long = self.direction == "LONG"
        imbalance = self.imbalance if long else -self.imbalance
        large = self.large_buys if long else self.large_sells
        return (
            imbalance > params["orderbook_imbalance_threshold"]
            and large >= params["min_large_trades"]
            and self.volume_intensity is not None
            and self.volume_intensity > params["volume_confirmation_multiplier"]
        )


@dataclass(frozen=True, slots=True)
class Result:
    """How a parameter set's signals did: count, triggered, wins (triggered, R > 0), win rate (wins /
    triggered, as spec 9.1), mean R per signal and total R, per tier."""

    signals: int = 0
    wins: int = 0
    total_r: float = 0.0
    by_tier: dict[str, dict[str, float | None]] = field(default_factory=dict)
    triggered: int = 0

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
        }


def score(samples: Iterable[Sample], params: Mapping[str, float | int]) -> Result:
    """The result of ``params`` on the samples with a known outcome."""
    kept = [s for s in samples if s.pnl_r is not None and s.passes(params)]
    tiers: dict[str, list[Sample]] = {}
    for s in kept:
        tiers.setdefault(s.tier or "none", []).append(s)
    by_tier: dict[str, dict[str, float | None]] = {}
    for tier, mine in sorted(tiers.items()):
        part = _tally(mine)
        by_tier[tier] = {"signals": part.signals, "win_rate": part.win_rate, "mean_r": part.mean_r}
    whole = _tally(kept)
    return Result(whole.signals, whole.wins, whole.total_r, by_tier, whole.triggered)


def _tally(samples: Sequence[Sample]) -> Result:
    r = [0.0 if s.pnl_r is None else s.pnl_r for s in samples]
    wins = sum(1 for s, pnl in zip(samples, r, strict=True) if s.triggered and pnl > 0)
    return Result(len(samples), wins, round(math.fsum(r), 10), {}, sum(1 for s in samples if s.triggered))


def current_parameters(settings: Settings) -> Params:
    """The tunable settings as they are now."""
    return {name: getattr(settings, name) for name in TUNABLE}


def grid(current: Mapping[str, float | int]) -> list[Params]:
    """Every parameter set tried: each threshold at its current value and tightened by the steps (kept within
    its allowed range), ``large_trade_size`` fixed. The current set comes first."""
    imb = current["orderbook_imbalance_threshold"]
    vol = current["volume_confirmation_multiplier"]
    large = int(current["min_large_trades"])
    imbalances = sorted({round(imb * r, 6) for r in RATIO_STEPS if imb * r < 1})
    volumes = sorted({round(vol * r, 6) for r in RATIO_STEPS if vol * r <= 100})
    counts = sorted({large + c for c in COUNT_STEPS if large + c <= 1000})
    sets = [
        {
            "orderbook_imbalance_threshold": i,
            "min_large_trades": n,
            "large_trade_size": current["large_trade_size"],
            "volume_confirmation_multiplier": v,
        }
        for i, n, v in itertools.product(imbalances, counts, volumes)
    ]
    return sorted(sets, key=lambda p: p != dict(current))


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
) -> Tuning:
    """Walk-forward search of :func:`grid` over the samples of the ``weeks`` weeks before ``now_ms``."""
    if weeks < 2 or min_samples < 1:
        raise ValueError(f"weeks must be >= 2 and min_samples >= 1; got {weeks}, {min_samples}")
    start, split = now_ms - weeks * WEEK_MS, now_ms - WEEK_MS
    fit = [s for s in samples if start <= s.event_time < split]
    judge = [s for s in samples if split <= s.event_time < now_ms]
    known = sum(1 for s in fit + judge if s.pnl_r is not None)
    base = dict(current)
    cur_in, cur_out = score(fit, base), score(judge, base)
    candidates = grid(base)
    counts = {
        "candidates": len(fit) + len(judge),
        "known_outcome": known,
        "unknown_outcome": len(fit) + len(judge) - known,
        "fit_candidates": len(fit),
        "judge_candidates": len(judge),
        "grid": len(candidates),
    }

    def make(status: Status, params: Params, note: str) -> Tuning:
        return Tuning(
            status, start, split, now_ms, params, base, score(fit, params), score(judge, params),
            cur_in, cur_out, counts, note,
        )  # fmt: skip

    if cur_in.signals < min_samples:
        return make(
            "insufficient_data",
            base,
            f"{cur_in.signals} scored signals in the fitting weeks < tuning_min_samples ({min_samples})",
        )
    best, best_in = base, cur_in
    for params in candidates[1:]:
        result = score(fit, params)
        if result.signals >= min_samples and _better(result, best_in):
            best, best_in = params, result
    if best == base:
        return make("no_change", base, "no set in the grid beats the current parameters in-sample")
    best_out = score(judge, best)
    needed = min_out_of_sample(min_samples, weeks)
    if best_out.signals < needed or best_out.mean_r is None or cur_out.mean_r is None:
        return make(
            "insufficient_data",
            base,
            f"the best in-sample set ({_describe(best)}) kept {best_out.signals} signals in the judged week "
            f"< {needed} needed to judge it out of sample; current parameters kept",
        )
    if best_out.mean_r < cur_out.mean_r:
        return make(
            "no_change",
            base,
            f"the best in-sample set ({_describe(best)}) did worse out of sample "
            f"({best_out.mean_r:.3f} R vs {cur_out.mean_r:.3f} R per signal); current parameters kept",
        )
    return make("proposed", best, f"mean R per signal in-sample {cur_in.mean_r:.3f} -> {best_in.mean_r:.3f}")


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


def check_parameters(params: Mapping[str, Any]) -> Params:
    """``params`` validated against the settings' own types and bounds (only tunable names). Raises
    TuningError naming each bad key and its allowed range."""
    bad: list[str] = []
    out: Params = {}
    for name, value in params.items():
        if name not in TUNABLE:
            bad.append(f"{name} is not a tunable setting (tunable: {', '.join(TUNABLE)})")
            continue
        spec = Settings.model_fields[name]
        kind = int if spec.annotation is int else float
        try:
            checked: float | int = TypeAdapter(kind).validate_python(value)
        except ValidationError:
            bad.append(f"{name} = {value!r} is not a {kind.__name__}")
            continue
        out[name] = checked
        for meta in spec.metadata:
            if not all(_within(checked, meta, attr) for attr in _BOUNDS):
                bad.append(f"{name} = {value!r} is out of range; allowed: {allowed_range(name)}")
    if bad:
        raise TuningError("bad tuning parameters: " + "; ".join(dict.fromkeys(bad)))
    return out


_BOUNDS: dict[str, Callable[[float, float], bool]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}


def _within(value: float, meta: object, attr: str) -> bool:
    bound = getattr(meta, attr, None)
    return bound is None or _BOUNDS[attr](value, bound)
