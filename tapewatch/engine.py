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

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from tapewatch.book_incidents import BookIncidents
from tapewatch.engine_candidates import EngineCandidates
from tapewatch.engine_restore import EngineRestore
from tapewatch.events import ControlChange, DepthRestart
from tapewatch.feature_vector import PRIMARY_TF
from tapewatch.market import Market, SymbolState
from tapewatch.outcome import Outcome, OutcomeParams
from tapewatch.parse import Frame
from tapewatch.quality import Tier, breakpoints, score_quality
from tapewatch.risk import DAY_MS as DAY_MS  # re-exported: realtime.signal_desk reads it from here
from tapewatch.risk import RiskParams, RiskState, SharedGate
from tapewatch.rules import Direction
from tapewatch.settings import TIMEFRAME_MS, Settings
from tapewatch.setups import Setups
from tapewatch.sharding import WHOLE, Shard
from tapewatch.signal import Candidate, Signal, TierHistory
from tapewatch.signal_follow import HeldSignal, OpenSignals
from tapewatch.streams import Kind
from tapewatch.volume import average_window_volume

#: ``remote_closes(symbol)``: (open time, close) of a symbol's latest closed 1m candles, oldest first, as
#: another shard published them; None when unknown.
RemoteCloses = Callable[[str], Sequence[tuple[int, float]] | None]

#: The reason of the captured depth restart (``control:depth_restart``) that marks a symbol retained: it left
#: the universe with open signals, its book is let go and its trades are only followed, never evaluated.
DEPTH_UNSUBSCRIBED = "unsubscribed"

#: How many context (``primary_tf``, 15m) bars the newest closed one may end before an evaluation's event time
#: and still be judged on (``not_evaluated_context_stale`` beyond). The bar forming at the event is never
#: closed and the one before it closes with a kline sent at its end, so a live stream keeps the newest closed
#: bar ending less than one bar (plus the kline's delivery) before the event; two leave a whole bar for a late
#: or lost closing kline (the next bar's first kline closes it provisionally and asks for its refill). Beyond,
#: the symbol's kline stream is silent while its other streams flow (a connection only reported, up to its
#: 23.5 h rollover, or a symbol whose hole is still being refilled): RSI(9), divergence, levels, volume
#: intensity and the ATR of the stop and size would come from old bars. A constant, not a setting: the bound
#: follows from how klines close; a looser one only lets older context through.
CONTEXT_MAX_AGE_BARS = 2


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
    it, ``book_crossed``, ``no_context``, ``context_stale``, ``trades_stale``, ``trades_filling``)."""

    evaluations: int = 0
    last_evaluated: int = 0
    not_evaluated: Counter[str] = field(default_factory=Counter)


class SignalEngine(EngineCandidates, EngineRestore):
    """Candidates, signals and live outcomes from the market state (a setup judged and gated in
    :class:`~tapewatch.engine_candidates.EngineCandidates`, the rebuild after a restart in
    :class:`~tapewatch.engine_restore.EngineRestore`)."""

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
        self._context_max_age_ms = CONTEXT_MAX_AGE_BARS * TIMEFRAME_MS[PRIMARY_TF]
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
        if self.context_stale(st, now):  # the kline stream went silent: the candle features are old
            self._not_evaluated(counts, "context_stale")
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

    def trades_state(self, st: SymbolState, now: int) -> Literal["fresh", "filling", "stale"]:
        """Whether the symbol's trade features may be judged at event time ``now``. They are as of the last
        applied trade (DESIGN §4): while a gap fill holds the later trades the window has a hole
        (``filling``), and long after the last trade (the stream down) they describe the past (``stale``)."""
        if st.fill is not None:
            return "filling"
        if now - st.flow.last_time > self._trade_stale_ms:
            return "stale"
        return "fresh"

    def context_stale(self, st: SymbolState, now: int) -> bool:
        """Whether the symbol's newest closed context bar ended more than :data:`CONTEXT_MAX_AGE_BARS` bars
        before event time ``now`` (at the bound exactly it is still judged). Call once closed bars exist."""
        newest = st.candles[PRIMARY_TF].closed[-1]
        return now - (newest.close_time + 1) > self._context_max_age_ms

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
