"""The resources every Dagster asset, sensor and job uses, one interface each.

Each is a ``dagster.ConfigurableResource`` configured in ``orchestration.definitions``: the database and Redis
URLs with ``dg.EnvVar`` (``tapewatch dagster``/``tapewatch demo`` export them from the settings and the
embedded servers); the Redis key prefix and the REST base URL, when not configured, come from the settings
object at run time (``TAPEWATCH_REDIS_PREFIX``/``TAPEWATCH_BINANCE_REST_URL`` or the settings' defaults, so
``dagster dev`` works without them). Nothing here reads the environment at import. Tests build them directly
with the URLs of their real PostgreSQL, Redis and simulated exchange.

- ``TapewatchSettings``: the typed settings object (thresholds, tiers, limits, paths).
- ``DatabaseResource``: the PostgreSQL of tapewatch (``tapewatch.adapters.db.Database``), migrated on first use.
- ``RedisResource``: the live state (``tapewatch.adapters.redis_state.RedisState``) under one key prefix.
- ``BinanceRestResource``: the Binance USD-M REST client — real Binance or the simulated exchange, same API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import dagster as dg

from tapewatch.adapters.binance_rest import BinanceRest
from tapewatch.adapters.db import Database
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import RedisState
from tapewatch.settings import Settings, load_settings

T = TypeVar("T")


class TapewatchSettings(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The settings object (``tapewatch.settings.Settings``): env vars plus the optional YAML file.

    ``overrides`` (setting name → value) win over both; tests use them instead of the environment."""

    config_file: str | None = None
    overrides: dict[str, str] | None = None

    def settings(self) -> Settings:
        return load_settings(self.config_file, **(self.overrides or {}))


class DatabaseResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The PostgreSQL of tapewatch. ``database()`` opens it once per run, migrated (idempotent)."""

    url: str

    @contextmanager
    def open(self) -> Iterator[Database]:
        """A migrated ``Database`` on ``url``, disposed of afterwards."""
        db = Database(self.url, application_name="tapewatch-dagster")
        try:
            db.check()
            db.upgrade()
            yield db
        finally:
            db.dispose()


class RedisResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The live state in Redis (heartbeats, per-symbol feed stats, metrics, control keys).

    ``prefix`` None: the settings' ``redis_prefix`` (``TAPEWATCH_REDIS_PREFIX``, else its default), read
    when a run opens it."""

    url: str
    prefix: str | None = None

    def key_prefix(self) -> str:
        """The configured prefix, or the settings' ``redis_prefix``."""
        return self.prefix if self.prefix is not None else load_settings().redis_prefix

    @contextmanager
    def open(self) -> Iterator[RedisState]:
        """A ``RedisState`` on ``url`` under ``key_prefix()``, closed afterwards."""
        state = RedisState.from_url(self.url, keys=Keyspace(self.key_prefix()))
        try:
            yield state
        finally:
            state.close()


class BinanceRestResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Binance USD-M REST market data (public endpoints, no keys), or the simulator at the same paths.

    ``base_url`` None: the settings' ``binance_rest_url`` (``TAPEWATCH_BINANCE_REST_URL``, else Binance)."""

    base_url: str | None = None
    timeout: float = 10.0
    max_retries: int = 5

    def run(self, call: Callable[[BinanceRest], Awaitable[T]], settings: Settings | None = None) -> T:
        """Run ``call`` with a client of ``base_url`` (or the settings' ``binance_rest_url``; its own weight
        budget) and return its result."""
        base = settings if settings is not None else load_settings()
        configured = base.model_copy(
            update={
                "binance_rest_url": self.base_url if self.base_url is not None else base.binance_rest_url,
                "rest_timeout": self.timeout,
                "rest_max_retries": self.max_retries,
            }
        )

        async def _main() -> T:
            async with BinanceRest.from_settings(configured) as client:
                return await call(client)

        return asyncio.run(_main())


def var_path(settings: Settings, *parts: str) -> Path:
    """A path under the settings' var dir, created (for reports, archives)."""
    path = settings.var_dir.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
