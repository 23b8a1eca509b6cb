"""A candidate turned away keeps the trade plan its signal would have had: the same ``plan_trade`` on the same
inputs as the signal the same setup makes when nothing turns it away (sql/0012 stores it with the candidate)."""

from __future__ import annotations

from tapewatch.rules import check
from tapewatch.settings import load_settings
from tapewatch.signal import Candidate, Signal, propose

from .engine_rig import SYM, Rig
from .feature_builders import long_setup

T = 1_700_000_100_000
SET_UP = T + 22  # the third large buy of Rig.long_setup(T)


def levels(signal: Signal) -> tuple[float, float, float, float, float]:
    return (
        signal.entry_price,
        signal.stop_loss,
        signal.take_profit_1,
        signal.take_profit_2,
        signal.suggested_position_size,
    )


def plan_levels(candidate: Candidate) -> tuple[float, float, float, float, float]:
    plan = candidate.plan
    assert plan is not None, f"{candidate.fate} candidate stored without a plan"
    return plan.entry, plan.stop, plan.take_profit_1, plan.take_profit_2, plan.suggested_position_size


def signalled(rig: Rig, **setup: float) -> Signal:
    """The signal the same setup makes when nothing turns it away."""
    rig.context()
    rig.long_setup(T, **setup)
    [signal] = rig.signals()
    [candidate] = rig.candidates()
    assert candidate.fate == "signal" and plan_levels(candidate) == levels(signal)
    return signal


def test_a_cooldown_candidate_keeps_the_plan_its_signal_would_have_had() -> None:
    signal = signalled(Rig())
    rig = Rig()
    rig.context()
    rig.engine.risk.start_cooldown(SYM, 3)
    rig.long_setup(T)
    [candidate] = rig.candidates()
    assert (candidate.fate, candidate.quality.tier, candidate.event_time) == ("cooldown", "HIGH", SET_UP)
    assert rig.signals() == []
    assert plan_levels(candidate) == levels(signal)
    assert candidate.created_after_agg_id == signal.created_after_agg_id is not None


def test_a_low_quality_candidate_keeps_the_plan_it_would_have_had_at_a_lower_minimum() -> None:
    low_setup = {"bid": 65.0, "ask": 35.0, "qty": 6200.0}  # score 59: LOW at the default minimum (50)
    signal = signalled(Rig(), **low_setup)
    assert signal.priority == "LOW"
    rig = Rig(quality_low_min=60)
    rig.context()
    rig.long_setup(T, **low_setup)
    [candidate] = rig.candidates()
    assert (candidate.fate, candidate.quality.tier, candidate.quality.score) == ("low_quality", None, 59)
    assert plan_levels(candidate) == levels(signal)


def test_only_a_setup_without_a_plan_has_none() -> None:
    settings = load_settings(quality_low_min=70, quality_medium_min=75, quality_high_min=85)
    weak = long_setup(imbalance_top10=0.31, large_buys=3, volume_intensity=1.85)  # score 69
    low = propose(weak, check(weak, settings, "LONG"), settings)
    assert (low.fate, low.signal) == ("low_quality", None)
    assert low.plan is not None and low.plan.entry == weak.best_ask
    blind = long_setup(atr_15m=None)
    no_plan = propose(blind, check(blind, settings, "LONG"), settings)
    assert (no_plan.fate, no_plan.fate_detail, no_plan.plan) == ("no_plan", "ATR(15m) unknown", None)
    weak_blind = long_setup(imbalance_top10=0.31, large_buys=3, volume_intensity=1.85, atr_15m=None)
    low_blind = propose(weak_blind, check(weak_blind, settings, "LONG"), settings)
    assert (low_blind.fate, low_blind.plan) == ("low_quality", None)  # its outcome stays unknown
