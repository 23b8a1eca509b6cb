"""Live: open signals with their live outcome (from Redis) and the signals finished in the last hour with
their final state and realised R (PostgreSQL), refreshed every ``dashboard_refresh`` s; a symbol's panel (book
imbalance, large trades, price with the signal's levels); and every signal ever issued (paged on the server:
sort and filter run in PostgreSQL)."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, callback, dcc, html

from dashboard import backend as be
from dashboard import ui
from dashboard.realtime_status import RealtimeStatus, read_status
from tapewatch.adapters import dashboard_queries as q
from tapewatch.errors import StorageUnavailable

#: Price points kept per symbol for the live chart (at 1 s refresh: 15 minutes).
PRICE_POINTS = 900
DAY_MS = 86_400_000
#: Finished signals stay in the open table this long (event time of their exit, on the signals' clock) ...
RECENT_MS = 3_600_000
#: ... at most this many (the last to finish).
RECENT_ROWS = 20
NO_SIGNALS = "No open signals — the service is watching the tape; signals appear here within a second."
WARMING_UP = (
    "No signals yet — the service is warming up (it needs a setup that meets every required condition)."
)
NOT_RUNNING = "The realtime service is not running: start it with `tapewatch run` (or `make demo`)."


def _signal_columns(state_header: str, **time_args: Any) -> list[dict[str, Any]]:
    """The columns every signal table starts with: time, symbol, direction, priority, state and levels."""
    return [
        ui.column("event_time", "time (UTC)", "time", **time_args),
        ui.column("symbol", "symbol", width=110),
        ui.column("direction", "dir", "direction"),
        ui.column("priority", "priority", "priority"),
        ui.column("state", state_header, "state"),
        ui.column("entry_price", "entry", "price"),
        ui.column("stop_loss", "stop", "price"),
        ui.column("take_profit_1", "TP1", "price"),
        ui.column("take_profit_2", "TP2", "price"),
    ]


OPEN_COLUMNS = [
    *_signal_columns("status", sort="desc"),
    ui.column("last_price", "last", "price"),
    ui.column("unrealised_r", "unreal. R", "r"),
    ui.column("realised_r", "real. R", "r"),
    ui.column("quality_score", "quality", "int"),
    ui.column("confidence", "conf.", "pct"),
    ui.column("risk_reward_ratio", "R:R", "num"),
]
HISTORY_COLUMNS = [
    *_signal_columns("outcome"),
    ui.column("quality_score", "quality", "int"),
    ui.column("confidence", "conf.", "pct"),
    ui.column("pnl_r", "P&L R", "r"),
    ui.column("pnl_pct", "P&L %", "num"),
    ui.column("mfe_r", "MFE R", "num"),
    ui.column("mae_r", "MAE R", "num"),
]


def layout(**_: Any) -> html.Div:
    refresh_ms = int(be.current().settings.dashboard_refresh * 1000)
    return html.Div(
        [
            dcc.Interval(id="live-interval", interval=refresh_ms),
            dcc.Store(id="live-prices", data={}),
            html.Div(id="live-banner"),
            html.Div(id="live-kpis", className="tw-kpis"),
            ui.section(
                "Open signals, and those finished in the last hour (final state, realised R)",
                html.Div(id="live-open-empty"),
                ui.grid("live-open-grid", OPEN_COLUMNS, height=230, getRowId="params.data.signal_id"),
            ),
            html.Div(
                [
                    ui.section(
                        "Symbol",
                        dcc.Dropdown(id="live-symbol", placeholder="pick a symbol", clearable=False),
                        html.Div(id="live-book", className="tw-kv"),
                    ),
                    ui.section(
                        "Price and signal levels", dcc.Graph(id="live-price", config={"displaylogo": False})
                    ),
                ],
                className="tw-row",
            ),
            ui.section(
                "All signals (newest first; sort and filter any column)",
                html.Div(id="live-history-error", className="tw-error"),
                ui.grid(
                    "live-history-grid",
                    HISTORY_COLUMNS,
                    height=360,
                    rowModelType="infinite",
                    getRowId="params.data.signal_id",
                    dashGridOptions={
                        "cacheBlockSize": 100,
                        "maxBlocksInCache": 20,
                        "infiniteInitialRowCount": 1,
                    },
                ),
            ),
        ]
    )


# --- plain functions (the callbacks' bodies; tests call them) --------------------------------------------


def open_signals(backend: be.Backend) -> list[dict[str, Any]]:
    """The open signals in Redis, newest first (StorageUnavailable when Redis is down)."""
    rows = list(backend.redis.open_signals().values())
    return sorted(rows, key=lambda r: (-int(r.get("event_time") or 0), str(r.get("signal_id"))))


def stored_facts(backend: be.Backend) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """From PostgreSQL: the signal counts of the last 24 h and the signals finished in the last
    :data:`RECENT_MS` (at most :data:`RECENT_ROWS`), both on the signals' clock (``signal_now_ms``)."""
    now = be.signal_now_ms(backend)
    counts = q.signal_counts(backend.db, now - DAY_MS, now)
    recent = q.recently_finished(backend.db, now - RECENT_MS, RECENT_ROWS, now)
    return counts, [{**row, "unrealised_r": None, "finished": True} for row in recent]


def open_and_recent(open_rows: list[dict[str, Any]], finished: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The open signals (Redis) and the recently finished ones (PostgreSQL) as one table, newest first. A
    signal in both finished a moment ago (Redis drops it as PostgreSQL stores its outcome): its final row wins."""
    done = {str(r["signal_id"]) for r in finished}
    rows = [r for r in open_rows if str(r.get("signal_id")) not in done] + finished
    return sorted(rows, key=lambda r: (-int(r.get("event_time") or 0), str(r.get("signal_id"))))


def live_state(backend: be.Backend) -> tuple[Any, ...]:
    """The open and recently finished signals' rows, the empty state (or the notice that the open ones are
    frozen), the KPIs, the banner and the symbols to pick from. With Redis down, the rows, the message, the KPIs
    and the symbols keep their last data (``no_update``) under the banner; with PostgreSQL down the open
    signals are still shown."""
    problems: list[str] = []
    rows, problem = be.attempt(lambda: open_signals(backend))
    if problem:
        problems.append(problem)
    stored, problem = be.attempt(lambda: stored_facts(backend))
    if problem:
        problems.append(problem)
    counts, recent = stored if stored is not None else (None, [])
    realtime, last, feeds, paused = None, None, [], None
    try:
        realtime, _ = read_status(backend.redis, backend.settings.dashboard_stale_after)
        last = backend.redis.last_signal()
        feeds = sorted(backend.redis.feeds())
        paused = backend.redis.read_control().paused_reason
    except StorageUnavailable as exc:
        if not problems:  # Redis went away between the reads: the banner must say so
            problems.append(str(exc))
    if rows is None or realtime is None:
        no = dash.no_update
        return no, no, no, ui.banner(problems), no
    now = backend.now_ms()
    table = open_and_recent(rows, recent)
    rows = [r for r in table if not r.get("finished")]  # open: not finished in PostgreSQL meanwhile
    if rows and not realtime.running:
        message = frozen_notice(realtime, rows, now)
    elif rows:
        message = html.Div()
    elif not realtime.running:
        message = ui.empty(NOT_RUNNING)
    elif counts is not None and counts["total"] == 0 and last is None:
        message = ui.empty(WARMING_UP)
    else:
        message = ui.empty(NO_SIGNALS)
    unrealised = sum(float(r.get("unrealised_r") or 0) for r in rows)
    kpis = [
        ui.kpi("open signals", str(len(rows))),
        ui.kpi("signals 24 h", "—" if counts is None else str(counts["total"])),
        ui.kpi(
            "unrealised R" if realtime.running else "unrealised R (frozen)",
            ui.fmt_r(unrealised),
            ui.tone_of(unrealised) if realtime.running else "stale",
        ),
        ui.kpi("last signal", "none yet" if last is None else ui.fmt_age(last.age(now)) + " ago"),
        ui.kpi(
            "signalling",
            "PAUSED" if paused else ("live" if realtime.running else "not running"),
            "bad" if paused or not realtime.running else "",
        ),
    ]
    symbols = sorted({str(r["symbol"]) for r in table} | set(feeds))
    return table, message, kpis, ui.banner(problems), symbols


def frozen_notice(realtime: RealtimeStatus, rows: list[dict[str, Any]], now: int) -> html.Div:
    """The open signals are shown but nobody follows them: say since when (the service's last publish, else
    the newest update of a row)."""
    updates = [int(r["updated_ms"]) for r in rows if r.get("updated_ms")]
    since = realtime.published_ms or (max(updates) if updates else None)
    when = (
        ""
        if since is None
        else f" since {ui.fmt_time(since)} UTC ({ui.fmt_age(max(0, now - since) / 1000)} ago)"
    )
    return html.Div(
        f"The realtime service is not running{when} — open signals are not being followed: their status, last "
        "price and unrealised R are as of then. Start it with `tapewatch run`.",
        className="tw-notice",
    )


def _levels(backend: be.Backend, symbol: str, open_rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    mine = [r for r in open_rows if r.get("symbol") == symbol]
    if mine:
        return mine[0]
    page = q.signal_page(
        backend.db, 0, 1, filter_model={"symbol": {"filterType": "text", "type": "equals", "filter": symbol}}
    )
    return page.rows[0] if page.rows else None


def _depth_label(levels: int) -> str:
    """No book in the features yet: no level count to name ("top 0 levels" read as an empty book)."""
    return f"top {levels} levels Σ qty (bid / ask)" if levels else "top levels Σ qty (bid / ask)"


def _depth_text(values: dict[str, Any]) -> str:
    """Σ qty of the levels the live view holds a side (the top ``orderbook_depth``); a dash while the book is not
    usable (the view then holds no levels)."""
    bids, asks = values.get("bids"), values.get("asks")
    if not bids or not asks:
        return "—"
    return f"{ui.fmt_num(sum(q for _, q in bids), 3)} / {ui.fmt_num(sum(q for _, q in asks), 3)}"


def _walls_text(walls: list[list[float]] | None, shown: int = 3) -> str:
    """Walls (levels ≥ 5× the mean level of both sides in the view, spec 6.1 ``detect_large_orders``) as ``qty @ price
    (k×)``, the largest first; "none" when the book holds none, a dash when it is not usable."""
    if walls is None:
        return "—"
    if not walls:
        return "none"
    biggest = sorted(walls, key=lambda w: -w[2])[:shown]
    text = ", ".join(
        f"{ui.fmt_num(qty, 3)} @ {ui.fmt_price(price)} ({multiple:.1f}×)" for price, qty, multiple in biggest
    )
    return text + (f" (+{len(walls) - shown} more)" if len(walls) > shown else "")


def symbol_panel(
    backend: be.Backend, symbol: str | None, prices: dict[str, list[list[float]]] | None
) -> tuple[list[Any], Any, dict[str, list[list[float]]]]:
    """The book/trade-flow facts of ``symbol``, its price chart with the levels of its open (or last) signal,
    and the price history with the newest point appended."""
    prices = dict(prices or {})
    if not symbol:
        return [ui.empty("Pick a symbol (or click an open signal).")], ui.figure(height=300), prices
    try:
        feed = backend.redis.feed(symbol)
        features = backend.redis.symbol_features(symbol)
        signal = _levels(backend, symbol, open_signals(backend))
    except StorageUnavailable as exc:
        return [html.Div(str(exc), className="tw-error")], ui.figure(height=300), prices
    values: dict[str, Any] = dict((features or {}).get("features") or {})
    price = values.get("price") or (feed.last_price if feed else None)
    imbalance = values.get("imbalance_top10", feed.imbalance_top10 if feed else None)
    now = backend.now_ms()
    history = list(prices.get(symbol, []))
    if price is not None:
        history = ([*history, [now, float(price)]])[-PRICE_POINTS:]
        prices[symbol] = history
    facts = [
        ("book", feed.state if feed else "no feed"),
        (
            "bid / ask",
            f"{ui.fmt_price(feed.best_bid if feed else None)} / {ui.fmt_price(feed.best_ask if feed else None)}",
        ),
        ("imbalance top 10", ui.fmt_num(imbalance, 3)),
        (
            "large buys / sells (window)",
            f"{values.get('large_buys', '—')} / {values.get('large_sells', '—')}",
        ),
        ("volume intensity", ui.fmt_num(values.get("volume_intensity"), 2)),
        (f"VWAP {values.get('vwap_window') or '1h'}", ui.fmt_price(values.get("vwap_1h"))),
        (_depth_label(len(values.get("bids") or [])), _depth_text(values)),
        ("bid walls", _walls_text(values.get("bid_walls"))),
        ("ask walls", _walls_text(values.get("ask_walls"))),
        # why the required conditions can read false while the numbers look met: the engine judges no setup on
        # a stale tape or on old 15m bars
        ("tape / 15m context", f"{values.get('trades', '—')} / {values.get('context', '—')}"),
        (
            "required LONG / SHORT",
            f"{values.get('long_required', '—')} / {values.get('short_required', '—')}",
        ),
    ]
    book = [item for k, v in facts for item in (html.Dt(k), html.Dd(str(v)))]
    fig = ui.figure(height=300)
    if history:
        fig.add_scatter(
            x=[ui.fmt_time(int(t)) for t, _ in history],
            y=[p for _, p in history],
            mode="lines",
            name=symbol,
            line={"color": "#58a6ff", "width": 1.5},
        )
    if signal is not None:
        for key, label, colour in (
            ("entry_price", "entry", "#d6dde6"),
            ("stop_loss", "stop", ui.SHORT),
            ("take_profit_1", "TP1", ui.LONG),
            ("take_profit_2", "TP2", ui.LONG),
        ):
            level = signal.get(key)
            if level is not None:
                fig.add_hline(
                    y=float(level),
                    line={"color": colour, "dash": "dot", "width": 1},
                    annotation_text=f"{label} {ui.fmt_price(float(level))}",
                    annotation_position="top left",
                )
        fig.update_layout(
            title={
                "text": f"{symbol} · {signal.get('direction')} {signal.get('priority')} "
                f"({signal.get('state', 'last signal')})"
            }
        )
    return book, fig, prices


def history_rows(backend: be.Backend, request: dict[str, Any] | None) -> dict[str, Any]:
    """One block of the signal history grid (AG Grid infinite model request → response)."""
    request = request or {}
    start = int(request.get("startRow") or 0)
    end = int(request.get("endRow") or start + 100)
    page = q.signal_page(
        backend.db,
        start,
        min(end, start + q.MAX_PAGE),
        sort_model=request.get("sortModel"),
        filter_model=request.get("filterModel"),
    )
    return {"rowData": page.rows, "rowCount": page.total}


# --- callbacks -------------------------------------------------------------------------------------------


@callback(
    Output("live-open-grid", "rowData"),
    Output("live-open-empty", "children"),
    Output("live-kpis", "children"),
    Output("live-banner", "children"),
    Output("live-symbol", "options"),
    Input("live-interval", "n_intervals"),
)
def refresh_live(_: int | None) -> tuple[Any, ...]:
    return live_state(be.current())


@callback(
    Output("live-symbol", "value"),
    Input("live-open-grid", "cellClicked"),
    Input("live-symbol", "options"),
    State("live-symbol", "value"),
    State("live-open-grid", "rowData"),
)
def pick_symbol(
    clicked: dict[str, Any] | None,
    options: list[str] | None,
    chosen: str | None,
    rows: list[dict[str, Any]] | None,
) -> str | None:
    """A clicked open signal's symbol; else keep the choice; else the newest open signal's symbol."""
    if dash.ctx.triggered_id == "live-open-grid" and clicked and rows:
        row_id = clicked.get("rowId")
        for row in rows:
            if row.get("signal_id") == row_id:
                return str(row["symbol"])
    if chosen:
        return chosen
    if rows:
        return str(rows[0]["symbol"])
    return options[0] if options else None


@callback(
    Output("live-book", "children"),
    Output("live-price", "figure"),
    Output("live-prices", "data"),
    Input("live-interval", "n_intervals"),
    Input("live-symbol", "value"),
    State("live-prices", "data"),
)
def refresh_symbol(
    _: int | None, symbol: str | None, prices: dict[str, list[list[float]]] | None
) -> tuple[Any, ...]:
    return symbol_panel(be.current(), symbol, prices)


@callback(
    Output("live-history-grid", "getRowsResponse"),
    Output("live-history-error", "children"),
    Input("live-history-grid", "getRowsRequest"),
)
def history_block(request: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
    try:
        return history_rows(be.current(), request), ""
    except (StorageUnavailable, ValueError) as exc:
        return {"rowData": [], "rowCount": 0}, f"cannot load signals: {exc}"


# registered last, with its layout function (Dash reads the layout at registration)
dash.register_page(__name__, path="/", name="Live", title="tapewatch · Live", order=0, layout=layout)
