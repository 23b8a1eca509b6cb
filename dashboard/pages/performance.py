"""Performance: finished signals by symbol and by tier over a chosen period — signals, win rate, total and
average R, P&L %, Sharpe, drawdown — and the equity curve in R. Aggregated in PostgreSQL by
tapewatch.adapters.dashboard_stats; the definitions are tapewatch.metrics' and tapewatch.signal_stats'."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, callback, dcc, html

from dashboard import backend as be
from dashboard import ui
from tapewatch.adapters import dashboard_stats as stats
from tapewatch.metrics import DAY_MS, Summary

#: Period choices: label → days back (None: everything stored).
PERIODS: dict[str, int | None] = {"24 h": 1, "7 days": 7, "30 days": 30, "90 days": 90, "all": None}
NO_FINISHED = (
    "No finished signals in this period yet — outcomes appear once signals hit a target, the stop or expire."
)

STAT_COLUMNS = [
    ui.column("signals", "signals", "int"),
    ui.column("triggered", "triggered", "int"),
    ui.column("win_rate", "win rate", "pct"),
    ui.column("total_r", "total R", "r"),
    ui.column("avg_r", "avg R", "r"),
    ui.column("pnl_pct", "P&L %", "num"),
    ui.column("sharpe", "Sharpe", "num"),
    ui.column("max_drawdown_r", "max DD R", "num"),
    ui.column("avg_hold_min", "avg hold min", "num"),
]


def layout(**_: Any) -> html.Div:
    return html.Div(
        [
            dcc.Interval(id="performance-interval", interval=30_000),
            html.Div(id="performance-banner"),
            html.Div(
                [
                    *ui.choice("period", "performance-period", list(PERIODS), "7 days", width=140),
                    *ui.choice(
                        "tier", "performance-tier", ["all", "HIGH", "MEDIUM", "LOW"], "all", width=120
                    ),
                ],
                className="tw-controls",
            ),
            html.Div(id="performance-kpis", className="tw-kpis"),
            html.Div(id="performance-empty"),
            ui.section("Equity curve (cumulative R, by exit time)", dcc.Graph(id="performance-equity")),
            html.Div(
                [
                    ui.table(
                        "By symbol",
                        "performance-symbols",
                        [ui.column("key", "symbol", pinned="left", width=110), *STAT_COLUMNS],
                        height=320,
                    ),
                    ui.table(
                        "By tier",
                        "performance-tiers",
                        [ui.column("key", "tier", "priority"), *STAT_COLUMNS],
                        height=140,
                    ),
                ],
                className="tw-row",
            ),
        ]
    )


def period_range(now_ms: int, period: str) -> tuple[int, int]:
    """``[since, until)`` in ms for a period label ending at ``now_ms`` (:func:`dashboard.backend.signal_now_ms`:
    the signals' clock, not the wall clock); ValueError for an unknown label."""
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r}; choose one of {', '.join(PERIODS)}")
    days = PERIODS[period]
    return (0 if days is None else now_ms - days * DAY_MS), now_ms + 1


def stat_row(key: str, s: Summary) -> dict[str, Any]:
    """One row of the per-symbol or per-tier grid."""
    return {
        "key": key,
        "signals": s.signals_generated,
        "triggered": s.signals_triggered,
        "win_rate": s.win_rate,
        "total_r": s.total_pnl_r,
        "avg_r": s.average_r,
        "pnl_pct": s.total_pnl_pct,
        "sharpe": s.sharpe_ratio,
        "max_drawdown_r": s.max_drawdown_r,
        "avg_hold_min": s.average_hold_minutes,
    }


def performance_view(backend: be.Backend, period: str, tier: str) -> tuple[Any, ...]:
    """KPIs, equity figure, per-symbol rows, per-tier rows, banner and empty state for the chosen period
    (during an outage every output but the banner is ``no_update``)."""
    chosen = None if tier == "all" else tier

    def read() -> stats.Performance:
        since, until = period_range(be.signal_now_ms(backend), period)
        return stats.performance(backend.db, since, until, open_ended=PERIODS[period] is None, tier=chosen)

    found, problem = be.attempt(read)
    if problem or found is None:
        # an outage: the page keeps its last data (no_update) under the banner
        return (*(dash.no_update,) * 4, ui.banner([problem or "no data"]), dash.no_update)
    fig = ui.figure(height=300)
    overall = found.overall
    kpis = [
        ui.kpi("finished signals", str(overall.signals_generated)),
        ui.kpi("win rate", ui.fmt_pct(overall.win_rate)),
        ui.kpi("total R", ui.fmt_r(overall.total_pnl_r), ui.tone_of(overall.total_pnl_r)),
        ui.kpi("avg R", ui.fmt_r(overall.average_r), ui.tone_of(overall.average_r)),
        ui.kpi("P&L %", ui.fmt_num(overall.total_pnl_pct, 2), ui.tone_of(overall.total_pnl_pct)),
        ui.kpi("Sharpe", ui.fmt_num(overall.sharpe_ratio, 2)),
        ui.kpi("max drawdown", f"{overall.max_drawdown_r:.2f} R"),
    ]
    if found.curve:
        fig.add_scatter(
            x=[ui.fmt_time(t) for t, _ in found.curve],
            y=[r for _, r in found.curve],
            mode="lines",
            fill="tozeroy",
            line={"color": "#58a6ff", "width": 1.5},
            name="cumulative R",
        )
    by_symbol = [stat_row(g.key, g.summary) for g in found.by_symbol]
    by_tier = [stat_row(g.key, g.summary) for g in found.by_tier]
    empty = ui.empty(NO_FINISHED) if not overall.signals_generated else html.Div()
    return kpis, fig, by_symbol, by_tier, ui.banner([]), empty


@callback(
    Output("performance-kpis", "children"),
    Output("performance-equity", "figure"),
    Output("performance-symbols", "rowData"),
    Output("performance-tiers", "rowData"),
    Output("performance-banner", "children"),
    Output("performance-empty", "children"),
    Input("performance-period", "value"),
    Input("performance-tier", "value"),
    Input("performance-interval", "n_intervals"),
)
def refresh_performance(period: str, tier: str, _: int | None) -> tuple[Any, ...]:
    return performance_view(be.current(), period, tier)


# registered last, with its layout function (Dash reads the layout at registration)
dash.register_page(
    __name__, path="/performance", name="Performance", title="tapewatch · Performance", order=1, layout=layout
)
