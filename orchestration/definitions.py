"""The Dagster code location (``workspace.yaml`` loads ``defs``).

Each area keeps its assets, checks, jobs, schedules and sensors in its own module, exposing a
``dagster.Definitions`` named ``defs``; this module merges them and binds the shared resources:

- ``orchestration.universe``: universe selection (spec 4) — rescan job and schedules, emergency exclusion.
- ``orchestration.performance``: signal outcomes, daily/weekly metrics, reports (spec 9.1, 13.2).
- ``orchestration.health``: health sensors (spec 11.1) and the market-data archive.
- ``orchestration.tuning``: the monthly re-scoring of stored candidates and its proposals.

Resources read their connection settings from the environment *at run time* through ``dg.EnvVar`` (the
variables of the settings object; ``tapewatch dagster`` and ``tapewatch demo`` export them).
"""

from __future__ import annotations

import dagster as dg

from orchestration import health, performance, tuning, universe
from orchestration.resources import BinanceRestResource, DatabaseResource, RedisResource, TapewatchSettings

RESOURCES = {
    "settings": TapewatchSettings(),
    "database": DatabaseResource(url=dg.EnvVar("TAPEWATCH_DATABASE_URL")),
    "redis": RedisResource(url=dg.EnvVar("TAPEWATCH_REDIS_URL"), prefix=dg.EnvVar("TAPEWATCH_REDIS_PREFIX")),
    "binance": BinanceRestResource(base_url=dg.EnvVar("TAPEWATCH_BINANCE_REST_URL")),
}

defs = dg.Definitions.merge(
    universe.defs,
    performance.defs,
    health.defs,
    tuning.defs,
    dg.Definitions(resources=RESOURCES),
)
