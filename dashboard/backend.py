"""What the dashboard's callbacks read from and act on: PostgreSQL, Redis and Dagster, behind one object.

Callbacks are module-level functions (Dash registers them globally), so the running app installs one
:class:`Backend` with :func:`use` and callbacks fetch it with :func:`current`. Tests install their own, on
their real PostgreSQL and Redis, and call the callbacks as plain functions.

:func:`attempt` runs a read and turns an outage (``StorageUnavailable``) into a message the page shows in
its banner; the next interval tick simply tries again, so a page recovers by itself when the server returns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tapewatch.adapters.dagster_runs import DagsterRuns
from tapewatch.adapters.db import Database
from tapewatch.adapters.redis_keys import REALTIME
from tapewatch.adapters.redis_state import RedisState, realtime_shards
from tapewatch.errors import MigrationError, StorageUnavailable
from tapewatch.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The realtime heartbeat's field with its market clock (``realtime.service_publish._heartbeat_info``).
MARKET_NOW = "market_now_ms"


@dataclass
class Backend:
    """The dashboard's connections: the database, the live state, Dagster, the settings and a wall clock."""

    settings: Settings
    db: Database
    redis: RedisState
    dagster: DagsterRuns
    clock: Callable[[], float] = field(default=time.time)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def close(self) -> None:
        self.redis.close()
        self.db.dispose()


_current: Backend | None = None


def use(backend: Backend | None) -> None:
    """Install ``backend`` for every callback (None uninstalls it)."""
    global _current
    _current = backend


def current() -> Backend:
    """The installed backend; RuntimeError when the app was not started through ``dashboard.app``."""
    if _current is None:
        raise RuntimeError("no dashboard backend: start the dashboard with `tapewatch dashboard`")
    return _current


def signal_now_ms(backend: Backend) -> int:
    """ "Now" on the clock of the signals (exchange event time), where a page's periods end: the later of the
    wall clock and the market clock the live realtime instances publish in their heartbeats (``market_now_ms``,
    the freshest of the service or its shards). The simulator's clock runs ahead of the wall clock (``--speed``;
    a resumed demo carries on where it stopped), so its signals lie in the wall clock's future and periods cut
    at the wall clock would leave them out; on Binance the market clock is about the wall clock. Not the newest
    stored signal: one stray future-dated row (a simulator run pointed at this database) emptied every period
    until the wall clock caught up. The wall clock alone when no realtime instance beats or Redis is down. One
    Redis read; call it once per refresh."""
    wall = backend.now_ms()
    try:
        beats = backend.redis.heartbeats()
    except StorageUnavailable as exc:
        log.debug("no realtime market clock (Redis): %s", exc)
        return wall
    now = wall
    for name in [REALTIME, *realtime_shards(beats)]:
        beat = beats.get(name)
        clock = beat.info.get(MARKET_NOW) if beat is not None else None  # None: down, or from before it
        if isinstance(clock, int | float) and not isinstance(clock, bool):
            now = max(now, int(clock))
    return now


def attempt(read: Callable[[], T]) -> tuple[T | None, str | None]:
    """``(read(), None)``, or ``(None, message)`` when PostgreSQL/Redis is down or the schema is missing."""
    try:
        return read(), None
    except StorageUnavailable as exc:
        log.warning("dashboard read failed: %s", exc)
        return None, str(exc)
    except MigrationError as exc:
        return None, str(exc)


def storage_problems(backend: Backend) -> list[str]:
    """What is down right now (empty when PostgreSQL and Redis both answer)."""
    problems: list[str] = []
    for check in (backend.db.check, backend.redis.ping):
        try:
            check()
        except StorageUnavailable as exc:
            problems.append(str(exc))
    return problems
