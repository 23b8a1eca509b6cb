"""Where the realtime service's signals go: PostgreSQL (signals, candidates, outcomes, outbox), the Redis
stream and the notifiers — and how the engine is rebuilt from them after a restart."""

from __future__ import annotations

import logging
import time

from tapewatch.adapters.db import Database
from tapewatch.adapters.dispatch import Dispatch
from tapewatch.adapters.redis_state import AsyncRedisState
from tapewatch.engine import DAY_MS, SignalEngine
from tapewatch.risk import utc_day
from tapewatch.settings import Settings

log = logging.getLogger(__name__)


def open_dispatch(settings: Settings, database: Database, redis: AsyncRedisState) -> Dispatch:
    """The dispatch of the service (the engine's sink) on its database and Redis."""
    return Dispatch.from_settings(settings, database, redis.client, keys=redis.keys)


def exchange_now(dispatch: Dispatch) -> int:
    """The exchange's time as best known before the first frame: the event time of the newest stored signal,
    the wall clock when none is stored. The caps are per UTC day of event time, and event time is not the wall
    clock's: the simulator's runs ahead (``--speed``, and resumes where it stopped)."""
    newest = dispatch.store.recent_signals(limit=1)
    return newest[0].event_time if newest else int(time.time() * 1000)


def restore_engine(engine: SignalEngine, dispatch: Dispatch, now_ms: int | None = None) -> None:
    """Rebuild the engine's open signals, tier history, daily counts and cooldowns from PostgreSQL.

    ``now_ms`` is the exchange's "now" (default :func:`exchange_now`): it picks the UTC days of event time
    whose caps are rebuilt (its day and the one before; no signal is stored after it) and how far back
    stop-outs still hold a cooldown."""
    store = dispatch.store
    now = now_ms if now_ms is not None else exchange_now(dispatch)
    engine.history.update(store.tier_history())
    open_entries = store.open_signals()
    today = utc_day(now)
    counts = {day: store.signal_counts(day) for day in (today - 1, today)}
    left = {
        symbol: engine.settings.cooldown_after_loss - used
        for symbol, (_, used) in store.stop_outs(now - DAY_MS).items()
    }
    engine.resume(((e.signal, e.outcome) for e in open_entries), day_counts=counts, cooldowns=left)
    log.info(
        "engine restored: %d open signals, %d signals on UTC day %s of event time, cooldowns on %d symbols",
        len(open_entries),
        sum(counts[today].values()),
        time.strftime("%Y-%m-%d", time.gmtime(today * DAY_MS / 1000)),
        sum(1 for n in left.values() if n > 0),
    )
