"""The Redis operations of tapewatch, written once for the sync and the asyncio client (see redis_state).

Each operation is an ``Op``: the commands sent in one round trip (pipelined, optionally in MULTI/EXEC) and a
pure function turning the replies into a typed record (``redis_values``), or into a follow-up ``Op``.
Decoding never raises on bad stored values: they are logged and read as absent, so a hand-edited or corrupted
key cannot crash a process. Nothing here does I/O; ``redis_state`` runs the ops.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec

from tapewatch.adapters.redis_keys import Keyspace, check_symbol
from tapewatch.adapters.redis_values import (
    ControlEvent,
    ControlState,
    Heartbeat,
    LastEvent,
    SymbolFeed,
    decode_closes,
    decode_control,
    decode_event,
    decode_features,
    decode_feed,
    decode_heartbeat,
    decode_last,
    decode_metrics,
    decode_open_signals,
    encode_features,
    present_feeds,
)

T = TypeVar("T")
Clock = Callable[[], float]

#: Control-event stream length kept (approximately): enough history for the dashboard, bounded memory.
CONTROL_EVENTS_MAXLEN = 1000
#: Longest XREAD block: it must stay below the client's socket timeout.
MAX_BLOCK_MS = 5000

# Restores the control keys a Redis lost, atomically, so that several services (shards) doing it at once
# write each key and its event once: every key is SET NX (a command written since the loss wins), a key whose
# command has an event not from a restore is left alone (the events stream was lost with the keys, so such an
# event is newer than the loss: an operator's resume or clear leaves its key absent on purpose), an event is
# added only for a key actually written, and the marker is set NX. Returns the marker now held and the
# commands written. KEYS: marker, events stream, the control keys; ARGV: marker token, ts, source, stream
# maxlen, then a (command, value) pair per control key.
_RESTORE_CONTROL = """
local since = {}
for _, entry in ipairs(redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[4])) do
  local fields, command, source = entry[2], nil, nil
  for j = 1, #fields, 2 do
    if fields[j] == 'command' then command = fields[j + 1] elseif fields[j] == 'source' then source = fields[j + 1] end
  end
  if command and source and string.sub(source, -11) ~= ' (restored)' then since[command] = true end
end
local written = {}
for i = 3, #KEYS do
  local command, value = ARGV[2 * i - 1], ARGV[2 * i]
  if not since[command] and redis.call('SET', KEYS[i], value, 'NX') then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*',
      'command', command, 'value', value, 'ts', ARGV[2], 'source', ARGV[3])
    written[#written + 1] = command
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return {redis.call('GET', KEYS[1]), written}
"""


def new_marker() -> str:
    """A fresh control-marker token (unique: a replaced marker is told from the one a service knew)."""
    return uuid.uuid4().hex


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
        return Op((call("get", self.keys.heartbeat(component)),), lambda r: decode_heartbeat(r[0]))

    def heartbeats(self) -> Op[dict[str, Heartbeat | None]]:
        def read(replies: list[Any]) -> Op[dict[str, Heartbeat | None]]:
            names = sorted(replies[0])
            if not names:
                return done({})
            keys = [self.keys.heartbeat(name) for name in names]
            return Op(
                (call("mget", keys),), lambda r: dict(zip(names, map(decode_heartbeat, r[0]), strict=True))
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
        return Op((call("hgetall", self.keys.symbol_feed(symbol)),), lambda r: decode_feed(symbol, r[0]))

    def feeds(self) -> Op[dict[str, SymbolFeed]]:
        def read(replies: list[Any]) -> Op[dict[str, SymbolFeed]]:
            symbols = sorted(replies[0])
            calls = tuple(call("hgetall", self.keys.symbol_feed(s)) for s in symbols)
            return Op(
                calls, lambda r: present_feeds(dict(zip(symbols, map(decode_feed, symbols, r), strict=True)))
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
        return Op((call("hgetall", self.keys.metrics(component)),), lambda r: decode_metrics(component, r[0]))

    # --- newest signal / rescan --------------------------------------------------------------------------
    def set_last(self, key: str, info: Mapping[str, str | int | float | bool | None]) -> Op[None]:
        event = LastEvent(ts=self.now_ms(), info=dict(info))
        return Op((call("set", key, msgspec.json.encode(event)),), lambda _: None)

    def last(self, key: str) -> Op[LastEvent | None]:
        return Op((call("get", key),), lambda r: decode_last(key, r[0]))

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
                entries = decode_open_signals(replies[0])
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
        return Op((call("hgetall", self.keys.open_signals),), lambda r: decode_open_signals(r[0]))

    def publish_features(
        self, features: Mapping[str, tuple[int, Mapping[str, Any]]], ttl_s: float
    ) -> Op[None]:
        if ttl_s <= 0:
            raise ValueError(f"features ttl must be > 0 s; got {ttl_s}")
        px = max(1, int(ttl_s * 1000))
        calls = tuple(
            call("set", self.keys.symbol_features(symbol), encode_features(ts, values), px=px)
            for symbol, (ts, values) in features.items()
        )
        return Op(calls, lambda _: None)

    def symbol_features(self, symbol: str) -> Op[dict[str, Any] | None]:
        key = self.keys.symbol_features(symbol)
        return Op((call("get", key),), lambda r: decode_features(key, r[0]))

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
        return Op((call("get", key),), lambda r: decode_closes(key, r[0]))

    # --- control -------------------------------------------------------------------------------------
    def _control_names(self) -> tuple[str, str, str, str]:
        keys = self.keys
        return keys.control_universe, keys.control_paused, keys.control_backup_feed, keys.control_max_universe

    def read_control(self) -> Op[ControlState]:
        names = self._control_names()
        # Errors stay in the replies (a key of the wrong type): they make that key invalid, not the call fail.
        return Op(
            tuple(call("get", n) for n in names), lambda r: decode_control(names, r), raise_on_error=False
        )

    def read_control_marked(self) -> Op[tuple[ControlState, str | None]]:
        """The control values and the control marker (None: absent or unreadable), in one round trip."""
        names = self._control_names()

        def finish(replies: list[Any]) -> tuple[ControlState, str | None]:
            marker = replies[-1]
            return decode_control(names, replies[:-1]), marker if isinstance(marker, str) else None

        calls = (*(call("get", n) for n in names), call("get", self.keys.control_marker))
        return Op(calls, finish, raise_on_error=False)

    def set_control(self, key: str, command: str, value: str | None, source: str) -> Op[None]:
        change = call("set", key, value) if value is not None else call("delete", key)
        fields = {"command": command, "value": value or "", "ts": str(self.now_ms()), "source": source}
        event = call("xadd", self.keys.control_events, fields, maxlen=CONTROL_EVENTS_MAXLEN, approximate=True)
        # every write keeps the marker (a resume deletes only its key): its absence means lost data
        marker = call("set", self.keys.control_marker, new_marker(), nx=True)
        return Op((change, event, marker), lambda _: None, transaction=True)

    def restore_control(self, state: ControlState, source: str) -> Op[tuple[str, list[str]]]:
        """Write back the non-default values of ``state`` where their key is absent (one event each), and
        the marker where it is absent; yields the marker now held and the commands written. With a default
        ``state``: only make sure the marker exists."""
        keys = self.keys
        values = {
            "universe": (keys.control_universe, _encode_universe(state.universe)),
            "paused": (keys.control_paused, state.paused_reason),
            "backup_feed": (keys.control_backup_feed, "1" if state.backup_feed else None),
            "max_universe": (keys.control_max_universe, _optional_str(state.max_universe)),
        }
        kept = [(command, key, value) for command, (key, value) in values.items() if value is not None]
        args: list[str] = [new_marker(), str(self.now_ms()), source, str(CONTROL_EVENTS_MAXLEN)]
        for command, _, value in kept:
            args += [command, value]
        script = call(
            "eval",
            _RESTORE_CONTROL,
            2 + len(kept),
            keys.control_marker,
            keys.control_events,
            *(key for _, key, _ in kept),
            *args,
        )
        return Op((script,), lambda r: (str(r[0][0]), [str(c) for c in r[0][1]]))

    def set_universe(self, symbols: Sequence[str] | None, source: str) -> Op[None]:
        value = None
        if symbols is not None:
            if isinstance(symbols, str):
                raise TypeError("symbols must be a sequence of symbols, not one string")
            value = _encode_universe([check_symbol(s) for s in symbols])
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
        return Op((read,), lambda r: [decode_event(i, f) for _, entries in (r[0] or []) for i, f in entries])

    def last_control_event_id(self) -> Op[str]:
        return Op(
            (call("xrevrange", self.keys.control_events, count=1),), lambda r: r[0][0][0] if r[0] else "0-0"
        )


def _encode_universe(symbols: Sequence[str] | None) -> str | None:
    return None if symbols is None else msgspec.json.encode(list(symbols)).decode()


def _optional_str(value: int | None) -> str | None:
    return None if value is None else str(value)
