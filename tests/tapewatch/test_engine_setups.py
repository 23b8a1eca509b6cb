"""One candidate per setup while it persists, unless it becomes worth another look: its tier rises, or the
transient rule of the risk gate that held it back would now pass. No row per evaluation, no cooldown used up by
a re-check, and signal ids stay UUIDv5 of (symbol, direction, trigger event time)."""

from __future__ import annotations

from typing import Any

from tapewatch.engine import SignalEngine
from tapewatch.risk import Candidate as RiskCandidate
from tapewatch.risk import Decision
from tapewatch.setups import RECHECK_MS, RECHECK_SHARED_MS, Setups
from tapewatch.signal import signal_id_for

from .engine_rig import SYM, T0, Rig

T = 1_700_000_100_000
SET_UP = T + 22  # the third large buy of Rig.long_setup(T)


def use_up_low_cap(rig: Rig) -> None:
    for i in range(20):  # LOW's daily cap (20) already used today
        rig.engine.risk.count(
            RiskCandidate(signal_id=f"x{i}", symbol="ETHUSDT", direction="LONG", tier="LOW", event_time=T)
        )


def fates(rig: Rig) -> list[tuple[str, str | None, int]]:
    return [(c.fate, c.quality.tier, c.event_time) for c in rig.candidates()]


def test_a_setup_first_held_back_at_low_is_signalled_when_its_tier_rises() -> None:
    rig = Rig()
    use_up_low_cap(rig)
    rig.context()
    rig.long_setup(T, bid=65.0, ask=35.0, qty=6200.0)  # imbalance 0.30, intensity 1.86, 3 large: 59, LOW
    assert fates(rig) == [("tier_daily_cap", "LOW", SET_UP)]
    rig.depth(T + 30_000, bids=[(99.9, 150.0)])  # imbalance 0.62: score 79, MEDIUM
    for i in range(2):
        rig.trade(T + 30_010 + i, 100.1, 7000.0)  # 5 large buys: HIGH, but the setup is already a signal
    assert fates(rig) == [("tier_daily_cap", "LOW", SET_UP), ("signal", "MEDIUM", T + 30_000)]
    [signal] = rig.signals()
    assert signal.signal_id == signal_id_for(SYM, "LONG", T + 30_000)


def test_a_setup_that_keeps_failing_the_same_way_is_stored_once() -> None:
    rig = Rig()
    use_up_low_cap(rig)
    rig.context()
    rig.long_setup(T, bid=65.0, ask=35.0, qty=6200.0)
    for k in range(1, 600):  # a minute of depth events, the setup unchanged: re-checked, still held back
        rig.depth(T + k * 100)
    assert fates(rig) == [("tier_daily_cap", "LOW", SET_UP)]


def test_a_setup_held_back_while_paused_is_signalled_once_the_gate_would_pass() -> None:
    rig = Rig()
    rig.context()
    rig.engine.set_paused(True)
    rig.long_setup(T)
    assert fates(rig) == [("paused", "HIGH", SET_UP)]
    rig.depth(T + 500)
    rig.engine.set_paused(False)
    rig.depth(SET_UP + RECHECK_MS - 1)  # re-checked at most once a second of event time
    assert len(rig.candidates()) == 1
    rig.depth(SET_UP + RECHECK_MS)
    assert fates(rig) == [("paused", "HIGH", SET_UP), ("signal", "HIGH", SET_UP + RECHECK_MS)]
    assert [s.signal_id for s in rig.signals()] == [signal_id_for(SYM, "LONG", SET_UP + RECHECK_MS)]
    for k in range(1, 50):
        rig.depth(SET_UP + RECHECK_MS + k * 100)
    assert len(rig.candidates()) == 2  # a signal ends the setup's candidates


def test_a_recheck_never_uses_up_a_cooldown() -> None:
    rig = Rig()
    rig.context()
    rig.engine.set_paused(True)
    rig.long_setup(T)
    rig.engine.risk.start_cooldown(SYM, 3)  # a stop-out meanwhile: the gate now says cooldown
    rig.engine.set_paused(False)
    for k in range(1, 100):
        rig.depth(T + k * 100)
    assert fates(rig) == [("paused", "HIGH", SET_UP)]
    assert rig.engine.risk.cooldown_left(SYM) == 3


def test_a_cooldown_rejection_is_one_candidate_and_uses_one() -> None:
    rig = Rig()
    rig.context()
    rig.engine.risk.start_cooldown(SYM, 3)
    rig.long_setup(T)
    for k in range(1, 100):
        rig.depth(T + k * 100)
    assert fates(rig) == [("cooldown", "HIGH", SET_UP)]
    assert rig.engine.risk.cooldown_left(SYM) == 2


def test_setups_reset_after_their_conditions_failed_for_reset_ms() -> None:
    setups = Setups(reset_ms=120_000)
    assert setups.on_held("X", "LONG", 0, "LOW") == "new"
    setups.judged("X", "LONG", 0, "LOW", "low_quality")
    assert setups.on_held("X", "LONG", 120_000, "LOW") == "skip"
    assert setups.on_held("X", "SHORT", 120_000, "LOW") == "new"  # each direction is its own setup
    assert setups.on_held("X", "LONG", 240_001, "LOW") == "new"
    assert len(setups) == 2


def test_setups_ask_for_a_candidate_on_a_rise_and_for_a_recheck_after_a_transient_rejection() -> None:
    setups = Setups(reset_ms=120_000)
    setups.on_held("X", "LONG", 0, None)
    setups.judged("X", "LONG", 0, None, "low_quality")
    assert setups.on_held("X", "LONG", 10, None) == "skip"
    assert setups.on_held("X", "LONG", 20, "LOW") == "rise"
    setups.judged("X", "LONG", 20, "LOW", "concurrency")
    assert setups.on_held("X", "LONG", 20 + RECHECK_MS - 1, "LOW") == "skip"
    assert setups.on_held("X", "LONG", 20 + RECHECK_MS, "LOW") == "recheck"
    assert setups.on_held("X", "LONG", 20 + RECHECK_MS + 1, "LOW") == "skip"  # the next one a second later
    assert setups.on_held("X", "LONG", 30 + RECHECK_MS, "HIGH") == "rise"
    setups.judged("X", "LONG", 30 + RECHECK_MS, "HIGH", "cooldown")  # not transient: only a rise helps
    assert setups.on_held("X", "LONG", 10 * RECHECK_MS, "HIGH") == "skip"
    setups.judged("X", "LONG", 10 * RECHECK_MS, "HIGH", "signal")
    assert setups.on_held("X", "LONG", 20 * RECHECK_MS, "HIGH") == "skip"


def test_recheck_timing_follows_the_rule_that_held_the_setup_back() -> None:
    day = 86_400_000
    t = 5 * day + 3_600_000  # 01:00 UTC
    setups = Setups(reset_ms=10 * day)
    setups.on_held("X", "LONG", t, "HIGH")
    setups.judged("X", "LONG", t, "HIGH", "daily_cap")  # the day's counts only grow: not before midnight
    assert all(setups.on_held("X", "LONG", t + k * 3_600_000, "HIGH") == "skip" for k in range(1, 23))
    assert setups.on_held("X", "LONG", 6 * day, "HIGH") == "recheck"
    setups.judged("X", "LONG", 6 * day, "HIGH", "shared_gate_unavailable")  # the ledger was unreachable
    assert setups.on_held("X", "LONG", 6 * day + RECHECK_SHARED_MS - 1, "HIGH") == "skip"
    assert setups.on_held("X", "LONG", 6 * day + RECHECK_SHARED_MS, "HIGH") == "recheck"
    # that re-check passed locally, the ledger held it back: the next one waits as long again
    setups.held_by_shared_gate("X", "LONG", 6 * day + RECHECK_SHARED_MS)
    assert setups.on_held("X", "LONG", 6 * day + 2 * RECHECK_SHARED_MS - 1, "HIGH") == "skip"
    assert setups.on_held("X", "LONG", 6 * day + 2 * RECHECK_SHARED_MS, "HIGH") == "recheck"


class _Ledger:
    """A shared gate that always turns the setup away (another shard holds every slot)."""

    def __init__(self, rule: str) -> None:
        self.rule = rule
        self.calls = 0

    def reserve(self, candidate: RiskCandidate, expires_at: int, correlation: Any) -> Decision:
        self.calls += 1
        return Decision(candidate=candidate, rule=self.rule, reason=f"{self.rule} (all shards)")  # type: ignore[arg-type]

    def release(self, signal_id: str, at: int) -> bool:
        return True


def test_a_setup_the_ledger_holds_back_costs_few_ledger_round_trips() -> None:
    for rule, most in (("daily_cap", 1), ("concurrency", 1 + 60_000 // RECHECK_SHARED_MS + 1)):
        rig = Rig()
        ledger = _Ledger(rule)
        rig.engine = SignalEngine(rig.settings, rig.market, shared_gate=ledger)
        rig.context()
        rig.long_setup(T)
        for k in range(1, 601):  # a minute of depth events, the setup unchanged
            rig.depth(T + k * 100)
        assert [c.fate for c in rig.candidates()] == [rule]
        assert 1 <= ledger.calls <= most, (rule, ledger.calls)
        assert rig.engine.counters["rules_rejected"] == 0


def test_a_rise_within_the_millisecond_of_the_last_candidate_waits_for_the_next_event() -> None:
    """A sweep prints several large aggTrades stamped alike: the third makes a MEDIUM candidate (held back by
    MEDIUM's cap), the fourth lifts the setup to HIGH in the same millisecond. Both would have the id of
    (symbol, direction, that millisecond), and the store keeps the first: the signal would be lost. The rise
    is taken on the setup's next event instead."""
    rig = Rig(max_daily_medium=0)
    rig.context()
    t = T0 + 60_000
    rig.snapshot([(99.9, 135.0)], [(100.1, 65.0)], t)
    rig.depth(t)
    rig.trade(t + 10, 99.0, 10.0)
    for _ in range(4):
        rig.trade(t + 20, 100.0, 7000.0)  # one sweep: four large buys in one millisecond
    assert fates(rig) == [("tier_daily_cap", "MEDIUM", t + 20)]
    rig.trade(t + 21, 100.0, 1.0)  # the setup's next event
    assert fates(rig) == [("tier_daily_cap", "MEDIUM", t + 20), ("signal", "HIGH", t + 21)]
    ids = [c.candidate_id for c in rig.candidates()]
    assert len(set(ids)) == 2 and rig.signals()[0].signal_id == signal_id_for(SYM, "LONG", t + 21)


def test_a_setup_held_back_by_its_tiers_cap_is_rechecked_when_its_tier_falls() -> None:
    """HIGH's cap is used up: a HIGH setup is held back until the next UTC day. When the book thins and the same
    setup is MEDIUM, MEDIUM's cap has room: it is signalled (before, it stayed silent all day)."""
    rig = Rig(max_daily_high=0)
    rig.context()
    t = T0 + 60_000
    rig.long_setup(t)  # HIGH
    assert fates(rig) == [("tier_daily_cap", "HIGH", t + 22)]
    rig.depth(t + 100, bids=[(99.9, 135.0)], asks=[(100.1, 65.0)])  # imbalance 0.35: MEDIUM now
    assert len(rig.candidates()) == 1  # re-checked at most every RECHECK_MS
    rig.depth(t + 22 + RECHECK_MS)
    assert fates(rig) == [("tier_daily_cap", "HIGH", t + 22), ("signal", "MEDIUM", t + 22 + RECHECK_MS)]
    for k in range(1, 30):
        rig.depth(t + 22 + RECHECK_MS + k * 500)  # a signal stays one signal
    assert len(rig.candidates()) == 2 and len(rig.signals()) == 1


def test_a_fallen_tier_still_held_back_by_its_own_cap_makes_no_row() -> None:
    rig = Rig(max_daily_high=0, max_daily_medium=0)
    rig.context()
    t = T0 + 60_000
    rig.long_setup(t)
    rig.depth(t + 100, bids=[(99.9, 135.0)], asks=[(100.1, 65.0)])  # MEDIUM: its cap is used up too
    for k in range(1, 60):
        rig.depth(t + 100 + k * 500)
    assert fates(rig) == [("tier_daily_cap", "HIGH", t + 22)]


def test_a_candidate_records_the_walls_of_its_book() -> None:
    """spec 6.1 detect_large_orders as features: a stored candidate carries the walls of the top levels (>= 5x the
    mean level size of both sides), so the candidate log says where the book was stacked."""
    rig = Rig()
    rig.context()
    bids = [(99.9, 3000.0), *((round(99.8 - i / 10, 1), 50.0) for i in range(9))]
    asks = [(round(100.1 + i / 10, 1), 50.0) for i in range(10)]
    rig.snapshot(bids, asks, T)
    rig.depth(T)
    rig.trade(T + 10, 99.0, 10.0)
    for i in range(3):
        rig.trade(T + 20 + i, 100.0, 7000.0)
    (candidate,) = rig.candidates()
    # the mean level: (3000 + 9 * 50 + 10 * 50) / 20 = 197.5; the wall is 15.19 of it
    assert candidate.features.bid_walls == ((99.9, 3000.0, 15.19),)
    assert candidate.features.ask_walls == ()
