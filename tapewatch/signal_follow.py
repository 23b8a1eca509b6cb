"""Following open signals to their end: each open ENTRY signal's outcome tracker fed with its symbol's trades
and the clock, and the EXIT signals and outcome updates that produces.

Owned by :class:`tapewatch.engine.SignalEngine` and pure like it: every time is the exchange's event time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tapewatch.market import SymbolState
from tapewatch.outcome import OpenSignal, Outcome, OutcomeEvent, OutcomeParams, OutcomeState, OutcomeTracker
from tapewatch.quality import Tier
from tapewatch.signal import TIER_HISTORY_LIMIT, ExitReason, Signal, TierHistory, make_exit_signal

if TYPE_CHECKING:
    from tapewatch.engine import EngineOutput

#: How far the expiry of open signals trails the market clock (ms of event time). The clock moves with depth
#: diffs, which come on another websocket than the aggTrades (``/public`` and ``/market``): a diff stamped past a
#: signal's deadline can arrive before a trade of its symbol stamped before it, and that trade (the stop, the
#: trigger) must decide, not the expiry. The skew of the two streams is tens of ms; 2 s also covers a congested
#: connection, and costs nothing but a quiet symbol's signal noticing its expiry 2 s late (the EXIT still carries
#: the deadline's time).
EXPIRY_GRACE_MS = 2_000

#: How often (ms of event time) the outcomes of open signals whose best or worst move (MFE/MAE) grew without a
#: state change are handed out again (``EngineOutput.updated``, so stored): a restart resumes them from what
#: was stored, and without this the MFE/MAE reached since the last state change would be lost with it.
#: The service's stop hands out the rest (:func:`moved_outcomes`).
SAVE_MOVES_EVERY_MS = 60_000

_EXIT_REASONS: dict[OutcomeState, ExitReason] = {
    OutcomeState.TP1: "TP1",
    OutcomeState.TP2: "TP2",
    OutcomeState.STOPPED: "STOP",
    OutcomeState.EXPIRED: "EXPIRED",
}


@dataclass(slots=True)
class HeldSignal:
    """An open ENTRY signal and the tracker of its outcome so far; ``saved``: the (MFE, MAE) of the outcome
    last handed out for storage (or resumed from)."""

    signal: Signal
    tracker: OutcomeTracker
    saved: tuple[float, float] = (0.0, 0.0)


def moved_outcomes(held: Iterable[HeldSignal]) -> list[Outcome]:
    """The outcomes of the open signals whose MFE or MAE moved since their outcome was last handed out, each
    then noted as handed out: what the service stores periodically and at its stop, so a restart resumes
    them with their best and worst move so far."""
    moved: list[Outcome] = []
    for h in held:
        if h.tracker.finished:
            continue
        outcome = h.tracker.outcome()
        if (outcome.mfe_r, outcome.mae_r) != h.saved:
            h.saved = (outcome.mfe_r, outcome.mae_r)
            moved.append(outcome)
    return moved


class OpenSignals:
    """The open ENTRY signals by id (``held``), followed until their outcome is final.

    ``on_finish`` is called with each final outcome as it ends (the engine frees its risk slot and its
    shared-gate reservation), before the outcome is put in the frame's ``EngineOutput.finished``."""

    def __init__(self, params: OutcomeParams, on_finish: Callable[[Outcome], None]) -> None:
        self.params = params
        self.held: dict[str, HeldSignal] = {}
        self._on_finish = on_finish
        self._moves_saved_at: int | None = None  # event time moved outcomes were last handed out

    def add(self, signal: Signal, outcome: Outcome | None = None) -> None:
        """Follow an ENTRY signal: a new one, or one resumed with its ``outcome`` so far."""
        tracker = (
            OutcomeTracker.resume(outcome, self.params)
            if outcome is not None
            else OutcomeTracker(open_signal(signal), self.params)
        )
        saved = (outcome.mfe_r, outcome.mae_r) if outcome is not None else (0.0, 0.0)
        self.held[signal.signal_id] = HeldSignal(signal, tracker, saved)

    def symbols(self) -> dict[str, list[str]]:
        """The symbols with open signals, each with its open signals' ids (in the order they opened)."""
        out: dict[str, list[str]] = {}
        for sid, held in self.held.items():
            out.setdefault(held.signal.symbol, []).append(sid)
        return out

    def follow(self, st: SymbolState, out: EngineOutput) -> None:
        """Feed the symbol's newest trade (and the trades a filled aggTrade gap applied at once) to its
        open signals. A trade added last but stamped before the newest (``trade_time_regressed``, within the
        windows) did trade: it goes first, with its own time (the tracker never moves its clock back), then the
        newest again, so the tracker's last price stays the newest trade's. One older than a window
        (``trade_too_old``) was left out of the windows and is not followed."""
        self.follow_caught_up(st, out)
        flow = st.flow
        price, time, late = flow.last_price, flow.last_time, flow.last_added
        if price is None or late is None:
            return
        trades = [(time, price)] if late.time >= time else [(late.time, late.price), (time, price)]
        for sid, held in list(self.held.items()):
            if held.signal.symbol == st.symbol:
                for trade_time, trade_price in trades:
                    self._emit(sid, held, held.tracker.on_trade(trade_time, trade_price), trade_price, out)
                    if held.tracker.finished:
                        break

    def follow_caught_up(self, st: SymbolState, out: EngineOutput) -> None:
        """Feed the trades applied at once to the symbol's open signals, in order, and drain the list: those of a
        filled aggTrade gap, or the one a confirmed clock jump released (also on another symbol's frame)."""
        if not st.caught_up:
            return
        caught, st.caught_up = st.caught_up, []
        for sid, held in list(self.held.items()):
            if held.signal.symbol == st.symbol:
                for trade_time, trade_price in caught:
                    self._emit(sid, held, held.tracker.on_trade(trade_time, trade_price), trade_price, out)
                    if held.tracker.finished:
                        break

    def expire(self, now: int, symbols: Mapping[str, SymbolState], out: EngineOutput) -> None:
        """Advance the open signals' clocks to event time ``now`` less :data:`EXPIRY_GRACE_MS` (trigger windows,
        hold bounds), all but those of a symbol whose aggTrade gap is being filled (:func:`trades_pending`).

        An expiry keeps the deadline's time and the last price traded by then whenever it is noticed, and a
        trade of the symbol stamped after the deadline expires its signals at once (``OutcomeTracker.on_trade``):
        the grace delays only the expiry of a quiet symbol.

        Every :data:`SAVE_MOVES_EVERY_MS` it also hands out (``out.updated``) the outcomes whose MFE/MAE moved."""
        clock = now - EXPIRY_GRACE_MS
        if self._moves_saved_at is None:
            self._moves_saved_at = now
        elif now - self._moves_saved_at >= SAVE_MOVES_EVERY_MS:
            self._moves_saved_at = now
            out.updated.extend(moved_outcomes(self.held.values()))
        for sid, held in list(self.held.items()):
            st = symbols.get(held.signal.symbol)
            if st is not None and trades_pending(st, clock):
                continue
            events = held.tracker.on_time(clock)
            if events:
                last = (st.flow.last_price if st is not None else None) or held.signal.entry_price
                self._emit(sid, held, events, last, out)

    def _emit(
        self, sid: str, held: HeldSignal, events: list[OutcomeEvent], last_price: float, out: EngineOutput
    ) -> None:
        for ev in events:
            reason = _EXIT_REASONS.get(ev.state)
            if reason is not None:
                price = ev.price if ev.price is not None else last_price
                triggered = held.tracker.outcome().trigger_time is not None
                out.signals.append(make_exit_signal(held.signal, reason, price, ev.time, triggered=triggered))
        if events and not held.tracker.finished:
            outcome = held.tracker.outcome()
            held.saved = (outcome.mfe_r, outcome.mae_r)
            out.updated.append(outcome)
        if held.tracker.finished:
            outcome = held.tracker.outcome()
            del self.held[sid]
            self._on_finish(outcome)
            out.finished.append(outcome)


def trades_pending(st: SymbolState, clock: int) -> bool:
    """Whether trades of the symbol already received wait to be applied at event time ``clock``: its aggTrade
    gap is being filled (the trades after it are held until the REST page comes, or the fill times out in trade
    time). A deadline they may precede must wait for them: the gap's resolution feeds them to the followers in
    order (``SymbolState.caught_up``), and one stamped after the deadline expires the signal there. Not past the
    gap's give-up time (``PendingFill.gives_up_by``): a fill that failed on a symbol that stopped trading would
    otherwise keep its signals open for good (its held trades then wait for the symbol's next trade)."""
    fill = st.fill
    return fill is not None and clock <= fill.gives_up_by


def learn(history: dict[Tier, TierHistory], outcome: Outcome) -> None:
    """Feed a finished outcome to the tier history behind ``confidence`` and ``expected_hold_time`` (a
    signal that never triggered teaches nothing)."""
    if not outcome.triggered:
        return
    tier = outcome.signal.tier
    past = history.get(tier, TierHistory())
    holds = past.hold_ms
    if outcome.hold_ms is not None:
        holds = [*holds, outcome.hold_ms][-TIER_HISTORY_LIMIT:]
    if len(past.tp1) == past.signals:  # the last signals' flags: the window moves on, as a restart reads it
        flags = [*past.tp1, outcome.tp1_hit][-TIER_HISTORY_LIMIT:]
        history[tier] = TierHistory(tp1_hits=sum(flags), signals=len(flags), hold_ms=holds, tp1=flags)
        return
    history[tier] = TierHistory(  # counts alone (no flags to drop the oldest by): they grow
        tp1_hits=past.tp1_hits + (1 if outcome.tp1_hit else 0), signals=past.signals + 1, hold_ms=holds
    )


def open_signal(signal: Signal) -> OpenSignal:
    """The outcome tracker's view of an ENTRY signal."""
    return OpenSignal(
        signal_id=signal.signal_id,
        symbol=signal.symbol,
        direction=signal.direction,
        tier=signal.priority,
        created=signal.event_time,
        entry=signal.entry_price,
        stop=signal.stop_loss,
        tp1=signal.take_profit_1,
        tp2=signal.take_profit_2,
        position_size=signal.suggested_position_size,
        quality_score=signal.quality_score,
    )
