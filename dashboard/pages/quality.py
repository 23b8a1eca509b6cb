"""Quality: quality scores against outcomes (win rate by quality band, calibration of ``confidence``), the
rejection reasons of candidates over time, and the tuning parameters (current against proposed) with Apply."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import dash
import plotly.graph_objects as go
from dash import Input, Output, State, callback, dcc, html

from dashboard import actions, tuning_panel, ui
from dashboard import backend as be
from dashboard.pages.performance import PERIODS, period_range
from tapewatch.adapters import dashboard_queries as q
from tapewatch.adapters import dashboard_stats as stats
from tapewatch.metrics import DAY_MS
from tapewatch.signal_stats import Band

SCATTER_POINTS = 2000
HOUR_MS = 3_600_000
NO_HISTORY = "No finished signals in this period yet — quality bands and calibration need outcomes."


def layout(**_: Any) -> html.Div:
    return html.Div(
        [
            dcc.Interval(id="quality-interval", interval=60_000),
            html.Div(id="quality-banner"),
            html.Div(
                ui.choice("period", "quality-period", list(PERIODS), "30 days", width=140),
                className="tw-controls",
            ),
            html.Div(id="quality-empty"),
            html.Div(
                [
                    ui.section(
                        "Win rate by quality band (n = triggered / finished)", dcc.Graph(id="quality-bands")
                    ),
                    ui.section(
                        "Calibration of confidence (TP1 before stop)", dcc.Graph(id="quality-calibration")
                    ),
                ],
                className="tw-row",
            ),
            html.Div(
                [
                    ui.section("Quality score against outcome (R)", dcc.Graph(id="quality-scatter")),
                    ui.section(
                        "Candidates by fate over time (rejection reasons)", dcc.Graph(id="quality-rejections")
                    ),
                ],
                className="tw-row",
            ),
            tuning_panel.layout(),
        ]
    )


def band_label(band: Band) -> str:
    """A quality band's bar label: its triggered/total signals (the win rate is over the triggered ones) and
    its average R."""
    return f"n={band.tally.triggered}/{band.tally.signals} · {ui.fmt_r(band.tally.average_r)}"


def bands_figure(fig: go.Figure, bands: list[Band]) -> None:
    """Win rate by quality band: a bar per band with triggered signals; a band without any (none finished, or
    all expired untriggered) has no win rate — no bar, and a marked gap when it holds signals."""
    fig.add_bar(
        x=[b.label for b in bands],
        y=[None if b.tally.win_rate is None else b.tally.win_rate * 100 for b in bands],
        name="win rate %",
        marker_color="#58a6ff",
        text=[band_label(b) for b in bands],
        textposition="outside",
        hovertext=[
            f"{b.tally.triggered} of {b.tally.signals} finished signals triggered; win rate over the triggered"
            for b in bands
        ],
    )
    for band in bands:
        if band.tally.win_rate is None and band.tally.signals:
            fig.add_annotation(
                x=band.label,
                y=0,
                yanchor="bottom",
                showarrow=False,
                text=f"no win rate: {band_label(band)}",
                font={"color": ui.MUTED, "size": 10},
                textangle=-90,
            )
    fig.update_yaxes(title="win rate % (of triggered)", range=[0, 110])


def quality_view(backend: be.Backend, period: str) -> tuple[Any, ...]:
    """Bands figure, calibration figure, scatter figure, rejections figure, banner, empty state (during an
    outage every output but the banner is ``no_update``)."""

    def read() -> tuple[Any, ...]:
        since, until = period_range(be.signal_now_ms(backend), period)
        # rejections bucketed by hour over at most 3 days, else by day (an "all" period counts 400 days)
        span = until - max(since, until - 400 * DAY_MS)
        bucket = HOUR_MS if span <= 3 * DAY_MS else 24 * HOUR_MS
        return (
            stats.quality(backend.db, since, until),
            stats.quality_points(backend.db, since, until, SCATTER_POINTS),
            q.rejection_counts(backend.db, since, until, bucket),
        )

    found, problem = be.attempt(read)
    if problem or found is None:
        # an outage: the page keeps its last figures (no_update) under the banner
        return (*(dash.no_update,) * 4, ui.banner([problem or "no data"]), dash.no_update)
    bands_fig, cal_fig = ui.figure(height=260), ui.figure(height=260)
    scatter_fig, rej_fig = ui.figure(height=280), ui.figure(height=280)
    (bands, cal), points, fates = found
    bands_figure(bands_fig, bands)
    cal_fig.add_scatter(
        x=[0, 1], y=[0, 1], mode="lines", name="perfect", line={"dash": "dot", "color": ui.MUTED}
    )
    # every number of a decile is over its triggered signals: confidence is P(TP1 | triggered)
    cal_fig.add_scatter(
        x=[b.mean_confidence for b in cal],
        y=[b.tp1_rate for b in cal],
        mode="markers+lines",
        name="observed",
        marker={"size": [max(6, min(20, b.tally.triggered**0.5)) for b in cal]},
        text=[f"{b.label}: n={b.tally.triggered} triggered" for b in cal],
        line={"color": "#f0883e"},
    )
    cal_fig.update_xaxes(title="confidence (mean of the triggered)", range=[0, 1])
    cal_fig.update_yaxes(title="observed TP1 rate", range=[0, 1])
    for tier, colour in ui.PRIORITY_COLOURS.items():
        mine = [(quality, r) for t, quality, r in points if t == tier]
        if mine:
            scatter_fig.add_scatter(
                x=[quality for quality, _ in mine],
                y=[r for _, r in mine],
                mode="markers",
                name=tier,
                marker={"color": colour, "size": 5, "opacity": 0.7},
            )
    scatter_fig.update_xaxes(title="quality score")
    scatter_fig.update_yaxes(title="P&L R")
    by_fate: dict[str, dict[int, int]] = defaultdict(dict)
    for start, fate, n in fates:
        by_fate[fate][start] = n
    for fate in sorted(by_fate, key=lambda f: (f != "signal", f)):
        counts = sorted(by_fate[fate].items())
        rej_fig.add_bar(x=[ui.fmt_time(t) for t, _ in counts], y=[n for _, n in counts], name=fate)
    rej_fig.update_layout(barmode="stack")
    finished = sum(b.tally.signals for b in bands)
    empty = ui.empty(NO_HISTORY) if not finished else html.Div()
    return bands_fig, cal_fig, scatter_fig, rej_fig, ui.banner([]), empty


@callback(
    Output("quality-bands", "figure"),
    Output("quality-calibration", "figure"),
    Output("quality-scatter", "figure"),
    Output("quality-rejections", "figure"),
    Output("quality-banner", "children"),
    Output("quality-empty", "children"),
    Input("quality-period", "value"),
    Input("quality-interval", "n_intervals"),
)
def refresh_quality(period: str, _: int | None) -> tuple[Any, ...]:
    return quality_view(be.current(), period)


@callback(
    Output("quality-tuning", "children"),
    Output("quality-proposal", "data"),
    Output("quality-apply-result", "children"),
    Input("quality-apply", "n_clicks"),
    Input("quality-interval", "n_intervals"),
    State("quality-proposal", "data"),
)
def tuning(n_clicks: int | None, _: int | None, proposal_id: Any) -> tuple[Any, Any, Any]:
    """The tuning table; on Apply (a POST), apply the shown proposal first and say what happened."""
    applied = None
    if dash.ctx.triggered_id == "quality-apply" and n_clicks:
        applied = tuning_panel.apply(be.current(), proposal_id, actions.origin())
    table, shown = tuning_panel.view(be.current())
    return table, shown, applied


# registered last, with its layout function (Dash reads the layout at registration)
dash.register_page(
    __name__, path="/quality", name="Quality", title="tapewatch · Quality", order=2, layout=layout
)
