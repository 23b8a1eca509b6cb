"""The Redis operations of tapewatch, written once for the sync and the asyncio client (see redis_state).

Each operation is an ``Op``: the commands sent in one round trip (pipelined, optionally in MULTI/EXEC) and a
pure function turning the replies into a typed record, or into a follow-up ``Op``. Decoding never raises on
bad stored values: they are logged and read as absent, so a hand-edited or corrupted key cannot crash a
process. Nothing here does I/O; ``redis_state`` runs the ops.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec

from tapewatch.adapters.redis_keys import Keyspace, check_symbol

log = logging.getLogger(__name__)

T = TypeVar("T")
Clock = Callable[[], float]

#: Control-event stream length kept (approximately): enough history for the dashboard, bounded memory.
CONTROL_EVENTS_MAXLEN = 1000
#: Longest XREAD block: it must stay below the client's socket timeout.
MAX_BLOCK_MS = 5000


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

    ``state`` is the service's word for the book (e.g. ``synced``, ``resyncing``, ``stale``); book fields
    are None while the book is not usable. ``updated_ms`` is set on publishing (wall clock)."""

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
    # 1 % of mid (both sides), quote volume of the trade window, last trade price
    spread: float | None = None
    depth_1pct_usd: float | None = None
    quote_volume_window: float | None = None
    last_price: float | None = None
    # the signal engine on this symbol: evaluations, setups it could not judge (book not usable, no 15m
    # context) and the commonest reason; quiet_s: seconds without any event while other symbols flow
    evaluations: int = 0
    not_evaluated: int = 0
    not_evaluated_reason: str | None = None
    quiet_s: float | None = None
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


Call = tuple[str, tuple[Any, ...], dict[str, Any]]


def call(name: str, *args: Any, **kwargs: Any) -> Call:
    """One redis-py client method call (``name`` of the method, its arguments), to queue on a pipeline."""
    return name, args, kwargs


@dataclass(frozen=True, slots=True)
class Op(Generic[T]):
    """Commands sent in one round trip, and what to make of the replies: a result or a follow-up op."""

    calls: tuple[Call, ...]
    finish: Callable[[list[Any]], T | Op[T]]
    transaction: bool = False
    raise_on_error: bool = True


def done(value: T) -> Op[T]:
    """An op that sends nothing and yields ``value``: the end of a chain with nothing left to read."""
    return Op((), lambda _: value)


@dataclass(frozen=True, slots=True)
class Ops:
    """Every operation, built once for both clients."""

    keys: Keyspace
    clock: Clock
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # --- heartbeats ----------------------------------------------------------------------------------
    def beat(
        self, component: str, ttl_s: float, info: Mapping[str, str | int | float | bool] | None
    ) -> Op[None]:
        if ttl_s <= 0:
            raise ValueError(f"heartbeat ttl must be > 0 s; got {ttl_s}")
        beat = Heartbeat(
            component=component, ts=self.now_ms(), pid=self.pid, host=self.host, info=dict(info or {})
        )
        key = self.keys.heartbeat(component)
        calls = (
            call("set", key, msgspec.json.encode(beat), px=max(1, int(ttl_s * 1000))),
            call("sadd", self.keys.components, component),
        )
        return Op(calls, lambda _: None, transaction=True)

    def heartbeat(self, component: str) -> Op[Heartbeat | None]:
        return Op((call("get", self.keys.heartbeat(component)),), lambda r: _decode_heartbeat(r[0]))

    def heartbeats(self) -> Op[dict[str, Heartbeat | None]]:
        def read(replies: list[Any]) -> Op[dict[str, Heartbeat | None]]:
            names = sorted(replies[0])
            if not names:
                return done({})
            keys = [self.keys.heartbeat(name) for name in names]
            return Op(
                (call("mget", keys),), lambda r: dict(zip(names, map(_decode_heartbeat, r[0]), strict=True))
            )

        return Op((call("smembers", self.keys.components),), read)

    def forget_component(self, component: str) -> Op[None]:
        calls = (
            call("delete", self.keys.heartbeat(component)),
            call("srem", self.keys.components, component),
        )
        return Op(calls, lambda _: None, transaction=True)

    # --- per-symbol feed stats -----------------------------------------------------------------------
    def publish_feed(self, symbol: str, feed: SymbolFeed, ttl_s: float) -> Op[None]:
        key = self.keys.symbol_feed(symbol)
        fields = msgspec.structs.asdict(msgspec.structs.replace(feed, updated_ms=self.now_ms()))
        mapping = {
            name: repr(value) if isinstance(value, float) else str(value) for name, value in fields.items()
        }
        calls = (
            call("delete", key),  # replace, not merge: a field now None must not keep its old value
            call("hset", key, mapping={k: v for k, v in mapping.items() if fields[k] is not None}),
            call("pexpire", key, max(1, int(ttl_s * 1000))),
            call("sadd", self.keys.feed_symbols, symbol),
        )
        return Op(calls, lambda _: None, transaction=True)

    def feed(self, symbol: str) -> Op[SymbolFeed | None]:
        return Op((call("hgetall", self.keys.symbol_feed(symbol)),), lambda r: _decode_feed(symbol, r[0]))

    def feeds(self) -> Op[dict[str, SymbolFeed]]:
        def read(replies: list[Any]) -> Op[dict[str, SymbolFeed]]:
            symbols = sorted(replies[0])
            calls = tuple(call("hgetall", self.keys.symbol_feed(s)) for s in symbols)
            return Op(
                calls, lambda r: _present(dict(zip(symbols, map(_decode_feed, symbols, r), strict=True)))
            )

        return Op((call("smembers", self.keys.feed_symbols),), read)

    def remove_feed(self, symbol: str) -> Op[None]:
        calls = (
            call("delete", self.keys.symbol_feed(symbol)),
            call("srem", self.keys.feed_symbols, symbol),
        )
        return Op(calls, lambda _: None, transaction=True)

    # --- metrics -------------------------------------------------------------------------------------
    def publish_metrics(self, values: Mapping[str, int | float], component: str) -> Op[None]:
        key = self.keys.metrics(component)
        mapping = {name: repr(float(value)) for name, value in values.items()}
        mapping["updated_ms"] = str(self.now_ms())
        return Op((call("delete", key), call("hset", key, mapping=mapping)), lambda _: None, transaction=True)

    def metrics(self, component: str) -> Op[dict[str, float]]:
        return Op(
            (call("hgetall", self.keys.metrics(component)),), lambda r: _decode_metrics(component, r[0])
        )

    # --- newest signal / rescan --------------------------------------------------------------------------
    def set_last(self, key: str, info: Mapping[str, str | int | float | bool | None]) -> Op[None]:
        event = LastEvent(ts=self.now_ms(), info=dict(info))
        return Op((call("set", key, msgspec.json.encode(event)),), lambda _: None)

    def last(self, key: str) -> Op[LastEvent | None]:
        return Op((call("get", key),), lambda r: _decode_last(key, r[0]))

    # --- open signals and per-symbol features (the dashboard's live view) --------------------------------
    def update_open_signals(
        self,
        changed: Mapping[str, Mapping[str, Any]],
        removed: Sequence[str],
        replace: bool,
        owns: Callable[[str], bool] | None = None,
    ) -> Op[None]:
        key = self.keys.open_signals
        if replace and owns is not None:
            # a shard's rebuild: read the hash, then drop only the entries of the symbols it owns (the
            # other shards' open signals stay)
            def scoped(replies: list[Any]) -> Op[None]:
                entries = _decode_open_signals(replies[0])
                stale = [
                    sid for sid, v in entries.items() if owns(str(v.get("symbol", ""))) and sid not in changed
                ]
                return self.update_open_signals(changed, stale, replace=False)

            return Op((call("hgetall", key),), scoped)
        calls: list[Call] = []
        if replace:
            calls.append(call("delete", key))  # a rebuild: signals finished while the service was down go
        elif removed:
            calls.append(call("hdel", key, *removed))
        if changed:
            mapping = {sid: msgspec.json.encode(dict(value)).decode() for sid, value in changed.items()}
            calls.append(call("hset", key, mapping=mapping))
        return Op(tuple(calls), lambda _: None, transaction=True)

    def open_signals(self) -> Op[dict[str, dict[str, Any]]]:
        return Op((call("hgetall", self.keys.open_signals),), lambda r: _decode_open_signals(r[0]))

    def publish_features(
        self, features: Mapping[str, tuple[int, Mapping[str, Any]]], ttl_s: float
    ) -> Op[None]:
        if ttl_s <= 0:
            raise ValueError(f"features ttl must be > 0 s; got {ttl_s}")
        px = max(1, int(ttl_s * 1000))
        calls = tuple(
            call("set", self.keys.symbol_features(symbol), _encode_features(ts, values), px=px)
            for symbol, (ts, values) in features.items()
        )
        return Op(calls, lambda _: None)

    def symbol_features(self, symbol: str) -> Op[dict[str, Any] | None]:
        key = self.keys.symbol_features(symbol)
        return Op((call("get", key),), lambda r: _decode_features(key, r[0]))

    # --- 1m closes of each shard's symbols (the other shards' correlation rule) ---------------------------
    def publish_closes(self, closes: Mapping[str, Sequence[tuple[int, float]]], ttl_s: float) -> Op[None]:
        if ttl_s <= 0:
            raise ValueError(f"closes ttl must be > 0 s; got {ttl_s}")
        px, ts = max(1, int(ttl_s * 1000)), self.now_ms()
        calls = tuple(
            call("set", self.keys.closes(symbol), msgspec.json.encode({"ts": ts, "bars": list(bars)}), px=px)
            for symbol, bars in closes.items()
        )
        return Op(calls, lambda _: None)

    def closes(self, symbol: str) -> Op[list[tuple[int, float]] | None]:
        key = self.keys.closes(symbol)
        return Op((call("get", key),), lambda r: _decode_closes(key, r[0]))

    # --- control -------------------------------------------------------------------------------------
    def read_control(self) -> Op[ControlState]:
        keys = self.keys
        names = (
            keys.control_universe,
            keys.control_paused,
            keys.control_backup_feed,
            keys.control_max_universe,
        )
        # Errors stay in the replies (a key of the wrong type): they make that key invalid, not the call fail.
        return Op(
            tuple(call("get", n) for n in names), lambda r: _decode_control(names, r), raise_on_error=False
        )

    def set_control(self, key: str, command: str, value: str | None, source: str) -> Op[None]:
        change = call("set", key, value) if value is not None else call("delete", key)
        fields = {"command": command, "value": value or "", "ts": str(self.now_ms()), "source": source}
        event = call("xadd", self.keys.control_events, fields, maxlen=CONTROL_EVENTS_MAXLEN, approximate=True)
        return Op((change, event), lambda _: None, transaction=True)

    def set_universe(self, symbols: Sequence[str] | None, source: str) -> Op[None]:
        value = None
        if symbols is not None:
            if isinstance(symbols, str):
                raise TypeError("symbols must be a sequence of symbols, not one string")
            value = msgspec.json.encode([check_symbol(s) for s in symbols]).decode()
        return self.set_control(self.keys.control_universe, "universe", value, source)

    def set_max_universe(self, limit: int | None, source: str) -> Op[None]:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"max_universe must be a positive integer or None; got {limit!r}")
        value = None if limit is None else str(limit)
        return self.set_control(self.keys.control_max_universe, "max_universe", value, source)

    def control_events(self, after: str, block_ms: int | None, count: int) -> Op[list[ControlEvent]]:
        if block_ms is not None and not 0 <= block_ms <= MAX_BLOCK_MS:
            raise ValueError(f"block_ms must be within 0..{MAX_BLOCK_MS}; got {block_ms}")
        read = call("xread", {self.keys.control_events: after}, count=count, block=block_ms)
        return Op((read,), lambda r: [_decode_event(i, f) for _, entries in (r[0] or []) for i, f in entries])

    def last_control_event_id(self) -> Op[str]:
        return Op(
            (call("xrevrange", self.keys.control_events, count=1),), lambda r: r[0][0][0] if r[0] else "0-0"
        )


# --- decoding (pure; bad values are logged and skipped, never raised) ---------------------------------


def _decode_heartbeat(raw: str | None) -> Heartbeat | None:
    if raw is None:
        return None
    try:
        return msgspec.json.decode(raw, type=Heartbeat)
    except msgspec.DecodeError as exc:
        log.warning("unreadable heartbeat %r: %s", raw[:200], exc)
        return None


def _decode_last(key: str, raw: str | None) -> LastEvent | None:
    if raw is None:
        return None
    try:
        return msgspec.json.decode(raw, type=LastEvent)
    except msgspec.DecodeError as exc:
        log.warning("unreadable %s %r: %s", key, raw[:200], exc)
        return None


def _encode_features(ts: int, values: Mapping[str, Any]) -> bytes:
    return msgspec.json.encode({"ts": ts, "features": dict(values)})


class _Closes(msgspec.Struct, frozen=True):
    ts: int
    bars: list[tuple[int, float]]


def _decode_closes(key: str, raw: str | None) -> list[tuple[int, float]] | None:
    if raw is None:
        return None  # expired, or never published
    try:
        return msgspec.json.decode(raw, type=_Closes).bars
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.warning("unreadable %s %r: %s", key, raw[:200], exc)
        return None


def _decode_features(key: str, raw: str | None) -> dict[str, Any] | None:
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


def _decode_open_signals(raw: dict[str, str]) -> dict[str, dict[str, Any]]:
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


def _decode_feed(symbol: str, raw: dict[str, str]) -> SymbolFeed | None:
    if not raw:
        return None  # expired, or never published
    try:
        return msgspec.convert(raw, SymbolFeed, strict=False)
    except msgspec.ValidationError as exc:
        log.warning("unreadable feed stats of %s: %s", symbol, exc, extra={"symbol": symbol})
        return None


def _present(feeds: dict[str, SymbolFeed | None]) -> dict[str, SymbolFeed]:
    return {symbol: feed for symbol, feed in feeds.items() if feed is not None}


def _decode_metrics(component: str, raw: dict[str, str]) -> dict[str, float]:
    values: dict[str, float] = {}
    for name, text in raw.items():
        try:
            values[name] = float(text)
        except ValueError:
            log.warning("metric %s of %s is not a number: %r", name, component, text[:100])
    return values


def _decode_control(names: tuple[str, str, str, str], replies: list[Any]) -> ControlState:
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


def _decode_event(entry_id: str, fields: dict[str, str]) -> ControlEvent:
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
