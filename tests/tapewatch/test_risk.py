"""Risk gate: each rule at its boundaries, the rule order, and the state the decisions leave behind."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from tapewatch.correlation import return_correlation
from tapewatch.events import Candle
from tapewatch.outcome import Outcome
from tapewatch.quality import Tier
from tapewatch.risk import (
    DAY_MS,
    RULES,
    Candidate,
    Decision,
    RiskParams,
    RiskState,
    check_concurrency,
    check_cooldown,
    check_correlation,
    check_daily_cap,
    check_paused,
    check_tier_cap,
    gate,
    utc_day,
)
from tapewatch.rules import Direction
from tapewatch.settings import load_settings
from tests.tapewatch.candle_helpers import M1, random_walk
from tests.tapewatch.outcome_helpers import MONDAY, scenario_outcome

_ids = iter(range(1_000_000))


def cand(
    symbol: str = "BTCUSDT", direction: Direction = "LONG", tier: Tier = "HIGH", at: int = MONDAY + 3_600_000
) -> Candidate:
    return Candidate(signal_id=f"s{next(_ids)}", symbol=symbol, direction=direction, tier=tier, event_time=at)


def no_corr(a: str, b: str) -> float | None:
    return None


def corr_table(table: dict[frozenset[str], float | None]) -> Callable[[str, str], float | None]:
    return lambda a, b: table.get(frozenset((a, b)))


def loss_of(symbol: str) -> Outcome:
    return scenario_outcome("loss", symbol=symbol)


def fill_day(state: RiskState, tier: Tier, n: int, at: int) -> None:
    for _ in range(n):
        state.count(cand(tier=tier, at=at))


# --- rule functions --------------------------------------------------------------------------------------


def test_rule_functions_pass_below_and_reject_at_their_limit() -> None:
    assert check_paused(False) is None and check_paused(True) == "signaling paused"
    assert check_cooldown("BTCUSDT", 0) is None
    assert (
        check_cooldown("BTCUSDT", 2)
        == "cooldown after a stop-out on BTCUSDT (2 of the next candidates to skip)"
    )
    assert check_tier_cap("HIGH", 19, 20) is None
    assert check_tier_cap("HIGH", 20, 20) == "daily cap of HIGH reached (20/20)"
    assert check_daily_cap(79, 80) is None and check_daily_cap(80, 80) == "total daily cap reached (80/80)"
    assert check_concurrency(4, 5) is None
    assert check_concurrency(5, 5) == "concurrent signals at the cap (5/5)"
    assert check_tier_cap("LOW", 0, 0) is not None  # a cap of 0 turns the tier off


@pytest.mark.parametrize(
    ("r", "rejected"),
    [(0.59, False), (0.6, False), (math.nextafter(0.6, 1), True), (0.83, True), (-0.9, False)],
)
def test_correlation_rejects_strictly_above_the_threshold(r: float, rejected: bool) -> None:
    c = cand("BTCUSDT")
    reason = check_correlation(c, [cand("ETHUSDT")], lambda a, b: r, 0.6)
    assert (reason is not None) == rejected
    if rejected:
        assert reason == f"correlated with ETHUSDT r={r:.2f}"


def test_correlation_names_the_most_correlated_open_signal_in_the_same_direction() -> None:
    table = corr_table(
        {
            frozenset(("BTCUSDT", "ETHUSDT")): 0.83,
            frozenset(("BTCUSDT", "SOLUSDT")): 0.91,  # SHORT: another direction, not a concentration
            frozenset(("BTCUSDT", "XRPUSDT")): 0.7,
            frozenset(("BTCUSDT", "DOGEUSDT")): math.nan,  # unknown
        }
    )
    open_ = [cand("XRPUSDT"), cand("SOLUSDT", "SHORT"), cand("ETHUSDT"), cand("DOGEUSDT")]
    assert check_correlation(cand("BTCUSDT"), open_, table, 0.6) == "correlated with ETHUSDT r=0.83"
    assert check_correlation(cand("BTCUSDT", "SHORT"), open_, table, 0.6) == "correlated with SOLUSDT r=0.91"
    assert check_correlation(cand("BTCUSDT"), [cand("DOGEUSDT"), cand("ADAUSDT")], table, 0.6) is None


def test_an_open_signal_on_the_same_symbol_and_direction_counts_as_r_1() -> None:
    calls: list[tuple[str, str]] = []

    def spy(a: str, b: str) -> float | None:
        calls.append((a, b))
        return 0.0

    assert check_correlation(cand("BTCUSDT"), [cand("BTCUSDT")], spy, 0.6) == "correlated with BTCUSDT r=1.00"
    assert calls == []
    assert check_correlation(cand("BTCUSDT"), [cand("BTCUSDT", "SHORT")], spy, 0.6) is None


def test_correlation_with_the_real_function_on_1m_candles() -> None:
    base = random_walk(241, seed=3, length_ms=M1)
    twin = list(base)  # moves exactly like BTCUSDT
    other = random_walk(241, seed=99, length_ms=M1)
    history: dict[str, list[Candle]] = {"BTCUSDT": base, "ETHUSDT": twin, "SOLUSDT": other}

    def correlation(a: str, b: str) -> float | None:
        return return_correlation(history[a], history[b])

    assert check_correlation(cand("BTCUSDT"), [cand("ETHUSDT")], correlation, 0.6) == (
        "correlated with ETHUSDT r=1.00"
    )
    assert check_correlation(cand("BTCUSDT"), [cand("SOLUSDT")], correlation, 0.6) is None


# --- the gate: caps and days -----------------------------------------------------------------------------


@pytest.mark.parametrize(("tier", "cap"), [("HIGH", 20), ("MEDIUM", 40), ("LOW", 20)])
def test_tier_cap_exactly_at_the_cap(tier: Tier, cap: int) -> None:
    params = RiskParams(max_concurrent_signals=1000)
    state = RiskState()
    at = MONDAY + 3_600_000
    for _ in range(cap):  # the cap-th signal still passes
        decision = gate(cand(f"S{next(_ids)}", tier=tier, at=at), state, params, no_corr)
        assert decision.passed
        state.record(decision)
    assert state.signals_on(utc_day(at), tier) == cap
    over = gate(cand(tier=tier, at=at), state, params, no_corr)
    assert (over.rule, over.reason) == ("tier_daily_cap", f"daily cap of {tier} reached ({cap}/{cap})")
    other: Tier = "LOW" if tier != "LOW" else "HIGH"
    assert gate(cand(tier=other, at=at), state, params, no_corr).passed  # other tiers unaffected


def test_total_daily_cap_exactly_at_the_cap() -> None:
    params = RiskParams(max_daily={"HIGH": 100, "MEDIUM": 100, "LOW": 100}, max_daily_signals=80)
    state = RiskState()
    at = MONDAY + 3_600_000
    fill_day(state, "HIGH", 30, at)
    fill_day(state, "MEDIUM", 30, at)
    fill_day(state, "LOW", 19, at)
    assert gate(cand(tier="LOW", at=at), state, params, no_corr).passed  # the 80th
    state.count(cand(tier="LOW", at=at))
    decision = gate(cand(tier="MEDIUM", at=at), state, params, no_corr)
    assert (decision.rule, decision.reason) == ("daily_cap", "total daily cap reached (80/80)")


def test_default_caps_add_up_to_the_total() -> None:
    state = RiskState()
    at = MONDAY
    fill_day(state, "HIGH", 20, at)
    fill_day(state, "MEDIUM", 40, at)
    fill_day(state, "LOW", 19, at)
    assert state.signals_on(utc_day(at)) == 79
    assert gate(cand(tier="LOW", at=at), state, RiskParams(), no_corr).passed


def test_day_rolls_over_at_midnight_utc_of_event_time() -> None:
    state = RiskState()
    midnight = MONDAY + DAY_MS  # Tuesday 00:00:00.000 UTC
    fill_day(state, "HIGH", 20, midnight - 1)  # Monday 23:59:59.999
    assert gate(cand(at=midnight - 1), state, RiskParams(), no_corr).rule == "tier_daily_cap"
    assert gate(cand(at=midnight), state, RiskParams(), no_corr).passed
    assert (utc_day(midnight - 1), utc_day(midnight)) == (utc_day(MONDAY), utc_day(MONDAY) + 1)
    # counts of a new day start at 0; older days are forgotten once two days have passed
    state.count(cand(at=midnight + 2 * DAY_MS))
    assert state.signals_on(utc_day(midnight - 1)) == 0


# --- concurrency, cooldown, pause ------------------------------------------------------------------------


def test_concurrency_exactly_at_the_cap_and_a_finished_signal_frees_a_slot() -> None:
    params = RiskParams()
    state = RiskState()
    opened = []
    for i in range(5):
        decision = gate(cand(f"SYM{i}USDT"), state, params, no_corr)
        assert decision.passed, i  # the 5th may open
        state.record(decision)
        opened.append(decision.candidate)
    decision = gate(cand("NEWUSDT"), state, params, no_corr)
    assert (decision.rule, decision.reason) == ("concurrency", "concurrent signals at the cap (5/5)")
    state.record(decision)
    assert len(state.open_signals) == 5  # a rejected candidate is not opened

    finished = scenario_outcome("win", symbol="SYM0USDT", signal_id=opened[0].signal_id)
    assert state.finish(finished, params) is True
    assert state.finish(finished, params) is False  # already closed
    assert gate(cand("NEWUSDT"), state, params, no_corr).passed


def test_cooldown_suppresses_exactly_the_next_three_candidates_after_a_stop_out() -> None:
    params = RiskParams()
    state = RiskState()
    state.finish(loss_of("ETHUSDT"), params)
    for n in (1, 2, 3):
        decision = gate(cand("ETHUSDT"), state, params, no_corr)
        assert decision.rule == "cooldown", n
        assert (
            decision.reason
            == f"cooldown after a stop-out on ETHUSDT ({4 - n} of the next candidates to skip)"
        )
        state.record(decision)
        assert gate(cand("BTCUSDT"), state, params, no_corr).passed  # other symbols are not affected
    fourth = gate(cand("ETHUSDT"), state, params, no_corr)
    assert fourth.passed and state.cooldown_left("ETHUSDT") == 0


def test_break_even_after_tp1_and_wins_start_no_cooldown() -> None:
    state = RiskState()
    for name in ("break_even", "win", "expiry", "untriggered"):
        state.finish(scenario_outcome(name, symbol="ETHUSDT"), RiskParams())
    assert state.cooldown_left("ETHUSDT") == 0


def test_candidates_held_back_while_paused_do_not_use_up_the_cooldown() -> None:
    params = RiskParams()
    state = RiskState()
    state.finish(loss_of("ETHUSDT"), params)
    state.paused = True
    for _ in range(5):
        decision = gate(cand("ETHUSDT"), state, params, no_corr)
        assert (decision.rule, decision.reason) == ("paused", "signaling paused")
        state.record(decision)
    state.paused = False
    assert state.cooldown_left("ETHUSDT") == 3
    assert gate(cand("ETHUSDT"), state, params, no_corr).rule == "cooldown"


def test_a_second_stop_out_restarts_but_never_shortens_the_cooldown() -> None:
    params = RiskParams()
    state = RiskState()
    state.finish(loss_of("ETHUSDT"), params)
    state.record(gate(cand("ETHUSDT"), state, params, no_corr))
    assert state.cooldown_left("ETHUSDT") == 2
    state.finish(loss_of("ETHUSDT"), params)
    assert state.cooldown_left("ETHUSDT") == 3
    state.start_cooldown("ETHUSDT", 1)
    assert state.cooldown_left("ETHUSDT") == 3
    state.finish(loss_of("SOLUSDT"), RiskParams(cooldown_after_loss=0))
    assert state.cooldown_left("SOLUSDT") == 0


# --- the order of the rules and what a decision records --------------------------------------------------


def blocked_from(first: int) -> tuple[RiskState, RiskParams, Callable[[str, str], float | None]]:
    """A state, limits and correlations under which every rule from ``RULES[first]`` on rejects ETHUSDT."""
    rules = set(RULES[first:])
    state = RiskState(paused="paused" in rules)
    if "cooldown" in rules:
        state.start_cooldown("ETHUSDT", 3)
    state.count(cand("XRPUSDT"))  # one HIGH signal today
    state.open(cand("SOLUSDT"))  # one open signal, LONG
    params = RiskParams(
        max_daily={"HIGH": 1 if "tier_daily_cap" in rules else 10, "MEDIUM": 40, "LOW": 20},
        max_daily_signals=1 if "daily_cap" in rules else 10,
        max_concurrent_signals=1 if "concurrency" in rules else 10,
    )
    correlated = corr_table({frozenset(("ETHUSDT", "SOLUSDT")): 0.99})
    return state, params, correlated if "correlation" in rules else no_corr


def test_rules_apply_in_the_documented_order() -> None:
    assert RULES == ("paused", "cooldown", "tier_daily_cap", "daily_cap", "concurrency", "correlation")
    for first, rule in enumerate(RULES):
        state, params, correlation = blocked_from(first)
        assert gate(cand("ETHUSDT"), state, params, correlation).rule == rule
    state, params, correlation = blocked_from(len(RULES))
    assert gate(cand("ETHUSDT"), state, params, correlation).passed


def test_record_counts_and_opens_only_passed_candidates() -> None:
    state = RiskState()
    passed = Decision(candidate=cand("BTCUSDT"))
    rejected = Decision(
        candidate=cand("ETHUSDT"), rule="correlation", reason="correlated with BTCUSDT r=0.90"
    )
    state.record(passed)
    state.record(rejected)
    assert state.open_signals == (passed.candidate,)
    assert state.signals_on(passed.candidate.day) == 1


def test_gate_does_not_change_the_state() -> None:
    state = RiskState()
    state.finish(loss_of("ETHUSDT"), RiskParams())
    for _ in range(10):
        gate(cand("ETHUSDT"), state, RiskParams(), no_corr)
        gate(cand("BTCUSDT"), state, RiskParams(), no_corr)
    assert state.cooldown_left("ETHUSDT") == 3 and state.open_signals == ()
    assert state.signals_on(utc_day(MONDAY)) == 0


# --- inputs -----------------------------------------------------------------------------------------------


def test_params_from_settings() -> None:
    settings = load_settings(
        max_daily_high=7, max_daily_signals=50, max_concurrent_signals=3, correlation_threshold=0.75,
        cooldown_after_loss=2,
    )  # fmt: skip
    params = RiskParams.from_settings(settings)
    assert params == RiskParams(
        max_daily={"HIGH": 7, "MEDIUM": 40, "LOW": 20},
        max_daily_signals=50,
        max_concurrent_signals=3,
        correlation_threshold=0.75,
        cooldown_after_loss=2,
    )
    assert RiskParams.from_settings(load_settings()) == RiskParams()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_daily": {"HIGH": 20, "MEDIUM": 40}}, "max_daily needs a count >= 0 for LOW"),
        ({"max_daily_signals": -1}, "max_daily_signals must be >= 0"),
        ({"correlation_threshold": math.nan}, "correlation_threshold must be within"),
    ],
)
def test_bad_params_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RiskParams(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"symbol": ""}, "symbol must not be empty"),
        ({"direction": "FLAT"}, "direction must be LONG or SHORT"),
        ({"tier": "NONE"}, "tier must be HIGH, MEDIUM or LOW"),
        ({"event_time": -1}, "event_time must be epoch ms"),
    ],
)
def test_bad_candidates_are_rejected(changes: dict[str, object], message: str) -> None:
    fields = {"signal_id": "x", "symbol": "BTCUSDT", "direction": "LONG", "tier": "HIGH", "event_time": 0}
    with pytest.raises(ValueError, match=message):
        Candidate(**(fields | changes))  # type: ignore[arg-type]
