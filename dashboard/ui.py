"""The dashboard's look: dark colours, number formats, and the few building blocks every page uses (outage
banner, empty state, figures on the dark theme, dense AG Grid tables with colour-coded priority and direction).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import dash_ag_grid as dag
import plotly.graph_objects as go
from dash import dcc, html

BG = "#0e1117"
PANEL = "#161b22"
TEXT = "#d6dde6"
MUTED = "#8b949e"
GRID_LINE = "#263040"
LONG = "#2ea043"
SHORT = "#f85149"
PRIORITY_COLOURS = {"HIGH": "#f0883e", "MEDIUM": "#d29922", "LOW": "#8b949e"}
STATE_COLOURS = {
    "WAITING": "#8b949e",
    "TRIGGERED": "#58a6ff",
    "TP1": "#3fb950",
    "TP2": "#2ea043",
    "STOPPED": "#f85149",
    "EXPIRED": "#6e7681",
}


# --- numbers -------------------------------------------------------------------------------------------


def fmt_num(value: float | None, digits: int = 2) -> str:
    """``1,234.57``; an em dash for None/NaN."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:,.{digits}f}"


def fmt_price(value: float | None) -> str:
    """A price with 6 significant digits (0.012345, 61,234.5); an em dash for None."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.0f}"


def fmt_r(value: float | None) -> str:
    """``+1.25 R``; an em dash for None."""
    return "—" if value is None or not math.isfinite(value) else f"{value:+.2f} R"


def fmt_pct(value: float | None, digits: int = 1) -> str:
    """A share as a percentage (0.534 → ``53.4 %``); an em dash for None."""
    return "—" if value is None or not math.isfinite(value) else f"{value * 100:.{digits}f} %"


def fmt_age(seconds: float | None) -> str:
    """``4 s``, ``3 min``, ``2.5 h``; ``never`` for None."""
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def fmt_time(ms: int | None) -> str:
    """Epoch ms as ``2024-08-08 13:05:12`` UTC; an em dash for None."""
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


# --- building blocks -----------------------------------------------------------------------------------


def banner(problems: Sequence[str]) -> html.Div:
    """The outage banner (hidden when there are no problems): put it in a page's ``<page>-banner`` slot."""
    if not problems:
        return html.Div(className="tw-hidden")
    return html.Div(
        [html.Strong("Unavailable — showing the last data, retrying. "), *[html.Div(p) for p in problems]],
        className="tw-banner",
    )


def empty(message: str, component_id: str | None = None) -> html.Div:
    """A calm empty state: what is happening and what to do (not an error)."""
    kwargs: dict[str, Any] = {"className": "tw-empty"}
    if component_id is not None:
        kwargs["id"] = component_id
    return html.Div(message, **kwargs)


def kpi(label: str, value: str, tone: str = "") -> html.Div:
    """One headline number with its label; ``tone``: ``good``, ``bad`` or empty."""
    return html.Div(
        [html.Div(value, className=f"tw-kpi-value {tone}"), html.Div(label, className="tw-kpi-label")],
        className="tw-kpi",
    )


def tone_of(value: float | None) -> str:
    """``good`` above 0, ``bad`` below, else empty."""
    if value is None or value == 0:
        return ""
    return "good" if value > 0 else "bad"


def figure(title: str = "", height: int = 280) -> go.Figure:
    """An empty figure on the dark theme."""
    fig = go.Figure()
    fig.update_layout(
        template="plotly_dark",
        paper_bgcolor=PANEL,
        plot_bgcolor=PANEL,
        font={"color": TEXT, "size": 11},
        title={"text": title, "font": {"size": 13}},
        height=height,
        margin={"l": 48, "r": 16, "t": 36 if title else 12, "b": 36},
        legend={"orientation": "h", "y": -0.2},
    )
    fig.update_xaxes(gridcolor=GRID_LINE)
    fig.update_yaxes(gridcolor=GRID_LINE)
    return fig


GRID_THEME = {
    "function": (
        "themeBalham.withParams({backgroundColor: '#161b22', foregroundColor: '#d6dde6', "
        "headerBackgroundColor: '#1f2630', oddRowBackgroundColor: '#121820', borderColor: '#263040', "
        "accentColor: '#58a6ff', fontSize: 12, rowHeight: 24, headerHeight: 26})"
    )
}

_PRIORITY_STYLE = {
    "styleConditions": [
        {"condition": f"params.value == '{tier}'", "style": {"color": colour, "fontWeight": "600"}}
        for tier, colour in PRIORITY_COLOURS.items()
    ]
}
_DIRECTION_STYLE = {
    "styleConditions": [
        {"condition": "params.value == 'LONG'", "style": {"color": LONG, "fontWeight": "600"}},
        {"condition": "params.value == 'SHORT'", "style": {"color": SHORT, "fontWeight": "600"}},
    ]
}
_STATE_STYLE = {
    "styleConditions": [
        {"condition": f"params.value == '{state}'", "style": {"color": colour}}
        for state, colour in STATE_COLOURS.items()
    ]
}
_SIGNED_STYLE = {
    "styleConditions": [
        {"condition": "params.value > 0", "style": {"color": LONG}},
        {"condition": "params.value < 0", "style": {"color": SHORT}},
    ]
}
# AG Grid value formatters (JavaScript, evaluated by dash-ag-grid; d3 is available there)
_PRICE = {"function": "params.value == null ? '—' : d3.format(',.6~g')(params.value)"}
_FIXED2 = {"function": "params.value == null ? '—' : d3.format(',.2f')(params.value)"}
_SIGNED_R = {"function": "params.value == null ? '—' : d3.format('+.2f')(params.value)"}
_AS_IS = {"function": "params.value"}
_PERCENT = {"function": "params.value == null ? '—' : d3.format('.1%')(params.value)"}
_TIME = {"function": "params.value == null ? '—' : d3.utcFormat('%m-%d %H:%M:%S')(params.value)"}


def column(field: str, header: str, kind: str = "text", **extra: Any) -> dict[str, Any]:
    """An AG Grid column of ``kind``: text, priority, direction, state, price, num, int (shown as it is: counts,
    scores), r (signed, coloured), pct (a share), time (epoch ms, UTC)."""
    spec: dict[str, Any] = {"field": field, "headerName": header}
    if kind == "priority":
        spec.update(cellStyle=_PRIORITY_STYLE, filter="agTextColumnFilter", width=82)
    elif kind == "direction":
        spec.update(cellStyle=_DIRECTION_STYLE, filter="agTextColumnFilter", width=78)
    elif kind == "state":
        spec.update(cellStyle=_STATE_STYLE, filter="agTextColumnFilter", width=96)
    elif kind == "price":
        spec.update(valueFormatter=_PRICE, filter="agNumberColumnFilter", type="rightAligned")
    elif kind == "num":
        spec.update(valueFormatter=_FIXED2, filter="agNumberColumnFilter", type="rightAligned")
    elif kind == "int":
        spec.update(valueFormatter=_AS_IS, filter="agNumberColumnFilter", type="rightAligned")
    elif kind == "r":
        spec.update(
            valueFormatter=_SIGNED_R,
            cellStyle=_SIGNED_STYLE,
            filter="agNumberColumnFilter",
            type="rightAligned",
        )
    elif kind == "pct":
        spec.update(valueFormatter=_PERCENT, filter="agNumberColumnFilter", type="rightAligned")
    elif kind == "time":
        spec.update(valueFormatter=_TIME, filter="agNumberColumnFilter", width=130)
    else:
        spec.update(filter="agTextColumnFilter")
    spec.update(extra)
    # the grids fit their width: a fixed width would be ignored, so it becomes the least the column gets
    spec["minWidth"] = spec.pop("width", 120 if kind in ("text", "time", "state") else 70)
    return spec


def grid(component_id: str, columns: list[dict[str, Any]], *, height: int = 300, **kwargs: Any) -> dag.AgGrid:
    """A dense, dark, sortable and filterable table (client-side rows unless ``rowModelType`` is given)."""
    options = {"theme": GRID_THEME, "animateRows": False, **kwargs.pop("dashGridOptions", {})}
    return dag.AgGrid(
        id=component_id,
        columnDefs=columns,
        defaultColDef={"sortable": True, "resizable": True, "filter": True, "minWidth": 60},
        dashGridOptions=options,
        style={"height": f"{height}px", "width": "100%"},
        columnSize=kwargs.pop("columnSize", "responsiveSizeToFit"),
        **kwargs,
    )


def section(title: str, *children: Any, **kwargs: Any) -> html.Section:
    """A titled panel."""
    return html.Section(
        [html.H3(title, className="tw-section-title"), *children], className="tw-panel", **kwargs
    )


def table(title: str, component_id: str, columns: list[dict[str, Any]], **grid_args: Any) -> html.Section:
    """A titled panel holding one table: ``grid(component_id, columns, **grid_args)``."""
    return section(title, grid(component_id, columns, **grid_args))


def choice(label: str, component_id: str, options: Sequence[str], value: str, width: int) -> list[Any]:
    """A labelled drop-down for a page's controls row: one of ``options``, ``value`` at first, never empty."""
    return [
        html.Span(label, className="tw-muted"),
        dcc.Dropdown(
            id=component_id,
            options=list(options),
            value=value,
            clearable=False,
            style={"width": f"{width}px"},
        ),
    ]
