"""The data of signal outcomes: states, the open signal followed, parameters, events and the outcome.

The rules that produce them are in :mod:`tapewatch.outcome` (which re-exports every name here)."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping

import msgspec

from tapewatch.features import check_price
from tapewatch.quality import TIERS, Tier, priority_levels
from tapewatch.rules import DIRECTIONS, Direction
from tapewatch.settings import Settings
from tapewatch.trade_plan import TP1_SHARE

MINUTE_MS = 60_000


class OutcomeState(enum.StrEnum):
    WAITING = "WAITING"
    TRIGGERED = "TRIGGERED"
    TP1 = "TP1"
    TP2 = "TP2"
    STOPPED = "STOPPED"
    EXPIRED = "EXPIRED"


FINAL_STATES = frozenset({OutcomeState.TP2, OutcomeState.STOPPED, OutcomeState.EXPIRED})


def check_kind(symbol: str, direction: str, tier: str) -> None:
    """Raise ValueError unless ``direction`` is LONG/SHORT and ``tier`` HIGH/MEDIUM/LOW (typed input can still
    come from JSON or a database row)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"{symbol}: direction must be LONG or SHORT; got {direction!r}")
    if tier not in TIERS:
        raise ValueError(f"{symbol}: tier must be HIGH, MEDIUM or LOW; got {tier!r}")


class OpenSignal(msgspec.Struct, frozen=True, kw_only=True):
    """The parts of an ENTRY signal its outcome depends on. ``created`` is its event time (ms);
    ``position_size`` its ``suggested_position_size`` (notional as a share of capital);
    ``created_after_agg_id`` its ``created_after_agg_id``: the last aggTrade id applied when it was created,
    which tells the batch outcome the trades of the creation millisecond the live tracker followed (higher
    ids) from those before the signal (None: unknown; only the live tracker's view needs none)."""

    signal_id: str
    symbol: str
    direction: Direction
    tier: Tier
    created: int
    entry: float
    stop: float
    tp1: float
    tp2: float
    position_size: float = 0.0
    quality_score: float = 0.0
    created_after_agg_id: int | None = None

    def __post_init__(self) -> None:
        check_kind(self.symbol, self.direction, self.tier)
        if self.created < 0:
            raise ValueError(f"{self.symbol}: created must be epoch ms >= 0; got {self.created}")
        for name in ("entry", "stop", "tp1", "tp2"):
            check_price(f"{self.symbol} {name}", getattr(self, name))
        s = self.sign
        if not (s * self.stop < s * self.entry < s * self.tp1 < s * self.tp2):
            order = "stop < entry < tp1 < tp2" if s > 0 else "stop > entry > tp1 > tp2"
            raise ValueError(
                f"{self.symbol} {self.direction}: need {order}; got stop={self.stop} entry={self.entry} "
                f"tp1={self.tp1} tp2={self.tp2}"
            )
        if not (math.isfinite(self.position_size) and self.position_size >= 0):
            raise ValueError(
                f"{self.symbol}: position_size must be finite and >= 0; got {self.position_size}"
            )
        if not (math.isfinite(self.quality_score) and 0 <= self.quality_score <= 100):
            raise ValueError(
                f"{self.symbol}: quality_score must be within [0, 100]; got {self.quality_score}"
            )
        if self.created_after_agg_id is not None and self.created_after_agg_id < 0:
            raise ValueError(
                f"{self.symbol}: created_after_agg_id must be >= 0; got {self.created_after_agg_id}"
            )

    @property
    def sign(self) -> float:
        return 1.0 if self.direction == "LONG" else -1.0

    @property
    def risk(self) -> float:
        """R: the stop distance per unit, at creation."""
        return abs(self.entry - self.stop)


def _tier_ms(values: Mapping[Tier, int], what: str) -> None:
    for tier in TIERS:
        if tier not in values or values[tier] <= 0:
            raise ValueError(f"{what} needs a value > 0 ms for {tier}; got {dict(values)}")


class OutcomeParams(msgspec.Struct, frozen=True, kw_only=True):
    """The rules' knobs: response window and upper hold bound per tier (ms), taker fee per side,
    share closed at TP1, and whether the stop moves to the entry at TP1."""

    response_ms: dict[Tier, int] = msgspec.field(
        default_factory=lambda: {"HIGH": 60_000, "MEDIUM": 300_000, "LOW": 900_000}
    )
    hold_ms: dict[Tier, int] = msgspec.field(
        default_factory=lambda: {"HIGH": 45 * MINUTE_MS, "MEDIUM": 90 * MINUTE_MS, "LOW": 180 * MINUTE_MS}
    )
    taker_fee: float = 0.0005
    tp1_share: float = TP1_SHARE
    move_stop_to_entry: bool = True

    def __post_init__(self) -> None:
        _tier_ms(self.response_ms, "response_ms")
        _tier_ms(self.hold_ms, "hold_ms")
        if not (math.isfinite(self.taker_fee) and 0 <= self.taker_fee < 0.01):
            raise ValueError(f"taker_fee must be within [0, 0.01); got {self.taker_fee}")
        # 1.0 would leave nothing for TP2: the TP1 state would already be final.
        if not (math.isfinite(self.tp1_share) and 0 <= self.tp1_share < 1):
            raise ValueError(f"tp1_share must be within [0, 1); got {self.tp1_share}")

    @classmethod
    def from_settings(cls, settings: Settings) -> OutcomeParams:
        levels = priority_levels(settings)
        return cls(
            response_ms={t: p.response_window_ms for t, p in levels.items()},
            hold_ms={t: p.hold_max_ms for t, p in levels.items()},
            taker_fee=settings.taker_fee,
            move_stop_to_entry=settings.move_stop_to_entry_at_tp1,
        )


class OutcomeEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A state change of a signal: the EXIT signal of TP1, TP2, STOPPED and EXPIRED (and TRIGGERED).

    ``price`` is the fill (None when expiring untriggered); ``closed_share`` the share of the position this
    event closed; ``realized_r`` the P&L in R after fees realised so far, this event included."""

    signal_id: str
    symbol: str
    state: OutcomeState
    time: int
    price: float | None
    closed_share: float
    realized_r: float


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of a signal as of event time ``as_of``: final when ``finished``, else provisional
    (``pnl_r``/``pnl_pct`` then hold what is realised so far). ``exit_time``/``exit_price`` are those of the
    event that finished it; ``last_price`` the last price seen while the position was open."""

    signal: OpenSignal
    state: OutcomeState
    as_of: int
    trigger_time: int | None = None
    tp1_time: int | None = None
    exit_time: int | None = None
    exit_price: float | None = None
    last_price: float | None = None
    pnl_r: float = 0.0
    pnl_pct: float = 0.0
    mfe_r: float = 0.0
    mae_r: float = 0.0
    events: tuple[OutcomeEvent, ...] = ()

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def triggered(self) -> bool:
        return self.trigger_time is not None

    @property
    def tp1_hit(self) -> bool:
        return self.tp1_time is not None

    @property
    def stopped_out(self) -> bool:
        """Stopped before TP1: a loss, which starts the cooldown of the symbol (a stop at the entry after
        TP1 is a break-even, not a stop-out)."""
        return self.state is OutcomeState.STOPPED and not self.tp1_hit

    @property
    def won(self) -> bool:
        """A triggered signal whose P&L in R after fees is above 0."""
        return self.triggered and self.pnl_r > 0

    @property
    def hold_ms(self) -> int | None:
        """From trigger to the end; None unless triggered and finished."""
        if self.trigger_time is None or self.exit_time is None:
            return None
        return self.exit_time - self.trigger_time
