"""Typed access to the live state in Redis: heartbeats, per-symbol feed stats, metrics, control keys.

``AsyncRedisState`` (redis.asyncio) is what the realtime service writes with; ``RedisState`` (sync) is what
tools read and command with (``tapewatch status``, Dagster, the dashboard). Each operation is written once,
in ``redis_ops``, and run here by either client. Any Redis failure surfaces as StorageUnavailable, so a caller can count it and carry on::

    try:
        await state.beat(REALTIME)
    except StorageUnavailable:
        counters["redis_errors"] += 1
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import msgspec
import redis
import redis.asyncio
import redis.asyncio.retry
import redis.retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff

from tapewatch.adapters.cancels import honouring_cancel
from tapewatch.adapters.redis_keys import KEYS, REALTIME, Keyspace
from tapewatch.adapters.redis_ops import MAX_BLOCK_MS, Clock, Op, Ops, T, call
from tapewatch.adapters.redis_values import (
    ControlEvent,
    ControlState,
    Heartbeat,
    LastEvent,
    SensorTick,
    SymbolFeed,
    TickOutcome,
    decode_tick,
)
from tapewatch.errors import ConfigError, StorageUnavailable

# The records callers use, importable from here with the classes that return them.
__all__ = [
    "MAX_BLOCK_MS",
    "AsyncRedisState",
    "ControlEvent",
    "ControlState",
    "Heartbeat",
    "LastEvent",
    "RedisState",
    "SensorTick",
    "SymbolFeed",
    "TickOutcome",
]

log = logging.getLogger(__name__)

_SOCKET_TIMEOUT = 10.0  # > MAX_BLOCK_MS: a blocking XREAD must end before the socket gives up on it
_CONNECT_TIMEOUT = 3.0
_RETRIES = 2


# --- running ops --------------------------------------------------------------------------------------


def _describe(client: redis.Redis | redis.asyncio.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    return f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


@contextmanager
def _storage_errors(where: str) -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise StorageUnavailable(
            f"Redis at {where} is unavailable ({type(exc).__name__}: {exc}). Check that the server is running "
            "and that TAPEWATCH_REDIS_URL points to it (leave it unset to use the embedded server under the "
            "var dir)."
        ) from exc


def _client_options(
    url: str, retry: type[redis.retry.Retry] | type[redis.asyncio.retry.Retry]
) -> dict[str, Any]:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"Redis URL must start with redis://, rediss:// or unix://; got {url.split(':')[0]!r}"
        )
    return {
        "decode_responses": True,
        "protocol": 2,  # the reply shapes the decoders expect (RESP3 nests XREAD replies differently)
        "socket_connect_timeout": _CONNECT_TIMEOUT,
        "socket_timeout": _SOCKET_TIMEOUT,
        "health_check_interval": 30,
        # redis-py's default (10 retries) blocks a caller ~4 s per call while Redis is down; a couple of
        # quick retries ride out a blip, then the caller hears StorageUnavailable and counts it.
        "retry": retry(ExponentialWithJitterBackoff(cap=0.25, base=0.05), _RETRIES),
    }


def realtime_shards(components: Iterable[str]) -> list[str]:
    """The realtime shards (``realtime-0of2``, ...) among ``components``, sorted."""
    return sorted(c for c in components if c.startswith(REALTIME + "-"))


#: Metric name endings that are latencies or levels: shards combine them by their worst, not their sum.
_WORST_OF = ("_p50", "_p99", "_max", "_ms")


def combine_metrics(snapshots: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Several shards' metrics as one realtime: counters and rates summed, latency and lag figures (names
    ending ``_p50``, ``_p99``, ``_max``, ``_ms``) the worst shard's, ``updated_ms`` the oldest."""
    total: dict[str, float] = {}
    for values in snapshots:
        for name, value in values.items():
            if name == "updated_ms":
                total[name] = min(total.get(name, value), value)
            elif name.endswith(_WORST_OF):
                total[name] = max(total.get(name, value), value)
            else:
                total[name] = total.get(name, 0.0) + value
    return total


class RedisState:
    """Synchronous access for tools: read everything, change control keys, publish heartbeats."""

    def __init__(self, client: redis.Redis, *, keys: Keyspace = KEYS, clock: Clock = time.time) -> None:
        self.client = client
        self.keys = keys
        self._ops = Ops(keys, clock)
        self._where = _describe(client)

    @classmethod
    def from_url(
        cls, url: str, *, keys: Keyspace = KEYS, clock: Clock = time.time, timeout_s: float | None = None
    ) -> RedisState:
        """A state on a new client for ``url`` (``redis://``, ``rediss://`` or ``unix://``). ``timeout_s``: a
        client for a caller that must not wait (the event loop): that long to connect and to answer, and no
        retry; None: the shared defaults (a few quick retries)."""
        options = _client_options(url, redis.retry.Retry)
        if timeout_s is not None:
            options |= {
                "socket_connect_timeout": timeout_s,
                "socket_timeout": timeout_s,
                "retry": redis.retry.Retry(NoBackoff(), 0),
            }
        return cls(redis.Redis.from_url(url, **options), keys=keys, clock=clock)

    def close(self) -> None:
        self.client.close()

    def _run(self, op: Op[T]) -> T:
        while True:
            with _storage_errors(self._where):
                pipe = self.client.pipeline(transaction=op.transaction)
                for name, args, kwargs in op.calls:
                    getattr(pipe, name)(*args, **kwargs)
                replies = pipe.execute(raise_on_error=op.raise_on_error)
            result = op.finish(replies)
            if not isinstance(result, Op):
                return result
            op = result

    def ping(self) -> None:
        """Return when Redis answers; raise StorageUnavailable with advice otherwise."""
        self._run(Op((call("ping"),), lambda _: None))

    def beat(
        self,
        component: str,
        *,
        ttl_s: float = 30.0,
        info: Mapping[str, str | int | float | bool] | None = None,
    ) -> None:
        """Record that ``component`` is alive; the heartbeat expires after ``ttl_s`` unless renewed."""
        self._run(self._ops.beat(component, ttl_s, info))

    def heartbeat(self, component: str) -> Heartbeat | None:
        """The live heartbeat of ``component``; None when it expired (the component is down) or is unreadable."""
        return self._run(self._ops.heartbeat(component))

    def heartbeats(self) -> dict[str, Heartbeat | None]:
        """Every component that ever beat, with its live heartbeat or None (down)."""
        return self._run(self._ops.heartbeats())

    def forget_component(self, component: str) -> None:
        """Drop a decommissioned component so that status stops reporting it down."""
        self._run(self._ops.forget_component(component))

    def feed(self, symbol: str) -> SymbolFeed | None:
        """The feed stats of ``symbol``; None when expired, never published or unreadable."""
        return self._run(self._ops.feed(symbol))

    def feeds(self) -> dict[str, SymbolFeed]:
        """The feed stats of every symbol that has them."""
        return self._run(self._ops.feeds())

    def metrics(self, component: str = REALTIME) -> dict[str, float]:
        """The last metrics snapshot of ``component`` (``updated_ms`` included); {} when there is none."""
        return self._run(self._ops.metrics(component))

    def realtime_metrics(self) -> dict[str, float]:
        """The realtime service's metrics: the single instance's when its heartbeat is live, else the live
        shards' (``realtime-IofN``, from ``tapewatch run --shard I/N``) combined by :func:`combine_metrics`.
        Components are remembered after their heartbeat expires, so a dead shard counts only when nothing is
        alive: then every shard's last figures (or the single instance's when there never were shards)."""
        beats = self.heartbeats()
        if beats.get(REALTIME) is not None:
            return self.metrics(REALTIME)
        shards = realtime_shards(beats)
        live = [name for name in shards if beats[name] is not None]
        if live or shards:
            return combine_metrics([self.metrics(name) for name in live or shards])
        return self.metrics(REALTIME)

    def set_last_signal(self, info: Mapping[str, str | int | float | bool | None]) -> None:
        """Record the newest published signal (``info``: signal_id, symbol, direction, ...), stamped now."""
        self._run(self._ops.set_last(self.keys.last_signal, info))

    def last_signal(self) -> LastEvent | None:
        """The newest published signal; None when none was ever recorded (or it is unreadable)."""
        return self._run(self._ops.last(self.keys.last_signal))

    def set_last_rescan(self, info: Mapping[str, str | int | float | bool | None]) -> None:
        """Record the newest universe rescan (``info``: run_id, symbols, ...), stamped now."""
        self._run(self._ops.set_last(self.keys.last_rescan, info))

    def last_rescan(self) -> LastEvent | None:
        """The newest universe rescan; None when none was ever recorded (or it is unreadable)."""
        return self._run(self._ops.last(self.keys.last_rescan))

    def open_signals(self) -> dict[str, dict[str, Any]]:
        """The open ENTRY signals by signal_id: the spec 8.2 fields plus ``state`` (WAITING, TRIGGERED, TP1),
        ``unrealised_r``, ``realised_r``, ``last_price``, ``updated_ms``; {} when none (unreadable entries
        are logged and skipped)."""
        return self._run(self._ops.open_signals())

    def symbol_features(self, symbol: str) -> dict[str, Any] | None:
        """``{"ts", "features"}`` of the symbol's last evaluation (``ts``: its event time, ms); None when
        expired, never published or unreadable."""
        return self._run(self._ops.symbol_features(symbol))

    def closes(self, symbol: str) -> list[tuple[int, float]] | None:
        """(open time, close) of ``symbol``'s last closed 1m candles, oldest first, as its shard published
        them; None when expired, never published or unreadable."""
        return self._run(self._ops.closes(symbol))

    def read_control(self) -> ControlState:
        """The current control values (unreadable ones are listed in ``invalid`` and ignored)."""
        return self._run(self._ops.read_control())

    def set_universe(self, symbols: Sequence[str] | None, *, source: str) -> None:
        """Make the service follow ``symbols`` (None: let it choose again). ValueError for a bad symbol."""
        self._run(self._ops.set_universe(symbols, source))

    def pause(self, reason: str, *, source: str) -> None:
        """Pause signalling (the service keeps its books and capture) until ``resume``."""
        if not reason:
            raise ValueError("a pause needs a reason: it is shown to operators")
        self._run(self._ops.set_control(self.keys.control_paused, "paused", reason, source))

    def resume(self, *, source: str) -> None:
        """Resume signalling."""
        self._run(self._ops.set_control(self.keys.control_paused, "paused", None, source))

    def set_backup_feed(self, on: bool, *, source: str) -> None:
        """Switch the service to the backup market-data feed (True) or back to the primary one."""
        self._run(
            self._ops.set_control(self.keys.control_backup_feed, "backup_feed", "1" if on else None, source)
        )

    def set_max_universe(self, limit: int | None, *, source: str) -> None:
        """Cap the number of symbols the service follows (None: no cap). ValueError unless ``limit >= 1``."""
        self._run(self._ops.set_max_universe(limit, source))

    def control_events(self, after: str = "0-0", *, count: int = 100) -> list[ControlEvent]:
        """Control changes after stream id ``after`` (oldest first, at most ``count``)."""
        return self._run(self._ops.control_events(after, None, count))

    def newest_control_events(self) -> dict[str, ControlEvent]:
        """The newest control event of each command in the control stream (capped near 1,000 entries): who set
        each control value last, and when."""
        newest: dict[str, ControlEvent] = {}
        after = "0-0"
        while events := self.control_events(after, count=500):
            newest |= {event.command: event for event in events}
            after = events[-1].id
        return newest

    def record_sensor_tick(
        self, sensor: str, outcome: TickOutcome, reason: str = "", *, interval_s: float
    ) -> SensorTick:
        """Record that Dagster sensor ``sensor`` ended a tick now (``outcome``, ``reason``; its interval
        ``interval_s``), counting the ticks in a row that raised; the tick recorded. Each sensor's ticks are
        evaluated one at a time, so reading the previous one first is safe."""
        key = self.keys.sensor_ticks

        def write(replies: list[Any]) -> Op[SensorTick]:
            tick = SensorTick.after(
                decode_tick(sensor, replies[0]),
                ts=self._ops.now_ms(),
                outcome=outcome,
                reason=reason,
                interval_s=interval_s,
            )
            return Op((call("hset", key, sensor, msgspec.json.encode(tick)),), lambda _: tick)

        read_first: Op[SensorTick] = Op((call("hget", key, sensor),), write)
        return self._run(read_first)

    def sensor_ticks(self) -> dict[str, SensorTick]:
        """The last tick of every sensor that recorded one, by name (unreadable ones are logged and left out)."""

        def read(replies: list[Any]) -> dict[str, SensorTick]:
            ticks = {name: decode_tick(name, raw) for name, raw in (replies[0] or {}).items()}
            return {name: tick for name, tick in ticks.items() if tick is not None}

        return self._run(Op((call("hgetall", self.keys.sensor_ticks),), read))


class AsyncRedisState:
    """Asynchronous access for the realtime service: publish its state, read and wait for control changes."""

    def __init__(
        self, client: redis.asyncio.Redis, *, keys: Keyspace = KEYS, clock: Clock = time.time
    ) -> None:
        self.client = client
        self.keys = keys
        self._ops = Ops(keys, clock)
        self._where = _describe(client)

    @classmethod
    def from_url(cls, url: str, *, keys: Keyspace = KEYS, clock: Clock = time.time) -> AsyncRedisState:
        """A state on a new asyncio client for ``url`` (``redis://``, ``rediss://`` or ``unix://``)."""
        client = redis.asyncio.Redis.from_url(url, **_client_options(url, redis.asyncio.retry.Retry))
        return cls(client, keys=keys, clock=clock)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _run(self, op: Op[T]) -> T:
        while True:
            with _storage_errors(self._where):
                pipe = self.client.pipeline(transaction=op.transaction)
                for name, args, kwargs in op.calls:
                    getattr(pipe, name)(*args, **kwargs)
                replies = await honouring_cancel(pipe.execute(raise_on_error=op.raise_on_error))
            result = op.finish(replies)
            if not isinstance(result, Op):
                return result
            op = result

    async def ping(self) -> None:
        """Return when Redis answers; raise StorageUnavailable with advice otherwise."""
        await self._run(Op((call("ping"),), lambda _: None))

    async def beat(
        self,
        component: str = REALTIME,
        *,
        ttl_s: float = 30.0,
        info: Mapping[str, str | int | float | bool] | None = None,
    ) -> None:
        """Record that ``component`` is alive; the heartbeat expires after ``ttl_s`` unless renewed."""
        await self._run(self._ops.beat(component, ttl_s, info))

    async def publish_feed(self, symbol: str, feed: SymbolFeed, *, ttl_s: float = 300.0) -> None:
        """Replace the feed stats of ``symbol`` (they expire after ``ttl_s`` unless published again)."""
        await self._run(self._ops.publish_feed(symbol, feed, ttl_s))

    async def remove_feed(self, symbol: str) -> None:
        """Drop the feed stats of a symbol that left the universe."""
        await self._run(self._ops.remove_feed(symbol))

    async def publish_feeds(
        self, feeds: Mapping[str, SymbolFeed], *, removed: Iterable[str] = (), ttl_s: float = 300.0
    ) -> None:
        """``publish_feed`` of every symbol of ``feeds`` and ``remove_feed`` of every symbol of ``removed``, in
        one round trip (one transaction): a slow Redis costs the publish one reply, not one per symbol."""
        ops = [self._ops.publish_feed(symbol, feed, ttl_s) for symbol, feed in feeds.items()]
        ops += [self._ops.remove_feed(symbol) for symbol in removed]
        if ops:
            await self._run(Op(tuple(c for op in ops for c in op.calls), lambda _: None, transaction=True))

    async def publish_metrics(self, values: Mapping[str, int | float], component: str = REALTIME) -> None:
        """Replace the metrics snapshot of ``component`` (``updated_ms`` is added)."""
        await self._run(self._ops.publish_metrics(values, component))

    async def set_last_signal(self, info: Mapping[str, str | int | float | bool | None]) -> None:
        """Record the newest published signal (``info``: signal_id, symbol, direction, ...), stamped now."""
        await self._run(self._ops.set_last(self.keys.last_signal, info))

    async def set_last_rescan(self, info: Mapping[str, str | int | float | bool | None]) -> None:
        """Record the newest universe rescan (``info``: run_id, symbols, ...), stamped now."""
        await self._run(self._ops.set_last(self.keys.last_rescan, info))

    async def update_open_signals(
        self,
        changed: Mapping[str, Mapping[str, Any]],
        removed: Sequence[str] = (),
        *,
        replace: bool = False,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        """Write the open signals that changed (signal_id → JSON object) and drop the finished ones, in one
        transaction; ``replace`` drops every other entry first (the rebuild at start) — with ``owns`` (a
        shard), only the other entries of the symbols it owns."""
        await self._run(self._ops.update_open_signals(changed, removed, replace, owns))

    async def publish_features(
        self, features: Mapping[str, tuple[int, Mapping[str, Any]]], *, ttl_s: float = 120.0
    ) -> None:
        """Set each symbol's last features: symbol → (event time ms, feature values); expire after ``ttl_s``."""
        await self._run(self._ops.publish_features(features, ttl_s))

    async def publish_closes(
        self, closes: Mapping[str, Sequence[tuple[int, float]]], *, ttl_s: float = 300.0
    ) -> None:
        """Set each symbol's last closed 1m closes (symbol → [(open time, close), ...], oldest first) for the
        other shards' correlation rule; they expire after ``ttl_s``."""
        await self._run(self._ops.publish_closes(closes, ttl_s))

    async def read_control(self) -> ControlState:
        """The current control values (unreadable ones are listed in ``invalid`` and ignored)."""
        return await self._run(self._ops.read_control())

    async def read_control_marked(self) -> tuple[ControlState, str | None]:
        """The control values and the control marker (``control:marker``; None when absent): a marker gone or
        replaced since the last read means Redis lost its data."""
        return await self._run(self._ops.read_control_marked())

    async def restore_control(self, state: ControlState, *, source: str) -> tuple[str, list[str]]:
        """Write back the non-default values of ``state`` whose key is absent, each with a control event from
        ``source``, and set the marker if absent, atomically (several shards may do it at once: each key is
        written once, a command written meanwhile is kept). Returns the marker now held and the commands
        written; with a default ``state``, only the marker is made sure of."""
        return await self._run(self._ops.restore_control(state, source))

    async def last_control_event_id(self) -> str:
        """The id of the newest control event ("0-0" when none): where to start waiting from."""
        return await self._run(self._ops.last_control_event_id())

    async def control_events(
        self, after: str, *, block_ms: int | None = None, count: int = 100
    ) -> list[ControlEvent]:
        """Control changes after stream id ``after``; with ``block_ms``, wait that long (<= 5000) for one.

        The control keys are the truth and the events only wake the service: on any event, ``read_control``."""
        return await self._run(self._ops.control_events(after, block_ms, count))
