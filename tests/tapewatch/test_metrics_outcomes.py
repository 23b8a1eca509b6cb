"""Batch outcomes from candles vs live outcomes, and the period metrics of the reports, by hand.

Signals and scenarios are those of ``outcome_helpers`` (entry 100, R = 1, fee 0.05 % a side): TP1 +0.8995 R,
TP2 +1.899 R, stop -1.0995 R, entry -0.1 R per part. The fixed set is ``test_metrics.fixed_set``: a win
(+1.39925), a loss (-1.0995), a break-even (+0.39975), an expiry (+0.2998) and a same-candle stop-and-target
(-1.0995) on Monday 2024-03-04.
"""

from __future__ import annotations

import itertools
import math
from datetime import date

import msgspec
import pytest

from tapewatch.metrics import SymbolTotal, best_and_worst, period_metrics, symbol_totals
from tapewatch.outcome import OutcomeParams, OutcomeState
from tapewatch.outcome_batch import (
    BatchRun,
    batch_outcome,
    disagreement,
    is_due,
    kline_windows,
    last_end,
)
from tests.tapewatch.candle_helpers import unchecked
from tests.tapewatch.outcome_helpers import (
    M1,
    MONDAY,
    SCENARIOS,
    absolute,
    binance_candles,
    make_signal,
    scenario_outcome,
    track,
)
from tests.tapewatch.test_metrics import fixed_set

P = OutcomeParams()


def candles(name: str, signal_created: int = MONDAY) -> list:  # type: ignore[type-arg]
    """The scenario's candles as Binance serves them (quiet minutes as zero-volume candles: no hole)."""
    return binance_candles(absolute(make_signal(signal_created), SCENARIOS[name]))


# --- when a signal is due and which klines it needs -----------------------------------------------------
def test_a_signal_is_due_after_its_response_window_and_hold_bound() -> None:
    high = make_signal(MONDAY, tier="HIGH")
    low = make_signal(MONDAY, tier="LOW")
    assert last_end(high, P) == MONDAY + 60_000 + 45 * M1
    assert last_end(low, P) == MONDAY + 900_000 + 180 * M1
    assert not is_due(high, P, MONDAY + 46 * M1)  # exactly the last end: it may still close then
    assert is_due(high, P, MONDAY + 46 * M1 + 1)


def test_kline_window_spans_creation_minute_to_last_end_minute() -> None:
    sig = make_signal(MONDAY + 30_000, tier="HIGH")  # 30 s into the minute
    (w,) = kline_windows(sig, P)
    assert (w.symbol, w.start_ms) == ("BTCUSDT", MONDAY)
    assert w.end_ms == MONDAY + 46 * M1  # last end MONDAY + 46.5 min, its minute opens at 46
    assert w.limit == 47
    (low,) = kline_windows(make_signal(MONDAY, tier="LOW"), P)
    assert low.limit == 196  # 15 + 180 minutes, and the last one


def test_a_window_longer_than_binance_serves_is_paged() -> None:
    # the settings allow a LOW hold of a week: 15 + 10,080 minutes, and the last one
    params = OutcomeParams(hold_ms={"HIGH": 45 * M1, "MEDIUM": 90 * M1, "LOW": 10_080 * M1})
    windows = kline_windows(make_signal(MONDAY, tier="LOW"), params)
    assert [w.limit for w in windows] == [1500] * 6 + [10_096 - 9000]
    assert windows[0].start_ms == MONDAY and windows[-1].end_ms == MONDAY + 10_095 * M1
    for a, b in itertools.pairwise(windows):
        assert b.start_ms == a.end_ms + M1 and a.end_ms - a.start_ms == 1499 * M1


# --- the batch outcome ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "state", "pnl_r"),
    [
        ("win", OutcomeState.TP2, 1.39925),
        ("loss", OutcomeState.STOPPED, -1.0995),
        ("break_even", OutcomeState.STOPPED, 0.39975),
        ("expiry", OutcomeState.EXPIRED, 0.2998),
        ("same_candle", OutcomeState.STOPPED, -1.0995),  # the stop counts, not TP1
        ("untriggered", OutcomeState.EXPIRED, 0.0),
    ],
)
def test_batch_outcome_of_each_scenario(name: str, state: OutcomeState, pnl_r: float) -> None:
    outcome = batch_outcome(make_signal(), candles(name), P)
    assert outcome is not None and outcome.finished
    assert outcome.state is state
    assert outcome.pnl_r == pytest.approx(pnl_r)


def test_candles_that_stop_short_of_the_end_give_no_outcome() -> None:
    first_ten = [c for c in candles("expiry") if c.open_time < MONDAY + 10 * M1]
    assert batch_outcome(make_signal(), first_ten, P) is None
    assert batch_outcome(make_signal(), [], P) is None


def test_a_forming_candle_is_not_used() -> None:
    bars = candles("expiry")
    # the candle of minute 44 (the last before the bound) is still forming: without it the data ends before
    # the deadline
    bars = [msgspec.structs.replace(c, closed=False) if c.open_time == MONDAY + 44 * M1 else c for c in bars]
    bars = [c for c in bars if c.open_time <= MONDAY + 44 * M1]
    assert batch_outcome(make_signal(), bars, P) is None


def test_an_impossible_candle_is_a_value_error() -> None:
    bars = candles("win")
    bars[0] = unchecked(bars[0], low=bars[0].high + 1)
    with pytest.raises(ValueError, match="low <= open"):
        batch_outcome(make_signal(), bars, P)


# --- live vs batch ----------------------------------------------------------------------------------------
def test_same_candle_live_and_batch_disagree_and_the_difference_is_reported() -> None:
    sig = make_signal()
    live = track(sig, absolute(sig, SCENARIOS["same_candle"]))  # trades: TP1, then the moved stop at entry
    batch = batch_outcome(sig, candles("same_candle"), P)
    assert batch is not None
    assert live.state is OutcomeState.STOPPED and live.pnl_r == pytest.approx(0.39975)
    found = disagreement(live, batch, 0.05)
    assert found is not None
    assert (found.live_state, found.batch_state) == (OutcomeState.STOPPED, OutcomeState.STOPPED)
    assert (found.live_pnl_r, found.batch_pnl_r) == (pytest.approx(0.39975), pytest.approx(-1.0995))
    assert found.signal_id == sig.signal_id and found.event_time == MONDAY
    assert "live STOPPED +0.399" in found.describe() and "batch STOPPED -1.0995 R" in found.describe()
    # a tolerance wider than the gap accepts it
    assert disagreement(live, batch, 1.6) is None


def test_agreeing_and_unfinished_live_outcomes_are_not_disagreements() -> None:
    sig = make_signal()
    batch = batch_outcome(sig, candles("win"), P)
    assert batch is not None
    assert disagreement(track(sig, absolute(sig, SCENARIOS["win"])), batch, 0.0) is None
    unfinished = track(sig, absolute(sig, SCENARIOS["win"])[:3])
    assert not unfinished.finished
    assert disagreement(unfinished, batch, 0.05) is None


def test_a_different_state_is_a_disagreement_even_with_the_same_pnl() -> None:
    sig = make_signal()
    batch = batch_outcome(sig, candles("untriggered"), P)  # EXPIRED, 0 R
    assert batch is not None
    live = msgspec.structs.replace(batch, state=OutcomeState.STOPPED)
    found = disagreement(live, batch, 10.0)
    assert found is not None and found.live_state is OutcomeState.STOPPED


def test_disagreement_refuses_bad_arguments() -> None:
    a = scenario_outcome("win")
    b = scenario_outcome("win", MONDAY + M1)
    with pytest.raises(ValueError, match="different signals"):
        disagreement(a, b, 0.05)
    with pytest.raises(ValueError, match="tolerance_r"):
        disagreement(a, a, -1.0)
    with pytest.raises(ValueError, match="tolerance_r"):
        disagreement(a, a, math.nan)


def test_batch_run_counts_each_kind_of_result() -> None:
    sig = make_signal()
    batch = batch_outcome(sig, candles("same_candle"), P)
    live_wrong = track(sig, absolute(sig, SCENARIOS["same_candle"]))
    run = BatchRun(due=4)
    run.record(None, batch, 0.05)  # no live outcome: filled
    run.record(live_wrong, batch, 0.05)  # disagreement
    run.record(batch, batch, 0.05)  # agreed
    run.record(None, None, 0.05)  # incomplete data
    assert (run.written, run.filled, run.agreed, run.incomplete) == (3, 1, 1, 1)
    assert [d.signal_id for d in run.disagreements] == [sig.signal_id]


# --- period metrics (weekly and monthly reports) ----------------------------------------------------------
def test_period_metrics_over_a_week_by_hand() -> None:
    overall, by_tier = period_metrics(fixed_set(), date(2024, 3, 4), date(2024, 3, 10))
    assert (overall.signals_generated, overall.signals_triggered, overall.wins) == (5, 5, 3)
    assert overall.total_pnl_r == pytest.approx(-0.1002)
    assert overall.max_drawdown_r == pytest.approx(1.49945)
    # one day of -0.1002 and six empty days would give sign(v)·sqrt(365/7): one day with signals is too few
    assert overall.sharpe_ratio is None
    assert by_tier["HIGH"].total_pnl_r == pytest.approx(2.0988)
    assert by_tier["HIGH"].sharpe_ratio is None


def test_period_metrics_ignore_signals_outside_and_refuse_a_reversed_period() -> None:
    overall, _ = period_metrics(fixed_set(), date(2024, 3, 5), date(2024, 3, 10))
    assert overall.signals_generated == 0 and overall.sharpe_ratio is None
    with pytest.raises(ValueError, match="before first_day"):
        period_metrics(fixed_set(), date(2024, 3, 10), date(2024, 3, 4))


def test_symbol_totals_and_best_and_worst_by_hand() -> None:
    totals = {t.symbol: (t.signals, t.total_r) for t in symbol_totals(fixed_set())}
    assert totals == {
        "BTCUSDT": (2, pytest.approx(1.799)),
        "ETHUSDT": (1, pytest.approx(-1.0995)),
        "SOLUSDT": (1, pytest.approx(0.2998)),
        "XRPUSDT": (1, pytest.approx(-1.0995)),
    }
    best, worst = best_and_worst(symbol_totals(fixed_set()), 3)
    assert [t.symbol for t in best] == ["BTCUSDT", "SOLUSDT"]  # winners only
    assert [t.symbol for t in worst] == ["ETHUSDT", "XRPUSDT"]  # losers only, ETH before XRP on the tie


def test_best_and_worst_never_share_a_symbol_and_skip_the_flat_ones() -> None:
    totals = [
        SymbolTotal(symbol="ETHUSDT", signals=2, total_r=-1.10),
        SymbolTotal(symbol="SOLUSDT", signals=1, total_r=0.30),
        SymbolTotal(symbol="ADAUSDT", signals=1, total_r=0.0),
    ]
    best, worst = best_and_worst(totals, 3)
    assert [t.symbol for t in best] == ["SOLUSDT"] and [t.symbol for t in worst] == ["ETHUSDT"]
    only_losses = [SymbolTotal(symbol="ETHUSDT", signals=1, total_r=-1.0)]
    assert best_and_worst(only_losses, 3) == ([], only_losses)
    assert best_and_worst([SymbolTotal(symbol="ADAUSDT", signals=1, total_r=0.0)], 3) == ([], [])
