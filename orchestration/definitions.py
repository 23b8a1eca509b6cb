"""The Dagster code location (``workspace.yaml`` loads ``defs``).

Each area keeps its assets, checks, jobs, schedules and sensors in its own module, exposing a
``dagster.Definitions`` named ``defs``; this module merges them and binds the shared resources:

- ``orchestration.universe``: universe selection (spec 4) — rescan job and schedules, emergency exclusion.
- ``orchestration.performance``: signal outcomes, daily/weekly metrics, reports (spec 9.1, 13.2).
- ``orchestration.health``: health sensors (spec 11.1) and the market-data archive.
- ``orchestration.tuning``: the monthly re-scoring of stored candidates and its proposals.
- ``orchestration.run_alerts``: a failed run opens a ``dagster_run`` health incident (job and run id).

Resources read the database and Redis URLs from the environment *at run time* through ``dg.EnvVar``
(``tapewatch dagster`` and ``tapewatch demo`` export them); the Redis key prefix and the REST base URL come
from the settings object at run time (``TAPEWATCH_REDIS_PREFIX``/``TAPEWATCH_BINANCE_REST_URL`` when set,
else the settings' defaults), so ``dagster dev -w workspace.yaml`` needs only the two URLs.
"""

from __future__ import annotations

import dagster as dg

from orchestration import health, performance, run_alerts, tuning, universe
from orchestration.resources import BinanceRestResource, DatabaseResource, RedisResource, TapewatchSettings

RESOURCES = {
    "settings": TapewatchSettings(),
    "database": DatabaseResource(url=dg.EnvVar("TAPEWATCH_DATABASE_URL")),
    # prefix and base URL unset: the settings' values (environment or defaults), read when a run uses them
    "redis": RedisResource(url=dg.EnvVar("TAPEWATCH_REDIS_URL")),
    "binance": BinanceRestResource(),
}

defs = dg.Definitions.merge(
    universe.defs,
    performance.defs,
    health.defs,
    tuning.defs,
    run_alerts.defs,
    dg.Definitions(resources=RESOURCES),
)
