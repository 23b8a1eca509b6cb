"""System: CPU and memory (the realtime service's host, and each tapewatch process), messages per second per
stream, event→signal latency p50/p99, event-loop lag, websocket reconnects, book resyncs, PostgreSQL/Redis
status and the heartbeat age of every process — live.

The host CPU and memory are the ones the realtime heartbeat publishes (``host_cpu``: averaged over the last
60 s; ``host_memory``; with shards the worst host), the figures the system performance sensor judges against
its thresholds — not the dashboard's own host, which may be another machine, read over the last second."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dash
from dash import Input, Output, State, callback, dcc, html

from dashboard import backend as be
from dashboard import ui
from dashboard.process_usage import ProcessSampler, this_host, usage_from_info
from dashboard.realtime_status import UPDATED, RealtimeStatus, status_of
from tapewatch.adapters.redis_keys import REALTIME
from tapewatch.adapters.redis_state import realtime_shards
from tapewatch.errors import StorageUnavailable
from tapewatch.health import HostLoad, heartbeat_load

HISTORY_POINTS = 300
RATE_PREFIX = "msgs_per_s_"
NO_METRICS = "No realtime metrics yet — start the service with `tapewatch run` (or `make demo`)."
NOT_RUNNING = "The realtime service is not running (no heartbeat): start it with `tapewatch run`."
#: The label of the host CPU: the realtime heartbeat's, averaged as the performance sensor judges it.
HOST_CPU_LABEL = "host CPU (60 s avg)"


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
    """KPIs, per-stream figure, trend figure, component rows, metric rows, banner, notice, history.

    The realtime figures are live only while its heartbeat is and its metrics are recent (see
    :mod:`dashboard.realtime_status`); otherwise they are greyed and labelled with their age. With Redis down,
    the per-stream figure and both tables keep their last data (``no_update``) under the banner."""
    now = backend.now_ms()
    problems = be.storage_problems(backend)
    metrics: dict[str, float] = {}
    beats: dict[str, Any] = {}
    redis_down = False
    try:
        metrics = backend.redis.realtime_metrics()
        beats = backend.redis.heartbeats()
    except StorageUnavailable:
        redis_down = True  # in the banner already
    realtime = status_of(beats, metrics, backend.settings.dashboard_stale_after)
    live = realtime.fresh(now)
    figures = {k: v for k, v in metrics.items() if k != UPDATED}
    load = heartbeat_load(beats, REALTIME, realtime_shards(beats))
    cpu, memory = (load.cpu_percent, load.memory_percent) if load is not None else (None, None)
    rates = {k.removeprefix(RATE_PREFIX): v for k, v in figures.items() if k.startswith(RATE_PREFIX)}
    tone = "" if live else "stale"

    def figure_kpi(label: str, value: str) -> html.Div:
        return ui.kpi(label if live or value == "—" else f"{label} (stale)", value, tone)

    kpis = [
        *_host_kpis(load, backend.settings.cpu_threshold, backend.settings.memory_threshold),
        figure_kpi("messages/s", ui.fmt_num(sum(rates.values()), 0) if rates else "—"),
        figure_kpi("event→signal p50", _ms(figures.get("signal_latency_ms_p50"))),
        figure_kpi("event→signal p99", _ms(figures.get("signal_latency_ms_p99"))),
        figure_kpi("loop lag p99", _ms(figures.get("loop_lag_ms_p99"))),
        figure_kpi("recv→processed p99", _ms(figures.get("processing_lag_ms_p99"))),
        figure_kpi("reconnects", ui.fmt_num(figures.get("reconnects"), 0)),
        figure_kpi("resyncs", ui.fmt_num(figures.get("resyncs"), 0)),
        ui.kpi("PostgreSQL", "down" if any(p.startswith("PostgreSQL") for p in problems) else "up"),
        ui.kpi("Redis", "down" if any(p.startswith("Redis") for p in problems) else "up"),
    ]
    history = [*(history or []), _trend_point(now, cpu, memory, figures if live else {})][-HISTORY_POINTS:]
    trend = _trend(history)
    if redis_down:
        no = dash.no_update
        return kpis, no, trend, no, no, ui.banner(problems), no, history
    streams = ui.figure(height=240, title="" if live or not rates else f"stale: {realtime.as_of(now)}")
    if rates:
        streams.add_bar(x=list(rates), y=list(rates.values()), marker_color="#58a6ff" if live else ui.MUTED)
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
    rows = [{"name": k, "value": v} for k, v in sorted(figures.items())]
    return (
        kpis,
        streams,
        trend,
        components,
        rows,
        ui.banner(problems),
        _notice(realtime, now, figures, problems),
        history,
    )


def _host_kpis(load: HostLoad | None, cpu_threshold: float, memory_threshold: float) -> list[html.Div]:
    """The realtime host's CPU (60 s average) and memory, as its heartbeat publishes them and the system
    performance sensor judges them (red above the thresholds); "—" while no live heartbeat carries them."""
    if load is None:
        return [ui.kpi(HOST_CPU_LABEL, "—"), ui.kpi("host memory", "—")]
    cpu, memory = load.cpu_percent, load.memory_percent
    return [
        ui.kpi(HOST_CPU_LABEL, f"{cpu:.0f} %", "bad" if cpu > cpu_threshold else ""),
        ui.kpi("host memory", f"{memory:.0f} %", "bad" if memory > memory_threshold else ""),
    ]


def _notice(realtime: RealtimeStatus, now: int, figures: dict[str, float], problems: list[str]) -> html.Div:
    """What the realtime figures are: nothing to say when live; why they are stale, or absent, otherwise."""
    if realtime.fresh(now) or problems:
        return html.Div()
    if not figures:
        return ui.empty(NO_METRICS)
    if not realtime.running:
        return ui.empty(f"{NOT_RUNNING} The realtime figures are stale, {realtime.as_of(now)}.")
    return ui.empty(
        f"The realtime service has stopped publishing its metrics: they are {realtime.as_of(now)}."
    )


def _trend_point(
    now: int, cpu: float | None, memory: float | None, figures: dict[str, float]
) -> dict[str, Any]:
    # stale latency is not plotted as if measured now
    return {
        "t": now,
        "cpu": cpu,
        "memory": memory,
        "p99": figures.get("signal_latency_ms_p99"),
        "lag": figures.get("loop_lag_ms_p99"),
    }


def _trend(history: list[dict[str, Any]]) -> Any:
    trend = ui.figure(height=240)
    times = [ui.fmt_time(int(p["t"])) for p in history]
    trend.add_scatter(x=times, y=[p["cpu"] for p in history], name="host CPU % (60 s avg)", mode="lines")
    trend.add_scatter(x=times, y=[p["memory"] for p in history], name="host memory %", mode="lines")
    trend.add_scatter(x=times, y=[p["p99"] for p in history], name="latency p99 ms", mode="lines", yaxis="y2")
    trend.update_layout(yaxis2={"overlaying": "y", "side": "right", "showgrid": False, "title": "ms"})
    return trend


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
