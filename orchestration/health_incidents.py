"""The health sensors' incidents: the changes an action queues in its cursor, written to PostgreSQL in order
(the ones it refuses kept and retried at later ticks), and the open incident read back after a lost cursor
(``tapewatch.adapters.health_store``)."""

import time
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from msgspec.structs import replace

from orchestration.health_cursor import ConnectivityState, Pending, PerformanceState
from orchestration.resources import DatabaseResource
from tapewatch.adapters.health_store import (
    HealthIncident,
    close_incident,
    open_health_incidents,
    open_incident,
)
from tapewatch.errors import TapewatchError
from tapewatch.health import PendingIncident, Streak


def incident_change(
    kind: str, op: Literal["open", "close"], text: str, values: dict[str, Any], action: str = ""
) -> PendingIncident:
    """An incident change of ``kind`` taking effect now (wall clock): ``text`` is the reason of an opening,
    the recovery of a closing."""
    return PendingIncident(
        kind=kind, op=op, text=text, action=action, values=values, at_ms=int(time.time() * 1000)
    )


def record_incidents(database: DatabaseResource, pending: Pending) -> tuple[Pending, str]:
    """Write ``pending`` incident changes in order; the ones left (from the first that failed) and a note
    for the skip reason (empty when all were written)."""
    if not pending:
        return (), ""
    done = 0
    try:
        with database.open() as db:
            for change in pending:
                at = datetime.fromtimestamp(change.at_ms / 1000, UTC)
                if change.op == "open":
                    open_incident(
                        db, change.kind, reason=change.text, action=change.action, values=change.values, at=at
                    )
                else:
                    close_incident(db, change.kind, recovery=change.text, values=change.values, at=at)
                done += 1
    except TapewatchError as exc:
        left = pending[done:]
        return left, f"; incident not recorded yet ({exc}); {len(left)} change(s) kept, retried next tick"
    return (), ""


def open_incident_of(database: DatabaseResource, kind: str, pending: Pending) -> HealthIncident | None:
    """The open health incident of ``kind`` as recorded in PostgreSQL (None: none, or a change of that kind
    still waits in ``pending``: the cursor knows better). Raises TapewatchError when PostgreSQL is down."""
    if any(change.kind == kind for change in pending):
        return None
    with database.open() as db:
        return next((i for i in open_health_incidents(db) if i.kind == kind), None)


def unrecovered(exc: TapewatchError) -> str:
    """The skip reason's note when what a sensor did before its cursor was lost could not be read."""
    return f"; what this sensor did before its cursor was lost not read yet ({exc}), retried next tick"


_Recovering = TypeVar("_Recovering", ConnectivityState, PerformanceState)


def taken_back(
    state: _Recovering, kind: str, database: DatabaseResource
) -> tuple[_Recovering, HealthIncident | None, str]:
    """The common first step after a lost cursor: the sensor's open incident of ``kind`` (None when it was
    done before, there is none, or the alarm is already in force), ``state`` marked ``recovered`` and with its
    alarm in force while that incident is open, and a note when PostgreSQL could not be read (retried)."""
    if state.recovered:
        return state, None, ""
    try:
        incident = open_incident_of(database, kind, state.pending)
    except TapewatchError as exc:
        return state, None, unrecovered(exc)
    state = replace(state, recovered=True)
    if incident is None or state.streak.tripped:
        return state, None, ""
    return replace(state, streak=Streak(tripped=True)), incident, ""
