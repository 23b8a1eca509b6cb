"""The signal engine: evaluate symbols on their events, gate candidates, follow signals to their end.

Pure: fed the same frames it produces the same candidates, signals and exits, live or in replay (every
time is the exchange's event time). Call :meth:`SignalEngine.on_frame` after ``Market.on_frame`` for each
frame. A symbol is evaluated on its depth and trade events, only while its book is usable and its trades are
current (none held by an aggTrade gap fill, the last one at most ``trade_stale_after`` before the event); a
cheap test of the required conditions runs first and the full feature vector (candles, levels) is built only
when it passes. One candidate per symbol and direction while the setup persists, unless its tier rises or the
risk gate that held it back would now pass (:mod:`tapewatch.setups`). Its signals are followed to their end
by :class:`tapewatch.signal_follow.OpenSignals`.

With shards (``tapewatch run --shard I/N``) a candidate that passes the local risk gate is then reserved in
the ``shared_gate`` (the global ledger); a rejection there is its fate, and a ledger that cannot be reached
rejects it with fate ``shared_gate_unavailable`` (fail closed: an unchecked signal is not issued). Symbols of
other shards are correlated through ``remote_closes``, their closed 1m closes as the other shards publish them.

A symbol that left the universe while it had open signals stays followed (``realtime.service`` keeps its trades
subscribed) but is no longer evaluated: the service captures a depth restart with reason
:data:`DEPTH_UNSUBSCRIBED` where it let the symbol's book go, and from that frame on (live and in replay alike)
the symbol makes no candidate, until its depth stream starts again (it rejoined the universe).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from tapewatch.book_incidents import BookIncidents
from tapewatch.correlation import return_correlation
from tapewatch.events import Candle, ControlChange, DepthRestart
from tapewatch.feature_vector import PRIMARY_TF, feature_vector
from tapewatch.market import Market, SymbolState
from tapewatch.outcome import Outcome, OutcomeParams
from tapewatch.parse import Frame
from tapewatch.quality import Tier, breakpoints, score_quality
from tapewatch.risk import DAY_MS as DAY_MS  # re-exported: realtime.signal_desk reads it from here
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
from tapewatch.sharding import WHOLE, Shard
from tapewatch.signal import (
    FATE_SIGNAL,
    Candidate,
    Signal,
    TierHistory,
    make_candidate,
    propose,
    signal_id_for,
)
from tapewatch.signal_follow import HeldSignal, OpenSignals, learn
from tapewatch.streams import Kind
from tapewatch.volume import average_window_volume

log = logging.getLogger(__name__)

#: ``remote_closes(symbol)``: (open time, close) of a symbol's latest closed 1m candles, oldest first, as
#: another shard published them; None when unknown.
RemoteCloses = Callable[[str], Sequence[tuple[int, float]] | None]

RETURNS_TF = "1m"

#: The reason of the captured depth restart (``control:depth_restart``) that marks a symbol retained: it left
#: the universe with open signals, its book is let go and its trades are only followed, never evaluated.
DEPTH_UNSUBSCRIBED = "unsubscribed"


@dataclass(slots=True)
class EngineOutput:
    """What one frame produced: candidates (every fate), signals (ENTRY and EXIT), the outcomes that changed
    state (``updated``, so a restart resumes them) and those that finished."""

    candidates: list[Candidate] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)
    finished: list[Outcome] = field(default_factory=list)
    updated: list[Outcome] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.candidates or self.signals or self.finished or self.updated)


@dataclass(slots=True)
class SymbolCounts:
    """How often a symbol was evaluated, the event time of the last evaluation, and why setups on it could
    not be judged (``book_stale``, ``book_syncing`` before its first sync, ``book_resyncing`` out of sync after
    it, ``book_crossed``, ``no_context``, ``trades_stale``, ``trades_filling``)."""

    evaluations: int = 0
    last_evaluated: int = 0
    not_evaluated: Counter[str] = field(default_factory=Counter)


class OpenEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A signal still open when the engine was rebuilt, with its outcome so far."""

    signal: Signal
    outcome: Outcome | None = None


class EngineState(msgspec.Struct, frozen=True, kw_only=True):
    """What the engine is rebuilt with after a restart (:meth:`SignalEngine.restore`): the tier history, the
    signals still open, the signals counted per UTC day of event time (the daily caps) and the cooldowns left
    per symbol. Read from PostgreSQL by the realtime service and captured in its ``control:engine_start``
    line, so a replay rebuilds the same engine."""

    history: dict[Tier, TierHistory] = {}
    open: list[OpenEntry] = []
    day_counts: dict[int, dict[Tier, int]] = {}
    cooldowns: dict[str, int] = {}


class SignalEngine:
    """Candidates, signals and live outcomes from the market state."""

    def __init__(
        self,
        settings: Settings,
        market: Market,
        *,
        risk_state: RiskState | None = None,
        history: dict[Tier, TierHistory] | None = None,
        shared_gate: SharedGate | None = None,
        remote_closes: RemoteCloses | None = None,
        shard: Shard = WHOLE,
    ) -> None:
        self.settings = settings
        self.shared_gate = shared_gate
        self.remote_closes = remote_closes
        self.shard = shard
        self.market = market
        self.risk = risk_state or RiskState()
        self.risk_params = RiskParams.from_settings(settings)
        self.outcome_params = OutcomeParams.from_settings(settings)
        self.history: dict[Tier, TierHistory] = dict(history or {})
        self._following = OpenSignals(self.outcome_params, self._finish)
        self.open: dict[str, HeldSignal] = self._following.held  # the open signals by id (the same dict)
        self.counters: Counter[str] = Counter()  # evaluations and the reasons a symbol was not evaluated
        self.per_symbol: dict[str, SymbolCounts] = {}  # the same, per symbol
        self._setups = Setups(int(settings.setup_reset_seconds * 1000))
        self._breakpoints = breakpoints(settings)
        self._trade_stale_ms = round(settings.trade_stale_after * 1000)
        self._incidents: dict[str, BookIncidents] = {}  # symbol -> its book's gaps and resyncs by event time
        # symbol -> ((last 15m open time, series revision), average volume)
        self._context: dict[str, tuple[tuple[int, int], float | None]] = {}
        self._last_tick = 0
        self._jumps = market.counters["event_time_jumps"]  # confirmed clock jumps seen (_follow_released)
        self._window_s = settings.trade_history_window
        self._retained: set[str] = set()  # left the universe with open signals: followed, not evaluated

    # --- entry point ------------------------------------------------------------------------------------
    def on_frame(self, frame: Frame) -> EngineOutput | None:
        kind = frame.kind
        if kind is not Kind.DEPTH and kind is not Kind.AGG_TRADE and kind is not Kind.TRADE:
            if kind is Kind.CONTROL and isinstance(frame.event, ControlChange):
                self.set_paused(frame.event.paused)
            elif kind is Kind.CONTROL and isinstance(frame.event, DepthRestart):
                self._note_depth_restart(frame.event)
            if kind is Kind.SNAPSHOT or kind is Kind.CONTROL:  # a resync (a stream restart is a control)
                self._observe_book(frame.symbol)
            return None
        st = self.market.symbols.get(frame.symbol)
        if st is None:
            return None
        if kind is Kind.DEPTH:
            self._observe_book(frame.symbol)
        out = EngineOutput()
        now = self.market.now_ms
        if kind is not Kind.DEPTH:
            now = max(now, st.flow.last_time)
            if self.open:
                self._following.follow(st, out)
            elif st.caught_up:
                st.caught_up = []  # no open signal to follow them
        jumps = self.market.counters["event_time_jumps"]
        if jumps != self._jumps:  # rare: the frames of a confirmed jump were applied
            self._jumps = jumps
            self._follow_released(out)
        if self.open and now - self._last_tick >= 1000:
            self._last_tick = now
            self._following.expire(now, self.market.symbols, out)
        if frame.symbol not in self._retained:
            self._evaluate(st, now, out)
        return out if out else None

    def _note_depth_restart(self, restart: DepthRestart) -> None:
        """A depth stream let go with open signals (:data:`DEPTH_UNSUBSCRIBED`) makes the symbol retained; any
        other restart (it subscribed again) makes it evaluated again."""
        if restart.reason == DEPTH_UNSUBSCRIBED:
            self._retained.add(restart.symbol)
        else:
            self._retained.discard(restart.symbol)

    def open_symbols(self) -> dict[str, list[str]]:
        """The symbols with open signals, each with the ids of its open signals."""
        return self._following.symbols()

    def is_retained(self, symbol: str) -> bool:
        """Whether ``symbol`` is only followed, not evaluated (see :data:`DEPTH_UNSUBSCRIBED`)."""
        return symbol in self._retained

    def _follow_released(self, out: EngineOutput) -> None:
        """Follow every symbol's trades that a confirmed clock jump released (``SymbolState.caught_up``) before
        the new clock expires anything: the frame that confirms a jump is often another symbol's, and a stop or
        target touched by a released trade before the hold ran out must win over the expiry. Without open
        signals there is nothing to follow; each symbol's own next trade frame drains its list."""
        if not self.open:
            return
        for st in self.market.symbols.values():
            if st.caught_up:
                self._following.follow_caught_up(st, out)

    def set_paused(self, paused: bool) -> None:
        """Pause signalling (candidates are still evaluated and stored, with fate ``paused``) or resume it.
        Live, the control loop calls it; in a replay, the captured ``control:paused`` frame does."""
        self.risk.paused = paused

    def _observe_book(self, symbol: str) -> None:
        """Note when the symbol's book counted a new gap or resync (for ``gaps_in_window``)."""
        st = self.market.symbols.get(symbol)
        if st is None:
            return
        incidents = self._incidents.get(symbol)
        if incidents is None:
            incidents = self._incidents[symbol] = BookIncidents(self._window_s * 1000)
        incidents.observe(st.book.gaps, st.book.resyncs, self.market.now_ms)

    # --- evaluation -------------------------------------------------------------------------------------
    def _evaluate(self, st: SymbolState, now: int, out: EngineOutput) -> None:
        # Cheapest conditions first: most events end at the large-trade count, before the book is read.
        s = self.settings
        flow = st.flow
        min_large = s.min_large_trades
        buys_ok, sells_ok = flow.large_buys >= min_large, flow.large_sells >= min_large
        self.counters["evaluations"] += 1
        counts = self.per_symbol.get(st.symbol)
        if counts is None:
            counts = self.per_symbol[st.symbol] = SymbolCounts()
        counts.evaluations += 1
        counts.last_evaluated = now
        if not (buys_ok or sells_ok):
            return
        price, vwap = flow.last_price, st.vwap.vwap
        if price is None or vwap is None:
            return
        long_ok, short_ok = buys_ok and price > vwap, sells_ok and price < vwap
        if not (long_ok or short_ok):
            return
        trades = self.trades_state(st, now)
        if trades != "fresh":
            self._not_evaluated(counts, f"trades_{trades}")
            return
        intensity = self.intensity(st)
        if intensity is None:  # no 15m context yet (kline history missing): the setup cannot be judged
            self._not_evaluated(counts, "no_context")
            return
        if intensity <= s.volume_confirmation_multiplier:
            return
        book = st.book
        health = book.health(now, self.market.config.stale_after_ms)
        if health.state != "synced":  # a feature is never read from a book that is not synced and fresh
            self._not_evaluated(counts, f"book_{health.state}")
            return
        imbalance = book.imbalance(self.market.config.imbalance_levels)
        threshold = s.orderbook_imbalance_threshold
        setups: tuple[tuple[Direction, bool], ...] = (
            ("LONG", long_ok and imbalance > threshold),
            ("SHORT", short_ok and imbalance < -threshold),
        )
        tier: Tier | None = None
        for direction, ok in setups:
            if not ok:
                continue
            if tier is None:  # the quality score is direction-agnostic
                q = score_quality(imbalance, intensity, flow.large_buys, flow.large_sells, self._breakpoints)
                tier = q.tier
            verdict = self._setups.on_held(st.symbol, direction, now, tier)
            if verdict == "skip":
                continue
            quiet = verdict == "recheck"
            if quiet and (tier is None or not self._gate_would_pass(st.symbol, direction, tier, now)):
                continue  # still held back: no row, nothing used up
            fate = self._candidate(st, direction, now, imbalance, intensity, price, vwap, out, quiet=quiet)
            if (
                fate is not None or not quiet
            ):  # a quiet re-check that changed nothing leaves the setup as it was
                self._setups.judged(st.symbol, direction, now, tier, fate)

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

    def trades_state(self, st: SymbolState, now: int) -> Literal["fresh", "filling", "stale"]:
        """Whether the symbol's trade features may be judged at event time ``now``. They are as of the last
        applied trade (DESIGN §4): while a gap fill holds the later trades the window has a hole
        (``filling``), and long after the last trade (the stream down) they describe the past (``stale``)."""
        if st.fill is not None:
            return "filling"
        if now - st.flow.last_time > self._trade_stale_ms:
            return "stale"
        return "fresh"

    def _not_evaluated(self, counts: SymbolCounts, reason: str) -> None:
        self.counters[f"not_evaluated_{reason}"] += 1
        counts.not_evaluated[reason] += 1

    def intensity(self, st: SymbolState) -> float | None:
        """Volume intensity of the symbol now: trade-window quote volume over its average in the 15m
        context; None without closed 15m candles."""
        series = st.candles.get(PRIMARY_TF)
        if series is None or not series.closed:
            return None
        # the newest closed bar and the series' revision (a refill or a confirmation changed bars in place)
        key = (series.closed[-1].open_time, series.revision)
        cached = self._context.get(st.symbol)
        if cached is None or cached[0] != key:
            avg = average_window_volume(list(series.closed), self._window_s, self.settings.kline_history_bars)
            cached = self._context[st.symbol] = (key, avg)
        avg = cached[1]
        return st.flow.quote_volume / avg if avg else None

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
        proposal = propose(
            features, evaluation, self.settings, self.history, created_after_agg_id=created_after_agg_id(st)
        )
        size = st.flow.large_trade_size  # what large_buys / large_sells were counted at: kept for tuning

        def row(fate: str, detail: str = "") -> str:
            """Append the candidate row of this setup with ``fate``; returns the fate."""
            candidate = make_candidate(
                features, evaluation, proposal.quality, fate, detail, large_trade_size=size
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

    # --- restart ------------------------------------------------------------------------------------------
    def restore(self, state: EngineState) -> None:
        """Rebuild after a restart from ``state`` (the live service reads it from PostgreSQL, a replay from
        the capture): the tier history is laid over, then :meth:`resume`."""
        self.history.update(state.history)
        self.resume(
            ((e.signal, e.outcome) for e in state.open),
            day_counts=state.day_counts,
            cooldowns=state.cooldowns,
        )

    def resume(
        self,
        open_signals: Iterable[tuple[Signal, Outcome | None]],
        *,
        day_counts: Mapping[int, Mapping[Tier, int]] = {},
        cooldowns: Mapping[str, int] = {},
    ) -> None:
        """Rebuild after a restart from what was stored: the signals still open (with their outcome so far),
        the signals already counted per UTC day (the daily caps) and the cooldowns left per symbol.

        Open signals of symbols another shard owns are left to it (their reservations in the shared gate stay
        as they are; this engine's own are already reserved, and reserving is idempotent)."""
        for signal, outcome in open_signals:
            if signal.signal_type != "ENTRY" or signal.signal_id in self.open:
                continue
            if not self.shard.owns(signal.symbol):
                continue
            self._following.add(signal, outcome)
            self.risk.open(_risk_candidate(signal))
        for day, counts in day_counts.items():
            for tier, n in counts.items():
                for i in range(n):
                    self.risk.count(
                        RiskCandidate(
                            signal_id=f"restored-{day}-{tier}-{i}",
                            symbol="RESTORED",
                            direction="LONG",
                            tier=tier,
                            event_time=day * DAY_MS,
                        )
                    )
        for symbol, left in cooldowns.items():
            if left > 0:
                self.risk.start_cooldown(symbol, left)


def created_after_agg_id(st: SymbolState) -> int | None:
    """The id of the last aggTrade the market applied for the symbol, stored with a signal created now: the
    signal's followers are fed only trades applied after it (:meth:`SignalEngine.on_frame` follows before it
    evaluates), all of higher ids, so the batch outcome keeps exactly those of the creation millisecond. None
    before any aggTrade, and when the symbol's trades come from the ``@trade`` stream (trade ids, which
    ``/fapi/v1/aggTrades`` does not know): the batch then leaves that millisecond out, as before."""
    if st.last_agg_id < 0 or st.last_trade_id >= 0:
        return None
    return st.last_agg_id


def _risk_candidate(signal: Signal) -> RiskCandidate:
    return RiskCandidate(
        signal_id=signal.signal_id,
        symbol=signal.symbol,
        direction=signal.direction,
        tier=signal.priority,
        event_time=signal.event_time,
    )
