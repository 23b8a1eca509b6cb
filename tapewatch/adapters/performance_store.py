"""PostgreSQL side of outcomes, metrics and reports (sql/0004_performance.sql, reading sql/0001, 0002, 0005).

- Batch outcomes: :func:`entries_to_settle` (ENTRY signals of a period without a finished batch outcome),
  :func:`save_batch` (the batch outcomes, which replace live ones, and the disagreements found).
- Metrics: :func:`finished_outcomes` (what the metrics are computed from), :func:`save_daily`,
  :func:`save_weekly`.
- Reports: :func:`fate_counts` (candidates), :func:`incidents` (feed incidents, and the health sensors'
  incidents when their table exists), :func:`save_report`, and for the dashboard :func:`list_reports` and
  :func:`get_report`.

Every function raises :class:`~tapewatch.errors.StorageUnavailable` when PostgreSQL cannot be reached.
Periods are half-open ``[start, end)`` of event time (ms) or of wall-clock time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, insert

from tapewatch.adapters.dashboard_queries import APPLY_TUNING_ACTION
from tapewatch.adapters.db import Database
from tapewatch.adapters.signal_store import SignalStore, entries_with_outcomes, signal_outcomes, signals
from tapewatch.metrics import DailyMetrics, Summary, WeeklyMetrics
from tapewatch.outcome import Outcome
from tapewatch.outcome_batch import Disagreement
from tapewatch.quality import TIERS, Tier
from tapewatch.reports.content import Incident, OperatorEvent, ReportKind
from tapewatch.signal import Signal

_meta = sa.MetaData()

outcome_disagreements = sa.Table(
    "outcome_disagreements",
    _meta,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("signal_id", sa.Uuid(as_uuid=False)),
    sa.Column("live_state", sa.Text),
    sa.Column("batch_state", sa.Text),
    sa.Column("live_pnl_r", sa.Double),
    sa.Column("batch_pnl_r", sa.Double),
    sa.Column("event_time", sa.BigInteger),
    sa.Column("found_at", sa.DateTime(timezone=True)),
)

daily_metrics = sa.Table(
    "daily_metrics",
    _meta,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("tier", sa.Text, primary_key=True),
    *(sa.Column(n, sa.Integer) for n in ("signals_generated", "signals_triggered", "wins", "signals_open")),
    *(
        sa.Column(n, sa.Double)
        for n in (
            "win_rate",
            "average_hold_minutes",
            "total_pnl_r",
            "total_pnl_pct",
            "sharpe_ratio",
            "max_drawdown_r",
            "mean_quality",
        )
    ),
    sa.Column("computed_at", sa.DateTime(timezone=True)),
)

weekly_metrics = sa.Table(
    "weekly_metrics",
    _meta,
    sa.Column("week_start", sa.Date, primary_key=True),
    *(sa.Column(n, sa.Integer) for n in ("signals_generated", "signals_triggered", "signals_open")),
    *(
        sa.Column(n, sa.Double)
        for n in (
            "win_rate",
            "total_pnl_r",
            "total_pnl_pct",
            "sharpe_ratio",
            "max_drawdown_r",
            "strategy_efficiency",
            "win_rate_trend",
            "quality_trend",
        )
    ),
    *(sa.Column(n, JSONB) for n in ("best_symbols", "worst_symbols", "by_tier")),
    sa.Column("computed_at", sa.DateTime(timezone=True)),
)

reports = sa.Table(
    "reports",
    _meta,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("kind", sa.Text),
    sa.Column("period", sa.Text),
    sa.Column("period_start", sa.Date),
    sa.Column("period_end", sa.Date),
    sa.Column("markdown_path", sa.Text),
    sa.Column("html_path", sa.Text),
    sa.Column("markdown", sa.Text),
    sa.Column("html", sa.Text),
    sa.Column("signals", sa.Integer),
    sa.Column("created_at", sa.DateTime(timezone=True)),
)


class PendingEntry(msgspec.Struct, frozen=True, kw_only=True):
    """An ENTRY signal without a finished batch outcome, and the outcome stored so far (live, or None)."""

    signal: Signal
    live: Outcome | None


class ReportInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A stored report without its text: what the dashboard lists."""

    id: int
    kind: str
    period: str
    period_start: date
    period_end: date
    markdown_path: str
    html_path: str
    signals: int
    created_at: datetime


class StoredReport(msgspec.Struct, frozen=True, kw_only=True):
    """A report with its Markdown and HTML (``created_at`` None before it is stored)."""

    kind: ReportKind
    period: str
    period_start: date
    period_end: date
    markdown_path: str
    html_path: str
    markdown: str
    html: str
    signals: int
    created_at: datetime | None = None


# --- batch outcomes ---------------------------------------------------------------------------------------
def entries_to_settle(db: Database, start_ms: int, end_ms: int) -> list[PendingEntry]:
    """ENTRY signals created in ``[start_ms, end_ms)`` whose outcome is missing, live, or not finished,
    oldest first (a finished batch outcome is final and is not computed again)."""
    o = signal_outcomes.c
    entries = entries_with_outcomes(
        db,
        signals.c.event_time >= start_ms,
        signals.c.event_time < end_ms,
        sa.or_(o.signal_id.is_(None), o.source != "batch", sa.not_(o.finished)),
    )
    return [PendingEntry(signal=signal, live=live) for signal, live in entries]


def save_batch(db: Database, outcomes: Sequence[Outcome], disagreements: Sequence[Disagreement]) -> int:
    """Store the batch outcomes (they replace live ones) and record the disagreements; return how many
    outcomes were written."""
    store = SignalStore(db)
    written = sum(1 for outcome in outcomes if store.save_outcome(outcome, source="batch"))
    if disagreements:
        with db.begin() as conn:
            conn.execute(
                outcome_disagreements.insert(),
                [
                    {
                        "signal_id": d.signal_id,
                        "live_state": d.live_state.value,
                        "batch_state": d.batch_state.value,
                        "live_pnl_r": d.live_pnl_r,
                        "batch_pnl_r": d.batch_pnl_r,
                        "event_time": d.event_time,
                    }
                    for d in disagreements
                ],
            )
    return written


def disagreement_count(db: Database, start_ms: int, end_ms: int) -> int:
    """Signals created in ``[start_ms, end_ms)`` with at least one recorded disagreement."""
    d = outcome_disagreements.c
    query = sa.select(sa.func.count(sa.distinct(d.signal_id))).where(
        d.event_time >= start_ms, d.event_time < end_ms
    )
    with db.begin() as conn:
        return int(conn.execute(query).scalar_one())


# --- metrics ----------------------------------------------------------------------------------------------
def _entries(start_ms: int, end_ms: int) -> sa.Select[Any]:
    o = signal_outcomes.c
    return (
        sa.select(signals.c.priority, signals.c.event_time, o.outcome, o.finished)
        .select_from(signals.outerjoin(signal_outcomes, o.signal_id == signals.c.signal_id))
        .where(
            signals.c.signal_type == "ENTRY",
            signals.c.event_time >= start_ms,
            signals.c.event_time < end_ms,
        )
    )


def finished_outcomes(db: Database, start_ms: int, end_ms: int) -> list[Outcome]:
    """The finished outcomes (batch or live, whichever is stored) of the ENTRY signals created in
    ``[start_ms, end_ms)``, oldest signal first: what the metrics and reports are computed from."""
    query = _entries(start_ms, end_ms).where(signal_outcomes.c.finished).order_by(signals.c.event_time)
    with db.begin() as conn:
        return [msgspec.convert(row.outcome, Outcome) for row in conn.execute(query)]


def unfinished_counts(
    db: Database, start_ms: int, end_ms: int, *, created_before: Mapping[Tier, int] | None = None
) -> dict[Tier, int]:
    """Per tier (every tier present), the ENTRY signals created in ``[start_ms, end_ms)`` without a finished
    outcome yet: still open, or never followed (the service was down and the batch has not run).

    ``created_before`` (per tier: now − the tier's response window − its hold bound) keeps only those whose
    last possible end has passed: not open any more, and not counted (the live tracker did not finish them
    and the outcome batch has not yet: their candles not fetched)."""
    rows = (
        _entries(start_ms, end_ms)
        .where(sa.not_(sa.func.coalesce(signal_outcomes.c.finished, False)))
        .subquery()
    )
    query = sa.select(rows.c.priority, sa.func.count()).group_by(rows.c.priority)
    if created_before is not None:
        query = query.where(
            sa.or_(
                *(
                    sa.and_(rows.c.priority == tier, rows.c.event_time < ms)
                    for tier, ms in created_before.items()
                )
            )
        )
    found: dict[Tier, int] = dict.fromkeys(TIERS, 0)
    with db.begin() as conn:
        for tier, count in conn.execute(query):
            if tier in found:
                found[tier] = int(count)
    return found


def _summary_values(s: Summary) -> dict[str, Any]:
    return {
        "signals_generated": s.signals_generated,
        "signals_triggered": s.signals_triggered,
        "win_rate": s.win_rate,
        "total_pnl_r": s.total_pnl_r,
        "total_pnl_pct": s.total_pnl_pct,
        "sharpe_ratio": s.sharpe_ratio,
        "max_drawdown_r": s.max_drawdown_r,
    }


def save_daily(db: Database, metrics: DailyMetrics, open_by_tier: dict[Tier, int]) -> None:
    """Replace the rows of ``metrics.day``: one per tier and one ``ALL``."""
    rows = [
        {
            "day": metrics.day,
            "tier": name,
            **_summary_values(s),
            "wins": s.wins,
            "signals_open": open_count,
            "average_hold_minutes": s.average_hold_minutes,
            "mean_quality": s.mean_quality,
        }
        for name, s, open_count in [
            ("ALL", metrics.overall, sum(open_by_tier.values())),
            *((t, metrics.by_tier[t], open_by_tier.get(t, 0)) for t in TIERS),
        ]
    ]
    with db.begin() as conn:
        conn.execute(daily_metrics.delete().where(daily_metrics.c.day == metrics.day))
        conn.execute(daily_metrics.insert(), rows)


def load_daily(db: Database, day: date) -> dict[str, dict[str, Any]]:
    """The stored rows of ``day`` by tier name (``ALL``, ``HIGH``, ...); empty when never computed."""
    with db.begin() as conn:
        rows = conn.execute(sa.select(daily_metrics).where(daily_metrics.c.day == day)).mappings().all()
    return {str(row["tier"]): dict(row) for row in rows}


def save_weekly(db: Database, metrics: WeeklyMetrics, open_signals: int) -> None:
    """Insert or replace the row of ``metrics.week_start``."""
    row = {
        "week_start": metrics.week_start,
        **_summary_values(metrics.overall),
        "signals_open": open_signals,
        "strategy_efficiency": metrics.strategy_efficiency,
        "win_rate_trend": metrics.win_rate_trend,
        "quality_trend": metrics.quality_trend,
        "best_symbols": msgspec.to_builtins(metrics.best_symbols),
        "worst_symbols": msgspec.to_builtins(metrics.worst_symbols),
        "by_tier": {t: s.to_spec() for t, s in metrics.by_tier.items()},
    }
    stmt = insert(weekly_metrics).values(row)
    stmt = stmt.on_conflict_do_update(
        index_elements=[weekly_metrics.c.week_start],
        set_={**{k: stmt.excluded[k] for k in row if k != "week_start"}, "computed_at": sa.func.now()},
    )
    with db.begin() as conn:
        conn.execute(stmt)


def load_weekly(db: Database, week_start: date) -> dict[str, Any] | None:
    """The stored row of the week starting ``week_start``; None when never computed."""
    query = sa.select(weekly_metrics).where(weekly_metrics.c.week_start == week_start)
    with db.begin() as conn:
        row = conn.execute(query).mappings().first()
    return None if row is None else dict(row)


# --- report inputs ----------------------------------------------------------------------------------------
def fate_counts(db: Database, start_ms: int, end_ms: int) -> dict[str, int]:
    """Candidates of ``[start_ms, end_ms)`` (event time) per fate: ``signal`` or the rejection reason."""
    query = sa.text(
        "SELECT fate, count(*) FROM candidates WHERE event_time >= :s AND event_time < :e GROUP BY fate"
    )
    with db.begin() as conn:
        return {str(f): int(n) for f, n in conn.execute(query, {"s": start_ms, "e": end_ms})}


def incidents(db: Database, start: datetime, end: datetime) -> list[Incident]:
    """Incidents that overlap ``[start, end)`` (wall-clock), oldest first: started before ``end`` and ended
    at or after ``start`` or still open, so one that crosses the period's start or has not ended is listed.
    Feed incidents, and the health sensors' incidents when that table exists (sql/0005; a database without
    it gives feed incidents only). A feed incident keeps the event time of the frame that revealed it, when
    there was one (``Incident.event_time``); health incidents have wall-clock times only."""
    feed = sa.text(
        "SELECT kind, symbol, detail, recorded_at, resolved_at, event_time FROM feed_incidents "
        "WHERE recorded_at < :e AND (resolved_at IS NULL OR resolved_at >= :s) ORDER BY recorded_at, id"
    )
    health = sa.text(
        "SELECT kind, reason, action, recovery, started_at, ended_at FROM health_incidents "
        "WHERE started_at < :e AND (ended_at IS NULL OR ended_at >= :s) ORDER BY started_at, id"
    )
    bounds = {"s": start, "e": end}
    with db.begin() as conn:
        found = [
            Incident(
                source="feed",
                kind=k,
                symbol=sym,
                detail=detail,
                started=at,
                ended=resolved,
                event_time=None if event_ms is None else datetime.fromtimestamp(event_ms / 1000, UTC),
            )
            for k, sym, detail, at, resolved, event_ms in conn.execute(feed, bounds)
        ]
        if _has_table(conn, "health_incidents"):
            found += [
                Incident(
                    source="health",
                    kind=k,
                    detail=f"{reason}; action: {action}" + (f"; recovery: {recovery}" if recovery else ""),
                    started=at,
                    ended=ended,
                )
                for k, reason, action, recovery, at, ended in conn.execute(health, bounds)
            ]
    return sorted(found, key=lambda i: i.started)


def _has_table(conn: sa.Connection, name: str) -> bool:
    """Whether ``name`` exists (a database migrated before the table's migration has none)."""
    return conn.execute(sa.text("SELECT to_regclass(:name)"), {"name": name}).scalar() is not None


def operator_events(db: Database, start: datetime, end: datetime) -> tuple[list[OperatorEvent], bool]:
    """The operators' changes in ``[start, end)`` (wall clock), oldest first: the dashboard's actions
    (``operator_actions``, sql/0006) and the tuning applied or rolled back (``tuning_applications``, sql/0005),
    each read only where its table exists (a dashboard apply that succeeded is the tuning record alone, not
    both); and whether an operator's pause was in force at ``start`` (the last
    pause or resume that succeeded before it was a pause)."""
    events: list[OperatorEvent] = []
    paused = False
    with db.begin() as conn:
        has_tunings = _has_table(conn, "tuning_applications")
        if _has_table(conn, "operator_actions"):
            rows = conn.execute(
                sa.text(
                    "SELECT recorded_at, action, detail, actor, result FROM operator_actions "
                    "WHERE recorded_at >= :s AND recorded_at < :e ORDER BY recorded_at, id"
                ),
                {"s": start, "e": end},
            )
            events += [
                OperatorEvent(at=at, action=action, detail=detail, actor=actor, ok=result == "ok")
                for at, action, detail, actor, result in rows
                # a tuning the dashboard applied is in tuning_applications too, with its parameters: said once
                if not (action == APPLY_TUNING_ACTION and result == "ok" and has_tunings)
            ]
            last = conn.execute(
                sa.text(
                    "SELECT action FROM operator_actions WHERE recorded_at < :s AND result = 'ok' "
                    "AND action IN ('pause', 'resume') ORDER BY recorded_at DESC, id DESC LIMIT 1"
                ),
                {"s": start},
            ).scalar()
            paused = last == "pause"
        if has_tunings:
            rows = conn.execute(
                sa.text(
                    "SELECT applied_at, action, proposal_id, parameters, actor FROM tuning_applications "
                    "WHERE applied_at >= :s AND applied_at < :e ORDER BY applied_at, id"
                ),
                {"s": start, "e": end},
            )
            for at, action, proposal, parameters, actor in rows:
                to = f"proposal {proposal}" if proposal is not None else "the settings' own values"
                values = ", ".join(f"{k}={v}" for k, v in sorted((parameters or {}).items()))
                detail = f"to {to}" + (f": {values}" if values else "")
                events.append(OperatorEvent(at=at, action=f"tuning {action}", detail=detail, actor=actor))
    return sorted(events, key=lambda e: e.at), paused


# --- reports ----------------------------------------------------------------------------------------------
def save_report(db: Database, report: StoredReport) -> int:
    """Insert or replace the report of ``(kind, period)``; return its id."""
    row = msgspec.to_builtins(report, builtin_types=(date, datetime))
    row.pop("created_at", None)
    upsert = insert(reports).values(row)
    stmt = upsert.on_conflict_do_update(
        index_elements=[reports.c.kind, reports.c.period],
        set_={
            **{k: upsert.excluded[k] for k in row if k not in ("kind", "period")},
            "created_at": sa.func.now(),
        },
    ).returning(reports.c.id)
    with db.begin() as conn:
        return int(conn.execute(stmt).scalar_one())


def list_reports(db: Database, kind: str | None = None, limit: int = 100) -> list[ReportInfo]:
    """Stored reports, newest period first, of one kind (``daily``, ``weekly``, ``monthly``) or all.
    ValueError for another kind or a limit below 1."""
    if kind is not None and kind not in ("daily", "weekly", "monthly"):
        raise ValueError(f"report kind must be daily, weekly or monthly; got {kind!r}")
    if limit < 1:
        raise ValueError(f"limit must be >= 1; got {limit}")
    r = reports.c
    query = (
        sa.select(
            r.id, r.kind, r.period, r.period_start, r.period_end, r.markdown_path, r.html_path, r.signals,
            r.created_at,
        )
        .order_by(r.period_start.desc(), r.kind)
        .limit(limit)
    )  # fmt: skip
    if kind is not None:
        query = query.where(r.kind == kind)
    with db.begin() as conn:
        return [ReportInfo(**row) for row in conn.execute(query).mappings()]


def get_report(db: Database, kind: str, period: str) -> StoredReport | None:
    """The stored report of ``kind`` for ``period`` (its partition key, e.g. ``2024-03-04``); None if none."""
    r = reports.c
    query = sa.select(
        r.kind, r.period, r.period_start, r.period_end, r.markdown_path, r.html_path, r.markdown, r.html,
        r.signals, r.created_at,
    ).where(r.kind == kind, r.period == period)  # fmt: skip
    with db.begin() as conn:
        row = conn.execute(query).mappings().first()
    return None if row is None else StoredReport(**row)


__all__ = [
    "PendingEntry",
    "ReportInfo",
    "StoredReport",
    "disagreement_count",
    "entries_to_settle",
    "fate_counts",
    "finished_outcomes",
    "get_report",
    "incidents",
    "list_reports",
    "load_daily",
    "load_weekly",
    "operator_events",
    "save_batch",
    "save_daily",
    "save_report",
    "save_weekly",
    "unfinished_counts",
]
