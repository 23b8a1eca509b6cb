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


def restore_engine(engine: SignalEngine, dispatch: Dispatch, now_ms: int | None = None) -> None:
    """Rebuild the engine's open signals, tier history, daily counts and cooldowns from PostgreSQL.

    ``now_ms`` is the exchange's "now" as best known at start (the wall clock by default): it picks the UTC
    day whose caps are rebuilt and how far back stop-outs still hold a cooldown."""
    store = dispatch.store
    now = now_ms if now_ms is not None else int(time.time() * 1000)
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
        "engine restored: %d open signals, %d signals today, cooldowns on %d symbols",
        len(open_entries),
        sum(counts[today].values()),
        sum(1 for n in left.values() if n > 0),
    )
