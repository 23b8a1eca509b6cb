"""The sensors that keep the platform safe record each tick in Redis, so that a sensor which stopped ticking
shows outside the Dagster UI.

A sensor can fail on every tick, be switched off in the UI or hang, and its automatic reactions (backup feed,
pause, universe shrink, exclusions) silently stop; the ``dagster`` heartbeat only says the processes live.
So each sensor of :data:`tapewatch.adapters.redis_keys.SENSORS` is declared with :func:`recorded_sensor`
(``dg.sensor`` itself, plus this) and records the end of every evaluation with
``RedisState.record_sensor_tick``: its time, its outcome (``ok``; ``skipped`` with its skip reason, which is
how the health sensors report what they saw and did, outages included; ``error`` with the exception, which is
raised on to Dagster unchanged) and its interval. A hung evaluation or a switched-off sensor records nothing:
its last tick grows old. ``tapewatch status`` and the dashboard's Health page judge them
(``tapewatch.adapters.status.judge_sensors``).

Recording is best effort: with Redis down the tick is logged as not recorded and the sensor's result stands.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import dagster as dg

from orchestration.resources import RedisResource
from tapewatch.adapters.redis_keys import SENSORS
from tapewatch.adapters.redis_state import TickOutcome
from tapewatch.errors import TapewatchError

log = logging.getLogger(__name__)

SensorFn = Callable[..., dg.SensorResult]


def tick_outcome(result: dg.SensorResult) -> tuple[TickOutcome, str]:
    """How a tick that returned ``result`` ended: runs requested or nothing to say (``ok``), else its skip
    reason (``skipped``)."""
    if result.run_requests:
        return "ok", f"{len(result.run_requests)} run(s) requested"
    if result.skip_reason is not None:
        return "skipped", result.skip_reason.skip_message or ""
    return "ok", ""


def record_tick(
    redis: RedisResource, sensor: str, outcome: TickOutcome, reason: str, interval_s: float
) -> None:
    """Record the end of a tick of ``sensor``; a Redis that cannot take it is logged, never raised."""
    try:
        with redis.open() as rs:
            rs.record_sensor_tick(sensor, outcome, reason, interval_s=interval_s)
    except TapewatchError as exc:
        log.warning("tick of %s (%s) not recorded: %s", sensor, outcome, exc)


def recorded_sensor(**sensor_args: Any) -> Callable[[SensorFn], dg.SensorDefinition]:
    """``dg.sensor(**sensor_args)`` whose every evaluation records its tick.

    The sensor (its ``name``, else the function's) must be one of ``SENSORS`` (what status lists), which gives
    its ``minimum_interval_seconds``, and take a ``redis: RedisResource`` (where the tick is recorded)."""

    def decorate(fn: SensorFn) -> dg.SensorDefinition:
        name = str(sensor_args.get("name") or fn.__name__)
        if name not in SENSORS:
            raise ValueError(
                f"sensor {name} records its ticks: add it to tapewatch.adapters.redis_keys.SENSORS"
            )
        signature = inspect.signature(fn)
        if "redis" not in signature.parameters:
            raise TypeError(f"sensor {name} records its ticks in Redis: it needs a `redis: RedisResource`")
        minimum_interval_seconds = SENSORS[name]

        @functools.wraps(fn)
        def evaluate(*args: Any, **kwargs: Any) -> dg.SensorResult:
            redis: RedisResource = signature.bind(*args, **kwargs).arguments["redis"]
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                record_tick(redis, name, "error", f"{type(exc).__name__}: {exc}", minimum_interval_seconds)
                raise
            record_tick(redis, name, *tick_outcome(result), minimum_interval_seconds)
            return result

        return dg.sensor(minimum_interval_seconds=minimum_interval_seconds, **sensor_args)(evaluate)

    return decorate
