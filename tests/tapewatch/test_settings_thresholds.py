"""Staleness bounds an operator tunes: ``universe_live_stale_after`` (the universe's quick and emergency checks)
and ``dashboard_stale_after`` (the dashboard's realtime figures) reach the code that judges, and a bound the
realtime service's publish interval cannot meet is refused at start."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from dashboard.realtime_status import UPDATED, read_status
from tapewatch.adapters.redis_keys import REALTIME, Keyspace
from tapewatch.adapters.redis_state import RedisState
from tapewatch.errors import ConfigError
from tapewatch.settings import load_settings
from tapewatch.universe_checks import LiveLiquidity, emergency_check, emergency_rules_from

NOW = 1_700_000_000_000


def _live(symbol: str, spread: float, published_ms: int) -> LiveLiquidity:
    """A $200M/day symbol with a full trade window and the given spread, published at ``published_ms``."""
    return LiveLiquidity(
        symbol,
        spread=spread,
        depth_1pct_usd=5e6,
        quote_volume_window=200e6 / 86_400 * 300,
        last_event_ms=published_ms - 50,
        updated_ms=published_ms,
        window_covered_s=300.0,
    )


def test_universe_live_stale_after_decides_which_live_values_the_emergency_check_judges() -> None:
    # a sensor host whose Redis lags 8 s behind (a slow link): with the default 5 s every value is ignored;
    # an operator who raises the bound to 20 s gets the wide spread struck again
    published = NOW - 8_000
    live = {s: _live(s, 0.0001, published) for s in ("AUSDT", "BUSDT", "CUSDT")}
    live["AUSDT"] = _live("AUSDT", 0.01, published)  # 1 %: far above max_spread
    universe = sorted(live)
    default = emergency_check(universe, live, emergency_rules_from(load_settings()), {}, now_ms=NOW)
    assert default.stale == tuple(universe) and default.strikes == {}
    rules = emergency_rules_from(load_settings(universe_live_stale_after=20))
    assert rules.stale_after_s == 20
    tuned = emergency_check(universe, live, rules, {}, now_ms=NOW)
    assert tuned.stale == () and tuned.strikes == {"AUSDT": 1}


def test_dashboard_stale_after_decides_when_realtime_figures_count_as_live(
    redis_state: RedisState, redis_client: redis.Redis, redis_keys: Keyspace
) -> None:
    # the service beats, and its metrics were published 15 s ago (a slow host publishing late)
    redis_state.beat(REALTIME)
    redis_client.hset(redis_keys.metrics(REALTIME), mapping={"reconnects": "1", UPDATED: str(NOW - 15_000)})
    status, metrics = read_status(redis_state, load_settings().dashboard_stale_after)
    assert metrics[UPDATED] == NOW - 15_000
    assert status.running and not status.fresh(NOW)  # default 10 s: stale
    tuned, _ = read_status(redis_state, load_settings(dashboard_stale_after=30).dashboard_stale_after)
    assert tuned.fresh(NOW) and not tuned.fresh(NOW + 16_000)  # 30 s: live, until 30 s have passed


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"live_state_interval": 5},
            "live_state_interval (TAPEWATCH_LIVE_STATE_INTERVAL) = 5: Value error, must be below "
            "universe_live_stale_after (5.0)",
        ),
        (
            {"live_state_interval": 2, "dashboard_stale_after": 2},
            "dashboard_stale_after (TAPEWATCH_DASHBOARD_STALE_AFTER) = 2: Value error, must be above "
            "live_state_interval (2.0)",
        ),
    ],
)
def test_a_stale_bound_the_publish_interval_cannot_meet_is_refused(
    overrides: dict[str, Any], expected: str
) -> None:
    # every value would look stale the moment it is published: the checks would judge nobody
    with pytest.raises(ConfigError) as exc:
        load_settings(**overrides)
    assert expected in str(exc.value)
