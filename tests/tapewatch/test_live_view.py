"""The dashboard's live view of open signals and symbols: unrealised R, percentiles, quiet symbols."""

from __future__ import annotations

import math

import msgspec
import pytest

from tapewatch.live_view import open_share, open_signal_view, percentile, quiet_symbols, unrealised_r
from tapewatch.outcome import OutcomeState
from tests.adapters.signal_builders import S, entry, outcome_of

FEE = S.taker_fee


def test_unrealised_r_is_zero_until_triggered_and_after_the_end() -> None:
    signal = entry()
    waiting = outcome_of(signal, [])
    assert waiting.state is OutcomeState.WAITING
    assert unrealised_r(waiting, signal.take_profit_1, FEE) == 0.0
    stopped = outcome_of(signal, [(1000, signal.entry_price), (2000, signal.stop_loss)])
    assert stopped.finished
    assert unrealised_r(stopped, signal.take_profit_2, FEE) == 0.0


def test_unrealised_r_marks_the_open_share_after_both_fees() -> None:
    signal = entry()  # LONG
    risk = signal.entry_price - signal.stop_loss
    triggered = outcome_of(signal, [(1000, signal.entry_price)])
    assert triggered.state is OutcomeState.TRIGGERED and open_share(triggered) == 1.0
    mark = signal.entry_price + 0.5 * risk
    expected = (mark - signal.entry_price - FEE * (signal.entry_price + mark)) / risk
    assert unrealised_r(triggered, mark, FEE) == pytest.approx(expected)
    assert unrealised_r(triggered, mark, 0.0) == pytest.approx(0.5)
    # after TP1 half the position is closed: only the other half is marked
    tp1 = outcome_of(signal, [(1000, signal.entry_price), (2000, signal.take_profit_1)])
    assert tp1.state is OutcomeState.TP1 and open_share(tp1) == pytest.approx(0.5)
    assert unrealised_r(tp1, signal.take_profit_1, 0.0) == pytest.approx(0.5 * 1.0)
    for bad in (None, math.nan, 0.0, -1.0):
        assert unrealised_r(triggered, bad, FEE) == 0.0


def test_unrealised_r_of_a_short_gains_when_the_price_falls() -> None:
    signal = entry(short=True)
    risk = signal.stop_loss - signal.entry_price
    triggered = outcome_of(signal, [(1000, signal.entry_price)])
    assert unrealised_r(triggered, signal.entry_price - risk, 0.0) == pytest.approx(1.0)
    assert unrealised_r(triggered, signal.entry_price + 0.5 * risk, 0.0) == pytest.approx(-0.5)


def test_open_signal_view_holds_every_signal_field_and_the_live_outcome() -> None:
    signal = entry()
    triggered = outcome_of(signal, [(1000, signal.entry_price)])
    view = open_signal_view(signal, triggered, signal.take_profit_1, 0.0, now_ms=123)
    for name in (
        "signal_id",
        "symbol",
        "direction",
        "priority",
        "entry_price",
        "stop_loss",
        "take_profit_1",
        "take_profit_2",
        "quality_score",
        "confidence",
        "suggested_position_size",
        "reasons",
    ):
        assert name in view, name
    assert view["state"] == "TRIGGERED"
    assert view["unrealised_r"] == pytest.approx(1.0)
    assert view["last_price"] == signal.take_profit_1
    assert view["updated_ms"] == 123 and view["trigger_time"] == signal.event_time + 1000
    # no price known: marked at the outcome's last price
    assert open_signal_view(signal, triggered, None, 0.0, 1)["last_price"] == signal.entry_price
    # the stored-only fields are not shown (as in the published signal)
    stored = msgspec.structs.replace(signal, created_after_agg_id=42)
    assert "created_after_agg_id" not in open_signal_view(stored, triggered, None, 0.0, 1)


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile(values, 101)


def test_quiet_symbols_are_silent_ones_while_others_flow() -> None:
    symbols = ["A", "B", "C"]
    seen = {"A": 100_000, "B": 60_000}
    # B silent 40 s, C never heard from since it joined at 50 s: both quiet after 30 s; A flows
    assert quiet_symbols(seen, symbols, 100_500, 30_000, {"C": 50_000}) == {"B": 40_500, "C": 50_500}
    # C joined recently: not quiet yet
    assert quiet_symbols(seen, symbols, 100_500, 30_000, {"C": 90_000}) == {"B": 40_500}
    # everything silent: the feed is down (the transport's incident), no symbol is singled out
    assert quiet_symbols(seen, symbols, 200_000, 30_000) == {}
    assert quiet_symbols({}, symbols, 200_000, 30_000) == {}
