"""The creation millisecond of the batch outcome: the trades of the signal's own millisecond that the live
tracker followed (aggTrade ids above the signal's ``created_after_agg_id``) count, the creating trade and those
applied before it do not; a signal stored without the id keeps the older rule (that millisecond left out).

Signals are those of ``outcome_helpers`` (entry 100, stop 99, TP1 101, TP2 102, R = 1; HIGH: 60 s to trigger,
45 min hold). The engine-fed case runs a real :class:`~tapewatch.engine.SignalEngine` (``engine_rig``).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from tapewatch.events import Candle, Trade
from tapewatch.outcome import (
    MinuteRead,
    MinuteRole,
    OpenSignal,
    Outcome,
    OutcomeParams,
    OutcomeState,
    OutcomeTracker,
    TapeTrade,
)
from tapewatch.outcome_batch import batch_evaluation, batch_outcome, last_end
from tapewatch.signal_follow import open_signal
from tapewatch.streams import Kind
from tests.tapewatch.engine_rig import T0, Rig
from tests.tapewatch.outcome_helpers import M1, MONDAY, binance_candles, make_signal, same

P = OutcomeParams()
S = OutcomeState
CREATED = MONDAY + 40_000  # 40 s into the minute: the creation minute is a deciding one
CREATING_ID = 10  # the aggTrade the signal was created on (the last one applied then)
IdTrade = tuple[int, float, int]  # (time, price, aggTrade id)
TAIL: IdTrade = (
    MONDAY + 47 * M1,
    99.5,
    99,
)  # past the last end (46 min): the candles cover the whole outcome


def settle(
    sig: OpenSignal, bars: Sequence[Candle], tape: Sequence[TapeTrade]
) -> tuple[Outcome | None, tuple[MinuteRead, ...]]:
    """What the asset does: give each wanted span its trades (with their ids) until none is wanted."""
    given: dict[int, list[TapeTrade] | None] = {}
    while (span := batch_evaluation(sig, bars, P, given).wanted) is not None:
        assert span.minute not in given
        given[span.minute] = [t for t in tape if span.start <= t[0] <= span.end]
    return batch_outcome(sig, bars, P, trades=given), batch_evaluation(sig, bars, P, given).minutes


def live(sig: OpenSignal, tape: Sequence[IdTrade], after_id: int) -> Outcome:
    """The live tracker as the engine feeds it: every trade applied after the signal's creation (higher
    ids), in id order, then the clock past the end."""
    tracker = OutcomeTracker(sig, P)
    for trade in sorted(tape, key=lambda t: t[2]):
        if trade[2] > after_id:
            tracker.on_trade(trade[0], trade[1])
    tracker.on_time(last_end(sig, P) + 1)
    return tracker.outcome()


def with_id(sig: OpenSignal, after_id: int | None) -> OpenSignal:
    return msgspec.structs.replace(sig, created_after_agg_id=after_id)


# (time, price, aggTrade id): the creating trade at 100.2 (through the entry: counted, it would trigger the
# signal and give it an MFE of 0.2 R), then in the same millisecond 99.95 and the trigger at 100.0, the stop
# (gapped through, 98.9) 2 s later; the minute ends at 99.5, under the entry.
TAPE: list[IdTrade] = [
    (MONDAY + 5_000, 99.8, 8),
    (CREATED - 1, 99.9, 9),
    (CREATED, 100.2, CREATING_ID),
    (CREATED, 99.95, 11),
    (CREATED, 100.0, 12),
    (CREATED + 2_000, 98.9, 13),
    (CREATED + 10_000, 99.5, 14),
    (MONDAY + M1 + 10_000, 99.6, 15),
    TAIL,
]


def test_a_later_trade_of_the_creation_millisecond_triggers_and_the_stop_counts_as_live() -> None:
    sig = with_id(make_signal(CREATED), CREATING_ID)
    bars = binance_candles([(t[0], t[1]) for t in TAPE])
    want = live(sig, TAPE, CREATING_ID)
    assert want.state is S.STOPPED and want.trigger_time == CREATED and want.exit_price == 98.9
    assert want.mfe_r == 0.0  # the creating trade's 100.2 was never fed to the tracker
    batch, reads = settle(sig, bars, TAPE)
    same(batch, want, excursions=True)
    assert reads == (MinuteRead(minute=MONDAY, role=MinuteRole.CREATION, exact=True),)
    # a signal stored without the id keeps the older rule: the creation millisecond left out, nothing after it
    # in the trigger window reaches the entry, so it expires untriggered (the known gap, for old rows)
    old, _ = settle(with_id(sig, None), bars, TAPE)
    assert old is not None and old.state is S.EXPIRED and not old.triggered
    # trades given without their ids (a caller that dropped them) count as the older rule too
    anonymous, _ = settle(sig, bars, [(t[0], t[1]) for t in TAPE])
    assert anonymous is not None and anonymous.state is S.EXPIRED and not anonymous.triggered


def test_a_trade_stamped_after_the_creation_but_applied_before_it_is_left_out() -> None:
    """A signal made on a depth diff at ``CREATED`` while the trade stream ran ahead of the depth clock: the
    trade stamped 5 ms later was applied before the signal existed (id 10, the last one then), so live never
    followed it; the later ones (ids 11 on) were."""
    tape: list[IdTrade] = [
        (MONDAY + 5_000, 99.8, 9),
        (CREATED + 5, 100.3, 10),  # applied before the signal: would trigger it (and stop it, below)
        (CREATED + 2_000, 98.9, 11),
        (CREATED + 3_000, 99.9, 12),
        (MONDAY + M1 + 10_000, 99.6, 13),
        TAIL,
    ]
    sig = with_id(make_signal(CREATED), 10)
    bars = binance_candles([(t[0], t[1]) for t in tape])
    want = live(sig, tape, 10)
    assert want.state is S.EXPIRED and not want.triggered
    batch, _ = settle(sig, bars, tape)
    same(batch, want, excursions=True)
    # by time alone (no id recorded) that trade counts: triggered, then stopped
    old, _ = settle(with_id(sig, None), bars, tape)
    assert old is not None and old.state is S.STOPPED


def test_the_engine_records_the_last_agg_id_and_its_follower_matches_the_batch() -> None:
    """A real engine makes a signal on a trade (id 4, the third large buy), then two more trades come in the
    same millisecond: the trigger at the entry and one through the stop. The signal records id 4, the live
    tracker is fed ids 5 and 6 (STOPPED), and the batch outcome of the same tape agrees exactly."""
    rig = Rig()
    rig.context()
    rig.long_setup(T0)
    [signal] = rig.signals()
    created = T0 + 22
    assert signal.event_time == created
    assert signal.created_after_agg_id == 4 == rig.market.symbols["BTCUSDT"].last_agg_id
    tape: list[IdTrade] = [
        (T0 + 10, 99.0, 1),
        (T0 + 20, 100.0, 2),
        (T0 + 21, 100.0, 3),
        (created, 100.0, 4),
    ]
    for price in (signal.entry_price, signal.stop_loss - 0.05):
        tape.append((created, price, rig.agg))
        rig.trade(created, price, 1.0)
    [finished] = [o for out in rig.outputs for o in out.finished]
    assert finished.state is S.STOPPED and finished.trigger_time == created
    tail = (created + 47 * M1, signal.stop_loss - 0.05, rig.agg)
    bars = binance_candles([(t[0], t[1]) for t in [*tape, tail]])
    sig = with_id(open_signal(signal), signal.created_after_agg_id)
    batch, reads = settle(sig, bars, [*tape, tail])
    same(batch, finished, excursions=True)
    assert reads == (MinuteRead(minute=T0, role=MinuteRole.CREATION, exact=True),)


def test_a_signal_on_the_trade_stream_records_no_agg_id() -> None:
    """``@trade`` frames carry trade ids, which ``/fapi/v1/aggTrades`` does not know: a signal made on them
    records no aggTrade id, and its batch outcome keeps the older rule."""
    rig = Rig()
    rig.context()
    rig.snapshot([(99.9, 500.0)], [(100.1, 100.0)], T0)
    rig.depth(T0)
    for i, (price, qty) in enumerate(((99.0, 10.0), (100.0, 7000.0), (100.0, 7000.0), (100.0, 7000.0))):
        t = T0 + 10 + i
        rig.feed(Kind.TRADE, "btcusdt@trade", Trade("BTCUSDT", t, 500 + i, price, qty, t, False))
    [signal] = rig.signals()
    assert rig.market.symbols["BTCUSDT"].last_trade_id == 503
    assert signal.created_after_agg_id is None
