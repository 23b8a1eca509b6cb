"""The System page's host CPU and memory are the realtime host's, as its heartbeat publishes them and the
system performance sensor judges them: not the dashboard's own host over the last second."""

from __future__ import annotations

from typing import Any

from dashboard import backend as be
from dashboard.pages import system


def _kpis(kpis: list[Any]) -> dict[str, tuple[str, str]]:
    """Each KPI's label: (its value, its tone)."""
    out = {}
    for kpi in kpis:
        value, label = kpi.children
        out[str(label.children)] = (str(value.children), value.className.removeprefix("tw-kpi-value").strip())
    return out


def test_the_host_cpu_shown_is_the_realtime_heartbeats_minute_average(backend: be.Backend) -> None:
    """The page showed psutil's CPU of the dashboard's host since its previous refresh (0 % at the first, and
    another machine's when the dashboard runs elsewhere), while the sensor judged the heartbeat's figure."""
    kpis, *_, history = system.refresh_system(0, [])
    shown = _kpis(kpis)
    assert shown[system.HOST_CPU_LABEL] == ("—", "") and shown["host memory"] == ("—", "")  # no heartbeat
    assert history[-1]["cpu"] is None
    backend.redis.beat("realtime", info={"host_cpu": 91.4, "host_memory": 52.0, "cpu": 12.0})
    kpis, *_, history = system.refresh_system(1, history)
    shown = _kpis(kpis)
    assert system.HOST_CPU_LABEL == "host CPU (60 s avg)"
    assert shown[system.HOST_CPU_LABEL] == ("91 %", "bad")  # above cpu_threshold (80), as the sensor sees it
    assert shown["host memory"] == ("52 %", "")
    assert (history[-1]["cpu"], history[-1]["memory"]) == (91.4, 52.0)
    # shards on two hosts: the worst of each, as the sensor judges them
    backend.redis.beat("realtime-0of2", info={"host_cpu": 40.0, "host_memory": 90.0})
    backend.redis.beat("realtime-1of2", info={"host_cpu": 60.0, "host_memory": 30.0})
    backend.redis.client.delete(backend.redis.keys.heartbeat("realtime"))
    shown = _kpis(system.refresh_system(2, history)[0])
    assert shown[system.HOST_CPU_LABEL] == ("60 %", "") and shown["host memory"] == ("90 %", "bad")
