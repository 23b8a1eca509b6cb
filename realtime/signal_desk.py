"""Where the realtime service's signals go: PostgreSQL (signals, candidates, outcomes, outbox), the Redis
stream and the notifiers — and how the engine is rebuilt from them after a restart."""

from __future__ import annotations

import logging
import time
from typing import Protocol

import msgspec

from tapewatch.adapters.db import Database
from tapewatch.adapters.dispatch import Dispatch
from tapewatch.adapters.redis_state import AsyncRedisState
from tapewatch.engine import DAY_MS, SignalEngine
from tapewatch.engine_restore import EngineState, OpenEntry
from tapewatch.events import CONTROL_ENGINE_START, ENGINE_START_VERSION, EngineStart
from tapewatch.risk import utc_day
from tapewatch.settings import Settings
from tapewatch.tuning_params import current_parameters

log = logging.getLogger(__name__)


class LineWriter(Protocol):
    """Where the engine start line goes (:class:`realtime.capture.CaptureWriter`)."""

    def write(self, recv_ms: int, stream: str, payload: bytes) -> None: ...


def open_dispatch(settings: Settings, database: Database, redis: AsyncRedisState) -> Dispatch:
    """The dispatch of the service (the engine's sink) on its database and Redis."""
    return Dispatch.from_settings(settings, database, redis.client, keys=redis.keys)


def exchange_now(dispatch: Dispatch) -> int:
    """The exchange's time as best known before the first frame: the event time of the newest stored signal,
    the wall clock when none is stored. The caps are per UTC day of event time, and event time is not the wall
    clock's: the simulator's runs ahead (``--speed``, and resumes where it stopped)."""
    newest = dispatch.store.recent_signals(limit=1)
    return newest[0].event_time if newest else int(time.time() * 1000)


def restore_engine(engine: SignalEngine, dispatch: Dispatch, now_ms: int | None = None) -> EngineState:
    """Rebuild the engine's open signals, tier history, daily counts and cooldowns from PostgreSQL; the state it
    was rebuilt with is returned (the service captures it, :func:`realtime.main.capture_engine_start`).

    ``now_ms`` is the exchange's "now" (default :func:`exchange_now`): it picks the UTC days of event time
    whose caps are rebuilt (its day and the one before; no signal is stored after it) and how far back
    stop-outs still hold a cooldown."""
    store = dispatch.store
    now = now_ms if now_ms is not None else exchange_now(dispatch)
    # a shard learns from its own symbols' signals only: so does its restart
    history = store.tier_history(owns=None if engine.shard.whole else engine.shard.owns)
    open_entries = store.open_signals()
    today = utc_day(now)
    counts = {day: store.signal_counts(day) for day in (today - 1, today)}
    left = {
        symbol: engine.settings.cooldown_after_loss - used
        for symbol, (_, used) in store.stop_outs(now - DAY_MS).items()
    }
    state = EngineState(
        history=dict(history),
        open=[OpenEntry(signal=e.signal, outcome=e.outcome) for e in open_entries],
        day_counts={day: dict(c) for day, c in counts.items()},
        cooldowns=left,
    )
    engine.restore(state)
    log.info(
        "engine restored: %d open signals, %d signals on UTC day %s of event time, cooldowns on %d symbols",
        len(open_entries),
        sum(counts[today].values()),
        time.strftime("%Y-%m-%d", time.gmtime(today * DAY_MS / 1000)),
        sum(1 for n in left.values() if n > 0),
    )
    return state


def start_engine(
    engine: SignalEngine, dispatch: Dispatch | None, capture: LineWriter | None, recv_ms: int | None = None
) -> EngineState:
    """What the service does to its new engine before the first frame: rebuild it from PostgreSQL
    (:func:`restore_engine`, with a dispatch; nothing to rebuild without one), then capture one
    ``control:engine_start`` line (:class:`~tapewatch.events.EngineStart`) with the tunable parameter values
    in force (the applied tuning's among them), the applied tuning's id and the state rebuilt, so a replay of
    the capture starts its engine there the same way. The state is returned."""
    state = restore_engine(engine, dispatch) if dispatch is not None else EngineState()
    if capture is not None:
        line = EngineStart(
            version=ENGINE_START_VERSION,
            parameters=dict(current_parameters(engine.settings)),
            tuning=applied_tuning(engine.settings),
            state=msgspec.Raw(msgspec.json.encode(state)),
        )
        capture.write(
            recv_ms if recv_ms is not None else int(time.time() * 1000),
            CONTROL_ENGINE_START,
            msgspec.json.encode(line),
        )
    return state


def applied_tuning(settings: Settings) -> int | None:
    """The id of the applied tuning row the settings were tuned with (0: none), None when not known."""
    from tapewatch.adapters.tuning_store import applied_record

    return applied_record(settings)
