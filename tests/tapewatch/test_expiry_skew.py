"""The live follower expires a signal only once its symbol's trades up to the deadline can have arrived.

Depth diffs (which move the market clock) and aggTrades come on separate websockets: a diff stamped after a
signal's deadline can arrive before a trade stamped before it. The expiry trails the clock by a grace
(``EXPIRY_GRACE_MS``) and waits while the symbol's aggTrade gap is being filled; a trade stamped after the
deadline still expires the signal at once, and an expiry always carries the deadline's time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tapewatch.engine import SignalEngine
from tapewatch.events import AggTrade
from tapewatch.parse import Frame
from tapewatch.signal import Signal
from tapewatch.signal_follow import EXPIRY_GRACE_MS
from tapewatch.streams import Kind
from tests.tapewatch.test_market_clock import Feed, engine_following, priced_trade

TAPE_STEP_MS = 10_000


@dataclass
class Run:
    """An engine following one open LONG ENTRY signal, and the EXIT signals (reason, time, price) it made."""

    engine: SignalEngine
    signal: Signal
    feed: Feed
    exits: list[tuple[str | None, int, float | None]] = field(default_factory=list)

    def send(self, frame: Frame) -> None:
        if (out := self.engine.on_frame(frame)) is not None:
            self.exits.extend((s.exit_reason, s.event_time, s.exit_price) for s in out.signals)

    def tape(self, start: int, end: int, price: float) -> None:
        """One diff and one trade at ``price`` every 10 s from ``start`` up to ``end``."""
        for t in range(start, end + 1, TAPE_STEP_MS):
            self.send(self.feed.diff("BTCUSDT", t))
            self.send(priced_trade(self.feed, "BTCUSDT", t + 5, price))

    def reasons(self) -> list[str | None]:
        return [reason for reason, _, _ in self.exits]


def triggered_run() -> tuple[Run, int]:
    """A run whose signal triggered (a trade at the entry 1 s after creation), the tape kept at the entry up to
    2 s before the hold's end; and that end."""
    engine, signal, feed = engine_following("BTCUSDT")
    run = Run(engine, signal, feed)
    t = signal.event_time
    run.send(priced_trade(feed, "BTCUSDT", t + 1_000, signal.entry_price))
    hold_end = t + 1_000 + engine.outcome_params.hold_ms[signal.priority]
    run.tape(t + 2_000, hold_end - 2_000, signal.entry_price)
    assert run.exits == [] and len(engine.open) == 1
    return run, hold_end


def test_a_stop_traded_before_the_hold_end_wins_over_a_diff_stamped_after_it() -> None:
    """The auditor's reproduction: the diff stamped 80 ms past the hold's end arrives before the trade stamped
    20 ms before it that crosses the stop. That trade decides: STOP at its time, not EXPIRED."""
    run, hold_end = triggered_run()
    sig = run.signal
    run.send(run.feed.diff("BTCUSDT", hold_end + 80))
    assert run.exits == []  # the BTC trades up to the hold's end may still be on their way
    run.send(priced_trade(run.feed, "BTCUSDT", hold_end - 20, sig.stop_loss - 0.01))
    assert run.exits == [("STOP", hold_end - 20, sig.stop_loss - 0.01)] and run.engine.open == {}


def test_a_trade_stamped_after_the_deadline_expires_the_signal_at_once_at_the_deadline() -> None:
    """No waiting out the grace once the symbol's own trades have passed the deadline; the EXIT carries the
    deadline's time and the last price traded before it (a stop-crossing price after the deadline is too late)."""
    run, hold_end = triggered_run()
    sig = run.signal
    run.send(run.feed.diff("BTCUSDT", hold_end + 80))
    assert run.exits == []
    run.send(priced_trade(run.feed, "BTCUSDT", hold_end + 100, sig.stop_loss - 0.01))
    assert run.exits == [("EXPIRED", hold_end, sig.entry_price)] and run.engine.open == {}


def test_a_quiet_symbol_expires_on_the_clock_after_the_grace_at_the_deadlines_time() -> None:
    """Without trades, the other streams' clock expires the signal once it is the grace past the deadline; the
    EXIT's time is still the deadline, not the deadline plus the grace."""
    run, hold_end = triggered_run()
    run.send(run.feed.diff("BTCUSDT", hold_end + EXPIRY_GRACE_MS - 1_000))
    assert run.exits == []
    run.send(run.feed.diff("BTCUSDT", hold_end + EXPIRY_GRACE_MS + 1))
    assert run.exits == [("EXPIRED", hold_end, run.signal.entry_price)] and run.engine.open == {}


def test_a_trade_at_the_end_of_the_trigger_window_triggers_despite_a_diff_stamped_after_it() -> None:
    engine, signal, feed = engine_following("BTCUSDT")
    run = Run(engine, signal, feed)
    t = signal.event_time
    deadline = t + engine.outcome_params.response_ms[signal.priority]
    run.tape(t + 1_000, deadline - 2_000, signal.entry_price - 1.0)  # below the LONG's entry: not triggered
    run.send(feed.diff("BTCUSDT", deadline + 80))
    run.send(priced_trade(feed, "BTCUSDT", deadline - 20, signal.entry_price))
    assert run.exits == []
    (held,) = engine.open.values()
    assert held.tracker.outcome().trigger_time == deadline - 20


def fill_page(feed: Feed, agg_id: int, t: int, price: float) -> Frame:
    """The REST page that fills the aggTrade gap of id ``agg_id``: one trade at ``t`` and ``price``."""
    page = AggTrade("BTCUSDT", t, agg_id, price, 1.0, agg_id, agg_id, t, False)
    stream = f"rest:/fapi/v1/aggTrades?symbol=BTCUSDT&fromId={agg_id}&limit=1000"
    return feed.send("BTCUSDT", Kind.AGG_TRADE, stream, page)


@pytest.mark.parametrize("late_ms", [EXPIRY_GRACE_MS + 500, 9_000])
def test_no_expiry_while_the_symbols_aggtrade_gap_is_being_filled(late_ms: int) -> None:
    """An aggTrade gap opens before the hold's end: the trades after it are held until the REST page fills it
    (up to the fill timeout of trade time). The stop traded among the held trades must win, however late the
    page comes on the market clock."""
    run, hold_end = triggered_run()
    sig, feed = run.signal, run.feed
    missing = feed.agg["BTCUSDT"] + 1
    feed.agg["BTCUSDT"] = missing  # that id never comes on the websocket: the next trades are held
    run.send(priced_trade(feed, "BTCUSDT", hold_end - 30, sig.entry_price))
    run.send(priced_trade(feed, "BTCUSDT", hold_end - 20, sig.stop_loss - 0.01))
    st = feed.market.symbols["BTCUSDT"]
    assert st.fill is not None
    for t in range(hold_end + 1_000, hold_end + late_ms + 1, 1_000):
        run.send(feed.diff("BTCUSDT", t))
    assert run.exits == [] and len(run.engine.open) == 1
    run.send(fill_page(feed, missing, hold_end - 40, sig.entry_price))
    assert st.fill is None
    assert run.exits == [("STOP", hold_end - 20, sig.stop_loss - 0.01)] and run.engine.open == {}


def test_a_gap_whose_fill_never_comes_holds_the_expiry_only_until_the_gap_would_be_given_up() -> None:
    """The fill failed and the symbol stopped trading: nothing would ever resolve the gap. Its signals wait for
    it only up to the gap's give-up time of trade time (the revealing trade's time plus the fill timeout), then
    expire on the clock as a quiet symbol's do, at the deadline's time."""
    run, hold_end = triggered_run()
    sig, feed = run.signal, run.feed
    feed.agg["BTCUSDT"] += 1  # that id never comes, and no REST page either
    revealing = hold_end - 30
    run.send(priced_trade(feed, "BTCUSDT", revealing, sig.entry_price))
    st = feed.market.symbols["BTCUSDT"]
    assert st.fill is not None
    gives_up_by = revealing + feed.market.config.trade_fill_timeout_ms
    assert st.fill.gives_up_by == gives_up_by
    run.send(feed.diff("BTCUSDT", gives_up_by + EXPIRY_GRACE_MS))
    assert run.exits == [] and len(run.engine.open) == 1
    # the engine's next once-a-second tick
    run.send(feed.diff("BTCUSDT", gives_up_by + EXPIRY_GRACE_MS + 1_000))
    assert [(r, t) for r, t, _ in run.exits] == [("EXPIRED", hold_end)] and run.engine.open == {}


def test_an_expiry_before_the_entry_filled_says_the_signal_never_triggered() -> None:
    from tapewatch.signal import NOT_TRIGGERED

    engine, signal, feed = engine_following("BTCUSDT")
    run = Run(engine, signal, feed)
    exits: list[Signal] = []
    t = signal.event_time
    deadline = t + engine.outcome_params.response_ms[signal.priority]
    for at in range(t + 1_000, deadline + EXPIRY_GRACE_MS + 3_000, TAPE_STEP_MS):
        run.send(feed.diff("BTCUSDT", at))
        out = engine.on_frame(priced_trade(feed, "BTCUSDT", at + 5, signal.entry_price - 1.0))  # never filled
        if out is not None:
            exits.extend(out.signals)
    (expired,) = exits
    assert expired.exit_reason == "EXPIRED" and NOT_TRIGGERED in expired.reasons
    triggered, hold_end = triggered_run()  # one that filled: its expiry says nothing of the kind
    triggered.send(triggered.feed.diff("BTCUSDT", hold_end + EXPIRY_GRACE_MS + 1))
    assert triggered.reasons() == ["EXPIRED"]
