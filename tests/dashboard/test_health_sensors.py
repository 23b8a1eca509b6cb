"""The Health page lists the Dagster sensors' last ticks as ``tapewatch status`` judges them: a stale or failing
sensor in red (its automatic reactions have stopped), nothing judged while Dagster is not running. The callback
is called as a function on real Redis."""

from __future__ import annotations

from typing import Any

from dash import html

from dashboard import backend as be
from dashboard.pages import health
from tapewatch.adapters.redis_state import RedisState, TickOutcome
from tests.dashboard.support import NOW_MS


def _text(component: Any) -> str:
    if component is None:
        return ""
    if isinstance(component, str | int | float):
        return str(component)
    if isinstance(component, list | tuple):
        return " ".join(_text(c) for c in component)
    return _text(getattr(component, "children", None))


def _rows(view: html.Div) -> dict[str, html.Tr]:
    """The table's rows by sensor name."""
    (table,) = [c for c in view.children if isinstance(c, html.Table)]
    _head, body = table.children
    return {row.children[0].children: row for row in body.children}


def _red(row: html.Tr) -> bool:
    return getattr(row, "className", None) == "tw-error"


def _record(backend: be.Backend, sensor: str, outcome: TickOutcome, *, ago_s: float, times: int = 1) -> None:
    """``times`` ticks of ``sensor`` ending ``ago_s`` seconds before the backend's now."""
    state = RedisState(backend.redis.client, keys=backend.redis.keys, clock=lambda: NOW_MS / 1000 - ago_s)
    for _ in range(times):
        state.record_sensor_tick(sensor, outcome, f"{outcome} here", interval_s=30)


def test_a_stale_sensor_shows_in_red_while_dagster_beats(backend: be.Backend) -> None:
    _record(backend, "api_connectivity_sensor", "skipped", ago_s=10)
    _record(backend, "data_quality_sensor", "skipped", ago_s=600)  # > 3 × 30 s
    _record(backend, "system_performance_sensor", "error", ago_s=10, times=3)
    backend.redis.beat("dagster", ttl_s=30)
    rows = _rows(health.refresh_sensors(0))
    assert list(rows) == [
        "api_connectivity_sensor",
        "data_quality_sensor",
        "system_performance_sensor",
        "emergency_exclusion_sensor",
    ]
    stale = rows["data_quality_sensor"]
    assert _red(stale)
    assert "STALE" in _text(stale) and "10 min" in _text(stale) and "last ticked 10.0 min ago" in _text(stale)
    assert _red(rows["system_performance_sensor"])
    assert "FAILING" in _text(rows["system_performance_sensor"])
    fine = rows["api_connectivity_sensor"]
    assert not _red(fine) and "ok" in _text(fine) and "skipped here" in _text(fine)
    assert not _red(rows["emergency_exclusion_sensor"])
    assert "no tick yet" in _text(rows["emergency_exclusion_sensor"])


def test_without_dagster_the_ticks_are_shown_not_judged(backend: be.Backend) -> None:
    view = health.refresh_sensors(0)
    assert "Dagster not running" in _text(view) and not any(
        isinstance(c, html.Table) for c in [view.children]
    )
    _record(backend, "data_quality_sensor", "skipped", ago_s=600)
    view = health.refresh_sensors(0)
    assert "Dagster not running: the last ticks are not judged" in _text(view)
    stale = _rows(view)["data_quality_sensor"]
    assert not _red(stale) and "not judged" in _text(stale)


def test_redis_down_says_unknown(down_backend: be.Backend) -> None:
    view = health.refresh_sensors(0)
    assert _text(view).startswith("unknown: ") and "TAPEWATCH_REDIS_URL" in _text(view)
