"""What the dashboard reads from PostgreSQL: signal pages, finished-signal history, rejections, operator actions.

Every query of the Dash app lives here (callbacks hold no SQL). Large tables are paged on the server: the
signal grid asks for rows ``start..end`` with AG Grid's sort and filter models, which are translated into
SQL through a whitelist of columns (:data:`SIGNAL_COLUMNS`) — an unknown column or filter type is a
ValueError, never interpolated. Every function raises :class:`~tapewatch.errors.StorageUnavailable` when
PostgreSQL cannot be reached (the dashboard shows its outage banner and retries on its next tick).

The statistics of finished signals (summaries per symbol/tier, quality bands, calibration) are aggregated
in SQL by :mod:`tapewatch.adapters.dashboard_stats`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from tapewatch.adapters.db import Database
from tapewatch.adapters.incidents import Listing, count_rows
from tapewatch.adapters.signal_store import signal_outcomes, signals

#: Most rows one grid request may ask for (AG Grid's infinite model asks for 100 at a time by default).
MAX_PAGE = 1000

_o = signal_outcomes.c
_s = signals.c

#: Grid column id → SQL expression. Only these can be shown, sorted or filtered.
SIGNAL_COLUMNS: dict[str, ColumnElement[Any]] = {
    "signal_id": sa.cast(_s.signal_id, sa.Text),
    "event_time": _s.event_time,
    "symbol": _s.symbol,
    "direction": _s.direction,
    "priority": _s.priority,
    "quality_score": _s.quality_score,
    "confidence": _s.confidence,
    "entry_price": _s.entry_price,
    "stop_loss": _s.stop_loss,
    "take_profit_1": _s.take_profit_1,
    "take_profit_2": _s.take_profit_2,
    "risk_reward_ratio": _s.risk_reward_ratio,
    "orderbook_imbalance": _s.orderbook_imbalance,
    "large_trades_count": _s.large_trades_count,
    "volume_intensity": _s.volume_intensity,
    "suggested_position_size": _s.suggested_position_size,
    # no outcome row yet: the signal waits for its trigger
    "state": sa.func.coalesce(_o.state, "WAITING"),
    "pnl_r": _o.pnl_r,
    "pnl_pct": _o.pnl_pct,
    "mfe_r": _o.mfe_r,
    "mae_r": _o.mae_r,
    "trigger_time": _o.trigger_time,
    "exit_time": _o.exit_time,
}
TEXT_COLUMNS = frozenset({"signal_id", "symbol", "direction", "priority", "state"})

_Op = Callable[[ColumnElement[Any], Any], ColumnElement[bool]]
_TEXT_OPS: dict[str, _Op] = {
    "equals": lambda c, v: c == v,
    "notEqual": lambda c, v: c != v,
    "contains": lambda c, v: c.ilike(f"%{_escape(v)}%", escape="\\"),
    "notContains": lambda c, v: sa.not_(c.ilike(f"%{_escape(v)}%", escape="\\")),
    "startsWith": lambda c, v: c.ilike(f"{_escape(v)}%", escape="\\"),
    "endsWith": lambda c, v: c.ilike(f"%{_escape(v)}", escape="\\"),
}
_NUMBER_OPS: dict[str, _Op] = {
    "equals": lambda c, v: c == v,
    "notEqual": lambda c, v: c != v,
    "lessThan": lambda c, v: c < v,
    "lessThanOrEqual": lambda c, v: c <= v,
    "greaterThan": lambda c, v: c > v,
    "greaterThanOrEqual": lambda c, v: c >= v,
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True, slots=True)
class Page:
    """Rows ``start..start+len(rows)`` of a filtered, sorted table and how many rows match in all."""

    rows: list[dict[str, Any]]
    total: int


def _column(col_id: str) -> ColumnElement[Any]:
    try:
        return SIGNAL_COLUMNS[col_id]
    except KeyError:
        raise ValueError(f"unknown column {col_id!r}; known: {', '.join(sorted(SIGNAL_COLUMNS))}") from None


def _condition(col_id: str, spec: Mapping[str, Any]) -> ColumnElement[bool]:
    """One AG Grid filter (simple or ``{operator, conditions}``) of column ``col_id`` as a SQL condition."""
    if "conditions" in spec:
        parts = [_condition(col_id, c) for c in spec["conditions"]]
        if not parts:
            raise ValueError(f"filter of {col_id!r} has no conditions")
        operator = str(spec.get("operator", "AND")).upper()
        if operator not in ("AND", "OR"):
            raise ValueError(f"filter operator must be AND or OR; got {operator!r}")
        return sa.and_(*parts) if operator == "AND" else sa.or_(*parts)
    column = _column(col_id)
    kind = spec.get("filterType", "text")
    op = spec.get("type", "equals")
    if op == "blank":
        return column.is_(None)
    if op == "notBlank":
        return column.is_not(None)
    if kind == "text":
        if col_id not in TEXT_COLUMNS:
            raise ValueError(f"column {col_id!r} is numeric: use a number filter")
        text_op = _TEXT_OPS.get(op)
        if text_op is None:
            raise ValueError(f"unknown text filter {op!r}; known: {', '.join(_TEXT_OPS)}")
        return text_op(column, str(spec.get("filter", "")))
    if kind == "number":
        if col_id in TEXT_COLUMNS:
            raise ValueError(f"column {col_id!r} is text: use a text filter")
        value = _number(spec.get("filter"), col_id)
        if op == "inRange":
            return column.between(value, _number(spec.get("filterTo"), col_id))
        number_op = _NUMBER_OPS.get(op)
        if number_op is None:
            raise ValueError(f"unknown number filter {op!r}; known: {', '.join(_NUMBER_OPS)}, inRange")
        return number_op(column, value)
    raise ValueError(f"unsupported filter type {kind!r} (text or number)")


def _number(value: Any, col_id: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"filter of {col_id!r} needs a number; got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"filter of {col_id!r} needs a number; got {value!r}") from None


def signal_filters(filter_model: Mapping[str, Any] | None) -> list[ColumnElement[bool]]:
    """AG Grid's ``filterModel`` as SQL conditions over the whitelisted columns; ValueError for anything else."""
    return [_condition(col_id, spec) for col_id, spec in (filter_model or {}).items()]


def signal_order(sort_model: Sequence[Mapping[str, Any]] | None) -> list[ColumnElement[Any]]:
    """AG Grid's ``sortModel`` as ORDER BY terms (newest first by default, signal id as the tie-break)."""
    terms: list[ColumnElement[Any]] = []
    for item in sort_model or ():
        column = _column(str(item.get("colId")))
        direction = item.get("sort")
        if direction not in ("asc", "desc"):
            raise ValueError(f"sort direction must be asc or desc; got {direction!r}")
        terms.append(column.asc().nulls_last() if direction == "asc" else column.desc().nulls_last())
    if not terms:
        terms.append(_s.event_time.desc())
    terms.append(_s.signal_id.desc())  # a stable order, so pages never repeat or skip a row
    return terms


def signal_page(
    db: Database,
    start: int,
    end: int,
    *,
    sort_model: Sequence[Mapping[str, Any]] | None = None,
    filter_model: Mapping[str, Any] | None = None,
    since_ms: int | None = None,
) -> Page:
    """ENTRY signals with their stored outcome, rows ``start`` (inclusive) to ``end`` (exclusive) of the
    filtered, sorted list, and the filtered total. ``since_ms``: only signals created at or after it.

    ValueError for a bad range (``0 <= start < end``, at most :data:`MAX_PAGE` rows) or model."""
    if not (0 <= start < end) or end - start > MAX_PAGE:
        raise ValueError(f"rows {start}..{end}: need 0 <= start < end and at most {MAX_PAGE} rows")
    conditions = [_s.signal_type == "ENTRY", *signal_filters(filter_model)]
    if since_ms is not None:
        conditions.append(_s.event_time >= since_ms)
    joined = signals.outerjoin(signal_outcomes, _o.signal_id == _s.signal_id)
    query = (
        sa.select(*(expr.label(name) for name, expr in SIGNAL_COLUMNS.items()))
        .select_from(joined)
        .where(*conditions)
        .order_by(*signal_order(sort_model))
        .offset(start)
        .limit(end - start)
    )
    count = sa.select(sa.func.count()).select_from(joined).where(*conditions)
    with db.begin() as conn:
        rows = [dict(row._mapping) for row in conn.execute(query)]
        total = int(conn.execute(count).scalar_one())
    return Page(rows=rows, total=total)


def signal_counts(db: Database, since_ms: int, until_ms: int | None = None) -> dict[str, int]:
    """ENTRY signals created at or after ``since_ms`` (and at or before ``until_ms`` when given: a signal dated
    in the future of the page's clock is no signal of the period): ``total``, ``open`` (outcome not final) and
    ``finished``."""
    query = (
        sa.select(
            sa.func.count(),
            sa.func.count().filter(_o.finished.is_(True)),
        )
        .select_from(signals.outerjoin(signal_outcomes, _o.signal_id == _s.signal_id))
        .where(_s.signal_type == "ENTRY", _s.event_time >= since_ms)
    )
    if until_ms is not None:
        query = query.where(_s.event_time <= until_ms)
    with db.begin() as conn:
        total, finished = conn.execute(query).one()
    return {"total": int(total), "finished": int(finished), "open": int(total) - int(finished)}


#: What :func:`recently_finished` returns of a finished signal: the columns of the Live page's open-signal
#: table (``last_price`` is the exit price, ``realised_r`` the final P&L in R), plus its trigger and exit times.
_FINISHED_ROW: dict[str, ColumnElement[Any]] = {
    "signal_id": sa.cast(_s.signal_id, sa.Text),
    "event_time": _s.event_time,
    "symbol": _s.symbol,
    "direction": _s.direction,
    "priority": _s.priority,
    "state": _o.state,
    "entry_price": _s.entry_price,
    "stop_loss": _s.stop_loss,
    "take_profit_1": _s.take_profit_1,
    "take_profit_2": _s.take_profit_2,
    "last_price": _o.exit_price,
    "realised_r": _o.pnl_r,
    "quality_score": _s.quality_score,
    "confidence": _s.confidence,
    "risk_reward_ratio": _s.risk_reward_ratio,
    "trigger_time": _o.trigger_time,
    "exit_time": _o.exit_time,
}


def recently_finished(
    db: Database, since_ms: int, limit: int = 20, until_ms: int | None = None
) -> list[dict[str, Any]]:
    """The ENTRY signals that finished (TP2, STOPPED, EXPIRED) at or after ``since_ms`` (event time of the
    exit; at or before ``until_ms`` when given), the last to finish first, at most ``limit``: read down
    ``signal_outcomes_exit_time_idx``, so it stays cheap however many signals are stored. ValueError for a
    limit outside 1..MAX_PAGE."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be within 1..{MAX_PAGE}; got {limit}")
    query = (
        sa.select(*(expr.label(name) for name, expr in _FINISHED_ROW.items()))
        .select_from(signal_outcomes.join(signals, _s.signal_id == _o.signal_id))
        .where(_o.finished, _o.exit_time >= since_ms, _s.signal_type == "ENTRY")
        .order_by(_o.exit_time.desc(), _o.signal_id.desc())
        .limit(limit)
    )
    if until_ms is not None:
        query = query.where(_o.exit_time <= until_ms)
    with db.begin() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def rejection_counts(
    db: Database, since_ms: int, until_ms: int, bucket_ms: int
) -> list[tuple[int, str, int]]:
    """Candidates per time bucket (start of the bucket, ms of event time) and fate (``signal`` or the
    rejection reason), oldest first: the Quality page's rejection reasons over time."""
    if bucket_ms < 60_000:
        raise ValueError(f"bucket must be at least a minute; got {bucket_ms} ms")
    query = sa.text(
        "SELECT (event_time / :b) * :b AS bucket, fate, count(*) FROM candidates "
        "WHERE event_time >= :since AND event_time < :until GROUP BY 1, 2 ORDER BY 1, 2"
    )
    with db.begin() as conn:
        rows = conn.execute(query, {"b": bucket_ms, "since": since_ms, "until": until_ms})
        return [(int(b), str(fate), int(n)) for b, fate, n in rows]


APPLY_TUNING_ACTION = "apply_tuning"  # the dashboard's apply; tuning_applications holds what it applied


@dataclass(frozen=True, slots=True)
class OperatorAction:
    """One row of ``operator_actions`` (sql/0006): a state change asked from the dashboard."""

    id: int
    action: str
    detail: str
    actor: str
    client_addr: str
    source: str
    result: str
    error: str
    recorded_at: datetime


def record_action(
    db: Database,
    action: str,
    *,
    actor: str,
    client_addr: str,
    detail: str = "",
    error: str = "",
    source: str = "dashboard",
) -> int:
    """Store one operator action (``error`` empty: it succeeded); return its id."""
    with db.begin() as conn:
        return int(
            conn.execute(
                sa.text(
                    "INSERT INTO operator_actions (action, detail, actor, client_addr, source, result, error) "
                    "VALUES (:action, :detail, :actor, :addr, :source, :result, :error) RETURNING id"
                ),
                {
                    "action": action,
                    "detail": detail[:1000],
                    "actor": actor or "anonymous",
                    "addr": client_addr,
                    "source": source,
                    "result": "failed" if error else "ok",
                    "error": error[:1000],
                },
            ).scalar_one()
        )


def action_listing(db: Database, limit: int = 100) -> Listing[OperatorAction]:
    """The newest ``limit`` operator actions, newest first, and how many are stored
    (:func:`~tapewatch.adapters.incidents.count_rows`)."""
    with db.begin() as conn:
        newest = _recent_actions(conn, limit)
        total, more = count_rows(conn, "operator_actions", len(newest), limit)
    return Listing(rows=newest, limit=limit, total=total, open=0, more=more)


def recent_actions(db: Database, limit: int = 50) -> list[OperatorAction]:
    """The newest ``limit`` operator actions, newest first."""
    with db.begin() as conn:
        return _recent_actions(conn, limit)


def _recent_actions(conn: Connection, limit: int) -> list[OperatorAction]:
    rows = conn.execute(
        sa.text(
            "SELECT id, action, detail, actor, client_addr, source, result, error, recorded_at "
            "FROM operator_actions ORDER BY recorded_at DESC, id DESC LIMIT :limit"
        ),
        {"limit": limit},
    )
    return [OperatorAction(*row) for row in rows]


__all__ = [
    "APPLY_TUNING_ACTION",
    "MAX_PAGE",
    "SIGNAL_COLUMNS",
    "OperatorAction",
    "Page",
    "action_listing",
    "recent_actions",
    "recently_finished",
    "record_action",
    "rejection_counts",
    "signal_counts",
    "signal_filters",
    "signal_order",
    "signal_page",
]
