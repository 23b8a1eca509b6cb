"""The values tapewatch keeps in Redis: the typed records (heartbeats, feed stats, control state, ...) and
their encoding and decoding.

Decoding is pure and never raises on bad stored values: they are logged and read as absent (or, for control
keys, named in ``ControlState.invalid``), so a hand-edited or corrupted key cannot crash a process. The
operations that read and write them are in ``redis_ops``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

import msgspec

from tapewatch.adapters.redis_keys import check_symbol

log = logging.getLogger(__name__)

T = TypeVar("T")


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """A component's sign of life: who, when (wall clock, ms), which process, and free-form details."""

    component: str
    ts: int
    pid: int
    host: str = ""
    info: dict[str, str | int | float | bool] = {}

    def age(self, now_ms: int) -> float:
        """Seconds since the heartbeat was sent."""
        return max(0, now_ms - self.ts) / 1000


class SymbolFeed(msgspec.Struct, frozen=True, kw_only=True):
    """Live feed stats and book health of one symbol, as the realtime service last published them.

    ``state`` is the service's word for the book (``synced``; ``syncing`` before its first sync, ``resyncing``
    out of sync after it; ``stale``; ``crossed``); book fields are None while the book is not usable.
    ``updated_ms`` is set on publishing (wall clock)."""

    state: str = ""
    update_id: int | None = None
    best_bid: float | None = None
    best_ask: float | None = None
    imbalance_top10: float | None = None
    last_event_ms: int | None = None
    lag_ms: float | None = None
    messages: int = 0
    gaps: int = 0
    resyncs: int = 0
    malformed: int = 0
    book_checks: int = 0
    book_mismatches: int = 0
    # liquidity as the emergency-exclusion sensor reads it: relative spread (ask-bid)/mid, USD resting within
    # 1 % of mid (both sides), quote volume of the trade window and the seconds of trades it covers (less
    # than the window for a while after the service started or the symbol joined), last trade price
    spread: float | None = None
    depth_1pct_usd: float | None = None
    quote_volume_window: float | None = None
    window_covered_s: float | None = None
    last_price: float | None = None
    # the signal engine on this symbol: evaluations, setups it could not judge (book not usable, no 15m
    # context) and the commonest reason; quiet_s: seconds without any event while other symbols flow
    evaluations: int = 0
    not_evaluated: int = 0
    not_evaluated_reason: str | None = None
    quiet_s: float | None = None
    # the realtime instance that published these stats (``tapewatch run --shard I/N``'s ``I/N``, ``0/1``
    # unsharded; "" from a service that predates the field): the emergency sensor judges silence per shard
    shard: str = ""
    updated_ms: int = 0


class ControlState(msgspec.Struct, frozen=True, kw_only=True):
    """What the platform currently asks of the realtime service.

    ``invalid`` names control keys holding a value that could not be read (logged and ignored, so the
    service keeps its previous behaviour for them and can count the problem)."""

    universe: tuple[str, ...] | None = None
    paused_reason: str | None = None
    backup_feed: bool = False
    max_universe: int | None = None
    invalid: tuple[str, ...] = ()

    @property
    def paused(self) -> bool:
        return self.paused_reason is not None


class ControlEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of the control stream: which control changed, to what, when (ms) and by whom."""

    id: str
    command: str
    value: str
    ts: int
    source: str


class LastEvent(msgspec.Struct, frozen=True, kw_only=True):
    """The newest occurrence of something (a signal, a universe rescan): when it was recorded (wall clock,
    ms) and a few details (``signal_id``, ``symbol``, ``run_id``, ...)."""

    ts: int
    info: dict[str, str | int | float | bool | None] = {}

    def age(self, now_ms: int) -> float:
        """Seconds since it was recorded."""
        return max(0, now_ms - self.ts) / 1000


# --- encoding and decoding (pure; bad values are logged and skipped, never raised) -----------------------


def _decode(raw: str | None, type_: type[T], what: str) -> T | None:
    """``raw`` JSON as ``type_``; None when absent (expired, never published) or unreadable (logged as
    ``what``)."""
    if raw is None:
        return None
    try:
        return msgspec.json.decode(raw, type=type_)
    except msgspec.DecodeError as exc:  # ValidationError included
        log.warning("unreadable %s %r: %s", what, raw[:200], exc)
        return None


def decode_heartbeat(raw: str | None) -> Heartbeat | None:
    return _decode(raw, Heartbeat, "heartbeat")


def decode_last(key: str, raw: str | None) -> LastEvent | None:
    return _decode(raw, LastEvent, key)


def encode_features(ts: int, values: Mapping[str, Any]) -> bytes:
    return msgspec.json.encode({"ts": ts, "features": dict(values)})


class _Closes(msgspec.Struct, frozen=True):
    ts: int
    bars: list[tuple[int, float]]


def decode_closes(key: str, raw: str | None) -> list[tuple[int, float]] | None:
    closes = _decode(raw, _Closes, key)
    return None if closes is None else closes.bars


def decode_features(key: str, raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None  # expired, or never published
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        log.warning("unreadable %s %r: %s", key, raw[:200], exc)
        return None
    if not isinstance(value, dict) or not isinstance(value.get("features"), dict):
        log.warning("%s is not {ts, features}: %r", key, raw[:200])
        return None
    return value


def decode_open_signals(raw: dict[str, str]) -> dict[str, dict[str, Any]]:
    signals: dict[str, dict[str, Any]] = {}
    for signal_id, text in raw.items():
        try:
            value = msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            log.warning("unreadable open signal %s %r: %s", signal_id, text[:200], exc)
            continue
        if isinstance(value, dict):
            signals[signal_id] = value
        else:
            log.warning("open signal %s is not a JSON object: %r", signal_id, text[:200])
    return signals


def decode_feed(symbol: str, raw: dict[str, str]) -> SymbolFeed | None:
    if not raw:
        return None  # expired, or never published
    try:
        return msgspec.convert(raw, SymbolFeed, strict=False)
    except msgspec.ValidationError as exc:
        log.warning("unreadable feed stats of %s: %s", symbol, exc, extra={"symbol": symbol})
        return None


def present_feeds(feeds: dict[str, SymbolFeed | None]) -> dict[str, SymbolFeed]:
    return {symbol: feed for symbol, feed in feeds.items() if feed is not None}


def decode_metrics(component: str, raw: dict[str, str]) -> dict[str, float]:
    values: dict[str, float] = {}
    for name, text in raw.items():
        try:
            values[name] = float(text)
        except ValueError:
            log.warning("metric %s of %s is not a number: %r", name, component, text[:100])
    return values


def decode_control(names: tuple[str, str, str, str], replies: list[Any]) -> ControlState:
    invalid: list[str] = []

    def text(i: int) -> str | None:
        reply = replies[i]
        if isinstance(reply, Exception):
            log.warning("control key %s is unreadable (%s); ignoring it", names[i], reply)
            invalid.append(names[i])
            return None
        return reply if isinstance(reply, str) else None

    def parse(i: int, convert: Callable[[str], T]) -> T | None:
        raw = text(i)
        if raw is None:
            return None
        try:
            return convert(raw)
        except (ValueError, msgspec.DecodeError) as exc:
            log.warning("control key %s holds %r (%s); ignoring it", names[i], raw[:200], exc)
            invalid.append(names[i])
            return None

    universe = parse(0, _parse_universe)
    paused = text(1)
    backup = parse(2, _parse_flag)
    limit = parse(3, _parse_positive_int)
    return ControlState(
        universe=universe,
        paused_reason=paused,
        backup_feed=bool(backup),
        max_universe=limit,
        invalid=tuple(invalid),
    )


def _parse_universe(raw: str) -> tuple[str, ...]:
    return tuple(check_symbol(s) for s in msgspec.json.decode(raw, type=list[str]))


def _parse_flag(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        raise ValueError("expected 1 or 0")
    return lowered in ("1", "true", "yes", "on")


def _parse_positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("expected a positive integer")
    return value


def decode_event(entry_id: str, fields: dict[str, str]) -> ControlEvent:
    try:
        ts = int(fields.get("ts", "0"))
    except ValueError:
        ts = 0
    return ControlEvent(
        id=entry_id,
        command=fields.get("command", ""),
        value=fields.get("value", ""),
        ts=ts,
        source=fields.get("source", ""),
    )


#: How a sensor's tick ended: it returned runs to launch or nothing to say (``ok``), a skip reason
#: (``skipped``: the health sensors say what they saw and did this way), or it raised (``error``).
TickOutcome = Literal["ok", "skipped", "error"]
#: Longest reason kept with a tick (the Dagster UI has the whole of it).
MAX_TICK_REASON = 500


class SensorTick(msgspec.Struct, frozen=True, kw_only=True):
    """A Dagster sensor's last tick: when it ended (``ts``, wall clock ms), how (``outcome``) and why
    (``reason``: the skip reason, or the error), the sensor's ``interval_s``, the ticks in a row that raised
    (``errors``; 0 after one that completed) and when it last completed one (``completed_ms``; None: never)."""

    ts: int
    outcome: TickOutcome
    reason: str = ""
    interval_s: float
    errors: int = 0
    completed_ms: int | None = None

    def age(self, now_ms: int) -> float:
        """Seconds since the tick ended."""
        return max(0, now_ms - self.ts) / 1000

    @classmethod
    def after(
        cls, previous: SensorTick | None, *, ts: int, outcome: TickOutcome, reason: str, interval_s: float
    ) -> SensorTick:
        """The tick ending at ``ts``, following ``previous`` (None: the sensor's first)."""
        failed = outcome == "error"
        errors = (previous.errors if previous is not None else 0) + 1 if failed else 0
        completed = (previous.completed_ms if previous is not None else None) if failed else ts
        return cls(
            ts=ts,
            outcome=outcome,
            reason=reason[:MAX_TICK_REASON],
            interval_s=interval_s,
            errors=errors,
            completed_ms=completed,
        )


def decode_tick(sensor: str, raw: str | None) -> SensorTick | None:
    """The stored tick of ``sensor``; None when absent or unreadable (logged)."""
    return _decode(raw, SensorTick, f"tick of sensor {sensor}")
