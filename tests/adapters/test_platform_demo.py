"""What ``tapewatch demo`` tells the operator once it runs: the URLs and a health hint runnable as printed, why
a part is missing, and a platform started without Dagster or the dashboard is not reported as broken by
``tapewatch status`` for an earlier run's heartbeats."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
import time

import pytest

from tapewatch.adapters.platform import DemoOptions, _print_urls, forget_absent
from tapewatch.adapters.ports import Endpoint
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import RedisState
from tapewatch.adapters.status import gather_status
from tapewatch.adapters.status_format import tapewatch_command
from tapewatch.adapters.supervisor import Supervisor
from tapewatch.settings import load_settings

SIM = {"sim": Endpoint("the simulated exchange", "127.0.0.1", 8765, "sim_port")}


def printed(found: dict[str, Endpoint], options: DemoOptions) -> str:
    out = io.StringIO()
    sup = Supervisor(out=out, handle_signals=False)
    _print_urls(sup, load_settings(), found, options)
    return out.getvalue()


def test_the_demo_says_why_a_part_is_not_started_and_how_to_ask_for_health() -> None:
    text = printed(SIM, DemoOptions(dagster=False, dashboard=False))
    assert ">>    dashboard         (not started: disabled by --no-dashboard)" in text
    assert ">>    Dagster           (not started: disabled by --no-dagster)" in text
    assert "not in this installation" not in text
    # an installation without the commands (the options ask for them)
    assert "(not started: this installation has no `tapewatch dagster` command)" in printed(
        SIM, DemoOptions()
    )
    web = SIM | {"dashboard": Endpoint("the dashboard", "127.0.0.1", 8050, "dashboard_port")}
    assert ">>    dashboard         http://127.0.0.1:8050" in printed(web, DemoOptions(dagster=False))
    # the health hint names tapewatch as it runs from here (`make` does not put .venv/bin on PATH)
    hint = next(line for line in text.splitlines() if "health" in line)
    command = hint.split("health", 1)[1].split("(in another terminal")[0].split()
    assert command == [*tapewatch_command().split(), "status"]
    assert subprocess.run([*command, "--help"], capture_output=True, timeout=60).returncode == 0


def test_components_the_demo_runs_without_are_not_reported_down(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, redis_keys: Keyspace, redis_state: RedisState
) -> None:
    monkeypatch.setenv("TAPEWATCH_REDIS_URL", redis_url)
    monkeypatch.setenv("TAPEWATCH_REDIS_PREFIX", redis_keys.prefix)
    settings = load_settings()
    redis_state.beat("realtime", ttl_s=60)
    redis_state.beat("dagster", ttl_s=0.05)  # an earlier demo's Dagster: expired since
    # an earlier demo's dashboard stopped a moment ago: its heartbeat still lives, its process is gone
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = RedisState.from_url(redis_url, keys=redis_keys)
    left._ops = dataclasses.replace(left._ops, pid=dead.pid)  # the beat of a process that has exited
    try:
        left.beat("dashboard", ttl_s=60)
    finally:
        left.close()
    time.sleep(0.1)
    before = gather_status(settings, incident_limit=0)
    assert "component dagster is down (its heartbeat expired)" in before.problems

    assert forget_absent(redis_url, settings, SIM) == ["dagster", "dashboard"]
    after = gather_status(settings, incident_limit=0)
    assert [c.name for c in after.components] == ["realtime"]
    assert not any("dagster" in p or "dashboard" in p for p in after.problems), after.problems

    # one that runs beside the demo (its process lives) is kept; a started one is never forgotten
    redis_state.beat("dashboard", ttl_s=60)
    assert forget_absent(redis_url, settings, SIM) == []
    redis_state.beat("dagster", ttl_s=0.05)
    time.sleep(0.1)
    web = SIM | {"dagster": Endpoint("the Dagster webserver", "127.0.0.1", 3000, "dagster_port")}
    assert forget_absent(redis_url, settings, web) == []
    assert "component dagster is down (its heartbeat expired)" in gather_status(settings).problems
