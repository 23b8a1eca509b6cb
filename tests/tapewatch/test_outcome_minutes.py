"""Deciding minutes of the batch outcome: the creation minute, the trigger's minute and the minutes holding the
trigger window's or the hold's deadline, read from their aggTrades exactly as the live tracker is fed, or
capped (the conservative reading) when the trades cannot be had.

Signals are those of ``outcome_helpers`` (entry 100, stop 99, TP1 101, TP2 102, R = 1; HIGH: 60 s to trigger,
45 min hold). :func:`settle` does what the asset does: asks the evaluation for the minute it wants, gives it
that span's trades, and asks again until it wants none.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence

import pytest

from tapewatch.events import Candle
from tapewatch.outcome import (
    MinuteRead,
    MinuteRole,
    OpenSignal,
    Outcome,
    OutcomeParams,
    OutcomeState,
    OutcomeTracker,
    TradeSpan,
    evaluate_candles,
)
from tapewatch.outcome_batch import BatchRun, batch_evaluation, batch_outcome, disagreement, last_end
from tapewatch.quality import Tier
from tapewatch.rules import Direction
from tests.tapewatch.outcome_helpers import (
    M1,
    MONDAY,
    binance_candles,
    candles_from_trades,
    make_signal,
    same,
)

P = OutcomeParams()
NO_FEE = OutcomeParams(taker_fee=0.0)
S = OutcomeState
R = MinuteRole
Trades = Sequence[tuple[int, float]]


def settle(
    sig: OpenSignal,
    bars: Sequence[Candle],
    trades: Trades,
    params: OutcomeParams = P,
    missing: Collection[int] = (),
) -> tuple[Outcome | None, tuple[MinuteRead, ...], list[TradeSpan]]:
    """The asset's loop over ``trades`` (every trade of the tape; a minute in ``missing`` cannot be had): the
    batch outcome, the deciding minutes as read, and the spans asked for in order."""
    given: dict[int, list[tuple[int, float]] | None] = {}
    asked: list[TradeSpan] = []
    while (span := batch_evaluation(sig, bars, params, given).wanted) is not None:
        assert span.minute not in given and len(asked) < 6, asked
        asked.append(span)
        inside = [(t, p) for t, p in trades if span.start <= t <= span.end]
        given[span.minute] = None if span.minute in missing else inside
    reads = batch_evaluation(sig, bars, params, given).minutes
    return batch_outcome(sig, bars, params, trades=given), reads, asked


def live(sig: OpenSignal, trades: Trades, params: OutcomeParams = P) -> Outcome:
    """The live tracker's outcome: fed every trade after the creating one, then the clock past the end."""
    tracker = OutcomeTracker(sig, params)
    for t, p in trades:
        if t > sig.created:
            tracker.on_trade(t, p)
    tracker.on_time(last_end(sig, params) + 1)
    return tracker.outcome()


# --- the trigger window's deadline ------------------------------------------------------------------------
CREATED = MONDAY + 30_000  # HIGH: the response window ends at MONDAY + 90 s, 30 s into minute 1
WINDOW_END = CREATED + 60_000
TAIL = [(MONDAY + 47 * M1, 98.8)]  # past the last end (46.5 min): the candles cover the whole outcome


def test_a_trigger_after_the_window_in_its_deadline_minute_does_not_count() -> None:
    sig = make_signal(CREATED)
    trades = [
        (MONDAY + 5_000, 99.9), (CREATED, 99.9), (CREATED + 15_000, 99.8),
        (MONDAY + M1 + 10_000, 99.7),
        (WINDOW_END + 10_000, 100.0),  # through the entry 10 s too late, then the stop
        (WINDOW_END + 20_000, 98.9),
        *TAIL,
    ]  # fmt: skip
    bars = binance_candles(trades)
    want = live(sig, trades)
    assert want.state is S.EXPIRED and not want.triggered and want.exit_time == WINDOW_END
    # from the minute's trades: exactly the live outcome; before, the whole candle counted: STOPPED -1.0995 R
    batch, reads, asked = settle(sig, bars, trades)
    same(batch, want)
    assert reads == (MinuteRead(minute=MONDAY + M1, role=R.TRIGGER_DEADLINE, exact=True),)
    assert [(s.start, s.end) for s in asked] == [(MONDAY + M1, MONDAY + 2 * M1 - 1)]
    # without them the candle is capped: prices that may all follow the window trigger nothing
    capped = evaluate_candles(sig, bars)
    assert capped.state is S.EXPIRED and not capped.triggered and capped.exit_time == WINDOW_END


def test_a_trigger_by_the_deadline_then_a_stop_in_the_same_minute_counts() -> None:
    sig = make_signal(CREATED)
    trades = [
        (MONDAY + 5_000, 99.9), (CREATED, 99.9), (CREATED + 15_000, 99.8),
        (MONDAY + M1 + 10_000, 99.7),
        (WINDOW_END, 100.0),  # through the entry at exactly the window's last ms: it counts
        (WINDOW_END + 20_000, 98.9),  # the window is over, the position is open: the stop, gapped through
        *TAIL,
    ]  # fmt: skip
    bars = binance_candles(trades)
    want = live(sig, trades)
    assert want.state is S.STOPPED and want.trigger_time == WINDOW_END and want.exit_price == 98.9
    batch, reads, _ = settle(sig, bars, trades)
    same(batch, want)
    assert reads == (MinuteRead(minute=MONDAY + M1, role=R.TRIGGER_DEADLINE, exact=True),)
    # capped (no trades), the candle triggers nothing: the conservative reading misses this fill
    _, reads, _ = settle(sig, bars, trades, missing={MONDAY + M1})
    assert reads == (MinuteRead(minute=MONDAY + M1, role=R.TRIGGER_DEADLINE, exact=False),)
    assert evaluate_candles(sig, bars).state is S.EXPIRED


# --- the hold's deadline --------------------------------------------------------------------------------
TRIGGER = CREATED + 10_000  # the trigger trade, 40 s into the creation minute
HOLD_END = TRIGGER + 45 * M1  # MONDAY + 45 min 40 s


def _held(tail: Trades) -> list[tuple[int, float]]:
    return [
        (MONDAY + 5_000, 99.0), (CREATED, 99.9), (TRIGGER, 100.0), (TRIGGER + 5_000, 100.3),
        (MONDAY + 10 * M1, 100.4), (MONDAY + 30 * M1, 100.5), (MONDAY + 45 * M1 + 10_000, 100.2),
        *tail, *TAIL,
    ]  # fmt: skip


def test_a_stop_after_the_hold_deadline_in_its_minute_does_not_count() -> None:
    sig = make_signal(CREATED)
    trades = _held([(HOLD_END, 100.3), (HOLD_END + 10_000, 98.9)])  # at exactly the end, then the stop
    bars = binance_candles(trades)
    want = live(sig, trades)
    assert (want.state, want.exit_time, want.exit_price) == (S.EXPIRED, HOLD_END, 100.3)
    # exact: the trigger's trade places the hold's end; that minute's trades up to it decide (before, the
    # hold ran from ``created`` and the candle holding its end counted whole: STOPPED)
    batch, reads, asked = settle(sig, bars, trades)
    same(batch, want)
    assert reads == (
        MinuteRead(minute=MONDAY, role=R.CREATION, exact=True),
        MinuteRead(minute=MONDAY + 45 * M1, role=R.HOLD_DEADLINE, exact=True),
    )
    assert [(s.role, s.start, s.end) for s in asked] == [
        (R.CREATION, CREATED, MONDAY + M1 - 1),
        # the whole minute, checked against its candle; the replay expires the signal at the end
        (R.HOLD_DEADLINE, MONDAY + 45 * M1, MONDAY + 46 * M1 - 1),
    ]
    # that minute's trades not to be had: its adverse extreme counts as traded by the end (the stop)
    capped, reads, _ = settle(sig, bars, trades, missing={MONDAY + 45 * M1})
    assert reads[-1] == MinuteRead(minute=MONDAY + 45 * M1, role=R.HOLD_DEADLINE, exact=False)
    assert capped is not None and capped.state is S.STOPPED and capped.exit_price == 99.0


def test_a_stop_before_the_hold_deadline_in_its_minute_counts() -> None:
    sig = make_signal(CREATED)
    trades = _held([(HOLD_END - 10_000, 98.9), (HOLD_END + 10_000, 100.6)])
    bars = binance_candles(trades)
    want = live(sig, trades)
    assert (want.state, want.exit_time, want.exit_price) == (S.STOPPED, HOLD_END - 10_000, 98.9)
    batch, _, _ = settle(sig, bars, trades)
    same(batch, want)
    capped, _, _ = settle(sig, bars, trades, missing={MONDAY + 45 * M1})
    assert capped is not None and capped.state is S.STOPPED


def test_a_position_still_open_at_the_hold_deadline_closes_at_the_last_price_by_then() -> None:
    sig = make_signal(CREATED)
    trades = _held([(HOLD_END - 1, 100.7), (HOLD_END + 1, 101.5)])  # TP1 a ms after the end: not reached
    bars = binance_candles(trades)
    want = live(sig, trades)
    assert (want.state, want.exit_price, want.tp1_hit) == (S.EXPIRED, 100.7, False)
    batch, _, _ = settle(sig, bars, trades)
    same(batch, want)
    assert batch is not None and not batch.tp1_hit
    # capped: its favourable side counts as after the end, the position closes at its adverse extreme
    capped, _, _ = settle(sig, bars, trades, missing={MONDAY + 45 * M1})
    assert capped is not None and (capped.state, capped.exit_price, capped.tp1_hit) == (
        S.EXPIRED,
        100.2,
        False,
    )


def test_the_minutes_are_asked_for_in_turn_as_each_one_decides_the_next() -> None:
    """MEDIUM (5 min to trigger, 90 min hold), triggered 20 s into minute 2: its trades place the hold's end
    at 92 min 20 s, so the minute to ask for next is 92 (the whole minute: the replay expires the signal at that ms)."""
    sig = make_signal(MONDAY + 30_000, tier="MEDIUM")
    trigger = MONDAY + 2 * M1 + 20_000
    trades = [
        (MONDAY + 30_000, 99.9), (MONDAY + M1, 99.8), (MONDAY + 2 * M1, 99.9), (trigger, 100.0),
        (MONDAY + 2 * M1 + 40_000, 99.95), (MONDAY + 50 * M1, 100.4),
        (trigger + 90 * M1 - 5_000, 100.3), (trigger + 90 * M1 + 5_000, 98.0), (MONDAY + 97 * M1, 99.0),
    ]  # fmt: skip
    bars = binance_candles(trades)
    batch, reads, asked = settle(sig, bars, trades)
    assert [(s.role, s.minute, s.start, s.end) for s in asked] == [
        (R.TRIGGER, MONDAY + 2 * M1, MONDAY + 2 * M1, MONDAY + 3 * M1 - 1),
        (R.HOLD_DEADLINE, MONDAY + 92 * M1, MONDAY + 92 * M1, MONDAY + 93 * M1 - 1),
    ]
    assert all(read.exact for read in reads)
    same(batch, live(sig, trades))
    assert batch is not None and batch.trigger_time == trigger and batch.exit_price == 100.3
    # the trigger's minute not to be had: the trigger counts at the candle's open and the hold's end is known
    # to the minute only, so no trade can place it: its minute (92) is read capped without asking
    capped, reads, asked = settle(sig, bars, trades, missing={MONDAY + 2 * M1})
    assert [s.role for s in asked] == [R.TRIGGER]
    assert reads == (
        MinuteRead(minute=MONDAY + 2 * M1, role=R.TRIGGER, exact=False),
        MinuteRead(minute=MONDAY + 92 * M1, role=R.HOLD_DEADLINE, exact=False),
    )
    assert capped is not None and capped.trigger_time == MONDAY + 2 * M1 and capped.state is S.STOPPED


@pytest.mark.parametrize("seed", range(30))
def test_with_the_deciding_trades_the_trigger_and_an_expiry_are_the_live_tracker_s(seed: int) -> None:
    """On random tapes: the batch triggers exactly when the live tracker does, and when it expires a
    triggered signal, so does the tracker, at the same time and price (candles between the deciding minutes
    can only end a signal earlier, by the worst order within a minute)."""
    rng = random.Random(seed)
    direction: Direction = rng.choice(["LONG", "SHORT"])
    tier: Tier = rng.choice(["HIGH", "MEDIUM", "LOW"])
    sig = make_signal(MONDAY + rng.randrange(M1), direction=direction, tier=tier)
    params = OutcomeParams(hold_ms={"HIGH": 3 * M1, "MEDIUM": 7 * M1, "LOW": 11 * M1})  # short: many expiries
    t, price, trades = sig.created, 100.0 - sig.sign * 0.05, []
    while t < last_end(sig, params) + 2 * M1:
        t += int(rng.expovariate(1 / 4_000))
        price = max(1.0, price + rng.gauss(0, 0.06))
        trades.append((t, round(price, 2)))
    bars = candles_from_trades(trades)
    batch, reads, _ = settle(sig, bars, trades, params)
    want = live(sig, trades, params)
    assert batch is not None and all(read.exact for read in reads)
    assert batch.trigger_time == want.trigger_time
    if batch.state is S.EXPIRED and batch.triggered:
        assert (want.state, want.exit_time, want.exit_price) == (S.EXPIRED, batch.exit_time, batch.exit_price)


# --- the creation minute (audit /tmp/a2/precreation.py): its trades after the signal, or the capped candle --
CREATED_40 = MONDAY + 40_000  # 12:00:40


def _bar(minute: int, o: float, h: float, low: float, c: float) -> Candle:
    return Candle(
        open_time=minute, close_time=minute + M1 - 1, interval="1m", open=o, high=h, low=low, close=c,
        volume=1.0, trades=1, closed=True, quote_volume=c,
    )  # fmt: skip


# case A: TP1 (101.1) traded at 12:00:05, before the signal; afterwards the price only falls
CASE_A = (
    [_bar(MONDAY, 100.5, 101.1, 99.95, 99.95), _bar(MONDAY + M1, 100.0, 100.05, 99.5, 99.6),
     _bar(MONDAY + 2 * M1, 99.6, 99.7, 98.9, 99.0)],
    [(MONDAY + 5_000, 101.1), (CREATED_40, 100.0), (CREATED_40 + 5_000, 99.95)],
)  # fmt: skip
# case B: a dip under the stop (98.9) at 12:00:03, before the signal; afterwards the price rises to TP2
CASE_B = (
    [_bar(MONDAY, 99.2, 100.2, 98.9, 100.1), _bar(MONDAY + M1, 100.1, 101.2, 100.05, 101.1),
     _bar(MONDAY + 2 * M1, 101.1, 102.1, 101.0, 102.0)],
    [(MONDAY + 3_000, 98.9), (CREATED_40, 100.1)],
)  # fmt: skip


def _settle_creation(
    case: tuple[list[Candle], Trades], exact: bool
) -> tuple[Outcome, tuple[MinuteRead, ...]]:
    sig = make_signal(CREATED_40, tier="MEDIUM")
    bars, trades = case
    # the asset asks Binance for [created, minute end] only; the earlier trade is not in its answer
    inside = [(t, p) for t, p in trades if t >= CREATED_40]
    given = {MONDAY: inside if exact else None}
    ev = batch_evaluation(sig, bars, NO_FEE, given)
    assert ev.outcome.state is not OutcomeState.WAITING
    return ev.outcome, ev.minutes


def test_the_creation_minute_from_its_trades_matches_the_live_tracker() -> None:
    for case, state, pnl_r in ((CASE_A, S.STOPPED, -1.0), (CASE_B, S.TP2, 1.5)):
        o, reads = _settle_creation(case, exact=True)
        assert reads[0] == MinuteRead(minute=MONDAY, role=R.CREATION, exact=True)
        assert o.state is state and o.pnl_r == pytest.approx(pnl_r)
        # the creating trade is not followed: neither case trades through the entry again before minute 1
        assert o.trigger_time == MONDAY + M1
    a, _ = _settle_creation(CASE_A, exact=True)
    assert not a.tp1_hit and a.mfe_r == pytest.approx(0.05)  # 100.05 in the next minute


def test_without_trades_the_creation_candle_counts_capped() -> None:
    a, reads = _settle_creation(CASE_A, exact=False)
    assert reads[0] == MinuteRead(minute=MONDAY, role=R.CREATION, exact=False)
    assert a.state is S.STOPPED and not a.tp1_hit and a.pnl_r == pytest.approx(-1.0)
    # case B: the capped candle does not trigger the waiting signal, so its dip cannot stop it
    b, _ = _settle_creation(CASE_B, exact=False)
    assert b.state is S.TP2 and b.pnl_r == pytest.approx(1.5)
    assert a.trigger_time == b.trigger_time == MONDAY + M1


# the audit's repro: a HIGH LONG made by a trade at its entry (100.0); the price then only falls to 98.9
REPRO = (
    [_bar(MONDAY, 99.9, 100.0, 99.5, 99.5), _bar(MONDAY + M1, 99.4, 99.4, 98.9, 99.0),
     _bar(MONDAY + 2 * M1, 99.0, 99.1, 98.9, 99.0)],
    [(MONDAY + 1_000, 99.9), (CREATED_40, 100.0), (CREATED_40 + 5_000, 99.5), (MONDAY + M1 + 10_000, 98.9)],
)  # fmt: skip


@pytest.mark.parametrize("exact", [True, False])
def test_the_creating_trade_does_not_trigger_the_batch_outcome(exact: bool) -> None:
    sig = make_signal(CREATED_40, tier="HIGH")
    bars, trades = REPRO
    tracker = OutcomeTracker(sig)
    for t, p in trades:  # the engine follows open signals before it evaluates: never the creating trade
        if t > CREATED_40:
            tracker.on_trade(t, p)
    tracker.on_time(MONDAY + 3 * M1)
    want = tracker.outcome()
    assert want.state is S.EXPIRED and want.trigger_time is None and want.pnl_r == 0.0
    inside = [(t, p) for t, p in trades if t >= CREATED_40]  # what the asset fetches: from created on
    batch, reads, _ = settle(sig, bars, inside, missing=() if exact else {MONDAY})
    assert reads == (MinuteRead(minute=MONDAY, role=R.CREATION, exact=exact),)
    assert batch is not None
    assert (batch.state, batch.trigger_time, batch.pnl_r) == (want.state, want.trigger_time, want.pnl_r)
    assert disagreement(want, batch, 0.05) is None


def test_a_quiet_creation_minute_counts_nothing_and_contradicting_trades_count_capped() -> None:
    sig = make_signal(CREATED_40)  # HIGH
    bars = CASE_A[0]
    quiet = batch_evaluation(sig, bars, P, {MONDAY: []})  # nothing traded after creation in that minute
    assert quiet.minutes[0] == MinuteRead(minute=MONDAY, role=R.CREATION, exact=True)
    # a trade outside the candle's range: the sources disagree, the capped candle stays
    odd = batch_evaluation(sig, bars, P, {MONDAY: [(CREATED_40 + 1, 101.5)]})
    assert odd.minutes[0] == MinuteRead(minute=MONDAY, role=R.CREATION, exact=False)
    assert odd.wanted is None or odd.wanted.minute != MONDAY  # given (if unusable): not asked again
    # created on a minute's start: no creation minute; one that never reaches the entry decides nothing
    assert all(m.role is not R.CREATION for m in batch_evaluation(make_signal(MONDAY), bars, P).minutes)
    low = [_bar(MONDAY, 99.5, 99.9, 99.4, 99.6)]
    assert batch_evaluation(sig, low, P).minutes == () and batch_evaluation(sig, low, P).wanted is None


def test_batch_run_counts_how_each_deciding_minute_was_counted() -> None:
    run = BatchRun(due=3)
    run.record(None, None, 0.05, [MinuteRead(minute=0, role=R.CREATION, exact=True)])
    run.record(
        None,
        None,
        0.05,
        [
            MinuteRead(minute=0, role=R.CREATION, exact=False),
            MinuteRead(minute=M1, role=R.TRIGGER, exact=True),
            MinuteRead(minute=46 * M1, role=R.HOLD_DEADLINE, exact=True),
        ],
    )
    run.record(None, None, 0.05)
    assert run.minutes == {
        "creation_exact": 1,
        "creation_capped": 1,
        "trigger_exact": 1,
        "hold_deadline_exact": 1,
    }


@pytest.mark.parametrize("answer", ["empty", "cut"])
def test_an_empty_or_cut_answer_is_not_read_as_the_minute_s_tape(answer: str) -> None:
    """A trigger minute whose candle reached the entry: an empty answer (a cut archive, a bad page) read as
    "nothing traded" would leave a stopped signal untriggered (-1 R made 0 R); it counts capped instead."""
    sig = make_signal(MONDAY + 30_000, tier="MEDIUM")
    trades = [
        (MONDAY + 30_000, 99.9), (MONDAY + M1 + 1_000, 99.95), (MONDAY + M1 + 20_000, 100.2),
        (MONDAY + M1 + 40_000, 100.0), (MONDAY + 3 * M1, 98.0), (MONDAY + 100 * M1, 98.0),
    ]  # fmt: skip
    bars = binance_candles(trades)
    want = live(sig, trades)
    assert want.state is S.STOPPED and want.trigger_time == MONDAY + M1 + 20_000
    minute = [t for t in trades if MONDAY + M1 <= t[0] < MONDAY + 2 * M1]
    given = {
        MONDAY: [t for t in trades if t[0] >= sig.created],
        MONDAY + M1: [] if answer == "empty" else minute[:2],
    }
    ev = batch_evaluation(sig, bars, NO_FEE, given)
    assert MinuteRead(minute=MONDAY + M1, role=R.TRIGGER, exact=False) in ev.minutes
    assert ev.outcome.state is S.STOPPED and ev.outcome.triggered  # capped: the candle triggers at its open
