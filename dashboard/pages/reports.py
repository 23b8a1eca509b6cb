"""Reports: the daily, weekly and monthly performance reports the Dagster jobs write, readable in the page."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, callback, dcc, html

from dashboard import backend as be
from dashboard import ui
from tapewatch.adapters import performance_store

NO_REPORTS = "No reports yet — Dagster writes the daily report after each UTC day, the weekly and monthly ones after theirs."
KINDS = ("all", "daily", "weekly", "monthly")


def layout(**_: Any) -> html.Div:
    return html.Div(
        [
            dcc.Interval(id="reports-interval", interval=60_000),
            html.Div(id="reports-banner"),
            html.Div(
                [
                    dcc.Dropdown(
                        id="reports-kind",
                        options=list(KINDS),
                        value="all",
                        clearable=False,
                        style={"width": "130px"},
                    ),
                    dcc.Dropdown(id="reports-list", placeholder="choose a report", style={"width": "360px"}),
                ],
                className="tw-controls",
            ),
            ui.section("Report", html.Div(id="reports-body")),
        ]
    )


def report_options(backend: be.Backend, kind: str) -> tuple[Any, Any, Any]:
    """Dropdown options (``kind|period``), the newest one, and the banner; during an outage the options and
    the choice are ``no_update`` (the page keeps the report it shows) and the banner says why."""
    found, problem = be.attempt(
        lambda: performance_store.list_reports(backend.db, None if kind == "all" else kind, limit=200)
    )
    if problem or found is None:
        return dash.no_update, dash.no_update, ui.banner([problem or "no data"])
    options = [
        {"label": f"{r.kind} · {r.period} ({r.signals} signals)", "value": f"{r.kind}|{r.period}"}
        for r in found
    ]
    return options, (options[0]["value"] if options else None), ui.banner([])


def report_body(backend: be.Backend, choice: str | None) -> Any:
    """The chosen report as its self-contained HTML page (tables and inline SVG charts) in a sandboxed frame,
    or what to expect. (Its Markdown links the charts as files beside it, which this server does not serve.)"""
    if not choice:
        return ui.empty(NO_REPORTS)
    kind, _, period = choice.partition("|")
    report, problem = be.attempt(lambda: performance_store.get_report(backend.db, kind, period))
    if problem:
        return html.Div(problem, className="tw-error")
    if report is None:
        return ui.empty(f"The {kind} report of {period} is no longer stored.")
    if not report.html:
        return dcc.Markdown(report.markdown, className="tw-report", id="reports-text")
    # sandbox="": no script, no navigation; the report needs neither (its HTML inlines style and charts)
    return html.Iframe(srcDoc=report.html, sandbox="", className="tw-report-frame", id="reports-text")


@callback(
    Output("reports-list", "options"),
    Output("reports-list", "value"),
    Output("reports-banner", "children"),
    Input("reports-kind", "value"),
    Input("reports-interval", "n_intervals"),
    Input("reports-list", "value"),
)
def refresh_reports(kind: str, _: int | None, chosen: str | None) -> tuple[Any, ...]:
    options, newest, banner = report_options(be.current(), kind)
    if options is dash.no_update:
        return options, newest, banner
    keep = chosen if chosen in {o["value"] for o in options} else newest
    return options, keep, banner


@callback(Output("reports-body", "children"), Input("reports-list", "value"))
def show_report(choice: str | None) -> Any:
    return report_body(be.current(), choice)


# registered last, with its layout function (Dash reads the layout at registration)
dash.register_page(
    __name__, path="/reports", name="Reports", title="tapewatch · Reports", order=6, layout=layout
)
