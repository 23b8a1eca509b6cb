"""How the signal engine judges a setup: the feature vector, the rules and the proposal make a candidate row,
the local risk gate and (with shards) the shared gate decide whether it becomes a signal; a finished signal frees
its risk slot and reservation and feeds its tier history.

A mixin of :class:`tapewatch.engine.SignalEngine` (kept apart to keep that module small); pure like it.

The stop and targets of a signal are put on its symbol's price grid (:func:`tapewatch.trade_plan.plan_trade`)
from the tick sizes of the last ``control:instruments`` line (:meth:`EngineCandidates.set_instruments`: the
service applies each one as it fetches exchangeInfo and captures it, a replay applies the captured one at the
same place). A capture without that line (older ones), or a symbol it does not list, leaves them unrounded:
counted (``plans_unrounded``) and logged once.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from tapewatch.book_incidents import BookIncidents
from tapewatch.correlation import return_correlation
from tapewatch.events import Candle, Instruments
from tapewatch.feature_vector import feature_vector, with_walls
from tapewatch.market import Market, SymbolState
from tapewatch.outcome import Outcome, OutcomeParams
from tapewatch.quality import Tier
from tapewatch.risk import (
    FATE_SHARED_GATE_UNAVAILABLE,
    Decision,
    RiskParams,
    RiskState,
    SharedGate,
    closes_as_candles,
    gate,
    release_shared,
    reserve_shared,
)
from tapewatch.risk import Candidate as RiskCandidate
from tapewatch.rules import Direction, check
from tapewatch.settings import Settings
from tapewatch.setups import Setups
from tapewatch.signal import FATE_SIGNAL, TierHistory, make_candidate, propose, signal_id_for
from tapewatch.signal_follow import OpenSignals, learn
from tapewatch.trade_plan import parse_tick_size

if TYPE_CHECKING:
    from tapewatch.engine import EngineOutput, RemoteCloses

log = logging.getLogger("tapewatch.engine")  # the engine's logger: its lines keep the name they always had

RETURNS_TF = "1m"


class EngineCandidates:
    """The candidate, risk-gate and correlation methods of :class:`~tapewatch.engine.SignalEngine`."""

    settings: Settings
    market: Market
    risk: RiskState
    risk_params: RiskParams
    outcome_params: OutcomeParams
    history: dict[Tier, TierHistory]
    shared_gate: SharedGate | None
    remote_closes: RemoteCloses | None
    counters: Counter[str]
    _following: OpenSignals
    _setups: Setups
    _incidents: dict[str, BookIncidents]
    # symbol -> price step, from the last control:instruments line (None: no line yet); instance attributes
    # once set_instruments runs, these class values until then
    _tick_sizes: dict[str, Decimal] | None = None
    _unrounded_logged: frozenset[str] = frozenset()  # symbols whose unrounded plan was logged ("" : no line)

    def set_instruments(self, instruments: Instruments) -> None:
        """Take the symbols' price steps of a ``control:instruments`` line, replacing those known. A step that
        is not a decimal > 0 is dropped (its symbol's plans stay unrounded) and logged."""
        ticks: dict[str, Decimal] = {}
        bad: list[str] = []
        for symbol, text in instruments.tick_sizes.items():
            try:
                ticks[symbol] = parse_tick_size(text)
            except ValueError:
                bad.append(f"{symbol}={text!r}")
        if bad:
            log.warning(
                "control:instruments: %d tick sizes are not decimals > 0, their symbols' stops and targets are "
                "not rounded: %s",
                len(bad),
                ", ".join(bad[:10]),
            )
        self._tick_sizes = ticks
        self._unrounded_logged = frozenset()
        log.info("tick sizes of %d symbols known: stops and targets on their price grid", len(ticks))

    def _note_unrounded(self, symbol: str) -> None:
        """A signal issued with a plan made without the symbol's tick size: counted, logged once per symbol
        (once in all while no control:instruments line was seen)."""
        self.counters["plans_unrounded"] += 1
        key = symbol if self._tick_sizes is not None else ""
        if key in self._unrounded_logged:
            return
        self._unrounded_logged = self._unrounded_logged | {key}
        if key:
            log.warning(
                "no tick size known for %s (not in the last exchangeInfo): its stop and targets are not rounded "
                "to the price grid",
                symbol,
                extra={"symbol": symbol},
            )
        else:
            log.warning(
                "no tick sizes known (no control:instruments line yet, as in captures made before it): stops and "
                "targets are not rounded to the price grid"
            )

    def _gate_would_pass(self, symbol: str, direction: Direction, tier: Tier, now: int) -> bool:
        """The local risk gate's verdict on the setup now, read-only (a cooldown is not used up)."""
        candidate = RiskCandidate(
            signal_id=signal_id_for(symbol, direction, now),
            symbol=symbol,
            direction=direction,
            tier=tier,
            event_time=now,
        )
        return self._local_gate(candidate, now).passed

    def _local_gate(self, candidate: RiskCandidate, now: int) -> Decision:
        """The risk gate on this engine's state at event time ``now`` (nothing recorded)."""
        return gate(candidate, self.risk, self.risk_params, lambda a, b: self.correlation(a, b, now))

    def _candidate(
        self,
        st: SymbolState,
        direction: Direction,
        now: int,
        imbalance: float,
        intensity: float | None,
        price: float,
        vwap: float,
        out: EngineOutput,
        *,
        quiet: bool = False,
    ) -> str | None:
        """Judge the setup: a candidate row (and the signal, if it passes) in ``out``; returns its fate, None
        when no row was made. ``quiet``: a re-check of a setup held back, which makes a row only when it
        becomes a signal and records no rejection."""
        try:
            incidents = self._incidents.get(st.symbol)
            features = feature_vector(st, now, imbalance, intensity, price, vwap, incidents)
        except ValueError as exc:
            if not quiet:  # counted once per setup, not once per re-check
                self.counters["bad_features"] += 1
                log.warning("cannot build features: %s", exc, extra={"symbol": st.symbol})
            return None
        evaluation = check(features, self.settings, direction)
        if not evaluation.passed:  # the cheap test and the rules disagree: the rules win
            if not quiet:
                self.counters["rules_rejected"] += 1
            return None
        tick = None if self._tick_sizes is None else self._tick_sizes.get(st.symbol)
        after_agg_id = created_after_agg_id(st)
        proposal = propose(
            features,
            evaluation,
            self.settings,
            self.history,
            created_after_agg_id=after_agg_id,
            tick_size=tick,
        )
        size = st.flow.large_trade_size  # what large_buys / large_sells were counted at: kept for tuning

        def row(fate: str, detail: str = "") -> str:
            """Append the candidate row of this setup with ``fate``; returns the fate."""
            try:
                recorded = with_walls(features, st, self.settings.orderbook_depth)
            except ValueError as exc:  # a level no book should hold: the candidate is stored without walls
                log.warning("cannot read the walls of the book: %s", exc, extra={"symbol": st.symbol})
                recorded = features
            # the plan the signal has or would have had: a candidate turned away keeps it for its would-be
            # outcome (monthly tuning scores it)
            candidate = make_candidate(
                recorded,
                evaluation,
                proposal.quality,
                fate,
                detail,
                large_trade_size=size,
                plan=proposal.plan,
                created_after_agg_id=after_agg_id,
            )
            out.candidates.append(candidate)
            return fate

        signal = proposal.signal
        if signal is None:
            return None if quiet else row(proposal.fate, proposal.fate_detail)
        risk_candidate = RiskCandidate(
            signal_id=signal.signal_id,
            symbol=st.symbol,
            direction=direction,
            tier=signal.priority,
            event_time=now,
        )
        decision: Decision | None = self._local_gate(risk_candidate, now)
        if decision is not None and decision.passed and self.shared_gate is not None:
            decision = self._reserve(risk_candidate, quiet)
            if quiet and (decision is None or not decision.passed):
                self._setups.held_by_shared_gate(st.symbol, direction, now)
        if quiet and (decision is None or not decision.passed):
            return None
        if decision is None:
            unreachable = "the global risk ledger (PostgreSQL) is unreachable: not issued unchecked"
            return row(FATE_SHARED_GATE_UNAVAILABLE, unreachable)
        self.risk.record(decision)
        if not decision.passed:
            fate = str(decision.rule)
            return row(fate, decision.reason or fate)
        row(FATE_SIGNAL)
        if tick is None:
            self._note_unrounded(st.symbol)
        out.signals.append(signal)
        self._following.add(signal)
        self.counters["signals"] += 1
        return FATE_SIGNAL

    def _reserve(self, candidate: RiskCandidate, recheck: bool = False) -> Decision | None:
        """The shared gate's verdict on a candidate the local gate passed; None when it cannot be reached.
        A ``recheck`` of a setup held back (no row unless it passes) is counted apart."""
        assert self.shared_gate is not None
        tier, p = candidate.tier, self.outcome_params
        # the latest a signal can still be open: trigger window, then the upper hold bound
        expires_at = candidate.event_time + p.response_ms[tier] + p.hold_ms[tier]
        decision = reserve_shared(
            self.shared_gate, candidate, expires_at, lambda a, b: self.correlation(a, b, candidate.event_time)
        )
        if decision is not None and decision.passed:
            return decision
        if recheck:
            self.counters["shared_gate_rechecks_held"] += 1
        else:
            self.counters[
                "shared_gate_rejected" if decision is not None else FATE_SHARED_GATE_UNAVAILABLE
            ] += 1
        return decision

    def _finish(self, outcome: Outcome) -> None:
        """A followed signal ended: free its risk slot and shared-gate reservation, feed its tier history."""
        self.risk.finish(outcome, self.risk_params)
        at = outcome.exit_time if outcome.exit_time is not None else outcome.as_of
        if self.shared_gate is not None and release_shared(self.shared_gate, outcome.signal, at) is None:
            self.counters["shared_gate_release_errors"] += 1
        learn(self.history, outcome)

    def correlation(self, a: str, b: str, now: int) -> float | None:
        """Return correlation of ``a`` and ``b`` over the 1m closes up to event time ``now``; a symbol this
        engine does not follow is read from ``remote_closes`` (another shard's). None when unknown."""
        bars_a, bars_b = self._returns_bars(a), self._returns_bars(b)
        if bars_a is None or bars_b is None:
            return None
        return return_correlation(bars_a, bars_b, end_time=now)

    def _returns_bars(self, symbol: str) -> Sequence[Candle] | None:
        st = self.market.symbols.get(symbol)
        if st is not None and RETURNS_TF in st.candles:
            return st.candles[RETURNS_TF].bars(include_forming=False)
        if self.remote_closes is None:
            return None
        closes = self.remote_closes(symbol)
        return closes_as_candles(closes) if closes else None


def created_after_agg_id(st: SymbolState) -> int | None:
    """The id of the last aggTrade the market applied for the symbol, stored with a signal created now: the
    signal's followers are fed only trades applied after it (:meth:`SignalEngine.on_frame` follows before it
    evaluates), all of higher ids, so the batch outcome keeps exactly those of the creation millisecond. None
    before any aggTrade, and when the symbol's trades come from the ``@trade`` stream (trade ids, which
    ``/fapi/v1/aggTrades`` does not know): the batch then leaves that millisecond out, as before."""
    if st.last_agg_id < 0 or st.last_trade_id >= 0:
        return None
    return st.last_agg_id
