"""What a signal would have done: trigger, targets, stop or expiry, P&L after fees, MFE/MAE. Pure.

One set of rules, two ways to feed it: :class:`OutcomeTracker` follows a live signal trade by trade (and
reports each state change as an :class:`OutcomeEvent`, the EXIT signals), and :func:`evaluate` computes the
authoritative outcome from 1-minute candles and, where the minute decides, their aggTrades. A trade is the degenerate candle whose open, high,
low and close are its price, so both go through the same state machine.

States: ``WAITING`` → ``TRIGGERED`` → ``TP1`` → ``TP2`` | ``STOPPED`` | ``EXPIRED`` (final states are TP2,
STOPPED and EXPIRED; ``WAITING`` may also end ``EXPIRED`` untriggered).

- **Trigger**: price trades through the entry (``>= entry`` LONG, ``<= entry`` SHORT) at an event time within
  ``[created, created + response window]`` of the tier (HIGH 60 s, MEDIUM 300 s, LOW 900 s; a trade at
  exactly the deadline still counts, one a millisecond later does not); else the signal ends EXPIRED
  untriggered at the deadline. The fill is the entry price.
- **Targets**: ``tp1_share`` (50 %) is closed at TP1, the rest at TP2, both at the target price (limit orders:
  no better fill is assumed). After TP1 the stop moves to the entry (``move_stop_to_entry``).
- **Stop**: the rest is closed at the stop, or at the first price beyond it when the market gaps through
  (a trade past the stop, a candle that opens past it): a stop fills at that price or worse.
- **Expiry**: at the tier's upper hold bound (45/90/180 min) after the trigger, the rest is closed at the last
  price seen at or before that time (for candles: see the deciding minutes).
- **Within one price range the order is unknown**, so the worst order is assumed: the stop is tested before a
  target, and again after each target (a candle that holds the stop and a target counts the stop; a candle
  that reaches TP1 and comes back to the entry counts TP1 then the stop at entry).
- **Deciding minutes**: a candle is not one range where *when* in its minute prices traded decides
  (:class:`MinuteRole`): it reaches a waiting signal's entry and opens before the signal existed (its prices
  may predate it: ``creation``), or holds the response window's last millisecond (``trigger_deadline``), or
  not (``trigger``: the trigger's time starts the hold, so it places the hold's end); or it holds the hold's
  last millisecond (``hold_deadline``). With that minute's aggTrades (:func:`evaluate` ``trades``, fetched by
  the batch asset) it is **exact**: replayed trade by trade exactly as the live tracker is fed (a trade at
  exactly a deadline counts, one a millisecond later does not). Of the trades stamped at or after the
  creation, those the live tracker followed count (:func:`followed`): aggTrade ids above the signal's
  ``created_after_agg_id``, applied after it was created, so the creation millisecond's later trades count and
  the creating trade does not; a signal or a trade without an id keeps the older rule, which leaves the whole
  creation millisecond out. Without usable trades it is
  **capped**, read the conservative way: a creation or trigger-deadline candle does not trigger the signal
  (its prices may all predate the signal or follow the window: counting them made signals that never filled
  triggered losses); a trigger candle counts in full from its open, its part before the trigger included
  (conservative for stops), so the trigger and the hold's end are known to the minute only and the candle
  holding that end is capped too; a hold-deadline candle counts its open and its adverse extreme as traded by
  the deadline and its favourable side as after it, and a position it leaves open expires at that adverse
  extreme (the worst last price it can have had).
- **P&L** of each part: ``(sign·(exit - entry) - fee·(entry + exit)) / R`` in R (R = |entry - stop| at
  creation, fee the taker fee per side), summed over parts by share; in % of capital it is the same return on
  notional times ``position_size`` (the signal's ``suggested_position_size``) × 100.
- **MFE / MAE** in R, as non-negative distances: the best favourable and worst adverse move from the entry
  while the position was open. On a range that ends the signal at its stop, only the levels the signal is
  deemed to have reached count.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import msgspec

from tapewatch.outcome_models import (
    FINAL_STATES,
    MINUTE_MS,
    OpenSignal,
    Outcome,
    OutcomeEvent,
    OutcomeParams,
    OutcomeState,
    check_kind,
)
from tapewatch.trade_plan import net_per_unit

log = logging.getLogger(__name__)


__all__ = [
    "FINAL_STATES",
    "MINUTE_MS",
    "Bar",
    "Evaluation",
    "MinuteRead",
    "MinuteRole",
    "MinuteTrades",
    "OpenSignal",
    "Outcome",
    "OutcomeEvent",
    "OutcomeParams",
    "OutcomeState",
    "OutcomeTracker",
    "TapeTrade",
    "TradeSpan",
    "check_kind",
    "evaluate",
    "evaluate_candles",
    "followed",
]


class _Life:
    """The state machine both feeds share. ``step`` takes one price range at the current event time."""

    __slots__ = (
        "events",
        "hold_deadline",
        "last_price",
        "mae",
        "mfe",
        "now",
        "open_share",
        "params",
        "realized_r",
        "realized_ret",
        "sig",
        "state",
        "stop",
        "tp1_time",
        "trigger_deadline",
        "trigger_time",
    )

    def __init__(self, sig: OpenSignal, params: OutcomeParams) -> None:
        self.sig = sig
        self.params = params
        self.state = OutcomeState.WAITING
        self.stop = sig.stop
        self.now = sig.created
        self.trigger_deadline = sig.created + params.response_ms[sig.tier]
        self.hold_deadline: int | None = None
        self.trigger_time: int | None = None
        self.tp1_time: int | None = None
        self.last_price: float | None = None
        self.open_share = 1.0
        self.realized_r = 0.0
        self.realized_ret = 0.0  # return on notional, after fees, summed by share
        self.mfe = 0.0
        self.mae = 0.0
        self.events: list[OutcomeEvent] = []

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def deadline(self) -> int:
        """The next deadline: of the trigger while waiting, else of the hold."""
        return self.trigger_deadline if self.hold_deadline is None else self.hold_deadline

    def _excursion(self, price: float) -> float:
        return self.sig.sign * (price - self.sig.entry) / self.sig.risk

    def _emit(self, state: OutcomeState, price: float | None, share: float) -> None:
        self.state = state
        self.events.append(
            OutcomeEvent(
                signal_id=self.sig.signal_id,
                symbol=self.sig.symbol,
                state=state,
                time=self.now,
                price=price,
                closed_share=share,
                realized_r=self.realized_r,
            )
        )

    def _close(self, state: OutcomeState, price: float, share: float) -> None:
        entry, fee = self.sig.entry, self.params.taker_fee
        pnl = net_per_unit(self.sig.sign, entry, price, fee)
        self.realized_r += share * pnl / self.sig.risk
        self.realized_ret += share * pnl / entry
        self.open_share -= share
        self._emit(state, price, share)

    def _trigger(self) -> None:
        self.trigger_time = self.now
        self.hold_deadline = self.now + self.params.hold_ms[self.sig.tier]
        self._emit(OutcomeState.TRIGGERED, self.sig.entry, 0.0)

    def advance(self, now: int) -> None:
        """Move event time to ``now`` (never backwards) and expire the signal if a deadline has passed."""
        if self.finished:
            return
        if now <= self.deadline:
            self.now = max(self.now, now)
        elif self.state is OutcomeState.WAITING:
            self.now = self.deadline
            self._emit(OutcomeState.EXPIRED, None, 0.0)
        else:
            self.now = self.deadline
            # the range that triggered set last_price; the entry only stands in for a resumed row without it
            price = self.last_price if self.last_price is not None else self.sig.entry
            self._close(OutcomeState.EXPIRED, price, self.open_share)

    def step(self, first: float, low: float, high: float, last: float) -> None:
        """Apply prices traded at ``self.now`` (call :meth:`advance` first): ``first``/``last`` the range's
        first and last price. Stops are tested before targets, and again after each target."""
        if self.finished:
            return
        sign = self.sig.sign
        favourable, adverse = (high, low) if sign > 0 else (low, high)
        # A stop fills at the range's first price when the position was already open when the range began
        # and that price is past the stop (a gap); otherwise at the stop itself.
        gap_fill = self.state is not OutcomeState.WAITING
        if self.state is OutcomeState.WAITING:
            if sign * (favourable - self.sig.entry) < 0:
                return
            self._trigger()
        while True:
            if sign * (self.stop - adverse) >= 0:
                fill = first if gap_fill and sign * (self.stop - first) >= 0 else self.stop
                self.mae = max(self.mae, -self._excursion(fill))
                self._close(OutcomeState.STOPPED, fill, self.open_share)
                return
            after_tp1 = self.state is OutcomeState.TP1
            target = self.sig.tp2 if after_tp1 else self.sig.tp1
            if sign * (favourable - target) < 0:
                break
            self.mfe = max(self.mfe, self._excursion(target))
            if after_tp1:
                # the stop was not reached in this range (tested above), so its whole adverse side counts
                self.mae = max(self.mae, -self._excursion(adverse))
                self._close(OutcomeState.TP2, target, self.open_share)
                return
            self.tp1_time = self.now
            self._close(OutcomeState.TP1, target, self.params.tp1_share)
            if self.params.move_stop_to_entry:
                self.stop = self.sig.entry
            gap_fill = False  # the price has been at TP1 since the range began
        self.mfe = max(self.mfe, self._excursion(favourable))
        self.mae = max(self.mae, -self._excursion(adverse))
        self.last_price = last

    def outcome(self) -> Outcome:
        exit_event = self.events[-1] if self.finished else None
        return Outcome(
            signal=self.sig,
            state=self.state,
            as_of=self.now,
            trigger_time=self.trigger_time,
            tp1_time=self.tp1_time,
            exit_time=exit_event.time if exit_event else None,
            exit_price=exit_event.price if exit_event else None,
            last_price=self.last_price,
            pnl_r=self.realized_r,
            pnl_pct=self.realized_ret * self.sig.position_size * 100.0,
            mfe_r=self.mfe,
            mae_r=self.mae,
            events=tuple(self.events),
        )

    @classmethod
    def resume(cls, outcome: Outcome, params: OutcomeParams) -> _Life:
        """Rebuild the machine from a provisional outcome (its events replayed), e.g. after a restart."""
        life = cls(outcome.signal, params)
        for event in outcome.events:
            life.now = event.time
            if event.state is OutcomeState.TRIGGERED:
                life._trigger()
            elif event.state is OutcomeState.EXPIRED and event.price is None:
                life._emit(OutcomeState.EXPIRED, None, 0.0)
            else:
                assert event.price is not None
                life._close(event.state, event.price, event.closed_share)
                if event.state is OutcomeState.TP1:
                    life.tp1_time = event.time
                    if params.move_stop_to_entry:
                        life.stop = life.sig.entry
        life.now = max(life.now, outcome.as_of)
        life.last_price = outcome.last_price
        life.mfe, life.mae = outcome.mfe_r, outcome.mae_r
        return life


class OutcomeTracker:
    """Follows one live signal on its symbol's trades (event time, price), in arrival order.

    Each call returns the state changes it caused (empty when none). Trades before the signal's creation
    and bad prices (NaN, infinite, <= 0) are counted and skipped; once finished, input is ignored.
    ``on_time`` lets a quiet symbol expire on the event time of other streams.
    """

    __slots__ = ("_life", "bad_prices", "early_trades")

    def __init__(self, signal: OpenSignal, params: OutcomeParams | None = None) -> None:
        self._life = _Life(signal, params or OutcomeParams())
        self.bad_prices = 0
        self.early_trades = 0

    @classmethod
    def resume(cls, outcome: Outcome, params: OutcomeParams | None = None) -> OutcomeTracker:
        """A tracker that continues from ``outcome`` (as stored before a restart) as if never stopped."""
        tracker = cls(outcome.signal, params)
        tracker._life = _Life.resume(outcome, params or OutcomeParams())
        return tracker

    @property
    def state(self) -> OutcomeState:
        return self._life.state

    @property
    def finished(self) -> bool:
        return self._life.finished

    def outcome(self) -> Outcome:
        return self._life.outcome()

    def on_trade(self, time: int, price: float) -> list[OutcomeEvent]:
        life = self._life
        if life.finished:
            return []
        if not (math.isfinite(price) and price > 0):
            self.bad_prices += 1
            log.debug("bad trade price %r skipped", price, extra={"symbol": life.sig.symbol})
            return []
        if time < life.sig.created:
            self.early_trades += 1
            return []
        seen = len(life.events)
        life.advance(time)
        life.step(price, price, price, price)
        return life.events[seen:]

    def on_time(self, now: int) -> list[OutcomeEvent]:
        life = self._life
        seen = len(life.events)
        life.advance(now)
        return life.events[seen:]


class Bar(Protocol):
    """An OHLC candle; :class:`tapewatch.events.Candle` is one."""

    @property
    def open_time(self) -> int: ...
    @property
    def close_time(self) -> int: ...
    @property
    def open(self) -> float: ...
    @property
    def high(self) -> float: ...
    @property
    def low(self) -> float: ...
    @property
    def close(self) -> float: ...


def _check_bar(bar: Bar) -> None:
    prices = (bar.open, bar.high, bar.low, bar.close)
    if not all(math.isfinite(p) and p > 0 for p in prices):
        raise ValueError(f"candle at {bar.open_time}: prices must be finite and > 0; got {prices}")
    if not bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high:
        raise ValueError(f"candle at {bar.open_time}: need low <= open, close <= high; got {prices}")
    if bar.close_time < bar.open_time:
        raise ValueError(f"candle at {bar.open_time}: close_time {bar.close_time} is before its open")


#: A trade of a deciding minute: (event time, price, aggTrade id), or (event time, price) when its id is unknown.
TapeTrade = tuple[int, float, int] | tuple[int, float]
#: The trades of deciding minutes by the minute's open time, in trade order; None: asked for and not to be
#: had. A minute absent from the mapping has not been asked for (it is read capped meanwhile).
MinuteTrades = Mapping[int, Sequence[TapeTrade] | None]


class MinuteRole(enum.StrEnum):
    """Why a 1-minute candle cannot be read as one price range: when in its minute things traded decides."""

    CREATION = "creation"  # it reaches the entry and opens before the signal existed
    TRIGGER = "trigger"  # it reaches a waiting signal's entry: the trigger's time starts the hold
    TRIGGER_DEADLINE = "trigger_deadline"  # the same, and it holds the response window's last ms
    HOLD_DEADLINE = "hold_deadline"  # it holds the hold's last ms


class TradeSpan(msgspec.Struct, frozen=True, kw_only=True):
    """The aggTrades a deciding minute is read from: event times ``start`` to ``end`` (both included) of the
    minute opening at ``minute``."""

    minute: int
    start: int
    end: int
    role: MinuteRole


class MinuteRead(msgspec.Struct, frozen=True, kw_only=True):
    """How a deciding minute counted: ``exact`` (from its trades) or capped (the conservative reading)."""

    minute: int
    role: MinuteRole
    exact: bool


class Evaluation(msgspec.Struct, frozen=True, kw_only=True):
    """An outcome, the deciding minutes it read (in time order) and ``wanted``: the first of them whose trades
    were not given (None: nothing to ask). Once given, a new evaluation may want another one: what comes after
    a minute (the trigger's time, so the hold's end) depends on what its trades decide."""

    outcome: Outcome
    minutes: tuple[MinuteRead, ...]
    wanted: TradeSpan | None


def _role(life: _Life, bar: Bar) -> MinuteRole | None:
    """The role of ``bar`` (opening at or before the next deadline) for the signal as it stands, or None when
    it can be read as one range."""
    sig = life.sig
    if life.state is OutcomeState.WAITING:
        favourable = bar.high if sig.sign > 0 else bar.low
        if sig.sign * (favourable - sig.entry) < 0:
            return None  # nothing in it triggers the signal, whenever it traded
        if bar.open_time < sig.created:
            return MinuteRole.CREATION
        if bar.close_time >= life.trigger_deadline:
            return MinuteRole.TRIGGER_DEADLINE
        return MinuteRole.TRIGGER
    assert life.hold_deadline is not None  # triggered
    return MinuteRole.HOLD_DEADLINE if bar.close_time >= life.hold_deadline else None


def _span(life: _Life, bar: Bar, role: MinuteRole, exact_trigger: bool) -> TradeSpan | None:
    """The trades ``bar`` is read from in ``role``; None when none would help: a hold whose trigger is known
    to the minute only has an end no trade can place."""
    if role is MinuteRole.CREATION:
        start, end = life.sig.created, bar.close_time
    elif role is MinuteRole.HOLD_DEADLINE and not exact_trigger:
        return None
    else:
        # the whole minute, checked whole against its candle (:func:`_complete`): a trigger by the deadline
        # leaves the rest to count, and past the hold's end the replay expires the signal first
        start, end = bar.open_time, bar.close_time
    return TradeSpan(minute=bar.open_time, start=start, end=end, role=role)


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def _complete(bar: Bar, trades: Sequence[TapeTrade], span: TradeSpan) -> bool:
    """Whether ``trades`` are the whole tape of ``span`` as its candle shows it; if not (an empty or cut
    answer, a price outside the candle), the two sources disagree and the minute is read the conservative way.

    Every price lies within the candle. A span of the whole minute (trigger, deadlines) has trades, opening at
    the candle's open, closing at its close and reaching its low and high; one from the signal's creation to
    the minute's end closes at its close when it has any (none: nothing traded after the signal existed)."""
    if any(not bar.low <= trade[1] <= bar.high for trade in trades):
        return False
    tape = sorted((t for t in trades if span.start <= t[0] <= span.end), key=lambda t: t[0])
    from_open, to_close = span.start <= bar.open_time, span.end >= bar.close_time
    if not tape:
        return not from_open and to_close
    prices = [t[1] for t in tape]
    if from_open and not _same(prices[0], bar.open):
        return False
    if to_close and not _same(prices[-1], bar.close):
        return False
    return not (from_open and to_close) or (_same(min(prices), bar.low) and _same(max(prices), bar.high))


def followed(sig: OpenSignal, trade: TapeTrade) -> bool:
    """Whether the live tracker of ``sig`` was fed ``trade``: the engine follows a signal with the trades
    applied after its creation (never the creating one), all of aggTrade ids above ``created_after_agg_id``,
    and the tracker skips those stamped before ``created``. Without either id the trade counts when stamped
    after the creation millisecond: that millisecond's trades cannot be told apart (left out)."""
    time = trade[0]
    if time < sig.created:
        return False
    if sig.created_after_agg_id is not None and len(trade) == 3:
        return trade[2] > sig.created_after_agg_id
    return time > sig.created


def _replay(life: _Life, trades: Sequence[TapeTrade], span: TradeSpan) -> None:
    """Feed the trades of ``span`` that the live tracker was fed (:func:`followed`) one by one, as it was fed:
    a trade at exactly a deadline counts, one a millisecond later expires the signal first."""
    for trade in sorted(trades, key=lambda t: t[0]):  # stable: same-ms trades keep their (id) order
        time, price = trade[0], trade[1]
        if not span.start <= time <= span.end or not followed(life.sig, trade):
            continue
        life.advance(time)
        life.step(price, price, price, price)
        if life.finished:
            return


def _read_capped(life: _Life, bar: Bar, role: MinuteRole) -> None:
    """Read a deciding candle without its trades, the conservative way (module docstring)."""
    if role is MinuteRole.TRIGGER:
        life.advance(bar.open_time)
        life.step(bar.open, bar.low, bar.high, bar.close)  # in full: the trigger at its open, the stop first
    elif role is MinuteRole.HOLD_DEADLINE:
        life.advance(bar.open_time)
        # the open and the adverse extreme traded by the deadline, the favourable side after it
        adverse = bar.low if life.sig.sign > 0 else bar.high
        low, high = (adverse, bar.open) if life.sig.sign > 0 else (bar.open, adverse)
        life.step(bar.open, low, high, adverse)
    # CREATION, TRIGGER_DEADLINE: prices that may all predate the signal or follow its window trigger nothing


def evaluate(
    signal: OpenSignal,
    candles: Iterable[Bar],
    params: OutcomeParams | None = None,
    until: int | None = None,
    trades: MinuteTrades | None = None,
) -> Evaluation:
    """The outcome of ``signal`` over 1-minute candles, by the module's rules, reading each deciding minute
    from its ``trades`` where given and usable, else capped.

    A candle counts if it opens at or before the next deadline (its first millisecond may hold a trade at
    exactly the deadline). Candles that close before the signal's creation are skipped; the others are taken
    in open-time order, each at the event time ``max(open_time, time so far)``. ``until`` is the last event
    time the data covers (default: the last candle's ``close_time``): once it reaches the deadline the signal
    expires; before that the outcome may be provisional (not ``finished``). Raises ValueError on an impossible
    candle.
    """
    life = _Life(signal, params or OutcomeParams())
    bars = sorted(candles, key=lambda b: b.open_time)
    for bar in bars:
        _check_bar(bar)
    given: MinuteTrades = trades if trades is not None else {}
    reads: list[MinuteRead] = []
    wanted: TradeSpan | None = None
    exact_trigger = False  # the trigger's time comes from a trade, not from a candle's open
    for bar in bars:
        if bar.close_time < signal.created:
            continue
        if bar.open_time > life.deadline:
            break
        role = _role(life, bar)
        if role is None:
            life.advance(bar.open_time)
            life.step(bar.open, bar.low, bar.high, bar.close)
        else:
            span = _span(life, bar, role, exact_trigger)
            if span is not None and wanted is None and span.minute not in given:
                wanted = span
            got = given.get(bar.open_time) if span is not None else None
            usable = got if got is not None and span is not None and _complete(bar, got, span) else None
            reads.append(MinuteRead(minute=bar.open_time, role=role, exact=usable is not None))
            if span is None or usable is None:
                _read_capped(life, bar, role)
            else:
                waiting = life.state is OutcomeState.WAITING
                _replay(life, usable, span)
                exact_trigger = exact_trigger or (waiting and life.trigger_time is not None)
        if life.finished:
            break
    end = until if until is not None else (bars[-1].close_time if bars else None)
    if end is not None and not life.finished and end >= life.deadline:
        life.advance(life.deadline + 1)  # every candle opening at or before the deadline has been seen
    return Evaluation(outcome=life.outcome(), minutes=tuple(reads), wanted=wanted)


def evaluate_candles(
    signal: OpenSignal,
    candles: Iterable[Bar],
    params: OutcomeParams | None = None,
    until: int | None = None,
    trades: MinuteTrades | None = None,
) -> Outcome:
    """The outcome of :func:`evaluate` (without ``trades``: every deciding minute capped)."""
    return evaluate(signal, candles, params, until, trades).outcome
