"""Control commands for the running realtime service, read from Redis (issue 4 "Control", spec 11.1).

The platform (Dagster sensors, the dashboard, operators) writes the control keys of
:mod:`tapewatch.adapters.redis_keys` with ``RedisState`` (``set_universe``, ``pause``/``resume``,
``set_backup_feed``, ``set_max_universe``); every write also appends an entry to the control stream. The keys
are the truth and the stream only wakes the service: :class:`ControlLoop` reads the keys at start, then waits
on the stream (a blocking XREAD with a timeout, so a quiet Redis costs one idle connection), re-reads every key
on any entry, and re-reads them anyway every ``reread_every`` seconds in case an entry was missed. It applies
only what changed, logs each change in one line and counts it:

- ``universe``: follow the listed symbols, live (subscribe/unsubscribe, no reconnect); unknown or non-tradable
  symbols are logged and ignored. The tradable list is the service's exchangeInfo, fetched at start and kept; a
  universe naming a symbol it does not list (a contract listed since, chosen by a rescan) has exchangeInfo
  fetched again (``refresh``, at most once per ``recheck_after``: a command that comes sooner is applied with
  the known symbols and judged again once the refetch is allowed) before that symbol is ignored. Absent: the
  universe the service chose at start. With a fixed universe (``Settings.symbols``: ``TAPEWATCH_SYMBOLS`` or
  ``tapewatch run --symbols``) only a list drawn from it is followed (the rescan publishes the fixed list,
  exclusions remove symbols from it); a list naming any other symbol (a platform choosing by score, not told of
  the fixed list) is refused and the fixed list kept.
- ``max_universe``: keep the first N symbols of that universe (shed load); the full one returns when the key
  goes.
- ``paused``: the risk gate rejects every candidate with fate ``paused`` (candidates are still evaluated and
  stored, books and capture go on).
- ``backup_feed``: websockets off and REST polling on (:mod:`realtime.backup_feed`), and back.

Redis being away never stops the service: what was applied stays applied, the outage is logged once (and its
end), and the loop retries with capped exponential backoff.

Until the control keys have been read once, the service fails closed: a start (or a first read that fails)
while Redis is unreachable cannot know whether the platform paused signalling, so the loop pauses it with the
reason ``control state unknown: Redis unreachable`` (:data:`UNKNOWN_PREFIX`; logged at ERROR, candidates get fate
``paused``) and lifts that pause by itself at the first successful read, which then applies the real pause (or
none: ``signalling resumed``, logged). Meanwhile it retries every ``UNKNOWN_RETRY_CAP`` seconds at most. That
pause is the service's own: it is never written to Redis.

Redis coming back empty (restarted without persistence, flushed) must not read as "resume, no universe": the
control marker (``control:marker``, set by the first read and kept by every control write) tells the two
apart. When it is gone or replaced while control state is applied, the loop keeps what it applied, logs an
ERROR, counts it (``control_state_lost``) and writes the applied values back where their keys are absent, with
control events from ``<component> (restored)``; a key present again is a command written since, applied as
usual. Several shards may restore at once: the write is atomic and per key, so each value is written once.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from realtime.backoff import Backoff
from realtime.service_publish import component_name
from realtime.timebase import REAL_TIME, Timebase
from tapewatch.adapters.redis_state import MAX_BLOCK_MS, AsyncRedisState, ControlEvent, ControlState
from tapewatch.errors import StorageUnavailable
from tapewatch.sharding import WHOLE, Shard

log = logging.getLogger(__name__)

_EXTRA = {"component": "control"}

UniverseSource = Literal["start", "control"]

#: The pause reason while the control keys were never read (Redis unreachable at start): fail closed.
UNKNOWN_PREFIX = "control state unknown"
#: The longest wait between reads while that pause holds (the backoff's cap otherwise): Redis coming back
#: should lift it within seconds.
UNKNOWN_RETRY_CAP = 2.0


class Steerable(Protocol):
    """What the control loop steers (:class:`realtime.service.FeedService` is one): the symbols followed now,
    in order; ``set_universe`` (live, no reconnect); ``set_paused`` (a reason, or None to resume);
    ``set_backup_feed`` (True: REST polling, False: back to the websockets)."""

    @property
    def universe(self) -> list[str]: ...
    def set_universe(self, symbols: list[str]) -> None: ...
    def set_paused(self, reason: str | None) -> None: ...
    async def set_backup_feed(self, on: bool) -> None: ...


TradableSymbols = Callable[[], Awaitable[Collection[str]]]


@dataclass(frozen=True, slots=True)
class ControlConfig:
    """Timing of the control loop (seconds).

    ``reread_every``: the keys are re-read at least this often even when no event arrives.
    ``recheck_after``: a universe that could not be checked yet (exchangeInfo unavailable) is retried this soon;
    also the shortest time between two refetches of exchangeInfo for symbols it did not list.
    ``retry_base``/``retry_cap``: backoff while Redis is unavailable (full jitter, doubling up to the cap).
    """

    reread_every: float = 30.0
    recheck_after: float = 5.0
    retry_base: float = 0.5
    retry_cap: float = 30.0

    def __post_init__(self) -> None:
        for name in ("reread_every", "recheck_after", "retry_base", "retry_cap"):
            if not getattr(self, name) > 0:
                raise ValueError(f"control {name} must be > 0 s; got {getattr(self, name)!r}")


@dataclass(frozen=True, slots=True)
class AppliedControl:
    """What the service does now because of the control keys (published in metrics and the heartbeat).

    ``base`` is the full universe (the control key's valid symbols, or the start-up choice: ``source``);
    ``universe`` is what is followed after ``max_universe``."""

    base: tuple[str, ...]
    source: UniverseSource
    universe: tuple[str, ...]
    max_universe: int | None = None
    paused_reason: str | None = None
    backup_feed: bool = False
    invalid_keys: int = 0

    @property
    def paused(self) -> bool:
        return self.paused_reason is not None


def first_n(symbols: Sequence[str], limit: int | None) -> tuple[str, ...]:
    """The first ``limit`` of ``symbols`` in their order (all of them when ``limit`` is None)."""
    return tuple(symbols if limit is None else symbols[:limit])


def known_symbols(
    symbols: Sequence[str], tradable: Collection[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(kept, ignored)``: the tradable symbols of ``symbols`` in order without repeats, and the others."""
    kept = tuple(s for s in dict.fromkeys(symbols) if s in tradable)
    ignored = tuple(s for s in dict.fromkeys(symbols) if s not in tradable)
    return kept, ignored


def _describe_change(old: Sequence[str], new: Sequence[str]) -> str:
    added = [s for s in new if s not in old]
    removed = [s for s in old if s not in new]
    parts = []
    if added:
        parts.append("+" + ",".join(added[:10]) + ("..." if len(added) > 10 else ""))
    if removed:
        parts.append("-" + ",".join(removed[:10]) + ("..." if len(removed) > 10 else ""))
    return " ".join(parts) or "same symbols, new order"


class ControlLoop:
    """Applies the Redis control keys to a running service; :meth:`run` until cancelled, never raises for
    Redis or command trouble.

    ``tradable`` returns the tradable symbols of exchangeInfo (the service fetches them once at start-up and
    keeps them); it is only called when the control key names a universe. ``refresh`` fetches exchangeInfo
    again and returns its tradable symbols (the service also re-captures the tick sizes then): called when a
    universe names a symbol ``tradable`` does not list, at most once per ``recheck_after`` (None: never). With
    ``shard`` (``--shard I/N``) the control keys stay global — the universe and ``max_universe`` are the
    platform's whole choice — and this instance follows only the symbols of its shard among them. ``fixed``: the
    service's fixed universe (``Settings.symbols``; empty: chosen by score).
    """

    def __init__(
        self,
        redis: AsyncRedisState,
        target: Steerable,
        *,
        tradable: TradableSymbols,
        refresh: TradableSymbols | None = None,
        config: ControlConfig | None = None,
        timebase: Timebase = REAL_TIME,
        shard: Shard = WHOLE,
        fixed: Collection[str] = (),
    ) -> None:
        self.redis = redis
        self.target = target
        self.shard = shard
        self.fixed = frozenset(fixed)
        self.config = config or ControlConfig()
        self.counters: Counter[str] = Counter()
        self.applied: AppliedControl | None = None
        self.redis_up = True
        self._tradable = tradable
        self._refresh = refresh
        self._tb = timebase
        self._backoff = Backoff(
            self.config.retry_base, self.config.retry_cap, healthy_after=float("inf"), random=timebase.random
        )
        self._down_since: float | None = None
        self._failures = 0
        # The last universe command judged, and the verdict (so a periodic re-read does not log it again).
        self._judged: tuple[tuple[str, ...], tuple[str, ...] | None] | None = None
        self._unchecked = False
        # exchangeInfo refetches for symbols the kept list lacks: when the last one was asked for (monotonic),
        # whether the last verdict is on the kept list only (a refetch was not allowed yet: judged again once it
        # is), and the unknown symbols last logged for the command (not logged again by that second judgement)
        self._refetched_at: float | None = None
        self._provisional = False
        self._logged_ignored: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self._start_universe: tuple[str, ...] = ()
        # The control marker seen at the last read (None: not established yet).
        self._marker: str | None = None
        # The pause this loop set because the control keys were never read (None: none held), and whether a
        # read has told the target the real pause yet.
        self.held: str | None = None
        self._pause_read = False

    # --- the loop -------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Apply the control state now, then on every control event and every ``reread_every`` seconds."""
        after: str | None = None
        next_read = 0.0
        cause = "start"
        while True:
            try:
                if after is None:
                    # The newest event id first, then the keys: a change after this read has a newer event.
                    after = await self.redis.last_control_event_id()
                    if not self.redis_up:
                        cause = "Redis back"
                    self._redis_ok()
                    await self._read_and_apply(cause)
                    next_read = self._next_read()
                wait_ms = int((next_read - self._tb.monotonic()) * 1000)
                if wait_ms <= 0:
                    await self._read_and_apply("periodic re-read")
                    next_read = self._next_read()
                    continue
                # BLOCK 0 would wait forever: the wait is kept within 1 ms .. MAX_BLOCK_MS.
                events = await self.redis.control_events(after, block_ms=min(max(wait_ms, 1), MAX_BLOCK_MS))
                self._redis_ok()
                if events:
                    after = events[-1].id
                    await self._read_and_apply(_cause(events))
                    next_read = self._next_read()
            except StorageUnavailable as exc:
                after = None
                self._note_failure(exc)
                self._hold_if_unknown("Redis unreachable", exc)
                await self._tb.sleep(self._retry_delay())
            except Exception as exc:
                # A bug in applying a command must not take the service down: log it, retry later.
                self.counters["errors"] += 1
                log.exception("control: applying the control state failed; retrying", extra=_EXTRA)
                after, cause = None, "retry after an error"
                self._hold_if_unknown(f"applying it failed ({type(exc).__name__})", exc)
                await self._tb.sleep(self._retry_delay())

    async def sync(self, cause: str = "start") -> bool:
        """Read the control keys once and apply them; False (logged, counted) when Redis is unavailable or
        applying failed. Failing before any read succeeded, it pauses signalling until one does (fail closed:
        see the module docstring)."""
        try:
            await self._read_and_apply(cause)
        except StorageUnavailable as exc:
            self._note_failure(exc)
            self._hold_if_unknown("Redis unreachable", exc)
            return False
        except Exception as exc:
            self.counters["errors"] += 1
            log.exception("control: applying the control state failed; the loop retries", extra=_EXTRA)
            self._hold_if_unknown(f"applying it failed ({type(exc).__name__})", exc)
            return False
        self._redis_ok()
        return True

    def _hold_if_unknown(self, why: str, exc: Exception) -> None:
        """Pause signalling when no read has told the target whether the platform paused it (fail closed)."""
        if self._pause_read or self.held is not None:
            return
        self.held = f"{UNKNOWN_PREFIX}: {why}"
        self.target.set_paused(self.held)
        log.error(
            "control: cannot read the control state (%s): signalling paused until it is read, since the "
            "platform may have paused it; candidates get fate 'paused' meanwhile",
            exc,
            extra={**_EXTRA, "paused": self.held},
        )

    def _retry_delay(self) -> float:
        delay = self._backoff.next_delay(self._tb.monotonic())
        return min(delay, UNKNOWN_RETRY_CAP) if self.held is not None else delay

    def _next_read(self) -> float:
        wait = self.config.reread_every
        if self._unchecked:
            wait = min(wait, self.config.recheck_after)
        if self._provisional:
            wait = min(wait, max(self._refetch_wait(), 0.001))
        return self._tb.monotonic() + wait

    def _refetch_wait(self) -> float:
        """Seconds until exchangeInfo may be fetched again (<= 0: now)."""
        if self._refetched_at is None:
            return 0.0
        return self._refetched_at + self.config.recheck_after - self._tb.monotonic()

    async def _tradable_for(self, asked: Sequence[str]) -> Collection[str]:
        """The tradable symbols to judge ``asked`` on: the kept list, or a fresh one when ``asked`` names a
        symbol the kept list lacks and a refetch is allowed (else the verdict is provisional). The REST
        client's errors are raised."""
        tradable = await self._tradable()
        self._provisional = False
        if self._refresh is None or all(symbol in tradable for symbol in asked):
            return tradable
        if self._refetch_wait() > 0:
            self._provisional = True
            return tradable
        self._refetched_at = self._tb.monotonic()
        self.counters["tradable_refetched"] += 1
        fresh = await self._refresh()
        listed = [s for s in dict.fromkeys(asked) if s in fresh and s not in tradable]
        log.info(
            "control: exchangeInfo fetched again for symbols it did not list%s",
            f"; now tradable: {', '.join(listed[:20])}" if listed else ": none of them is tradable",
            extra=_EXTRA,
        )
        return fresh

    async def _read_and_apply(self, cause: str) -> None:
        state, marker = await self.redis.read_control_marked()
        self.counters["reads"] += 1
        if self.applied is None or self._marker is None:
            # Nothing applied yet (a first start on an empty Redis included): nothing can have been lost.
            self._marker, _ = await self.redis.restore_control(ControlState(), source=self._restorer)
        elif marker != self._marker:
            state = await self._restore(state, self.applied)
        await self.apply(state, cause)

    @property
    def _restorer(self) -> str:
        return f"{component_name(self.shard)} (restored)"

    # --- Redis lost its data ----------------------------------------------------------------------------------
    async def _restore(self, state: ControlState, applied: AppliedControl) -> ControlState:
        """Redis lost the control keys: write the applied values back where their key is absent and no command
        of theirs was written since the loss (the events stream was lost with the keys, so an event in it is
        newer: an operator's resume leaves its key absent and must stand), then return the control state as
        Redis now holds it (another shard may have restored it first)."""
        lost = self._lost(state, applied)
        self._marker, written = await self.redis.restore_control(lost, source=self._restorer)
        self.counters["state_lost"] += 1
        log.error(
            "control: Redis lost its data (restarted without persistence?): control state restored from the "
            "service: %s; %s; enable persistence (appendonly yes) on Redis",
            _describe_applied(applied),
            f"written back: {', '.join(written)}" if written else "nothing to write back",
            extra={**_EXTRA, "restored": ",".join(written)},
        )
        return await self.redis.read_control()

    def _lost(self, state: ControlState, applied: AppliedControl) -> ControlState:
        """The applied control values whose key ``state`` lacks (an unreadable key is not lacking)."""
        keys = self.redis.keys

        def absent(key: str, value: object) -> bool:
            return value in (None, False) and key not in state.invalid

        return ControlState(
            universe=applied.base
            if applied.source == "control" and absent(keys.control_universe, state.universe)
            else None,
            paused_reason=applied.paused_reason if absent(keys.control_paused, state.paused_reason) else None,
            backup_feed=applied.backup_feed and absent(keys.control_backup_feed, state.backup_feed),
            max_universe=applied.max_universe
            if absent(keys.control_max_universe, state.max_universe)
            else None,
        )

    # --- applying -------------------------------------------------------------------------------------------
    async def apply(self, state: ControlState, cause: str = "") -> AppliedControl:
        """Make the service do what ``state`` asks, changing only what differs from what is applied."""
        before = self.applied
        if before is None:
            start = tuple(self.target.universe)
            # the target may be paused by the fail-closed hold: the first read lifts or replaces that pause
            before = AppliedControl(base=start, source="start", universe=start, paused_reason=self.held)
            self._start_universe = start
        why = f" ({cause})" if cause else ""
        base, source = await self._base_universe(state, before)
        universe = tuple(self.shard.select(first_n(base, state.max_universe)))
        after = AppliedControl(
            base=base,
            source=source,
            universe=universe,
            max_universe=state.max_universe,
            paused_reason=state.paused_reason,
            backup_feed=state.backup_feed,
            invalid_keys=len(state.invalid),
        )
        held, self.held = self.held, None
        if after.paused_reason != before.paused_reason:
            self.target.set_paused(after.paused_reason)
            if held is not None:
                log.warning(
                    "control: control state read%s: the pause held while it was unknown is lifted; %s",
                    why,
                    f"signalling paused: {after.paused_reason!r}" if after.paused else "signalling resumed",
                    extra=_EXTRA,
                )
            elif after.paused:
                self._applied("pause", "signalling paused: %r%s", after.paused_reason, why)
            else:
                self._applied("resume", "signalling resumed%s", why)
        self._pause_read = True
        # Websockets off before a universe change (nothing to subscribe), back on after it (subscribe once).
        if after.backup_feed and not before.backup_feed:
            await self.target.set_backup_feed(True)
            self._applied(
                "backup_feed_on", "switched to the backup feed: websockets off, REST polling%s", why
            )
        cap_changed = after.max_universe != before.max_universe
        cap = "" if after.max_universe is None else f", max_universe {after.max_universe}"
        if cap_changed:
            self.counters["applied_max_universe"] += 1
            cap = ", max_universe removed" if after.max_universe is None else cap
        current = list(self.target.universe)
        if list(universe) != current:
            self.target.set_universe(list(universe))
            self._applied(
                "universe",
                "universe now %d of %d symbols (%s%s): %s%s",
                len(universe),
                len(base),
                "control key" if source == "control" else "start-up choice",
                cap,
                _describe_change(current, universe),
                why,
            )
        elif cap_changed:
            self._log("universe unchanged at %d symbols%s%s", len(universe), cap, why)
        if before.backup_feed and not after.backup_feed:
            await self.target.set_backup_feed(False)
            self._applied("backup_feed_off", "back on the websocket feed; books resync%s", why)
        self.applied = after
        return after

    async def _base_universe(
        self, state: ControlState, before: AppliedControl
    ) -> tuple[tuple[str, ...], UniverseSource]:
        """The full universe ``state`` asks for, checked against exchangeInfo; the current one while the
        request cannot be checked or names no tradable symbol (an empty list included)."""
        if state.universe is None:
            self._judged = None
            self._unchecked = False
            self._provisional = False
            return self._start_universe, "start"
        asked = state.universe
        # judged before on the kept list only, and a refetch is allowed now: judged again (the refusals that
        # verdict logged are not logged again)
        again = self._provisional and self._refetch_wait() <= 0
        if self._judged is not None and self._judged[0] == asked and not again:
            verdict = self._judged[1]
            return (verdict, "control") if verdict is not None else (before.base, before.source)
        refused_before = self._judged == (asked, None)  # and judged again now: its refusal is not repeated
        try:
            tradable = await self._tradable_for(asked)
        except Exception as exc:  # the REST client's errors, whatever they are: check again soon
            if not self._unchecked:
                log.warning(
                    "control: cannot check the universe of %d symbols against exchangeInfo (%s); keeping %d "
                    "symbols and retrying",
                    len(asked),
                    exc,
                    len(before.base),
                    extra=_EXTRA,
                )
            self._unchecked = True
            self.counters["universe_unchecked"] += 1
            return before.base, before.source
        self._unchecked = False
        kept, ignored = known_symbols(asked, tradable)
        if ignored and self._logged_ignored != (asked, ignored):
            self._logged_ignored = (asked, ignored)
            self.counters["ignored_symbols"] += len(ignored)
            log.warning(
                "control: ignoring %d unknown or non-tradable symbols of the universe: %s",
                len(ignored),
                ", ".join(ignored[:20]) + (" ..." if len(ignored) > 20 else ""),
                extra=_EXTRA,
            )
        if not kept and refused_before:
            return before.base, before.source
        if not kept:  # an empty list too: watching nothing is never what the platform means
            self.counters["rejected"] += 1
            log.error(
                "control: the universe %s; keeping the current %d symbols",
                "names no tradable symbol" if asked else "is empty",
                len(before.base),
                extra=_EXTRA,
            )
            self._judged = (asked, None)
            return before.base, before.source
        outside = [symbol for symbol in kept if symbol not in self.fixed] if self.fixed else []
        if outside and refused_before:
            return self._start_universe, "start"
        if outside:
            # the platform chose by score (Dagster without the same TAPEWATCH_SYMBOLS): the fixed list stands
            self.counters["rejected"] += 1
            log.error(
                "control: the universe names %d symbols outside the fixed universe (TAPEWATCH_SYMBOLS / "
                "--symbols): %s; keeping the fixed list of %d symbols (set the same TAPEWATCH_SYMBOLS for "
                "Dagster, whose rescan then publishes it)",
                len(outside),
                ", ".join(outside[:20]) + (" ..." if len(outside) > 20 else ""),
                len(self._start_universe),
                extra=_EXTRA,
            )
            self._judged = (asked, None)
            return self._start_universe, "start"
        self._judged = (asked, kept)
        return kept, "control"

    def _applied(self, command: str, message: str, *args: object) -> None:
        self.counters[f"applied_{command}"] += 1
        self._log(message, *args)

    @staticmethod
    def _log(message: str, *args: object) -> None:
        log.info("control: " + message, *args, extra=_EXTRA)

    # --- Redis trouble --------------------------------------------------------------------------------------
    def _note_failure(self, exc: StorageUnavailable) -> None:
        self.counters["redis_errors"] += 1
        self._failures += 1
        if self.redis_up:
            self.redis_up = False
            self._down_since = self._tb.monotonic()
            log.warning(
                "control: Redis unavailable, keeping the applied control state and retrying: %s",
                exc,
                extra=_EXTRA,
            )

    def _redis_ok(self) -> None:
        if not self.redis_up:
            down = self._tb.monotonic() - (self._down_since or self._tb.monotonic())
            log.info(
                "control: Redis reachable again after %.1f s (%d failed attempts)",
                down,
                self._failures,
                extra=_EXTRA,
            )
            self.redis_up = True
            self._failures = 0
        self._backoff.reset()

    # --- what operators see ---------------------------------------------------------------------------------
    def metrics(self) -> dict[str, int | float]:
        """Counters and the applied state as numbers (for the metrics hash)."""
        a = self.applied
        out: dict[str, int | float] = {
            "control_redis_up": int(self.redis_up),
            "control_redis_errors": self.counters["redis_errors"],
            "control_reads": self.counters["reads"],
            "control_commands": sum(n for k, n in self.counters.items() if k.startswith("applied_")),
            "control_ignored_symbols": self.counters["ignored_symbols"],
            # universes refused (none of their symbols tradable, or empty) and checks exchangeInfo could not make
            "control_rejected": self.counters["rejected"],
            "control_universe_unchecked": self.counters["universe_unchecked"],
            # exchangeInfo fetched again for a universe naming a symbol the kept list lacked (a new listing)
            "control_tradable_refetched": self.counters["tradable_refetched"],
            "control_errors": self.counters["errors"],
            # times Redis came back without the control state (restored from what this service applied)
            "control_state_lost": self.counters["state_lost"],
            # 1 while signalling is paused because the control keys were never read (Redis unreachable)
            "control_unknown_paused": int(self.held is not None),
        }
        if a is None and self.held is not None:
            out["control_paused"] = 1
        if a is not None:
            out.update(
                control_paused=int(a.paused),
                control_backup_feed=int(a.backup_feed),
                control_max_universe=a.max_universe or 0,
                control_universe_symbols=len(a.universe),
                control_universe_from_key=int(a.source == "control"),
                control_invalid_keys=a.invalid_keys,
            )
        return out

    def info(self) -> dict[str, str | int | float | bool]:
        """The applied control state for the heartbeat (what the dashboard shows next to "realtime up")."""
        a = self.applied
        if a is None:
            info: dict[str, str | int | float | bool] = {"control": "not read yet"}
            if self.held is not None:
                info["paused"] = self.held  # the pause held while the control state is unknown
            return info
        return {
            "paused": a.paused_reason or "",
            "backup_feed": a.backup_feed,
            "max_universe": a.max_universe or 0,
            "universe": len(a.universe),
            "universe_source": a.source,
            "control_redis": "up" if self.redis_up else "down",
        }


def _describe_applied(a: AppliedControl) -> str:
    """``paused='maintenance', universe=2 symbols (control key), max_universe=1, backup_feed=on``."""
    universe = f"{len(a.base)} symbols ({'control key' if a.source == 'control' else 'start-up choice'})"
    return (
        f"paused={a.paused_reason!r}, universe={universe}, max_universe={a.max_universe or 'none'}, "
        f"backup_feed={'on' if a.backup_feed else 'off'}"
    )


def _cause(events: Sequence[ControlEvent]) -> str:
    """``paused by dashboard, universe by dagster`` for a batch of control events."""
    seen = dict.fromkeys(f"{e.command or '?'} by {e.source or '?'}" for e in events)
    return ", ".join(seen)
