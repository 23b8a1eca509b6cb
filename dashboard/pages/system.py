"""System: CPU and memory (the host, and each tapewatch process on it), messages per second per stream,
event→signal latency p50/p99, event-loop lag, websocket reconnects, book resyncs, PostgreSQL/Redis status and
the heartbeat age of every process — live."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dash
import psutil
from dash import Input, Output, State, callback, dcc, html

from dashboard import backend as be
from dashboard import ui
from dashboard.process_usage import ProcessSampler, this_host, usage_from_info
from tapewatch.errors import StorageUnavailable

HISTORY_POINTS = 300
RATE_PREFIX = "msgs_per_s_"
NO_METRICS = "No realtime metrics yet — start the service with `tapewatch run` (or `make demo`)."


def layout(**_: Any) -> html.Div:
    refresh_ms = int(be.current().settings.dashboard_refresh * 1000)
    return html.Div(
        [
            dcc.Interval(id="system-interval", interval=max(refresh_ms, 1000)),
            dcc.Store(id="system-history", data=[]),
            html.Div(id="system-banner"),
            html.Div(id="system-kpis", className="tw-kpis"),
            html.Div(id="system-empty"),
            html.Div(
                [
                    ui.section("Messages per second by stream", dcc.Graph(id="system-streams")),
                    ui.section("CPU, memory and latency (live)", dcc.Graph(id="system-trend")),
                ],
                className="tw-row",
            ),
            html.Div(
                [
                    ui.table(
                        "Processes (heartbeats)",
                        "system-components",
                        [
                            ui.column("component", "component"),
                            ui.column("status", "status"),
                            ui.column("age_s", "heartbeat age s", "num"),
                            ui.column("pid", "pid"),
                            ui.column("host", "host"),
                            ui.column("cpu_percent", "CPU %", "num"),
                            ui.column("rss_mb", "memory MB", "num"),
                        ],
                        height=170,
                    ),
                    ui.table(
                        "All realtime metrics",
                        "system-metrics",
                        [ui.column("name", "metric"), ui.column("value", "value", "num")],
                        height=170,
                    ),
                ],
                className="tw-row",
            ),
        ]
    )


#: One sampler for the app's life: CPU % needs the previous sample of the same process.
SAMPLER = ProcessSampler()


def process_usage(
    pid: int | None, host: str | None, info: Mapping[str, object] | None = None
) -> tuple[float | None, float | None]:
    """(CPU %, resident MB) of a process: what it published in its heartbeat ``info`` (``cpu``, ``rss``) when
    it did, else sampled here when it runs on this host (CPU unknown, None, on the first sample); (None,
    None) when it is elsewhere or gone."""
    cpu, rss = usage_from_info(info or {})
    if cpu is not None and rss is not None:
        return cpu, rss
    if pid is None or (host and host != this_host()):
        return cpu, rss
    sampled_cpu, sampled_rss = SAMPLER.sample(pid)
    return (cpu if cpu is not None else sampled_cpu), (rss if rss is not None else sampled_rss)


def system_view(backend: be.Backend, history: list[dict[str, Any]] | None) -> tuple[Any, ...]:
    """KPIs, per-stream figure, trend figure, component rows, metric rows, banner, empty state, history."""
    now = backend.now_ms()
    problems = be.storage_problems(backend)
    metrics: dict[str, float] = {}
    beats: dict[str, Any] = {}
    try:
        metrics = backend.redis.realtime_metrics()
        beats = backend.redis.heartbeats()
    except StorageUnavailable:
        pass  # in the banner already
    cpu = psutil.cpu_percent(interval=None)
    memory = psutil.virtual_memory().percent
    rates = {k.removeprefix(RATE_PREFIX): v for k, v in metrics.items() if k.startswith(RATE_PREFIX)}
    kpis = [
        ui.kpi("host CPU", f"{cpu:.0f} %", "bad" if cpu > backend.settings.cpu_threshold else ""),
        ui.kpi("host memory", f"{memory:.0f} %", "bad" if memory > backend.settings.memory_threshold else ""),
        ui.kpi("messages/s", ui.fmt_num(sum(rates.values()), 0) if rates else "—"),
        ui.kpi("event→signal p50", _ms(metrics.get("signal_latency_ms_p50"))),
        ui.kpi("event→signal p99", _ms(metrics.get("signal_latency_ms_p99"))),
        ui.kpi("loop lag p99", _ms(metrics.get("loop_lag_ms_p99"))),
        ui.kpi("reconnects", ui.fmt_num(metrics.get("reconnects"), 0)),
        ui.kpi("resyncs", ui.fmt_num(metrics.get("resyncs"), 0)),
        ui.kpi("PostgreSQL", "down" if any(p.startswith("PostgreSQL") for p in problems) else "up"),
        ui.kpi("Redis", "down" if any(p.startswith("Redis") for p in problems) else "up"),
    ]
    streams = ui.figure(height=240)
    if rates:
        streams.add_bar(x=list(rates), y=list(rates.values()), marker_color="#58a6ff")
    components = []
    for name, beat in sorted(beats.items()):
        cpu_p, rss = process_usage(beat.pid, beat.host, beat.info) if beat else (None, None)
        components.append(
            {
                "component": name,
                "status": "up" if beat else "DOWN",
                "age_s": round(beat.age(now), 1) if beat else None,
                "pid": beat.pid if beat else None,
                "host": beat.host if beat else None,
                "cpu_percent": None if cpu_p is None else round(cpu_p, 1),
                "rss_mb": None if rss is None else round(rss, 1),
            }
        )
    SAMPLER.forget_dead()
    point = {
        "t": now,
        "cpu": cpu,
        "memory": memory,
        "p99": metrics.get("signal_latency_ms_p99"),
        "lag": metrics.get("loop_lag_ms_p99"),
    }
    history = [*(history or []), point][-HISTORY_POINTS:]
    trend = ui.figure(height=240)
    times = [ui.fmt_time(int(p["t"])) for p in history]
    trend.add_scatter(x=times, y=[p["cpu"] for p in history], name="CPU %", mode="lines")
    trend.add_scatter(x=times, y=[p["memory"] for p in history], name="memory %", mode="lines")
    trend.add_scatter(x=times, y=[p["p99"] for p in history], name="latency p99 ms", mode="lines", yaxis="y2")
    trend.update_layout(yaxis2={"overlaying": "y", "side": "right", "showgrid": False, "title": "ms"})
    rows = [{"name": k, "value": v} for k, v in sorted(metrics.items())]
    empty = ui.empty(NO_METRICS) if not metrics and not problems else html.Div()
    return kpis, streams, trend, components, rows, ui.banner(problems), empty, history


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} ms"


@callback(
    Output("system-kpis", "children"),
    Output("system-streams", "figure"),
    Output("system-trend", "figure"),
    Output("system-components", "rowData"),
    Output("system-metrics", "rowData"),
    Output("system-banner", "children"),
    Output("system-empty", "children"),
    Output("system-history", "data"),
    Input("system-interval", "n_intervals"),
    State("system-history", "data"),
)
def refresh_system(_: int | None, history: list[dict[str, Any]] | None) -> tuple[Any, ...]:
    return system_view(be.current(), history)


# registered last, with its layout function (Dash reads the layout at registration)
dash.register_page(
    __name__, path="/system", name="System", title="tapewatch · System", order=3, layout=layout
)
