"""Monthly tuning, pure: the grid, re-scoring, the walk-forward split, the sample minimum, parameter checks."""

from __future__ import annotations

import pytest

from tapewatch.settings import load_settings
from tapewatch.tuning import (
    WEEK_MS,
    Sample,
    TuningError,
    check_parameters,
    current_parameters,
    grid,
    min_out_of_sample,
    score,
    tune,
)

NOW = 1_800_000_000_000
CURRENT = current_parameters(load_settings())


def sample(t: int, imbalance: float, pnl_r: float | None, *, short: bool = False, large: int = 4, vol: float = 2.1,
           tier: str = "MEDIUM", triggered: bool | None = None) -> Sample:  # fmt: skip
    return Sample(
        event_time=t,
        direction="SHORT" if short else "LONG",
        imbalance=-imbalance if short else imbalance,
        large_buys=1 if short else large,
        large_sells=large if short else 1,
        volume_intensity=vol,
        tier=tier,
        pnl_r=pnl_r,
        triggered=pnl_r is not None if triggered is None else triggered,
    )


def test_current_parameters_are_the_spec_config_values() -> None:
    assert CURRENT == {
        "orderbook_imbalance_threshold": 0.28,
        "min_large_trades": 3,
        "large_trade_size": 50_000,
        "volume_confirmation_multiplier": 1.8,
    }


def test_the_grid_only_tightens_and_starts_with_the_current_set() -> None:
    sets = grid(CURRENT)
    assert sets[0] == CURRENT
    assert len(sets) == 4 * 4 * 4
    assert {p["large_trade_size"] for p in sets} == {50_000}
    assert min(p["orderbook_imbalance_threshold"] for p in sets) == 0.28
    assert max(p["orderbook_imbalance_threshold"] for p in sets) == pytest.approx(0.42)
    assert sorted({p["min_large_trades"] for p in sets}) == [3, 4, 5, 6]
    # a threshold that would leave its range is not tried
    near_one = grid({**CURRENT, "orderbook_imbalance_threshold": 0.8})
    assert max(p["orderbook_imbalance_threshold"] for p in near_one) == pytest.approx(0.88)


def test_score_keeps_what_still_passes_on_each_side_and_skips_unknown_outcomes() -> None:
    samples = [
        sample(1, 0.30, -1.0),
        sample(2, 0.45, 2.0, short=True, tier="HIGH"),
        sample(3, 0.50, None),  # rejected candidate: outcome unknown
        sample(4, 0.45, 1.0, large=3),
        sample(5, 0.45, 1.0, vol=1.85),
    ]
    everything = score(samples, CURRENT)
    assert (everything.signals, everything.wins, everything.total_r) == (4, 3, 3.0)
    assert everything.triggered == 4 and everything.win_rate == 0.75
    tight = score(samples, {**CURRENT, "orderbook_imbalance_threshold": 0.35, "min_large_trades": 4})
    assert (tight.signals, tight.total_r, tight.mean_r) == (2, 3.0, 1.5)
    assert tight.by_tier == {
        "HIGH": {"signals": 1, "win_rate": 1.0, "mean_r": 2.0},
        "MEDIUM": {"signals": 1, "win_rate": 1.0, "mean_r": 1.0},
    }
    assert score([], CURRENT).mean_r is None


def test_win_rate_is_over_triggered_signals_as_in_the_metrics() -> None:
    samples = [
        sample(1, 0.45, 1.5),
        sample(2, 0.45, -1.0),
        sample(3, 0.45, 0.0, triggered=False),  # expired untriggered: 0 R, not a loss
        sample(4, 0.45, 0.0, triggered=False),
    ]
    result = score(samples, CURRENT)
    assert (result.signals, result.triggered, result.wins) == (4, 2, 1)
    assert result.win_rate == 0.5  # tapewatch.metrics: wins / triggered, not wins / signals (0.25)
    assert result.mean_r == pytest.approx(0.125)
    assert result.by_tier == {"MEDIUM": {"signals": 4, "win_rate": 0.5, "mean_r": 0.125}}
    assert result.to_json()["triggered"] == 2
    assert score([sample(1, 0.45, 0.0, triggered=False)], CURRENT).win_rate is None


def history(weeks: int = 5, per_week: int = 6, oos_flip: bool = False) -> list[Sample]:
    """Weak-imbalance setups lose and strong ones win, every week (or the reverse in the last one)."""
    out = []
    for w in range(weeks):
        start = NOW - (weeks - w) * WEEK_MS
        last = w == weeks - 1
        for i in range(per_week):
            t = start + (i + 1) * 3_600_000
            weak_r, strong_r = (1.5, -1.0) if (last and oos_flip) else (-1.0, 1.5)
            out.append(sample(t, 0.30, weak_r))
            out.append(sample(t + 60_000, 0.45, strong_r))
    return out


def test_walk_forward_proposes_the_set_that_wins_in_and_out_of_sample() -> None:
    result = tune(history(), CURRENT, now_ms=NOW, weeks=5, min_samples=10)
    assert result.status == "proposed"
    assert result.parameters["orderbook_imbalance_threshold"] > 0.30
    assert (result.split_at, result.window_start) == (NOW - WEEK_MS, NOW - 5 * WEEK_MS)
    assert result.current_in_sample.signals == 48 and result.current_in_sample.mean_r == pytest.approx(0.25)
    assert result.in_sample.mean_r == pytest.approx(1.5) and result.in_sample.signals == 24
    assert result.out_of_sample.signals == 6 and result.current_out_of_sample.signals == 12
    assert result.counts["candidates"] == 60 and result.counts["unknown_outcome"] == 0
    # among sets equally good, the one keeping more signals wins: nothing tighter than needed
    assert result.parameters["min_large_trades"] == 3
    assert result.parameters["volume_confirmation_multiplier"] == 1.8


def test_an_in_sample_gain_that_fails_out_of_sample_keeps_the_current_set() -> None:
    result = tune(history(oos_flip=True), CURRENT, now_ms=NOW, weeks=5, min_samples=10)
    assert result.status == "no_change"
    assert result.parameters == CURRENT
    assert "did worse out of sample" in result.note


def test_too_few_samples_is_reported_not_tuned() -> None:
    result = tune(history(per_week=1), CURRENT, now_ms=NOW, weeks=5, min_samples=30)
    assert result.status == "insufficient_data"
    assert "8 scored signals" in result.note and "tuning_min_samples (30)" in result.note
    with pytest.raises(ValueError, match="weeks"):
        tune([], CURRENT, now_ms=NOW, weeks=1, min_samples=1)


def test_a_current_mean_of_exactly_zero_is_not_beaten_by_a_worse_set() -> None:
    fit_start = NOW - 5 * WEEK_MS
    fit = [sample(fit_start + i * 3_600_000, 0.30, 1.0) for i in range(10)]
    fit += [sample(fit_start + i * 3_600_000 + 60_000, 0.45, -1.0) for i in range(10)]  # current: 0.0 R mean
    judge = [sample(NOW - WEEK_MS + i * 3_600_000, 0.45, 1.0) for i in range(10)]
    result = tune(fit + judge, CURRENT, now_ms=NOW, weeks=5, min_samples=5)
    assert result.current_in_sample.mean_r == 0.0
    assert result.status == "no_change" and result.parameters == CURRENT


def test_a_set_never_judged_out_of_sample_is_not_proposed() -> None:
    fitting_only = [s for s in history() if s.event_time < NOW - WEEK_MS]
    result = tune(fitting_only, CURRENT, now_ms=NOW, weeks=5, min_samples=10)
    assert result.status == "insufficient_data" and result.parameters == CURRENT
    assert "0 signals in the judged week < 3 needed" in result.note
    # one strong setup in the judged week is still too few (10 in-sample over 4 weeks: 3 a week)
    one = [*fitting_only, sample(NOW - WEEK_MS + 3_600_000, 0.45, 1.5)]
    assert tune(one, CURRENT, now_ms=NOW, weeks=5, min_samples=10).status == "insufficient_data"
    assert min_out_of_sample(10, 5) == 3 and min_out_of_sample(1, 8) == 1


def test_nothing_better_is_no_change() -> None:
    flat = [sample(NOW - 3 * WEEK_MS + i, 0.5, 1.0) for i in range(20)]
    result = tune(flat, CURRENT, now_ms=NOW, weeks=5, min_samples=5)
    assert result.status == "no_change" and result.parameters == CURRENT


def test_samples_outside_the_window_are_ignored() -> None:
    old = [sample(NOW - 6 * WEEK_MS, 0.5, 1.0)] * 50
    result = tune(old, CURRENT, now_ms=NOW, weeks=5, min_samples=1)
    assert result.counts["candidates"] == 0 and result.status == "insufficient_data"


def test_parameters_are_checked_against_the_settings_bounds() -> None:
    assert check_parameters({"min_large_trades": 4, "orderbook_imbalance_threshold": 0.35}) == {
        "min_large_trades": 4,
        "orderbook_imbalance_threshold": 0.35,
    }
    with pytest.raises(
        TuningError, match=r"orderbook_imbalance_threshold = 1.5 is out of range; allowed: > 0 and < 1"
    ):
        check_parameters({"orderbook_imbalance_threshold": 1.5})
    with pytest.raises(TuningError, match="max_spread is not a tunable setting"):
        check_parameters({"max_spread": 0.001})
    with pytest.raises(TuningError, match="min_large_trades = 'many'"):
        check_parameters({"min_large_trades": "many"})
