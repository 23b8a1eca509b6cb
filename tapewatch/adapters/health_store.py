"""Health incidents in PostgreSQL (table ``health_incidents``, sql/0005): open, close, list.

The health sensors open an incident when they act (backup feed, pause, shrink of the universe) and close it
on recovery. At most one incident per kind is open at a time (a unique partial index): opening a kind that is
already open returns the open one, so a sensor tick that is retried never records the same action twice.
``tapewatch status`` lists the open ones next to the feed incidents.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from tapewatch.adapters.db import Database
from tapewatch.adapters.incidents import Listing, count_rows, newest_rows, open_first, reading

#: The kinds the table accepts: one per health sensor, and failed Dagster runs (``orchestration.run_alerts``).
KINDS: Final = ("api_connectivity", "data_quality", "system_performance", "dagster_run")
_TABLE = "health_incidents"
_COLUMNS = 'id, kind, reason, action, recovery, "values", started_at, ended_at'


@dataclass(frozen=True, slots=True)
class HealthIncident:
    """One row of ``health_incidents``; ``ended_at`` None = still open."""

    id: int
    kind: str
    reason: str
    action: str
    recovery: str | None
    values: dict[str, Any]
    started_at: datetime
    ended_at: datetime | None

    @property
    def open(self) -> bool:
        return self.ended_at is None

    def to_json(self) -> dict[str, Any]:
        """The row with ISO 8601 times (``tapewatch status --json``, the dashboard)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "reason": self.reason,
            "action": self.action,
            "recovery": self.recovery,
            "values": self.values,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
        }


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"health incident kind must be one of {', '.join(KINDS)}; got {kind!r}")


def open_incident(
    db: Database,
    kind: str,
    *,
    reason: str,
    action: str,
    values: Mapping[str, Any] | None = None,
    at: datetime | None = None,
) -> HealthIncident:
    """Open an incident of ``kind`` (started ``at``, default now) and return it; when one of that kind is
    open already, return that one with its ``values`` and ``action`` replaced by these (the action in force: a
    universe cut again names the new cap), its reason and start kept.

    ValueError for an unknown kind or an empty reason/action; StorageUnavailable when PostgreSQL is down."""
    _check_kind(kind)
    if not reason or not action:
        raise ValueError("a health incident needs a reason and an action: operators read them")
    params = {"kind": kind, "reason": reason, "action": action, "values": dict(values or {}), "at": at}
    with reading(db, _TABLE) as conn:
        row = conn.execute(
            sa.text(
                'INSERT INTO health_incidents (kind, reason, action, "values", started_at) '
                "VALUES (:kind, :reason, :action, :values, COALESCE(:at, now())) "
                "ON CONFLICT (kind) WHERE ended_at IS NULL "
                'DO UPDATE SET "values" = EXCLUDED."values", action = EXCLUDED.action '
                f"RETURNING {_COLUMNS}"
            ).bindparams(sa.bindparam("values", type_=JSONB), sa.bindparam("at", type_=sa.DateTime(True))),
            params,
        ).one()
        return HealthIncident(*row)


def close_incident(
    db: Database,
    kind: str,
    *,
    recovery: str,
    values: Mapping[str, Any] | None = None,
    at: datetime | None = None,
) -> HealthIncident | None:
    """Close the open incident of ``kind`` (ended ``at``, default now), noting what was done on recovery and
    merging ``values`` into its values; return it, or None when none was open (closing is idempotent)."""
    _check_kind(kind)
    if not recovery:
        raise ValueError("closing a health incident needs the recovery action taken")
    with reading(db, _TABLE) as conn:
        row = conn.execute(
            sa.text(
                "UPDATE health_incidents SET ended_at = GREATEST(COALESCE(:at, now()), started_at), "
                'recovery = :recovery, "values" = "values" || :values '
                f"WHERE kind = :kind AND ended_at IS NULL RETURNING {_COLUMNS}"
            ).bindparams(sa.bindparam("values", type_=JSONB), sa.bindparam("at", type_=sa.DateTime(True))),
            {"kind": kind, "recovery": recovery, "values": dict(values or {}), "at": at},
        ).first()
        return None if row is None else HealthIncident(*row)


def open_health_incidents(db: Database) -> list[HealthIncident]:
    """The open incidents (at most one per kind), newest first."""
    with reading(db, _TABLE) as conn:
        rows = conn.execute(
            sa.text(
                f"SELECT {_COLUMNS} FROM health_incidents WHERE ended_at IS NULL ORDER BY started_at DESC, id DESC"
            )
        )
        return [HealthIncident(*row) for row in rows]


def list_health_incidents(
    db: Database, *, kind: str | None = None, since: datetime | None = None, limit: int = 100
) -> list[HealthIncident]:
    """The newest ``limit`` incidents (open or closed), of one kind or all, started at or after ``since``."""
    if kind is not None:
        _check_kind(kind)
    if limit < 1:
        raise ValueError(f"limit must be >= 1; got {limit}")
    with reading(db, _TABLE) as conn:
        rows = conn.execute(
            sa.text(
                f"SELECT {_COLUMNS} FROM health_incidents "
                "WHERE (CAST(:kind AS text) IS NULL OR kind = :kind) "
                "AND (CAST(:since AS timestamptz) IS NULL OR started_at >= :since) "
                "ORDER BY started_at DESC, id DESC LIMIT :limit"
            ),
            {"kind": kind, "since": since, "limit": limit},
        )
        return [HealthIncident(*row) for row in rows]


def health_listing(db: Database, *, limit: int = 100) -> Listing[HealthIncident]:
    """The newest ``limit`` incidents and every open one however old (at most one per kind), open ones first,
    then newest first; how many are stored (:func:`~tapewatch.adapters.incidents.count_rows`) and open."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1; got {limit}")
    with reading(db, _TABLE) as conn:
        newest = [HealthIncident(*row) for row in newest_rows(conn, _TABLE, _COLUMNS, "started_at", limit)]
        opened = [
            HealthIncident(*row)
            for row in conn.execute(
                sa.text(f"SELECT {_COLUMNS} FROM health_incidents WHERE ended_at IS NULL")
            )
        ]
        total, more = count_rows(conn, _TABLE, len(newest), limit)
    rows = open_first([*opened, *newest], is_open=lambda h: h.open, when=lambda h: h.started_at)
    return Listing(rows=rows, limit=limit, total=total, open=len(opened), more=more)
