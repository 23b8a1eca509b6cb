"""Universe: the symbols followed now with their scores and components, the last rescans and what they changed,
the exclusions with their reasons, and a Rescan now button that launches the Dagster job and follows its run."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, callback, dcc, html

from dashboard import actions, ui
from dashboard import backend as be
from tapewatch.adapters import universe_store
from tapewatch.adapters.dagster_runs import FINISHED, RESCAN_JOB, DagsterUnavailable

NO_RESCAN = "No universe rescan yet — Dagster runs one every few hours; press Rescan now to run one."
#: After Dagster did not answer, the run's status is asked again only this much later (a hung webserver
#: would otherwise hold a worker for the client's timeout on every 5 s tick).
RETRY_MS = 30_000
#: Rows the page shows of the rescan history and of the exclusions (newest first); their titles say so.
RESCAN_ROWS = 20
EXCLUSION_ROWS = 100


def layout(**_: Any) -> html.Div:
    return html.Div(
        [
            dcc.Interval(id="universe-interval", interval=5000),
            dcc.Store(id="universe-run"),
            html.Div(id="universe-banner"),
            html.Div(
                [
                    html.Button("Rescan now", id="universe-rescan", className="tw-btn go", n_clicks=0),
                    html.Span(id="universe-run-status", className="tw-muted"),
                ],
                className="tw-controls",
            ),
            html.Div(id="universe-kpis", className="tw-kpis"),
            html.Div(id="universe-empty"),
            ui.table(
                "Symbols of the current universe (and the candidates left out)",
                "universe-members",
                [
                    ui.column(
                        "rank",
                        "rank",
                        "num",
                        valueFormatter={"function": "params.value ?? '—'"},
                        width=70,
                    ),
                    ui.column("symbol", "symbol", width=110),
                    ui.column("selected", "in", width=60),
                    ui.column("reason", "reason"),
                    ui.column("score", "score", "num"),
                    ui.column("volume_score", "volume", "num"),
                    ui.column("liquidity_score", "liquidity", "num"),
                    ui.column("volatility_score", "volatility", "num"),
                    ui.column("activity_score", "activity", "num"),
                    ui.column(
                        "quote_volume_24h",
                        "24h volume $",
                        "num",
                        valueFormatter={
                            "function": "params.value == null ? '—' : d3.format(',.3s')(params.value)"
                        },
                    ),
                    ui.column("spread", "spread", "pct"),
                    ui.column(
                        "depth_1pct_usd",
                        "depth 1% $",
                        "num",
                        valueFormatter={
                            "function": "params.value == null ? '—' : d3.format(',.3s')(params.value)"
                        },
                    ),
                ],
                height=330,
            ),
            html.Div(
                [
                    ui.table(
                        f"Last rescans (the newest {RESCAN_ROWS})",
                        "universe-rescans",
                        [
                            ui.column("created_at", "when"),
                            ui.column("kind", "kind"),
                            ui.column("symbols", "symbols", "int"),
                            ui.column("added", "added", flex=1),
                            ui.column("removed", "removed", flex=1),
                            ui.column("run_id", "run"),
                        ],
                        height=220,
                    ),
                    ui.table(
                        f"Exclusions (the newest {EXCLUSION_ROWS}; PostgreSQL's universe_exclusions keeps them all)",
                        "universe-exclusions",
                        [
                            ui.column("created_at", "when"),
                            ui.column("symbol", "symbol"),
                            ui.column("reason", "reason"),
                            ui.column("detail", "detail", flex=2),
                            ui.column("source", "by"),
                        ],
                        height=220,
                    ),
                ],
                className="tw-row",
            ),
        ]
    )


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "—"


def universe_view(backend: be.Backend) -> tuple[Any, ...]:
    """KPIs, member rows, rescan rows, exclusion rows, banner, empty state."""

    def read() -> tuple[Any, Any, Any, Any]:
        current = universe_store.current_universe(backend.db)
        members = universe_store.members(backend.db, current.rescan_id) if current else []
        return (
            current,
            members,
            universe_store.recent_rescans(backend.db, RESCAN_ROWS),
            universe_store.exclusions(backend.db, EXCLUSION_ROWS),
        )

    found, problem = be.attempt(read)
    if problem or found is None:
        # an outage: the page keeps its last data (no_update) under the banner
        return (*(dash.no_update,) * 4, ui.banner([problem or "no data"]), dash.no_update)
    current, members, rescans, exclusions = found
    if current is None:
        return [], [], [], [], ui.banner([]), ui.empty(NO_RESCAN)
    kpis = [
        ui.kpi("symbols", str(len(current.symbols))),
        ui.kpi("version", f"#{current.rescan_id} ({current.kind})"),
        ui.kpi("rescanned", _when(current.created_at)),
        ui.kpi("added", str(len(current.added))),
        ui.kpi("removed", str(len(current.removed))),
        ui.kpi("candidates", str(current.candidates)),
    ]
    member_rows = [
        {
            "rank": m.rank,
            "symbol": m.symbol,
            "selected": "yes" if m.selected else "",
            "reason": str(m.reason),
            "score": m.score,
            "volume_score": m.volume_score,
            "liquidity_score": m.liquidity_score,
            "volatility_score": m.volatility_score,
            "activity_score": m.activity_score,
            "quote_volume_24h": m.stats.quote_volume_24h,
            "spread": m.stats.spread,
            "depth_1pct_usd": m.stats.depth_1pct_usd,
        }
        for m in members
    ]
    rescan_rows = [
        {
            "created_at": _when(r.created_at),
            "kind": r.kind,
            "symbols": len(r.symbols),
            "added": " ".join(r.added),
            "removed": " ".join(r.removed),
            "run_id": r.run_id or "",
        }
        for r in rescans
    ]
    exclusion_rows = [
        {
            "created_at": _when(x.created_at),
            "symbol": x.symbol,
            "reason": str(x.reason),
            "detail": x.detail,
            "source": str(x.source),
        }
        for x in exclusions
    ]
    return kpis, member_rows, rescan_rows, exclusion_rows, ui.banner([]), html.Div()


def rescan(backend: be.Backend, who: actions.Origin) -> tuple[str, str | None]:
    """Launch ``universe_rescan_job`` (recorded); the operator's message and the run id (None on failure)."""
    launched: list[str] = []

    def change() -> str:
        run_id = backend.dagster.launch(RESCAN_JOB)
        launched.append(run_id)
        return f"run {run_id}"

    result = actions.perform(backend, "rescan", RESCAN_JOB, who, change)
    return result.message, launched[0] if launched else None


def follow_run(
    backend: be.Backend, run: dict[str, Any] | None, shown: str
) -> tuple[str, dict[str, Any] | None]:
    """The Rescan run's status in words and what to remember of the run for the next tick.

    ``run`` is ``{"run_id": ..., "retry_at": ms}`` (None: nothing to follow, Dagster is not asked). A finished
    run (SUCCESS, FAILURE, CANCELED) is forgotten, so polling stops; when Dagster does not answer, it is asked
    again only after :data:`RETRY_MS`, the last words shown meanwhile."""
    if not run or not run.get("run_id"):
        return shown, None
    run_id, now = str(run["run_id"]), backend.now_ms()
    if now < int(run.get("retry_at") or 0):
        return shown, run
    try:
        status = backend.dagster.status(run_id)
    except DagsterUnavailable as exc:
        return f"run {run_id[:8]}: status unknown, retrying in {RETRY_MS // 1000} s ({exc})", {
            "run_id": run_id,
            "retry_at": now + RETRY_MS,
        }
    if status in FINISHED:
        return f"run {run_id[:8]}: {status}", None
    return f"run {run_id[:8]}: {status} …", {"run_id": run_id}


@callback(
    Output("universe-run", "data", allow_duplicate=True),
    Output("universe-run-status", "children", allow_duplicate=True),
    Input("universe-rescan", "n_clicks"),
    prevent_initial_call=True,
)
def rescan_button(n_clicks: int | None) -> tuple[Any, str]:
    """Rescan now (a POST), recorded with time and origin; the run is then followed by the page's ticks."""
    if not n_clicks:
        return dash.no_update, ""
    message, run_id = rescan(be.current(), actions.origin())
    return ({"run_id": run_id} if run_id else dash.no_update), message


@callback(
    Output("universe-kpis", "children"),
    Output("universe-members", "rowData"),
    Output("universe-rescans", "rowData"),
    Output("universe-exclusions", "rowData"),
    Output("universe-banner", "children"),
    Output("universe-empty", "children"),
    Output("universe-run-status", "children"),
    Output("universe-run", "data"),
    Input("universe-interval", "n_intervals"),
    State("universe-run", "data"),
    State("universe-run-status", "children"),
)
def refresh_universe(_: int | None, run: dict[str, Any] | None, shown: str | None) -> tuple[Any, ...]:
    status, follow = follow_run(be.current(), run, shown or "")
    return (*universe_view(be.current()), status, follow if follow != run else dash.no_update)


# registered last, with its layout function (Dash reads the layout at registration)
dash.register_page(
    __name__, path="/universe", name="Universe", title="tapewatch · Universe", order=4, layout=layout
)
