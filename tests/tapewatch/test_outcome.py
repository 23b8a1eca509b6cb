"""Outcome rules, fed trade by trade (live tracker) and by 1-minute candles (authoritative evaluator)."""

from __future__ import annotations

import itertools
import math
import random

import msgspec
import pytest

from tapewatch.events import Candle
from tapewatch.outcome import (
    OpenSignal,
    Outcome,
    OutcomeParams,
    OutcomeState,
    OutcomeTracker,
    evaluate_candles,
)
from tapewatch.settings import load_settings
from tests.tapewatch.candle_helpers import unchecked
from tests.tapewatch.outcome_helpers import (
    M1,
    MONDAY,
    SCENARIOS,
    absolute,
    candles_from_trades,
    make_signal,
    mirror,
    scenario_outcome,
    track,
)

S = OutcomeState
TP1_R = 1 - 0.0005 * 201  # 0.8995
TP2_R = 2 - 0.0005 * 202  # 1.899
STOP_R = -1 - 0.0005 * 199  # -1.0995
ENTRY_R = -0.0005 * 200  # -0.1


def pnl(parts: list[tuple[float, float]], sign: float = 1.0) -> float:
    """P&L in R of parts ``(share, exit distance from the entry in R, favourable > 0)``: entry 100, R = 1,
    fees 0.05 % of both sides' notional (a SHORT's targets are below 100, so its fees are smaller)."""
    return sum(share * (d - 0.0005 * (200 + sign * d)) for share, d in parts)


# name -> (final state, triggered, tp1 hit, exits (share, distance in R), hold in minutes, MFE, MAE)
EXPECTED: dict[str, tuple[OutcomeState, bool, bool, list[tuple[float, float]], int | None, float, float]] = {
    "win": (S.TP2, True, True, [(0.5, 1.0), (0.5, 2.0)], 15, 2.0, 0.0),
    "loss": (S.STOPPED, True, False, [(1.0, -1.0)], 3, 0.0, 1.0),
    "break_even": (S.STOPPED, True, True, [(0.5, 1.0), (0.5, 0.0)], 9, 1.0, 0.0),
    "expiry": (S.EXPIRED, True, False, [(1.0, 0.4)], 45, 0.6, 0.0),
    "untriggered": (S.EXPIRED, False, False, [], None, 0.0, 0.0),
}


@pytest.mark.parametrize("by", ["trades", "candles"])
@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
@pytest.mark.parametrize("name", list(EXPECTED))
def test_scenarios_give_the_same_outcome_from_trades_and_candles(name: str, direction: str, by: str) -> None:
    state, triggered, tp1, exits, hold_min, mfe, mae = EXPECTED[name]
    o = scenario_outcome(name, by=by, direction=direction)
    assert o.finished and o.state is state
    assert (o.triggered, o.tp1_hit) == (triggered, tp1)
    expected_r = pnl(exits, 1.0 if direction == "LONG" else -1.0)
    assert o.pnl_r == pytest.approx(expected_r, abs=1e-12)
    # position 0.5 of capital, R = 1 % of the entry: 1 R = 0.5 % of capital
    assert o.pnl_pct == pytest.approx(0.5 * expected_r, abs=1e-12)
    assert o.hold_ms == (None if hold_min is None else hold_min * M1)
    assert o.mfe_r == pytest.approx(mfe) and o.mae_r == pytest.approx(mae)


def test_hand_computed_long_pnl() -> None:
    assert pnl(EXPECTED["win"][3]) == pytest.approx(1.39925)
    assert pnl(EXPECTED["loss"][3]) == pytest.approx(-1.0995)
    assert pnl(EXPECTED["break_even"][3]) == pytest.approx(0.39975)
    assert pnl(EXPECTED["expiry"][3]) == pytest.approx(0.2998)
    assert pnl(EXPECTED["win"][3], -1.0) == pytest.approx(0.5 * (1 - 0.0995) + 0.5 * (2 - 0.099))


def test_break_even_is_a_win_and_only_a_stop_before_tp1_is_a_stop_out() -> None:
    be = scenario_outcome("break_even")
    loss = scenario_outcome("loss")
    assert be.won and not be.stopped_out
    assert loss.stopped_out and not loss.won
    assert not scenario_outcome("untriggered").won


def test_same_candle_stop_and_target_counts_the_stop_on_candles_only() -> None:
    by_trades = scenario_outcome("same_candle", by="trades")
    by_candles = scenario_outcome("same_candle", by="candles")
    # trades show the real order: TP1, then back to the entry (the moved stop)
    assert [e.state for e in by_trades.events] == [S.TRIGGERED, S.TP1, S.STOPPED]
    assert by_trades.events[-1].price == 100.0
    assert by_trades.pnl_r == pytest.approx(0.5 * TP1_R + 0.5 * ENTRY_R)
    # the candle of minute 3 holds both 99 (stop) and 101 (TP1): the stop counts, for the whole position
    assert [e.state for e in by_candles.events] == [S.TRIGGERED, S.STOPPED]
    assert by_candles.stopped_out and by_candles.exit_price == 99.0
    assert by_candles.pnl_r == pytest.approx(STOP_R)
    assert (by_candles.mfe_r, by_candles.mae_r) == (0.0, 1.0)


def test_events_report_each_state_change_with_realised_r() -> None:
    signal = make_signal()
    tracker = OutcomeTracker(signal)
    seen = []
    for t, p in absolute(signal, SCENARIOS["win"]):
        seen.append([(e.state, e.time - MONDAY, e.price, e.closed_share) for e in tracker.on_trade(t, p)])
    assert seen == [
        [(S.TRIGGERED, 0, 100.0, 0.0)],
        [],
        [(S.TP1, 5 * M1, 101.0, 0.5)],
        [],
        [(S.TP2, 15 * M1, 102.0, 0.5)],
    ]
    realised = [e.realized_r for e in tracker.outcome().events]
    assert realised == pytest.approx([0.0, 0.5 * TP1_R, 0.5 * TP1_R + 0.5 * TP2_R])
    assert all(e.signal_id == signal.signal_id and e.symbol == "BTCUSDT" for e in tracker.outcome().events)
    assert tracker.on_trade(MONDAY + 16 * M1, 90.0) == []  # finished: input ignored


@pytest.mark.parametrize(("tier", "window_ms"), [("HIGH", 60_000), ("MEDIUM", 300_000), ("LOW", 900_000)])
def test_trigger_window_of_each_tier_is_inclusive(tier: str, window_ms: int) -> None:
    signal = make_signal(tier=tier)  # type: ignore[arg-type]
    at_deadline = track(signal, [(MONDAY + window_ms, 100.0)])
    assert at_deadline.state is S.TRIGGERED and at_deadline.trigger_time == MONDAY + window_ms
    late = OutcomeTracker(signal)
    events = late.on_trade(MONDAY + window_ms + 1, 100.0)
    assert [(e.state, e.time, e.price) for e in events] == [(S.EXPIRED, MONDAY + window_ms, None)]
    assert not late.outcome().triggered and late.outcome().pnl_r == 0.0


@pytest.mark.parametrize(("tier", "hold_min"), [("HIGH", 45), ("MEDIUM", 90), ("LOW", 180)])
def test_expiry_at_the_upper_hold_bound_after_the_trigger(tier: str, hold_min: int) -> None:
    signal = make_signal(tier=tier)  # type: ignore[arg-type]
    tracker = OutcomeTracker(signal)
    tracker.on_trade(MONDAY + 10_000, 100.0)  # triggered 10 s after creation
    tracker.on_trade(MONDAY + 20_000, 100.3)
    deadline = MONDAY + 10_000 + hold_min * M1
    assert tracker.on_trade(deadline, 100.2) == []  # exactly at the bound: still open
    assert tracker.on_time(deadline) == []
    (event,) = tracker.on_time(deadline + 1)  # a quiet symbol expires on other streams' event time
    assert (event.state, event.time, event.price, event.closed_share) == (S.EXPIRED, deadline, 100.2, 1.0)
    assert tracker.outcome().pnl_r == pytest.approx(0.2 - 0.0005 * 200.2)


def test_untriggered_signal_expires_on_time_alone() -> None:
    tracker = OutcomeTracker(make_signal(tier="MEDIUM"))
    assert tracker.on_time(MONDAY + 300_000) == []
    assert [e.state for e in tracker.on_time(MONDAY + 300_001)] == [S.EXPIRED]
    assert tracker.finished and not tracker.outcome().triggered


def test_a_stop_gapped_through_fills_at_the_first_price_past_it() -> None:
    signal = make_signal()
    o = track(signal, absolute(signal, [(0, 100.0), (M1, 99.4), (2 * M1, 98.5)]))
    assert o.state is S.STOPPED and o.exit_price == 98.5
    assert o.pnl_r == pytest.approx(-1.5 - 0.0005 * 198.5) and o.mae_r == pytest.approx(1.5)
    # a candle that opens past the stop fills at its open; one that opens above it at the stop itself
    gap = candles_from_trades(absolute(signal, [(0, 100.0), (M1, 98.5), (M1 + 1, 98.7)]))
    assert evaluate_candles(signal, gap).exit_price == 98.5
    dip = candles_from_trades(absolute(signal, [(0, 100.0), (M1, 99.6), (M1 + 1, 98.5)]))
    assert evaluate_candles(signal, dip).exit_price == 99.0


def test_trigger_and_targets_on_one_trade_that_gaps_through() -> None:
    signal = make_signal()
    o = track(signal, [(MONDAY + 1_000, 102.5)])
    assert [e.state for e in o.events] == [S.TRIGGERED, S.TP1, S.TP2]
    assert [e.price for e in o.events] == [100.0, 101.0, 102.0]  # limit fills at the levels
    assert o.pnl_r == pytest.approx(0.5 * TP1_R + 0.5 * TP2_R) and o.hold_ms == 0


def test_candle_that_triggers_and_holds_the_stop_counts_the_stop() -> None:
    signal = make_signal()
    # the minute dips to 98.8 and trades up to the entry: the order is unknown, the stop counts
    o = evaluate_candles(signal, candles_from_trades(absolute(signal, [(0, 98.8), (30_000, 100.2)])))
    assert o.state is S.STOPPED and o.exit_price == 99.0 and o.trigger_time == MONDAY


def test_candle_reaching_tp1_and_back_to_the_entry_counts_the_moved_stop() -> None:
    signal = make_signal()
    trades = absolute(signal, [(0, 100.0), (M1, 101.3), (M1 + 1, 99.9)])
    o = evaluate_candles(signal, candles_from_trades(trades))
    assert [e.state for e in o.events] == [S.TRIGGERED, S.TP1, S.STOPPED]
    assert o.exit_price == 100.0 and o.pnl_r == pytest.approx(0.5 * TP1_R + 0.5 * ENTRY_R)


def test_without_moving_the_stop_tp1_then_entry_stays_open_until_the_stop() -> None:
    params = OutcomeParams(move_stop_to_entry=False)
    signal = make_signal()
    path = absolute(signal, [(0, 100.0), (M1, 101.0), (2 * M1, 100.0), (3 * M1, 99.0)])
    for o in (
        track(signal, path[:3], params),
        evaluate_candles(signal, candles_from_trades(path[:3]), params),
    ):
        assert o.state is S.TP1 and not o.finished  # back at the entry: still open
    o = track(signal, path, params)
    assert o.state is S.STOPPED and o.exit_price == 99.0
    assert evaluate_candles(signal, candles_from_trades(path), params) == o
    assert o.pnl_r == pytest.approx(0.5 * TP1_R + 0.5 * STOP_R)
    assert not o.stopped_out  # TP1 was reached: not a loss that starts a cooldown


def test_fee_and_tp1_share_are_configurable() -> None:
    params = OutcomeParams(taker_fee=0.0, tp1_share=0.25)
    o = scenario_outcome("win", params=params)
    assert o.pnl_r == pytest.approx(0.25 * 1 + 0.75 * 2)
    assert scenario_outcome("loss", params=params).pnl_r == pytest.approx(-1.0)


def test_trades_before_creation_and_bad_prices_are_counted_and_skipped() -> None:
    tracker = OutcomeTracker(make_signal())
    assert tracker.on_trade(MONDAY - 1, 100.5) == []
    for bad in (math.nan, math.inf, 0.0, -5.0):
        assert tracker.on_trade(MONDAY + 1, bad) == []
    assert (tracker.early_trades, tracker.bad_prices, tracker.state) == (1, 4, S.WAITING)
    assert [e.state for e in tracker.on_trade(MONDAY + 2, 100.0)] == [S.TRIGGERED]


def test_out_of_order_trade_never_moves_event_time_back() -> None:
    signal = make_signal()
    tracker = OutcomeTracker(signal)
    tracker.on_trade(MONDAY + 10_000, 100.0)
    (event,) = tracker.on_trade(MONDAY + 5_000, 98.0)  # late trade: applied at the time already reached
    assert event.state is S.STOPPED and event.time == MONDAY + 10_000
    assert tracker.outcome().hold_ms == 0


@pytest.mark.parametrize("name", ["win", "break_even", "expiry", "same_candle"])
def test_resume_after_a_restart_continues_as_if_never_stopped(name: str) -> None:
    signal = make_signal()
    trades = absolute(signal, SCENARIOS[name])
    whole = track(signal, trades)
    for cut in range(len(trades) + 1):
        first = OutcomeTracker(signal)
        for t, p in trades[:cut]:
            first.on_trade(t, p)
        stored = first.outcome()
        resumed = OutcomeTracker.resume(stored)
        for t, p in trades[cut:]:
            resumed.on_trade(t, p)
        assert resumed.outcome() == whole, f"cut at {cut}"


def test_candles_before_creation_are_skipped_and_short_data_is_provisional() -> None:
    signal = make_signal(created=MONDAY + 5 * M1)
    before = candles_from_trades([(MONDAY, 98.0)])  # a crash to below the stop, before the signal
    now = candles_from_trades(absolute(signal, [(0, 100.0), (2 * M1, 100.5)]))
    o = evaluate_candles(signal, before + now)
    assert o.state is S.TRIGGERED and not o.finished and o.exit_time is None
    deadline = signal.created + 45 * M1
    # complete through the deadline's ms: every candle that counts (one opening at the deadline too) was seen
    assert evaluate_candles(signal, now, until=deadline - 1).state is S.TRIGGERED
    expired = evaluate_candles(signal, now, until=deadline)
    assert expired.state is S.EXPIRED and expired.exit_price == 100.5 and expired.exit_time == deadline
    assert evaluate_candles(signal, []).state is S.WAITING


def test_impossible_candles_are_rejected_with_a_clear_error() -> None:
    signal = make_signal()
    (good,) = candles_from_trades([(MONDAY, 100.0)])
    for bad, message in (
        (unchecked(good, high=99.0), "need low <= open, close <= high"),
        (unchecked(good, low=101.0), "need low <= open, close <= high"),
        (msgspec.structs.replace(good, close=math.nan), "prices must be finite and > 0"),
        (msgspec.structs.replace(good, close_time=good.open_time - 1), "close_time .* is before its open"),
    ):
        with pytest.raises(ValueError, match=f"candle at {MONDAY}: {message}"):
            evaluate_candles(signal, [good, bad])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"stop": 100.5}, "need stop < entry < tp1 < tp2"),
        ({"tp2": 100.8}, "need stop < entry < tp1 < tp2"),
        ({"entry": math.nan}, "entry must be a finite price"),
        ({"direction": "UP"}, "direction must be LONG or SHORT"),
        ({"tier": "TOP"}, "tier must be HIGH, MEDIUM or LOW"),
        ({"created": -1}, "created must be epoch ms"),
        ({"position_size": -0.1}, "position_size must be finite"),
        ({"quality_score": 120}, "quality_score must be within"),
    ],
)
def test_bad_signals_are_rejected(changes: dict[str, object], message: str) -> None:
    fields = {
        "signal_id": "x",
        "symbol": "BTCUSDT",
        "direction": "LONG",
        "tier": "HIGH",
        "created": 0,
        "entry": 100.0,
        "stop": 99.0,
        "tp1": 101.0,
        "tp2": 102.0,
    }
    with pytest.raises(ValueError, match=message):
        OpenSignal(**(fields | changes))  # type: ignore[arg-type]


def test_short_targets_below_the_entry_are_checked_too() -> None:
    with pytest.raises(ValueError, match="stop > entry > tp1 > tp2"):
        OpenSignal(
            signal_id="x", symbol="X", direction="SHORT", tier="LOW", created=0,
            entry=100.0, stop=99.0, tp1=98.0, tp2=97.0,
        )  # fmt: skip


@pytest.mark.parametrize(
    "kwargs",
    [{"taker_fee": -0.001}, {"taker_fee": 0.5}, {"tp1_share": 1.0}, {"response_ms": {"HIGH": 1}}],
)
def test_bad_params_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        OutcomeParams(**kwargs)  # type: ignore[arg-type]


def test_params_from_settings() -> None:
    settings = load_settings(
        response_window_medium=120, hold_time_low_max=240, taker_fee=0.0004, move_stop_to_entry_at_tp1=False
    )
    params = OutcomeParams.from_settings(settings)
    assert params.response_ms == {"HIGH": 60_000, "MEDIUM": 120_000, "LOW": 900_000}
    assert params.hold_ms == {"HIGH": 45 * M1, "MEDIUM": 90 * M1, "LOW": 240 * M1}
    assert (params.taker_fee, params.move_stop_to_entry, params.tp1_share) == (0.0004, False, 0.5)
    assert OutcomeParams.from_settings(load_settings()) == OutcomeParams()


def test_mirror_helper_gives_a_consistent_short_path() -> None:
    # guard for the parametrised SHORT cases: the reflected win path reaches the SHORT targets
    assert [p for _, p in mirror(SCENARIOS["win"])] == [100.0, 99.5, 99.0, 98.5, 98.0]


@pytest.mark.parametrize("seed", range(20))
def test_invariants_on_random_paths(seed: int) -> None:
    rng = random.Random(seed)
    direction = rng.choice(["LONG", "SHORT"])
    signal = make_signal(direction=direction, tier=rng.choice(["HIGH", "MEDIUM", "LOW"]))  # type: ignore[arg-type]
    t, price, trades = signal.created, 100.0 - signal.sign * 0.05, []
    while t < signal.created + 4 * 3_600_000:
        t += int(rng.expovariate(1 / 20_000))
        price = max(1.0, price + rng.gauss(0, 0.1))
        trades.append((t, round(price, 2)))
    allowed = {
        S.TRIGGERED: {S.TP1, S.STOPPED, S.EXPIRED},
        S.TP1: {S.TP2, S.STOPPED, S.EXPIRED},
    }
    for o in (track(signal, trades), evaluate_candles(signal, candles_from_trades(trades))):
        assert o.finished  # four hours is past every tier's deadline
        states = [e.state for e in o.events]
        if o.triggered:
            assert states[0] is S.TRIGGERED
            assert all(b in allowed[a] for a, b in itertools.pairwise(states))
            assert sum(e.closed_share for e in o.events) == pytest.approx(1.0)
            assert o.hold_ms is not None and 0 <= o.hold_ms <= OutcomeParams().hold_ms[signal.tier]
        else:
            assert states == [S.EXPIRED] and o.pnl_r == 0.0
        assert o.mfe_r >= 0 and o.mae_r >= 0
        assert o.pnl_pct == pytest.approx(o.pnl_r * signal.position_size * signal.risk / signal.entry * 100)
        assert o.events[-1].realized_r == pytest.approx(o.pnl_r)


def test_a_candle_opening_at_a_deadline_holds_its_first_ms_and_counts_capped() -> None:
    signal = make_signal()  # HIGH: 60 s to trigger
    trades = absolute(signal, [(0, 99.9), (M1, 100.0), (M1 + 30_000, 100.2)])
    # the trade at exactly 60 s triggers; its candle (60-120 s) is almost all after the window: without its
    # trades it does not trigger (its prices may all follow the window); with them it does, at 60 s exactly
    assert track(signal, trades).triggered
    late = evaluate_candles(signal, candles_from_trades(trades))
    assert late.state is S.EXPIRED and not late.triggered and late.exit_time == signal.created + M1
    minute = {signal.created + M1: [t for t in trades if t[0] >= signal.created + M1]}
    exact = evaluate_candles(signal, candles_from_trades(trades), trades=minute)
    assert exact.trigger_time == signal.created + M1
    # the hold: the candle opening at the 45-min bound holds a trade at exactly the bound (the live tracker
    # stops on it); capped, its adverse extreme counts as traded by the bound: the stop, filled at its open
    path = absolute(signal, [(0, 100.0), (44 * M1 + 59_000, 100.3), (45 * M1, 98.0)])
    live = track(signal, path)
    held = evaluate_candles(signal, candles_from_trades(path))
    assert (held.state, held.exit_price, held.exit_time) == (live.state, live.exit_price, live.exit_time)
    assert held.state is S.STOPPED and held.exit_price == 98.0


def test_outcome_round_trips_through_json_and_resumes_from_it() -> None:
    signal = make_signal()
    trades = absolute(signal, SCENARIOS["break_even"])
    first = OutcomeTracker(signal)
    for t, p in trades[:2]:
        first.on_trade(t, p)
    stored = msgspec.json.encode(first.outcome())  # what a restart reads back from PostgreSQL
    decoded = msgspec.json.decode(stored, type=Outcome)
    assert decoded == first.outcome() and decoded.state is S.TP1
    resumed = OutcomeTracker.resume(decoded)
    for t, p in trades[2:]:
        resumed.on_trade(t, p)
    assert resumed.outcome() == track(signal, trades)


# --- the creation minute: prices from before the signal existed (audit /tmp/a2/precreation.py) ------------
def _bar(minute: int, o: float, h: float, low: float, c: float) -> Candle:
    return Candle(
        open_time=minute, close_time=minute + M1 - 1, interval="1m", open=o, high=h, low=low, close=c,
        volume=1.0, trades=1, closed=True, quote_volume=c,
    )  # fmt: skip


def test_a_target_touched_before_creation_is_not_credited() -> None:
    # case A: 101.1 (TP1) traded at 12:00:05, the signal is created at 12:00:40, then the price falls
    params = OutcomeParams(taker_fee=0.0)
    signal = make_signal(MONDAY + 40_000, tier="MEDIUM")
    bars = [
        _bar(MONDAY, 100.5, 101.1, 99.95, 100.0),
        _bar(MONDAY + M1, 100.0, 100.05, 99.5, 99.6),
        _bar(MONDAY + 2 * M1, 99.6, 99.7, 98.9, 99.0),
    ]
    o = evaluate_candles(signal, bars, params)
    assert not o.tp1_hit and o.state is S.STOPPED and o.pnl_r == pytest.approx(-1.0)
    # the capped creation candle does not trigger: the next minute does (100.05 >= 100)
    assert o.mfe_r == pytest.approx(0.05) and o.trigger_time == MONDAY + M1


def test_a_short_target_touched_before_creation_is_not_credited() -> None:
    params = OutcomeParams(taker_fee=0.0)
    # entry 100, stop 101, TP1 99; MEDIUM: the next minute lies wholly inside the response window
    signal = make_signal(MONDAY + 40_000, direction="SHORT", tier="MEDIUM")
    creation = _bar(MONDAY, 99.5, 100.05, 98.9, 100.0)
    o = evaluate_candles(signal, [creation], params, until=MONDAY + 91 * M1)
    # the capped creation candle holds the creating trade: it triggers nothing, so the signal expires untriggered
    assert not o.triggered and not o.tp1_hit and o.state is S.EXPIRED and o.pnl_r == 0.0
    then = _bar(MONDAY + M1, 99.8, 100.0, 99.6, 100.0)  # trades through the entry: the trigger
    o = evaluate_candles(signal, [creation, then], params, until=MONDAY + 91 * M1)
    assert o.trigger_time == MONDAY + M1 and not o.tp1_hit and o.state is S.EXPIRED and o.exit_price == 100.0
