"""The Signal (spec 8.2, every field kept, plus its evidence) and the Candidate record, with JSON codecs.

Ids are deterministic so a re-run, a replay or a restart never mints a second id for the same signal
(DESIGN §3): an ENTRY's ``signal_id`` is the UUIDv5, under :data:`NAMESPACE`, of
``"<symbol>|<direction>|<trigger event time ms>"``; an EXIT's id is the UUIDv5 of its exit reason under the
parent's id as namespace. A candidate shares the id of the signal it became (or would have become).

Both types validate themselves at construction and at JSON decoding: a NaN, a price <= 0, a stop or target
on the wrong side of the entry raises :class:`ValueError` (``msgspec.ValidationError`` when decoding, a
ValueError subclass) with a message naming the field.

A signal carries one field that is stored but never published (:data:`STORED_ONLY`):
``created_after_agg_id``, the id of the last aggTrade of its symbol the market had applied when it was created
(the live tracker follows the trades with higher ids). The batch outcome reads it to tell the trades of the
creation millisecond the live tracker followed from those that came before the signal; a trader has no use
for it, so :func:`encode_published` (the outbox, so the Redis stream, webhook and Telegram) leaves it out and
the published format stays spec 8.2 plus the evidence.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

import msgspec

from tapewatch.features import DataQuality, Features, check_price
from tapewatch.quality import QualityScore, Tier, breakpoints, priority_levels, score_features
from tapewatch.rules import Condition, Direction, Evaluation, fmt_num
from tapewatch.settings import Settings
from tapewatch.trade_plan import TradePlan, confidence, expected_hold_time, plan_trade

#: The tapewatch namespace of every signal id (fixed forever: changing it changes every id).
NAMESPACE = uuid.UUID("5d0c1a4e-7a3b-5f0e-9c2d-7461706577a1")

SignalType = Literal["ENTRY", "EXIT"]
ExitReason = Literal["TP1", "TP2", "STOP", "EXPIRED"]
EXIT_REASONS: tuple[ExitReason, ...] = ("TP1", "TP2", "STOP", "EXPIRED")
#: The candidate fate of a setup that became a signal; any other fate is a rejection reason code.
FATE_SIGNAL = "signal"
FATE_LOW_QUALITY = "low_quality"
#: No trade plan could be made: ATR(15m) unknown, or targets that would fall to zero or below.
FATE_NO_PLAN = "no_plan"

_PRICE_DIGITS = 10
#: Fields kept in storage (the ``signals`` row and its ``payload``) but left out of the published JSON.
STORED_ONLY = ("created_after_agg_id",)


def signal_id_for(symbol: str, direction: Direction, trigger_time_ms: int) -> str:
    """The ENTRY signal id (and candidate id) of a setup: UUIDv5 of ``symbol|direction|time``."""
    if trigger_time_ms < 0:
        raise ValueError(f"trigger event time must be epoch ms >= 0; got {trigger_time_ms}")
    return str(uuid.uuid5(NAMESPACE, f"{symbol}|{direction}|{trigger_time_ms}"))


def exit_signal_id(parent_id: str, reason: ExitReason) -> str:
    """The EXIT signal id: UUIDv5 of the exit reason under the parent signal's id as namespace."""
    return str(uuid.uuid5(uuid.UUID(parent_id), reason))


def iso_timestamp(event_time_ms: int) -> str:
    """Event time (epoch ms) as ISO-8601 UTC with milliseconds: ``2024-01-01T00:00:00.000Z``."""
    moment = datetime.fromtimestamp(event_time_ms // 1000, tz=UTC)  # whole seconds: no float rounding
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{event_time_ms % 1000:03d}Z"


class Signal(msgspec.Struct, frozen=True, kw_only=True):
    """A spec 8.2 signal (all fields, same names) plus the evidence a trader needs to trust it.

    Evidence: ``event_time`` (ms, the trigger's exchange time; ``timestamp`` is it in ISO form),
    ``reasons`` (one line per condition met), ``data_quality``. EXIT signals (``signal_type == "EXIT"``) also
    carry ``exit_reason``, ``parent_signal_id`` and ``exit_price``; their price levels are the parent's.

    Stored, not published (:data:`STORED_ONLY`): ``created_after_agg_id``, an ENTRY's last aggTrade id of its
    symbol at creation (None: unknown: stored before it was recorded, no aggTrade applied yet, or trades from
    the ``@trade`` stream, whose ids are not aggTrade ids; always None on an EXIT).
    """

    signal_id: str
    symbol: str
    direction: Direction
    signal_type: SignalType
    priority: Tier
    timestamp: str
    entry_price: float
    stop_loss: float
    take_profit_1: float
    take_profit_2: float
    quality_score: int
    orderbook_imbalance: float
    large_trades_count: int
    volume_intensity: float
    confidence: float
    suggested_position_size: float
    risk_reward_ratio: float
    expected_hold_time: str
    event_time: int
    reasons: list[str] = msgspec.field(default_factory=list)
    data_quality: DataQuality = msgspec.field(default_factory=DataQuality)
    exit_reason: ExitReason | None = None
    parent_signal_id: str | None = None
    exit_price: float | None = None
    created_after_agg_id: int | None = None

    def __post_init__(self) -> None:
        who = f"signal {self.symbol} {self.direction}"
        for name in ("entry_price", "stop_loss", "take_profit_1", "take_profit_2"):
            check_price(f"{who} {name}", getattr(self, name))
        check_plan_sides(
            self.direction, self.entry_price, self.stop_loss, self.take_profit_1, self.take_profit_2
        )
        if not 0 <= self.quality_score <= 100:
            raise ValueError(f"{who}: quality_score must be within [0, 100]; got {self.quality_score}")
        if not (math.isfinite(self.orderbook_imbalance) and -1 <= self.orderbook_imbalance <= 1):
            raise ValueError(
                f"{who}: orderbook_imbalance must be within [-1, 1]; got {self.orderbook_imbalance}"
            )
        if self.large_trades_count < 0:
            raise ValueError(f"{who}: large_trades_count must be >= 0; got {self.large_trades_count}")
        for name in ("volume_intensity", "risk_reward_ratio"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{who}: {name} must be finite and >= 0; got {value}")
        if not (math.isfinite(self.confidence) and 0 <= self.confidence <= 1):
            raise ValueError(f"{who}: confidence must be within [0, 1]; got {self.confidence}")
        if not (math.isfinite(self.suggested_position_size) and self.suggested_position_size > 0):
            raise ValueError(
                f"{who}: suggested_position_size must be > 0; got {self.suggested_position_size}"
            )
        if self.event_time < 0 or self.timestamp != iso_timestamp(self.event_time):
            raise ValueError(
                f"{who}: timestamp {self.timestamp!r} does not match event_time {self.event_time} ms"
            )
        uuid.UUID(self.signal_id)  # raises ValueError on a malformed id
        if self.created_after_agg_id is not None and self.created_after_agg_id < 0:
            raise ValueError(f"{who}: created_after_agg_id must be >= 0; got {self.created_after_agg_id}")
        self._check_kind(who)

    def _check_kind(self, who: str) -> None:
        if self.signal_type == "ENTRY":
            if (
                self.exit_reason is not None
                or self.parent_signal_id is not None
                or self.exit_price is not None
            ):
                raise ValueError(f"{who}: an ENTRY signal has no exit_reason, parent_signal_id or exit_price")
            return
        if self.exit_reason is None or self.parent_signal_id is None or self.exit_price is None:
            raise ValueError(f"{who}: an EXIT signal needs exit_reason, parent_signal_id and exit_price")
        if self.created_after_agg_id is not None:
            raise ValueError(f"{who}: created_after_agg_id belongs to the ENTRY signal, not an EXIT")
        check_price(f"{who} exit_price", self.exit_price)
        if self.signal_id != exit_signal_id(self.parent_signal_id, self.exit_reason):
            raise ValueError(f"{who}: EXIT signal_id must be UUIDv5(parent id, {self.exit_reason})")


def check_plan_sides(direction: Direction, entry: float, stop: float, tp1: float, tp2: float) -> None:
    """Raise ValueError unless the stop is on the losing side of the entry and TP1, then TP2, on the
    winning side (LONG: stop < entry < TP1 <= TP2; SHORT mirrored)."""
    long = direction == "LONG"
    if (stop >= entry) if long else (stop <= entry):
        side = "below" if long else "above"
        raise ValueError(f"{direction} stop_loss {stop} must be {side} entry_price {entry}")
    if (not entry < tp1 <= tp2) if long else (not entry > tp1 >= tp2):
        order = "entry < TP1 <= TP2" if long else "entry > TP1 >= TP2"
        raise ValueError(f"{direction} targets must satisfy {order}; got entry {entry}, TP1 {tp1}, TP2 {tp2}")


def make_entry_signal(
    features: Features,
    evaluation: Evaluation,
    quality: QualityScore,
    plan: TradePlan,
    *,
    confidence: float,
    expected_hold_time: str,
    created_after_agg_id: int | None = None,
) -> Signal:
    """The ENTRY signal of a passed evaluation; ``created_after_agg_id`` the last aggTrade id of the symbol
    applied when it is created (None: unknown). Raises ValueError when the evaluation did not pass, the
    quality has no tier (below 50), or the parts disagree (other symbol, time or direction)."""
    if not evaluation.passed:
        raise ValueError(f"{evaluation.symbol} {evaluation.direction}: required conditions are not all met")
    if quality.tier is None:
        raise ValueError(f"{evaluation.symbol}: quality {quality.score} is below 50, not a signal")
    if (features.symbol, features.event_time) != (evaluation.symbol, evaluation.event_time):
        raise ValueError("features and evaluation are of different symbols or event times")
    if plan.direction != evaluation.direction:
        raise ValueError(f"plan is {plan.direction} but the evaluation is {evaluation.direction}")
    if features.volume_intensity is None:
        raise ValueError(f"{features.symbol}: volume_intensity is unknown")
    long = evaluation.direction == "LONG"
    return Signal(
        signal_id=signal_id_for(features.symbol, evaluation.direction, features.event_time),
        symbol=features.symbol,
        direction=evaluation.direction,
        signal_type="ENTRY",
        priority=quality.tier,
        timestamp=iso_timestamp(features.event_time),
        entry_price=plan.entry,
        stop_loss=plan.stop,
        take_profit_1=plan.take_profit_1,
        take_profit_2=plan.take_profit_2,
        quality_score=quality.score,
        orderbook_imbalance=features.imbalance_top10,
        large_trades_count=features.large_buys if long else features.large_sells,
        volume_intensity=features.volume_intensity,
        confidence=confidence,
        suggested_position_size=plan.suggested_position_size,
        risk_reward_ratio=plan.risk_reward_ratio,
        expected_hold_time=expected_hold_time,
        event_time=features.event_time,
        reasons=evaluation.reasons,
        data_quality=features.data_quality,
        created_after_agg_id=created_after_agg_id,
    )


#: The reason an EXIT of a signal whose entry never filled carries after its first one.
NOT_TRIGGERED = "not triggered: the entry was never filled"


def make_exit_signal(
    parent: Signal, reason: ExitReason, exit_price: float, event_time: int, *, triggered: bool = True
) -> Signal:
    """The EXIT signal closing ``parent`` for ``reason`` at ``exit_price`` (event time ``event_time`` ms);
    ``triggered`` false (an expiry before the entry filled) adds :data:`NOT_TRIGGERED` to its reasons: there
    was no position, and the price is only the market's at the expiry."""
    if parent.signal_type != "ENTRY":
        raise ValueError(f"signal {parent.signal_id} is an EXIT; only an ENTRY can be exited")
    if reason not in EXIT_REASONS:
        raise ValueError(f"exit reason must be one of {', '.join(EXIT_REASONS)}; got {reason!r}")
    check_price("exit_price", exit_price)
    if event_time < parent.event_time:
        raise ValueError(f"exit at {event_time} ms precedes the entry signal at {parent.event_time} ms")
    return msgspec.structs.replace(
        parent,
        signal_id=exit_signal_id(parent.signal_id, reason),
        signal_type="EXIT",
        timestamp=iso_timestamp(event_time),
        event_time=event_time,
        reasons=[
            f"{reason} at {fmt_num(exit_price, _PRICE_DIGITS)}",
            *([] if triggered else [NOT_TRIGGERED]),
        ],
        exit_reason=reason,
        parent_signal_id=parent.signal_id,
        exit_price=exit_price,
        created_after_agg_id=None,
    )


#: How many finished (triggered) signals per tier feed ``confidence`` and the expected hold time: the engine keeps
#: the last ones as they finish, and a restart reads the same number back from PostgreSQL.
TIER_HISTORY_LIMIT = 200


class TierHistory(msgspec.Struct, frozen=True, kw_only=True):
    """Outcomes of the past signals of one tier: ``tp1_hits`` of ``signals`` reached TP1 before their stop
    (for :func:`~tapewatch.trade_plan.confidence`), and their hold times in ms (for the expected hold).
    ``tp1`` is whether each of the last ``signals`` did, oldest first, so the window can move on as signals
    finish (empty in a history made of counts alone: then it grows without dropping any)."""

    tp1_hits: int = 0
    signals: int = 0
    hold_ms: list[int] = msgspec.field(default_factory=list)
    tp1: list[bool] = msgspec.field(default_factory=list)


class Proposal(msgspec.Struct, frozen=True, kw_only=True):
    """What the pure pipeline makes of a passed evaluation: an ENTRY signal for the risk gate to admit
    (``fate == "signal"``), or no signal with the reason (``low_quality``, ``no_plan``). ``plan``: the trade
    plan the signal has or would have had (a ``low_quality`` setup's too: its would-be outcome is tracked for
    tuning); None when none can be made (``no_plan``, or a low-quality setup whose plan fails)."""

    quality: QualityScore
    signal: Signal | None
    fate: str
    fate_detail: str = ""
    plan: TradePlan | None = None


def propose(
    features: Features,
    evaluation: Evaluation,
    settings: Settings,
    history: Mapping[Tier, TierHistory] | None = None,
    *,
    created_after_agg_id: int | None = None,
    tick_size: Decimal | None = None,
) -> Proposal:
    """Score a passed evaluation, plan its trade and build its ENTRY signal, using ``history`` of the
    signal's tier (none known = the quality prior and the middle of the hold band); ``created_after_agg_id``
    is stored with the signal (:class:`Signal`); ``tick_size`` is the symbol's price step, the grid of the stop
    and targets (None: not rounded, see :func:`~tapewatch.trade_plan.plan_trade`). Raises ValueError when the
    evaluation did not pass; a low score or an impossible plan is a Proposal without a signal."""
    if not evaluation.passed:
        raise ValueError(f"{evaluation.symbol} {evaluation.direction}: required conditions are not all met")
    tiers = breakpoints(settings)  # the quality_*_min settings, which monthly tuning may tighten
    quality = score_features(features, tiers)
    plan, why_not = _plan(features, evaluation.direction, settings, tick_size)
    if quality.tier is None:
        return Proposal(
            quality=quality,
            signal=None,
            fate=FATE_LOW_QUALITY,
            fate_detail=f"score {quality.score} < {tiers.low}",
            plan=plan,
        )
    if plan is None:
        return Proposal(quality=quality, signal=None, fate=FATE_NO_PLAN, fate_detail=why_not)
    past = (history or {}).get(quality.tier, TierHistory())
    signal = make_entry_signal(
        features,
        evaluation,
        quality,
        plan,
        confidence=confidence(past.tp1_hits, past.signals, quality.score),
        expected_hold_time=expected_hold_time(priority_levels(settings)[quality.tier], past.hold_ms),
        created_after_agg_id=created_after_agg_id,
    )
    return Proposal(quality=quality, signal=signal, fate=FATE_SIGNAL, plan=plan)


def _plan(
    features: Features, direction: Direction, settings: Settings, tick_size: Decimal | None
) -> tuple[TradePlan | None, str]:
    """The trade plan of the setup (:func:`~tapewatch.trade_plan.plan_trade`), or None and why not."""
    if not features.atr_15m:
        return None, "ATR(15m) unknown"
    long = direction == "LONG"
    try:
        plan = plan_trade(
            direction,
            features.best_bid,
            features.best_ask,
            features.atr_15m,
            features.support if long else features.resistance,
            settings,
            tick_size=tick_size,
        )
    except ValueError as exc:
        return None, str(exc)
    return plan, ""


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """A setup whose required conditions held, with everything needed to re-score it later: the feature
    vector, every condition met and unmet, its quality, and its fate: ``"signal"`` (then ``signal_id`` is
    set) or a rejection code (``low_quality``, ``no_plan``, or the risk gate's reasons), detailed in
    ``fate_detail`` ("correlation with ETHUSDT r=0.72"). ``large_trade_size``: the size (USD) its large trades
    were counted at, so tuning re-counts it from there (None: not recorded). ``plan``: the trade plan its
    signal has or would have had (None: ``no_plan``, or stored before plans were), what its would-be outcome is
    computed from, with ``created_after_agg_id`` (as :class:`Signal`'s: None when unknown)."""

    candidate_id: str
    symbol: str
    direction: Direction
    event_time: int
    features: Features
    conditions: list[Condition]
    quality: QualityScore
    fate: str
    fate_detail: str = ""
    signal_id: str | None = None
    large_trade_size: float | None = None
    plan: TradePlan | None = None
    created_after_agg_id: int | None = None

    def __post_init__(self) -> None:
        if self.plan is not None and self.plan.direction != self.direction:
            raise ValueError(
                f"candidate {self.candidate_id}: plan is {self.plan.direction}, not {self.direction}"
            )
        if self.created_after_agg_id is not None and self.created_after_agg_id < 0:
            raise ValueError(
                f"candidate {self.candidate_id}: created_after_agg_id must be >= 0; got {self.created_after_agg_id}"
            )
        if self.large_trade_size is not None and not (
            math.isfinite(self.large_trade_size) and self.large_trade_size > 0
        ):
            raise ValueError(
                f"candidate {self.candidate_id}: large_trade_size must be a size > 0; got {self.large_trade_size}"
            )
        if not self.fate:
            raise ValueError("a candidate's fate is 'signal' or a rejection reason; got an empty string")
        if (self.fate == FATE_SIGNAL) != (self.signal_id is not None):
            raise ValueError(
                f"candidate {self.candidate_id}: signal_id is set exactly when the fate is 'signal'"
            )
        if (self.features.symbol, self.features.event_time) != (self.symbol, self.event_time):
            raise ValueError(f"candidate {self.candidate_id}: features are of another symbol or event time")

    @property
    def is_signal(self) -> bool:
        return self.fate == FATE_SIGNAL

    @property
    def conditions_met(self) -> list[str]:
        return [c.name for c in self.conditions if c.met]

    @property
    def conditions_unmet(self) -> list[str]:
        return [c.name for c in self.conditions if not c.met]


def make_candidate(
    features: Features,
    evaluation: Evaluation,
    quality: QualityScore,
    fate: str,
    fate_detail: str = "",
    *,
    large_trade_size: float | None = None,
    plan: TradePlan | None = None,
    created_after_agg_id: int | None = None,
) -> Candidate:
    """The candidate record of a passed evaluation; ``fate == "signal"`` links it to the signal of the same
    id; ``large_trade_size`` is the size its large trades were counted at, ``plan`` the trade plan it has or
    would have had and ``created_after_agg_id`` the symbol's last aggTrade id then (kept for tuning). Raises
    ValueError when the evaluation did not pass (a near miss is not a candidate)."""
    if not evaluation.passed:
        raise ValueError(f"{evaluation.symbol} {evaluation.direction}: required conditions are not all met")
    cid = signal_id_for(evaluation.symbol, evaluation.direction, evaluation.event_time)
    return Candidate(
        candidate_id=cid,
        symbol=evaluation.symbol,
        direction=evaluation.direction,
        event_time=evaluation.event_time,
        features=features,
        conditions=evaluation.conditions,
        quality=quality,
        fate=fate,
        fate_detail=fate_detail,
        signal_id=cid if fate == FATE_SIGNAL else None,
        large_trade_size=large_trade_size,
        plan=plan,
        created_after_agg_id=created_after_agg_id,
    )


_signal_decoder = msgspec.json.Decoder(Signal)
_candidate_decoder = msgspec.json.Decoder(Candidate)
_encoder = msgspec.json.Encoder()


def encode(record: Signal | Candidate) -> bytes:
    """JSON of a signal or candidate (field names as spec 8.2), every field: what is stored."""
    return _encoder.encode(record)


def published_fields(signal: Signal) -> dict[str, Any]:
    """The fields a signal is shown with (the outbox, the live open-signals view, ``tapewatch backtest``):
    every field but the :data:`STORED_ONLY` ones."""
    data: dict[str, Any] = msgspec.to_builtins(signal)
    for name in STORED_ONLY:
        del data[name]
    return data


def encode_published(signal: Signal) -> bytes:
    """The published JSON of a signal (the outbox payload): :func:`encode` without the :data:`STORED_ONLY`
    fields. :func:`decode_signal` reads it back with those fields None."""
    return _encoder.encode(published_fields(signal))


def decode_signal(data: bytes | str) -> Signal:
    """A signal from its JSON; raises ValueError (``msgspec.ValidationError``/``DecodeError``) when bad."""
    return _signal_decoder.decode(data)


def decode_candidate(data: bytes | str) -> Candidate:
    """A candidate from its JSON; raises ValueError (``msgspec.ValidationError``/``DecodeError``) when bad."""
    return _candidate_decoder.decode(data)
