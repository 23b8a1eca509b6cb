"""Monthly tuning, pure: the grid, re-scoring, the walk-forward split, the sample minimum, parameter checks."""

from __future__ import annotations

import pytest

from tapewatch.adapters.signal_store import candidate_row
from tapewatch.features import LARGE_SIZES_KEPT, large_trade_sizes, largest_sizes
from tapewatch.quality import Breakpoints, tier_for
from tapewatch.risk import Candidate as RiskCandidate
from tapewatch.settings import load_settings
from tapewatch.trade_flow import TradeWindow
from tapewatch.tuning import (
    WEEK_MS,
    Result,
    Sample,
    TuningError,
    check_parameters,
    current_parameters,
    grid,
    min_out_of_sample,
    score,
    separation,
    tier_grid,
    tune,
)
from tests.tapewatch.engine_rig import Rig
from tests.tapewatch.feature_builders import long_setup

NOW = 1_800_000_000_000
CURRENT = current_parameters(load_settings())


def sample(t: int, imbalance: float, pnl_r: float | None, *, short: bool = False, large: int = 4, vol: float = 2.1,
           quality: int = 70, triggered: bool | None = None, sizes: tuple[int, ...] | None = None) -> Sample:  # fmt: skip
    """A stored candidate; ``quality`` is its stored score (70: MEDIUM), ``sizes`` its large trades' sizes on
    its side (the other side holds one trade of 50 000)."""
    return Sample(
        event_time=t,
        direction="SHORT" if short else "LONG",
        imbalance=-imbalance if short else imbalance,
        large_buys=1 if short else large,
        large_sells=large if short else 1,
        volume_intensity=vol,
        tier=tier_for(quality),
        pnl_r=pnl_r,
        triggered=pnl_r is not None if triggered is None else triggered,
        quality_score=quality,
        large_buy_sizes=(50_000,) if short else sizes,
        large_sell_sizes=sizes if short else (50_000,),
    )


def test_current_parameters_are_the_spec_config_values() -> None:
    assert CURRENT == {
        "orderbook_imbalance_threshold": 0.28,
        "min_large_trades": 3,
        "large_trade_size": 50_000,
        "volume_confirmation_multiplier": 1.8,
        "quality_low_min": 50,
        "quality_medium_min": 65,
        "quality_high_min": 80,
    }


def test_the_grid_only_tightens_and_starts_with_the_current_set() -> None:
    sets = grid(CURRENT)
    assert sets[0] == CURRENT
    assert len(sets) == 4 * 4 * 4 * 4 * 3
    assert sorted({p["large_trade_size"] for p in sets}) == [50_000, 55_000, 62_500, 75_000]
    assert sorted({p["quality_low_min"] for p in sets}) == [50, 55, 60]  # LOW only goes up
    # HIGH and MEDIUM are chosen by tier_grid, not here
    assert {(p["quality_medium_min"], p["quality_high_min"]) for p in sets} == {(65, 80)}
    # LOW stays below MEDIUM
    assert sorted({p["quality_low_min"] for p in grid({**CURRENT, "quality_medium_min": 58})}) == [50, 55]
    assert min(p["orderbook_imbalance_threshold"] for p in sets) == 0.28
    assert max(p["orderbook_imbalance_threshold"] for p in sets) == pytest.approx(0.42)
    assert sorted({p["min_large_trades"] for p in sets}) == [3, 4, 5, 6]
    # a threshold that would leave its range is not tried
    near_one = grid({**CURRENT, "orderbook_imbalance_threshold": 0.8})
    assert max(p["orderbook_imbalance_threshold"] for p in near_one) == pytest.approx(0.88)


def test_score_keeps_what_still_passes_on_each_side_and_skips_unknown_outcomes() -> None:
    samples = [
        sample(1, 0.30, -1.0),
        sample(2, 0.45, 2.0, short=True, quality=85),
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


# --- large-trade size: the sizes kept in the feature vector, re-counted at a larger size ----------------------


def test_features_keep_the_sizes_of_the_very_trades_counted_largest_first() -> None:
    window = TradeWindow(300_000, 50_000)
    window.add(1, 100.0, 500.0, buyer_is_maker=False)  # 50 000: large buy
    window.add(2, 100.0, 1200.5, buyer_is_maker=False)  # 120 050: large buy
    window.add(3, 100.0, 499.0, buyer_is_maker=False)  # 49 900: not large
    window.add(4, 100.0, 700.009, buyer_is_maker=True)  # 70 000.9: large sell, rounded down
    buys, sells = large_trade_sizes(window)
    assert (buys, sells) == ((120_050, 50_000), (70_000,))
    assert (len(buys), len(sells)) == (window.large_buys, window.large_sells)  # the count is unchanged
    assert largest_sizes(float(v) for v in range(100_000, 100_100)) == tuple(range(100_099, 100_049, -1))
    assert len(largest_sizes(float(v) for v in range(1000))) == LARGE_SIZES_KEPT
    f = long_setup(large_buys=2, large_sells=1, large_buy_sizes=buys, large_sell_sizes=sells)
    assert f.large_buy_sizes == (120_050, 50_000)


@pytest.mark.parametrize(
    ("sizes", "count", "message"),
    [
        ((60_000, 70_000), 2, "largest first"),
        ((60_000, -1), 2, "largest first"),
        ((60_000, 50_000), 1, r"holds 2 sizes; at most min\(count 1, 50\)"),
    ],
)
def test_bad_size_lists_are_rejected(sizes: tuple[int, ...], count: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        long_setup(large_buys=count, large_buy_sizes=sizes)


def test_a_larger_size_recounts_large_trades_and_the_quality_score() -> None:
    # 4 large buys: 0.45 -> 35, 2.1 -> 30, 4 trades -> 32: score 97
    s = sample(1, 0.45, 1.0, quality=97, sizes=(120_000, 80_000, 60_000, 50_000))
    assert s.passes({**CURRENT, "large_trade_size": 55_000})  # 3 left: enough for min_large_trades 3
    assert not s.passes({**CURRENT, "large_trade_size": 75_000})  # 2 left
    view = s.view(75_000, Breakpoints())
    assert (view.large, view.exact, view.tier) == (2, True, "HIGH")  # 97 - 32 + 16 = 81
    weak = sample(1, 0.45, 1.0, quality=70, sizes=(120_000, 80_000, 60_000, 50_000))
    assert weak.view(75_000, Breakpoints()).tier == "LOW"  # 70 - 32 + 16 = 54
    # a smaller size than the counts were taken at cannot be re-counted
    assert s.passes({**CURRENT, "large_trade_size": 40_000}) is None


def test_a_cut_short_size_list_gives_a_lower_bound() -> None:
    s = Sample(
        event_time=1, direction="LONG", imbalance=0.45, large_buys=80, large_sells=0, volume_intensity=2.1,
        tier="HIGH", pnl_r=1.0, triggered=True, quality_score=100,
        large_buy_sizes=(200_000,) * LARGE_SIZES_KEPT, large_sell_sizes=(),
    )  # fmt: skip
    view = s.view(100_000, Breakpoints())
    assert (view.large, view.exact) == (50, False)
    assert view.passes({**CURRENT, "large_trade_size": 100_000, "min_large_trades": 6}) is True
    assert view.passes({**CURRENT, "large_trade_size": 100_000, "min_large_trades": 60}) is None


def test_tuning_raises_the_size_when_small_large_trades_lose() -> None:
    out = []
    for w in range(5):
        for i in range(4):
            t = NOW - (5 - w) * WEEK_MS + (i + 1) * 3_600_000
            out.append(sample(t, 0.45, 1.5, quality=97, sizes=(150_000, 120_000, 100_000, 90_000)))
            out.append(sample(t + 60_000, 0.45, -1.0, quality=97, sizes=(52_000, 51_000, 51_000, 50_500)))
    old = [sample(NOW - 3 * WEEK_MS + i, 0.45, -1.0, quality=97) for i in range(2)]  # no sizes stored
    result = tune(out + old, CURRENT, now_ms=NOW, weeks=5, min_samples=8)
    assert result.status == "proposed"
    assert result.parameters["large_trade_size"] == 55_000  # the first size that drops the small ones
    assert result.in_sample.mean_r == pytest.approx(1.5) and result.in_sample.undecided == 2
    assert result.current_in_sample.undecided == 0 and result.current_in_sample.signals == 34
    assert result.counts["without_sizes"] == 2
    assert "2 scored candidates were stored without large-trade sizes" in result.note


# --- quality breakpoints ------------------------------------------------------------------------------------


def test_tuning_raises_low_when_the_weakest_signals_lose() -> None:
    out = []
    for w in range(5):
        for i in range(4):
            t = NOW - (5 - w) * WEEK_MS + (i + 1) * 3_600_000
            out.append(sample(t, 0.45, 1.0, quality=70))
            out.append(sample(t + 60_000, 0.45, -1.0, quality=52))  # LOW, and losing
    result = tune(out, CURRENT, now_ms=NOW, weeks=5, min_samples=8)
    assert result.status == "proposed"
    assert result.parameters["quality_low_min"] == 55  # the smallest step that drops them
    assert result.in_sample.by_tier == {"MEDIUM": {"signals": 16, "win_rate": 1.0, "mean_r": 1.0}}
    assert result.current_in_sample.by_tier["LOW"]["signals"] == 16


def test_the_tier_grid_tightens_high_and_medium_and_keeps_them_ordered() -> None:
    pairs = [(p["quality_medium_min"], p["quality_high_min"]) for p in tier_grid(CURRENT)]
    assert pairs[0] == (65, 80) and len(pairs) == 9
    near_top = tier_grid({**CURRENT, "quality_high_min": 95})
    assert {p["quality_high_min"] for p in near_top} == {95, 100}


def test_separation_counts_ordered_tier_pairs_with_enough_signals() -> None:
    def tiers(**means: tuple[int, float]) -> Result:
        return Result(
            by_tier={t: {"signals": n, "win_rate": None, "mean_r": m} for t, (n, m) in means.items()}
        )

    assert separation(tiers(HIGH=(3, 1.0), MEDIUM=(3, 0.5), LOW=(3, 0.0)), 2) == (2, 0.5)
    assert separation(tiers(HIGH=(3, 0.5), MEDIUM=(3, 0.5), LOW=(3, 0.0)), 2) == (1, 0.5)
    assert separation(tiers(HIGH=(1, 9.0), MEDIUM=(3, 0.5)), 2) == (0, 0.0)  # too few HIGH


def tiered(judge_flipped: bool = False, per_week: int = 2) -> list[Sample]:
    """HIGH holds a losing 82 and a winning 90: raising HIGH to 85 orders the tiers (LOW below MEDIUM kept
    fixed by a MEDIUM of 55, so the search cannot drop LOW); ``per_week`` of each score a week."""
    out = []
    for w in range(5):
        last = w == 4
        for i in range(per_week):
            t = NOW - (5 - w) * WEEK_MS + (i + 1) * 3_600_000
            r82, r90 = (3.0, 0.5) if (last and judge_flipped) else (-1.0, 2.0)
            for k, (q, r) in enumerate(((52, -1.0), (70, 0.5), (82, r82), (90, r90))):
                out.append(sample(t + k * 60_000, 0.45, r, quality=q))
    return out


def test_high_and_medium_are_moved_to_separate_the_tiers() -> None:
    current = {**CURRENT, "quality_medium_min": 55}
    result = tune(tiered(per_week=6), current, now_ms=NOW, weeks=5, min_samples=8)
    assert result.status == "proposed"
    assert (result.parameters["quality_medium_min"], result.parameters["quality_high_min"]) == (55, 85)
    assert {k: v for k, v in result.parameters.items() if not k.startswith("quality")} == {
        k: v for k, v in current.items() if not k.startswith("quality")
    }
    assert result.in_sample.by_tier["HIGH"]["mean_r"] == 2.0
    assert result.current_in_sample.by_tier["HIGH"]["mean_r"] == 0.5
    assert "tiers separate better" in result.note and "1 -> 2 of 2" in result.note
    assert "out of sample p = 0.00" in result.note
    assert result.in_sample.mean_r == result.current_in_sample.mean_r  # tiers never change the mean
    assert "under-counted" not in result.note  # the thresholds, hence the signals, are unchanged


def test_a_tier_change_ordered_no_better_than_chance_out_of_sample_is_not_proposed() -> None:
    # 2 signals a score in the judged week: the tiers come out in order there, but by chance about 1 time in 14
    current = {**CURRENT, "quality_medium_min": 55}
    result = tune(tiered(), current, now_ms=NOW, weeks=5, min_samples=8)
    assert result.status == "no_change" and result.parameters == current
    assert "tier breakpoints kept" in result.note and "no better than chance" in result.note


def test_a_tier_change_that_fails_out_of_sample_is_not_proposed() -> None:
    current = {**CURRENT, "quality_medium_min": 55}
    result = tune(tiered(judge_flipped=True), current, now_ms=NOW, weeks=5, min_samples=8)
    assert result.status == "no_change" and result.parameters == current
    assert "tier breakpoints kept" in result.note and "fewer tiers out of sample" in result.note


def test_a_tier_change_never_judged_out_of_sample_is_not_proposed() -> None:
    current = {**CURRENT, "quality_medium_min": 55}
    fitting_only = [s for s in tiered() if s.event_time < NOW - WEEK_MS]
    result = tune(fitting_only, current, now_ms=NOW, weeks=5, min_samples=8)
    assert result.status == "no_change" and result.parameters == current
    assert "tier breakpoints kept" in result.note and "orders no tier pair out of sample" in result.note
    # one signal per tier in the judged week is below the 2 a tier needs (8 over 4 fitting weeks): still kept
    one_each = fitting_only + [s for s in tiered() if s.event_time >= NOW - WEEK_MS][:4]
    assert len(one_each) == len(fitting_only) + 4
    assert tune(one_each, current, now_ms=NOW, weeks=5, min_samples=8).parameters == current


def test_breakpoints_must_stay_ordered_to_be_applied() -> None:
    assert check_parameters({"quality_low_min": 55, "quality_medium_min": 70, "quality_high_min": 85}) == {
        "quality_low_min": 55,
        "quality_medium_min": 70,
        "quality_high_min": 85,
    }
    with pytest.raises(TuningError, match="ordered 0 <= low < medium < high <= 100"):
        check_parameters({"quality_low_min": 70, "quality_medium_min": 65, "quality_high_min": 80})
    with pytest.raises(TuningError, match="quality_high_min = 120 is out of range"):
        check_parameters({"quality_high_min": 120})


def test_the_engine_stores_the_large_trade_size_each_candidate_was_counted_at() -> None:
    t = 1_700_000_100_000
    rejected = Rig(large_trade_size=600_000)  # the setup's 3 buys are 620 000 USD each: large
    for i in range(20):  # LOW's daily cap (20) already used today
        rejected.engine.risk.count(
            RiskCandidate(signal_id=f"x{i}", symbol="ETHUSDT", direction="LONG", tier="LOW", event_time=t)
        )
    rejected.context()
    rejected.long_setup(t, bid=65.0, ask=35.0, qty=6200.0)  # a LOW setup held back by LOW's daily cap
    signalled = Rig(large_trade_size=60_000)
    signalled.context()
    signalled.long_setup(t)
    [held] = rejected.candidates()
    [signal] = signalled.candidates()
    assert (held.fate, held.large_trade_size) == ("tier_daily_cap", 600_000)
    assert (signal.fate, signal.large_trade_size) == ("signal", 60_000)
    assert candidate_row(held)["large_trade_size"] == 600_000  # what sql/0008's column receives
