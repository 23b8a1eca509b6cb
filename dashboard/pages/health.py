"""Health: the control state (signalling paused, backup feed, reduced universe) with Pause / Resume buttons,
the Dagster sensors' last ticks (a stale or failing one in red: its automatic reactions have stopped), health
incidents (start, end, reason, action taken), feed incidents, and the audit log of operator actions."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, callback, dcc, html

from dashboard import actions, ui
from dashboard import backend as be
from tapewatch.adapters import dashboard_queries as q
from tapewatch.adapters import health_store, incidents
from tapewatch.adapters.status import SensorStatus, read_sensors
from tapewatch.errors import StorageUnavailable

DEFAULT_REASON = "paused from the dashboard"
SOURCE = "dashboard"


def layout(**_: Any) -> html.Div:
    refresh_ms = int(be.current().settings.dashboard_refresh * 1000)
    return html.Div(
        [
            dcc.Interval(id="health-interval", interval=max(refresh_ms, 1000)),
            html.Div(id="health-banner"),
            ui.section(
                "Control",
                html.Dl(id="health-control", className="tw-kv"),
                html.Div(
                    [
                        dcc.Input(
                            id="health-reason",
                            placeholder="why pause? (shown to operators)",
                            className="tw-input",
                            type="text",
                        ),
                        html.Button(
                            "Pause signalling", id="health-pause", className="tw-btn danger", n_clicks=0
                        ),
                        html.Button(
                            "Resume signalling", id="health-resume", className="tw-btn go", n_clicks=0
                        ),
                        html.Span(id="health-action-result", className="tw-muted"),
                    ],
                    className="tw-controls",
                ),
            ),
            ui.section("Dagster sensors", html.Div(id="health-sensors")),
            _listed(
                "Health incidents (sensors)",
                "health-incidents",
                [
                    ui.column("started_at", "start"),
                    ui.column("ended_at", "end"),
                    ui.column("kind", "kind"),
                    ui.column("reason", "reason", flex=2),
                    ui.column("action", "action taken"),
                    ui.column("recovery", "recovery"),
                ],
                height=200,
            ),
            html.Div(
                [
                    _listed(
                        "Feed incidents",
                        "health-feed-incidents",
                        [
                            ui.column("recorded_at", "recorded"),
                            ui.column("resolved_at", "resolved"),
                            ui.column("kind", "kind"),
                            ui.column("symbol", "symbol"),
                            ui.column("detail", "detail", flex=2),
                        ],
                        height=240,
                    ),
                    _listed(
                        "Operator actions",
                        "health-actions",
                        [
                            ui.column("recorded_at", "when"),
                            ui.column("action", "action"),
                            ui.column("detail", "detail"),
                            ui.column("actor", "user"),
                            ui.column("client_addr", "from"),
                            ui.column("result", "result"),
                            ui.column("error", "error"),
                        ],
                        height=240,
                    ),
                ],
                className="tw-row",
            ),
        ]
    )


#: Rows each table reads: the newest this many (plus every open incident, however old).
HEALTH_ROWS, FEED_ROWS, ACTION_ROWS = 100, 200, 100


def _listed(title: str, component_id: str, columns: list[dict[str, Any]], **grid_args: Any) -> html.Section:
    """A titled table with a line under the title saying what it lists (``<component_id>-note``)."""
    return ui.section(
        title,
        html.Div(id=f"{component_id}-note", className="tw-muted"),
        ui.grid(component_id, columns, **grid_args),
    )


def listing_note(listing: incidents.Listing[Any], noun: str, *, has_open: bool = True) -> str:
    """What a table lists: how many rows (and open ones) when it holds them all; else "the newest N of M", plus
    the open ones older than those (always listed, however old)."""
    opened = f" · {listing.open:,} open" if has_open and listing.open else ""
    if not listing.capped:
        return f"{listing.total:,} {noun}{opened}" if listing.total else ""
    older_open = len(listing.rows) - listing.limit  # open ones older than the newest N, listed all the same
    plus = f", plus {older_open:,} older open" if older_open > 0 else ""
    total = f"{listing.total:,}+" if listing.more else f"{listing.total:,}"
    return f"the newest {listing.limit:,} of {total} {noun}{plus}{opened}"


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "open"


def control_facts(backend: be.Backend) -> list[Any]:
    """The control state as a definition list (StorageUnavailable when Redis is down)."""
    control = backend.redis.read_control()
    facts = [
        ("signalling", f"PAUSED — {control.paused_reason}" if control.paused else "live"),
        ("market data", "backup feed (REST polling)" if control.backup_feed else "primary (websockets)"),
        (
            "universe cap",
            "none" if control.max_universe is None else f"{control.max_universe} symbols (reduced)",
        ),
        (
            "universe",
            "chosen by score" if control.universe is None else f"{len(control.universe)} symbols set",
        ),
    ]
    if control.invalid:
        facts.append(("unreadable control keys", ", ".join(control.invalid)))
    return [item for k, v in facts for item in (html.Dt(k), html.Dd(v))]


def health_view(backend: be.Backend) -> tuple[Any, ...]:
    """Control facts, health incidents, feed incidents, operator actions, banner, and the note of each table
    (what it lists: the newest N of M, every open incident included; a table whose read failed and its note
    are ``no_update``)."""
    problems: list[str] = []
    try:
        control = control_facts(backend)
    except StorageUnavailable as exc:
        control, problems = [html.Dt("control"), html.Dd("unknown (Redis unavailable)")], [str(exc)]
    health, problem = be.attempt(lambda: health_store.health_listing(backend.db, limit=HEALTH_ROWS))
    feed, problem2 = be.attempt(lambda: incidents.incident_listing(backend.db, limit=FEED_ROWS))
    done, problem3 = be.attempt(lambda: q.action_listing(backend.db, limit=ACTION_ROWS))
    problems += [p for p in (problem, problem2, problem3) if p and p not in problems]
    no = dash.no_update
    # a table whose read failed keeps its last rows (no_update) under the banner
    return (
        control,
        no if health is None else _health_rows(health.rows),
        no if feed is None else _feed_rows(feed.rows),
        no if done is None else _action_rows(done.rows),
        ui.banner(problems),
        no if health is None else listing_note(health, "incidents"),
        no if feed is None else listing_note(feed, "incidents"),
        no if done is None else listing_note(done, "actions", has_open=False),
    )


def sensor_view(backend: be.Backend) -> html.Div:
    """The sensors' last ticks as ``tapewatch status`` judges them (``read_sensors``): one row each, a stale or
    failing one in red with its problem; a note while Dagster is not running (then not judged)."""
    found, problem = be.attempt(lambda: read_sensors(backend.redis, backend.now_ms()))
    if found is None:
        return html.Div(f"unknown: {problem}", className="tw-muted")
    running, sensors = found
    if not running and all(sensor.tick is None for sensor in sensors):
        return html.Div("Dagster not running: no sensor has ticked.", className="tw-muted")
    note = (
        []
        if running
        else [html.Div("Dagster not running: the last ticks are not judged.", className="tw-muted")]
    )
    header = html.Tr([html.Th(h) for h in ("sensor", "state", "last tick (UTC)", "age", "outcome", "reason")])
    rows = [_sensor_row(sensor, backend.now_ms()) for sensor in sensors]
    return html.Div([*note, html.Table([html.Thead(header), html.Tbody(rows)], style={"width": "100%"})])


def _sensor_row(sensor: SensorStatus, now_ms: int) -> html.Tr:
    tick = sensor.tick
    cells = [
        sensor.name,
        sensor.state.upper() if sensor.problem else sensor.state,
        ui.fmt_time(None if tick is None else tick.ts),
        "—" if tick is None else ui.fmt_age(tick.age(now_ms)),
        "—" if tick is None else tick.outcome,
        sensor.problem or ("" if tick is None else tick.reason),
    ]
    # red (as the page's other errors) when its automatic reactions have stopped
    return html.Tr([html.Td(cell) for cell in cells], className="tw-error" if sensor.problem else None)


def _health_rows(health: list[health_store.HealthIncident]) -> list[dict[str, Any]]:
    return [{**h.to_json(), "started_at": _when(h.started_at), "ended_at": _when(h.ended_at)} for h in health]


def _feed_rows(feed: list[incidents.IncidentRow]) -> list[dict[str, Any]]:
    return [
        {**i.to_json(), "recorded_at": _when(i.recorded_at), "resolved_at": _when(i.resolved_at)}
        for i in feed
    ]


def _action_rows(done: list[q.OperatorAction]) -> list[dict[str, Any]]:
    return [
        {
            "recorded_at": _when(a.recorded_at),
            "action": a.action,
            "detail": a.detail,
            "actor": a.actor,
            "client_addr": a.client_addr,
            "result": a.result,
            "error": a.error,
        }
        for a in done
    ]


def pause(backend: be.Backend, reason: str | None, who: actions.Origin) -> str:
    """Pause signalling (recorded with its origin); the operator's message."""
    why = (reason or "").strip() or DEFAULT_REASON
    return actions.perform(
        backend, "pause", why, who, lambda: backend.redis.pause(why, source=f"{SOURCE}:{who.actor}")
    ).message


def resume(backend: be.Backend, who: actions.Origin) -> str:
    """Resume signalling (recorded with its origin); the operator's message."""
    return actions.perform(
        backend, "resume", "", who, lambda: backend.redis.resume(source=f"{SOURCE}:{who.actor}")
    ).message


@callback(
    Output("health-action-result", "children"),
    Input("health-pause", "n_clicks"),
    Input("health-resume", "n_clicks"),
    State("health-reason", "value"),
    prevent_initial_call=True,
)
def control_button(pause_clicks: int | None, resume_clicks: int | None, reason: str | None) -> str:
    """Pause or Resume (a POST), recorded with time and origin."""
    if dash.ctx.triggered_id == "health-pause" and pause_clicks:
        return pause(be.current(), reason, actions.origin())
    if dash.ctx.triggered_id == "health-resume" and resume_clicks:
        return resume(be.current(), actions.origin())
    return ""


@callback(
    Output("health-control", "children"),
    Output("health-incidents", "rowData"),
    Output("health-feed-incidents", "rowData"),
    Output("health-actions", "rowData"),
    Output("health-banner", "children"),
    Output("health-incidents-note", "children"),
    Output("health-feed-incidents-note", "children"),
    Output("health-actions-note", "children"),
    Input("health-interval", "n_intervals"),
    Input("health-action-result", "children"),
)
def refresh_health(_: int | None, __: Any) -> tuple[Any, ...]:
    return health_view(be.current())


@callback(Output("health-sensors", "children"), Input("health-interval", "n_intervals"))
def refresh_sensors(_: int | None) -> html.Div:
    return sensor_view(be.current())


# registered last, with its layout function (Dash reads the layout at registration)
dash.register_page(
    __name__, path="/health", name="Health", title="tapewatch · Health", order=5, layout=layout
)
