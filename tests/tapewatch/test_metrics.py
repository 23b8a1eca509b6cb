"""Metrics against values computed by hand on a fixed set of signals.

The set (all entry 100, R = 1, position 0.5 of capital so 1 R = 0.5 % of capital; outcomes from 1m candles):

| created (Mon 2024-03-04) | symbol  | tier   | quality | scenario     | P&L R    | hold   |
|--------------------------|---------|--------|---------|--------------|----------|--------|
| 01:00                    | BTCUSDT | HIGH   | 85      | win          | +1.39925 | 15 min |
| 03:00                    | ETHUSDT | MEDIUM | 70      | loss         | -1.0995  | 3 min  |
| 05:00                    | BTCUSDT | HIGH   | 82      | break-even   | +0.39975 | 9 min  |
| 07:00                    | SOLUSDT | HIGH   | 81      | expiry       | +0.2998  | 45 min |
| 09:00                    | XRPUSDT | LOW    | 55      | same candle  | -1.0995  | 3 min  |

Total -0.1002 R; wins 3 of 5 (the break-even and the expiry end above 0 after fees); mean hold 75/5 = 15 min;
cumulative R 1.39925, 0.29975, 0.6995, 0.9993, -0.1002: max drawdown 1.39925 + 0.1002 = 1.49945 R.
A daily R series of one value v and n-1 zero days has mean v/n and sample stdev |v|/sqrt(n), so its Sharpe
ratio would be sign(v)·sqrt(365/n) whatever v: below MIN_SHARPE_SIGNAL_DAYS days with signals it is None.
"""

from __future__ import annotations

import math
from datetime import date, timedelta

import pytest

from tapewatch.metrics import (
    MIN_SHARPE_SIGNAL_DAYS,
    Summary,
    daily_metrics,
    day_of,
    max_drawdown,
    sharpe_from_sums,
    sharpe_ratio,
    slope,
    summarize,
    weekly_metrics,
)
from tapewatch.outcome import Outcome, OutcomeTracker
from tests.tapewatch.outcome_helpers import MONDAY, make_signal, scenario_outcome

H = 3_600_000
DAY = date(2024, 3, 4)


def fixed_set(base: int = MONDAY) -> list[Outcome]:
    rows = [
        (1, "BTCUSDT", "HIGH", 85, "win"),
        (3, "ETHUSDT", "MEDIUM", 70, "loss"),
        (5, "BTCUSDT", "HIGH", 82, "break_even"),
        (7, "SOLUSDT", "HIGH", 81, "expiry"),
        (9, "XRPUSDT", "LOW", 55, "same_candle"),
    ]
    return [
        scenario_outcome(name, base + hour * H, symbol=symbol, tier=tier, quality=quality)
        for hour, symbol, tier, quality, name in rows
    ]


def test_daily_overall_by_hand() -> None:
    m = daily_metrics(fixed_set(), DAY)
    assert m.day == DAY
    o = m.overall
    assert (o.signals_generated, o.signals_triggered, o.wins) == (5, 5, 3)
    assert o.win_rate == pytest.approx(0.6)
    assert o.average_hold_minutes == pytest.approx(15.0)
    assert o.total_pnl_r == pytest.approx(-0.1002)
    assert o.total_pnl_pct == pytest.approx(-0.0501)
    assert o.max_drawdown_r == pytest.approx(1.49945)
    assert o.mean_quality == pytest.approx(74.6)
    # one day of -0.1002 in a 30-day window would be -sqrt(365/30) = -3.49, an artefact: not given
    assert o.sharpe_ratio is None


def test_daily_per_tier_by_hand() -> None:
    by = daily_metrics(fixed_set(), DAY).by_tier
    high, medium, low = by["HIGH"], by["MEDIUM"], by["LOW"]
    # HIGH: win, break-even, expiry
    assert (high.signals_generated, high.wins, high.win_rate) == (3, 3, 1.0)
    assert high.total_pnl_r == pytest.approx(2.0988) and high.max_drawdown_r == 0.0
    assert high.average_hold_minutes == pytest.approx(23.0)  # (15 + 9 + 45) / 3
    assert high.sharpe_ratio is None  # one day with signals
    assert high.mean_quality == pytest.approx(82.666666666)
    # MEDIUM: the loss; LOW: the same-candle stop
    for tier in (medium, low):
        assert (tier.signals_generated, tier.wins, tier.win_rate) == (1, 0, 0.0)
        assert tier.total_pnl_r == pytest.approx(-1.0995) and tier.max_drawdown_r == pytest.approx(1.0995)
        assert tier.average_hold_minutes == pytest.approx(3.0)
        assert tier.sharpe_ratio is None


def test_untriggered_signals_count_as_sent_but_not_in_win_rate_or_hold() -> None:
    outcomes = [*fixed_set(), scenario_outcome("untriggered", MONDAY + 11 * H, symbol="ADAUSDT")]
    o = daily_metrics(outcomes, DAY).overall
    assert (o.signals_generated, o.signals_triggered, o.wins) == (6, 5, 3)
    assert o.win_rate == pytest.approx(0.6) and o.average_hold_minutes == pytest.approx(15.0)
    assert o.total_pnl_r == pytest.approx(-0.1002)


def test_a_day_counts_signals_created_that_utc_day_only() -> None:
    outcomes = fixed_set() + fixed_set(MONDAY + 24 * H)  # the same again on Tuesday
    monday = daily_metrics(outcomes, DAY).overall
    tuesday = daily_metrics(outcomes, DAY + timedelta(days=1)).overall
    assert monday.signals_generated == tuesday.signals_generated == 5
    assert tuesday.total_pnl_r == pytest.approx(-0.1002)
    assert tuesday.sharpe_ratio is None  # two days with signals in its window
    assert daily_metrics(outcomes, DAY - timedelta(days=1)).overall == Summary(sharpe_ratio=None)


def test_the_sharpe_ratio_needs_five_days_with_signals() -> None:
    """Four days with signals in the 30-day window: no ratio (it would be a function of 4 values and the
    window length); the fifth day gives the ratio of the whole series, zero days included."""
    v = -0.1002
    win = scenario_outcome("win", MONDAY + 3 * 24 * H + H, tier="HIGH")
    outcomes = [o for d in range(4) for o in fixed_set(MONDAY + d * 24 * H)] + [win]
    assert MIN_SHARPE_SIGNAL_DAYS == 5
    assert daily_metrics(outcomes, DAY + timedelta(days=3)).overall.sharpe_ratio is None
    outcomes += fixed_set(MONDAY + 4 * 24 * H)
    fifth = daily_metrics(outcomes, DAY + timedelta(days=4))
    day4 = v + win.pnl_r
    assert fifth.overall.sharpe_ratio == pytest.approx(sharpe_ratio([0.0] * 25 + [v, v, v, day4, v]))
    # per tier, its own days with signals: MEDIUM (the ETHUSDT loss every day) has five
    assert fifth.by_tier["MEDIUM"].sharpe_ratio == pytest.approx(sharpe_ratio([0.0] * 25 + [-1.0995] * 5))


def test_daily_totals_equal_but_for_rounding_have_no_sharpe_ratio_as_their_sums_have_none() -> None:
    """The same R values summed in another order differ in the last bit: no variation, so no ratio (it read
    2.6e17), as the database sums the dashboard aggregates give."""
    daily = [1.49905, 1.4990500000000002] * 4
    assert daily[0] != daily[1]
    assert sharpe_ratio(daily) is None
    assert sharpe_from_sums(len(daily), sum(daily), sum(r * r for r in daily), len(daily)) is None
    # a real spread is still a ratio, the same from the series and from its sums
    spread = [1.5, 1.4, 1.6, 1.45, 1.55, 1.5, 1.52, 1.48]
    ratio = sharpe_ratio(spread)
    assert ratio is not None and ratio == pytest.approx(
        sharpe_from_sums(len(spread), sum(spread), sum(r * r for r in spread), len(spread)), rel=1e-9
    )


def test_days_whose_signals_never_triggered_do_not_count_towards_the_five() -> None:
    """Four days whose only signal never triggered (0 R each) and one losing day: one day carries R among 30,
    so the ratio would be −sqrt(365/30) = −3.49 whatever the loss. No ratio; a fifth triggered day gives it."""
    untriggered = [
        scenario_outcome("untriggered", MONDAY - d * 24 * H + H, signal_id=f"u{d}") for d in (1, 2, 3, 4)
    ]
    assert all(not o.triggered and o.pnl_r == 0.0 for o in untriggered)
    loss = scenario_outcome("loss", MONDAY + H, signal_id="loss")
    assert daily_metrics([*untriggered, loss], DAY).overall.sharpe_ratio is None
    assert summarize([*untriggered, loss]).sharpe_ratio is None
    triggered = [
        scenario_outcome("loss", MONDAY - d * 24 * H + 2 * H, signal_id=f"t{d}") for d in (1, 2, 3, 4)
    ]
    assert daily_metrics([*untriggered, *triggered, loss], DAY).overall.sharpe_ratio == pytest.approx(
        sharpe_ratio([0.0] * 25 + [-1.0995] * 5)
    )


def test_spec_keys() -> None:
    spec = daily_metrics(fixed_set(), DAY).overall.to_spec()
    assert list(spec) == [
        "signals_generated",
        "signals_triggered",
        "win_rate",
        "average_hold_time",
        "total_pnl",
        "total_pnl_pct",
        "sharpe_ratio",
        "max_drawdown",
    ]
    assert spec["average_hold_time"] == pytest.approx(15.0) and spec["max_drawdown"] == pytest.approx(1.49945)


def test_weekly_by_hand() -> None:
    earlier = [
        # two weeks before: one loss, quality 60 -> win rate 0, mean quality 60
        scenario_outcome("loss", MONDAY - 14 * 24 * H + H, symbol="ETHUSDT", quality=60),
        # the week before: a win (quality 90) and a loss (quality 70) -> win rate 0.5, mean quality 80
        scenario_outcome("win", MONDAY - 7 * 24 * H + H, symbol="BTCUSDT", quality=90),
        scenario_outcome("loss", MONDAY - 7 * 24 * H + 2 * H, symbol="BTCUSDT", quality=70),
    ]
    later = [scenario_outcome("win", MONDAY + 7 * 24 * H, symbol="DOGEUSDT")]  # next week: outside
    w = weekly_metrics(earlier + fixed_set() + later, DAY)
    assert w.week_start == DAY
    assert w.overall.signals_generated == 5
    assert w.overall.sharpe_ratio is None  # one day with signals among the week's 7
    assert [(s.symbol, s.signals, round(s.total_r, 6)) for s in w.best_symbols] == [
        ("BTCUSDT", 2, 1.799),
        ("SOLUSDT", 1, 0.2998),
    ]  # only winners: ETHUSDT (-1.10 R) is not "best" although there are fewer than 2 × 3 symbols
    assert [(s.symbol, round(s.total_r, 6)) for s in w.worst_symbols] == [
        ("ETHUSDT", -1.0995),  # tied with XRPUSDT: by name
        ("XRPUSDT", -1.0995),
    ]  # only losers: SOLUSDT (+0.30 R) is not "worst"
    assert w.strategy_efficiency == pytest.approx(-0.1002 / 5)
    # win rate by week (x = -2, -1, 0): 0, 0.5, 0.6 -> slope 0.3 per week
    assert w.win_rate_trend == pytest.approx(0.3)
    # mean quality: 60, 80, 74.6 -> slope (74.6 - 60) / 2 = 7.3 per week
    assert w.quality_trend == pytest.approx(7.3)
    assert w.by_tier["HIGH"].total_pnl_r == pytest.approx(2.0988)


def test_weekly_without_history_has_no_trend_and_empty_week_has_no_efficiency() -> None:
    w = weekly_metrics(fixed_set(), DAY)
    assert w.win_rate_trend is None and w.quality_trend is None
    empty = weekly_metrics([], DAY)
    assert empty.strategy_efficiency is None and empty.best_symbols == () and empty.overall == Summary()


def test_summarize_covers_the_days_spanned() -> None:
    outcomes = fixed_set() + fixed_set(MONDAY + 2 * 24 * H)  # Monday and Wednesday, Tuesday empty
    s = summarize(outcomes)
    v = -0.1002
    assert s.signals_generated == 10 and s.total_pnl_r == pytest.approx(2 * v)
    assert s.sharpe_ratio is None  # two days with signals: below MIN_SHARPE_SIGNAL_DAYS
    assert summarize(fixed_set()).sharpe_ratio is None  # one day: undefined
    # five days with signals (Mon, Wed, Thu, Sat, Sun) over the 10 days asked for: the ratio of the series
    five = [o for d in (0, 2, 3, 5, 6) for o in fixed_set(MONDAY + d * 24 * H)]
    assert summarize(five, DAY, DAY + timedelta(days=9)).sharpe_ratio == pytest.approx(
        sharpe_ratio([v, 0, v, v, 0, v, v, 0, 0, 0])
    )
    assert summarize(five).sharpe_ratio == pytest.approx(sharpe_ratio([v, 0, v, v, 0, v, v]))
    assert summarize([]) == Summary()


def test_unfinished_outcomes_are_refused_by_name() -> None:
    tracker = OutcomeTracker(make_signal(MONDAY + H, signal_id="open-one"))
    tracker.on_trade(MONDAY + H, 100.0)
    with pytest.raises(ValueError, match=r"signal open-one \(BTCUSDT\) is still TRIGGERED"):
        daily_metrics([*fixed_set(), tracker.outcome()], DAY)
    # outside the window it is not looked at
    assert daily_metrics([tracker.outcome()], DAY + timedelta(days=40)).overall == Summary()


def test_helpers() -> None:
    assert sharpe_ratio([1.0, -1.0, 2.0]) == pytest.approx((2 / 3) / math.sqrt(7 / 3) * math.sqrt(365))
    assert sharpe_ratio([1.0]) is None and sharpe_ratio([0.5, 0.5]) is None
    assert max_drawdown([1, -2, 0.5, -1, 3]) == pytest.approx(2.5)
    assert max_drawdown([-1.0]) == 1.0 and max_drawdown([]) == 0.0 and max_drawdown([1, 2]) == 0.0
    assert slope([(0, 1.0), (1, 3.0), (2, 5.0)]) == pytest.approx(2.0)
    assert slope([(0, 1.0)]) is None and slope([(1, 1.0), (1, 2.0)]) is None
    assert day_of(MONDAY) == DAY and day_of(MONDAY - 1) == DAY - timedelta(days=1)
    with pytest.raises(ValueError):
        daily_metrics([], DAY, sharpe_days=1)
    with pytest.raises(ValueError):
        weekly_metrics([], DAY, trend_weeks=1)
