"""Feed incidents in PostgreSQL (table ``feed_incidents``, sql/0001): record, resolve, list.

The realtime service queues *changes* and writes them in batches with :func:`write_changes`, in order, in
one transaction:

- :class:`NewIncident` inserts a row. Conditions that last (a stale feed, a book out of sync, a dropped
  connection, a ban) are inserted open (``resolved_at`` NULL); point events (a minute of malformed frames)
  may come already resolved.
- :class:`Resolve` closes every open row of one (kind, symbol, stream): the feed resumed, the book resynced.
- :class:`CloseLeftovers` closes what a previous run of the service left open (it cannot resolve them).

``tapewatch status`` reads :func:`open_incidents` and :func:`incident_counts`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from typing import Any, Final, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from tapewatch.adapters.db import Database
from tapewatch.adapters.db_errors import as_outage, is_refused_row
from tapewatch.errors import MigrationError, StorageUnavailable

log = logging.getLogger(__name__)

#: The kinds the table accepts (its CHECK constraint).
KINDS: Final = ("gap", "resync", "reconnect", "stale", "malformed", "rate_limited", "banned")
#: Longest detail stored; a longer one is cut (a hostile payload quoted in a message must stay small).
MAX_DETAIL: Final = 2000
_SYMBOL = re.compile(r"^[A-Z0-9]+$")
_UNDEFINED_TABLE = "42P01"


def _check(kind: str, symbol: str | None, event_time: int | None = None) -> None:
    if kind not in KINDS:
        raise ValueError(f"incident kind must be one of {', '.join(KINDS)}; got {kind!r}")
    if symbol is not None and not _SYMBOL.match(symbol):
        raise ValueError(f"incident symbols are upper-case letters and digits, like BTCUSDT; got {symbol!r}")
    if event_time is not None and event_time < 0:
        raise ValueError(f"event_time is epoch ms >= 0; got {event_time}")


@dataclass(frozen=True, slots=True)
class NewIncident:
    """A row to insert. ``recorded_at`` is when the service saw it (not when the row reached the database,
    which may be later after an outage); ``resolved_at`` is set for point events. ValueError for a kind,
    symbol or event time the table would refuse."""

    kind: str
    recorded_at: datetime
    symbol: str | None = None
    stream: str | None = None
    detail: str = ""
    event_time: int | None = None
    resolved_at: datetime | None = None

    def __post_init__(self) -> None:
        _check(self.kind, self.symbol, self.event_time)
        if len(self.detail) > MAX_DETAIL:
            object.__setattr__(self, "detail", self.detail[: MAX_DETAIL - 1] + "…")


@dataclass(frozen=True, slots=True)
class Resolve:
    """Close every open row of (kind, symbol, stream) at ``resolved_at``; ``note`` is appended to detail."""

    kind: str
    resolved_at: datetime
    symbol: str | None = None
    stream: str | None = None
    note: str = ""

    def __post_init__(self) -> None:
        _check(self.kind, self.symbol)


@dataclass(frozen=True, slots=True)
class CloseLeftovers:
    """Close every row still open that was recorded before ``before`` (a previous run's), noting why."""

    before: datetime
    note: str = "closed: the realtime service restarted"


Change = NewIncident | Resolve | CloseLeftovers


@dataclass(frozen=True, slots=True)
class IncidentRow:
    """One row of ``feed_incidents``."""

    id: int
    kind: str
    symbol: str | None
    stream: str | None
    detail: str
    event_time: int | None
    recorded_at: datetime
    resolved_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        """The row with ISO 8601 times, for ``tapewatch status --json`` and the dashboard."""
        return {
            "id": self.id,
            "kind": self.kind,
            "symbol": self.symbol,
            "stream": self.stream,
            "detail": self.detail,
            "event_time": self.event_time,
            "recorded_at": self.recorded_at.isoformat(),
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
        }


R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Listing(Generic[R]):
    """What a dashboard table shows of a table that keeps growing: every open row, whatever its age, and the
    newest ``limit`` rows — open ones first, then newest first —, with how many rows are stored (``total``)
    and how many of them are open (``open``)."""

    rows: list[R]
    limit: int
    total: int
    open: int
    #: ``total`` is a floor: counting stopped there (:data:`COUNT_LIMIT`), more rows are stored
    more: bool = False

    @property
    def capped(self) -> bool:
        """Whether rows are left out (older closed ones)."""
        return self.more or self.total > len(self.rows)


#: Rows counted at most for a :class:`Listing`'s total (beyond, "10,000+"): the Health page counts every
#: second, and a table that is never pruned would otherwise be scanned whole each time.
COUNT_LIMIT: Final = 10_000


def count_rows(conn: Connection, table: str, shown: int, limit: int) -> tuple[int, bool]:
    """How many rows ``table`` (a name from the code, never from input) holds, given that the newest ``limit``
    read gave ``shown``: those when fewer, else counted up to :data:`COUNT_LIMIT`; and whether there are more."""
    if shown < limit:
        return shown, False
    counted = int(
        conn.execute(
            sa.text(f"SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT :cap) AS t"), {"cap": COUNT_LIMIT + 1}
        ).scalar_one()
    )
    return min(counted, COUNT_LIMIT), counted > COUNT_LIMIT


def newest_rows(conn: Connection, table: str, columns: str, when: str, limit: int) -> Sequence[Sequence[Any]]:
    """The newest ``limit`` rows of ``table`` (its ``columns``), newest first by ``when`` then id: a
    :class:`Listing`'s newest part. Every name is from the code, never from input."""
    return conn.execute(
        sa.text(f"SELECT {columns} FROM {table} ORDER BY {when} DESC, id DESC LIMIT :limit"), {"limit": limit}
    ).all()


def open_first(rows: Iterable[R], *, is_open: Callable[[R], bool], when: Callable[[R], Any]) -> list[R]:
    """``rows`` without repeats (by ``id``), the open ones first, each group newest first (``when``, then id)."""
    unique = {row.id: row for row in rows}.values()  # type: ignore[attr-defined]
    newest = sorted(unique, key=lambda r: (when(r), r.id), reverse=True)  # type: ignore[attr-defined]
    return sorted(newest, key=lambda r: not is_open(r))


@dataclass(frozen=True, slots=True)
class OpenIncidents:
    """How many incidents are open, and the newest of them (newest first)."""

    total: int
    newest: list[IncidentRow]


_INSERT = sa.text(
    "INSERT INTO feed_incidents (kind, symbol, stream, detail, event_time, recorded_at, resolved_at) "
    "VALUES (:kind, :symbol, :stream, :detail, :event_time, :recorded_at, :resolved_at)"
)
# GREATEST keeps the CHECK (resolved_at >= recorded_at) when the wall clock stepped back in between.
_RESOLVE = sa.text(
    "UPDATE feed_incidents SET resolved_at = GREATEST(:resolved_at, recorded_at), "
    "detail = CASE WHEN :note = '' THEN detail WHEN detail = '' THEN :note ELSE detail || '; ' || :note END "
    "WHERE resolved_at IS NULL AND kind = :kind "
    "AND symbol IS NOT DISTINCT FROM :symbol AND stream IS NOT DISTINCT FROM :stream"
)
_CLOSE_LEFTOVERS = sa.text(
    "UPDATE feed_incidents SET resolved_at = GREATEST(:before, recorded_at), "
    "detail = CASE WHEN detail = '' THEN :note ELSE detail || '; ' || :note END "
    "WHERE resolved_at IS NULL AND recorded_at < :before"
)
_COLUMNS = "id, kind, symbol, stream, detail, event_time, recorded_at, resolved_at"


def _params(change: Change) -> dict[str, Any]:
    if isinstance(change, NewIncident):
        return {
            "kind": change.kind,
            "symbol": change.symbol,
            "stream": change.stream,
            "detail": change.detail,
            "event_time": change.event_time,
            "recorded_at": change.recorded_at,
            "resolved_at": change.resolved_at,
        }
    if isinstance(change, Resolve):
        return {
            "kind": change.kind,
            "symbol": change.symbol,
            "stream": change.stream,
            "note": change.note,
            "resolved_at": change.resolved_at,
        }
    return {"before": change.before, "note": change.note}


_STATEMENTS: dict[type, sa.TextClause] = {
    NewIncident: _INSERT,
    Resolve: _RESOLVE,
    CloseLeftovers: _CLOSE_LEFTOVERS,
}


def apply_changes(conn: Connection, changes: Sequence[Change]) -> None:
    """Run ``changes`` in order on ``conn`` (runs of one type go as one executemany)."""
    for kind, run in groupby(changes, key=type):
        conn.execute(_STATEMENTS[kind], [_params(c) for c in run])


class PartlyWritten(StorageUnavailable):
    """PostgreSQL became unavailable while a batch was written one change at a time: the first ``done``
    changes are settled (``refused`` of them refused), the rest are not written."""

    def __init__(self, outage: StorageUnavailable, *, done: int, refused: int) -> None:
        super().__init__(str(outage))
        self.done = done
        self.refused = refused


def write_changes(db: Database, changes: Sequence[Change]) -> int:
    """Write ``changes`` in order, in one transaction; return how many were refused by the database.

    When the batch fails on a statement error (a value the table refuses), each change is retried in its
    own transaction and those that still fail are logged and skipped: one bad row never blocks the rest.
    Only a refused row (:func:`tapewatch.adapters.db_errors.is_refused_row`: the data itself) is skipped; any
    other database error (a missing table or grant, a timeout, a read-only server) and PostgreSQL out of reach
    raise StorageUnavailable (nothing of the batch is lost then: the caller keeps it and retries); when that
    happens after some changes were written one by one, :class:`PartlyWritten` says how many, so that only the
    rest is retried (a change written twice would open an incident twice)."""
    if not changes:
        return 0
    try:
        with db.begin() as conn:
            apply_changes(conn, changes)
        return 0
    except sa_exc.DBAPIError as exc:
        if not is_refused_row(exc):  # a missing table or grant, a timeout: held by the caller, retried
            raise as_outage(exc) from exc
        log.warning(
            "a batch of %d incident changes was refused (%s); writing them one by one",
            len(changes),
            _first_line(exc),
        )
    refused = 0
    for done, change in enumerate(changes):
        try:
            with db.begin() as conn:
                apply_changes(conn, [change])
        except (sa_exc.DBAPIError, StorageUnavailable) as exc:
            if not is_refused_row(exc):  # the changes before this one are written: they must not be again
                raise PartlyWritten(as_outage(exc), done=done, refused=refused) from exc
            refused += 1
            log.error("incident change refused by PostgreSQL, skipped: %r (%s)", change, _first_line(exc))
    return refused


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def open_incidents(db: Database, limit: int = 20) -> OpenIncidents:
    """How many incidents are open, and the ``limit`` newest open ones (newest first).

    Raises StorageUnavailable when PostgreSQL cannot be reached, MigrationError when the table is missing."""
    with reading(db, "feed_incidents") as conn:
        return _open_rows(conn, limit)


def _open_rows(conn: Connection, limit: int) -> OpenIncidents:
    total = conn.execute(sa.text("SELECT count(*) FROM feed_incidents WHERE resolved_at IS NULL")).scalar()
    rows = conn.execute(
        sa.text(
            f"SELECT {_COLUMNS} FROM feed_incidents WHERE resolved_at IS NULL "
            "ORDER BY recorded_at DESC, id DESC LIMIT :limit"
        ),
        {"limit": limit},
    )
    return OpenIncidents(int(total or 0), [IncidentRow(*row) for row in rows])


def incident_counts(db: Database, since: datetime) -> dict[str, int]:
    """Incidents recorded at or after ``since``, counted by kind (kinds with none are left out)."""
    with reading(db, "feed_incidents") as conn:
        rows = conn.execute(
            sa.text(
                "SELECT kind, count(*) FROM feed_incidents WHERE recorded_at >= :since GROUP BY kind ORDER BY kind"
            ),
            {"since": since},
        )
        return {str(kind): int(n) for kind, n in rows}


def list_incidents(
    db: Database, *, kind: str | None = None, symbol: str | None = None, limit: int = 100
) -> list[IncidentRow]:
    """The newest ``limit`` incidents (open or not), optionally of one kind and/or symbol, newest first."""
    with reading(db, "feed_incidents") as conn:
        rows = conn.execute(
            sa.text(
                f"SELECT {_COLUMNS} FROM feed_incidents "
                "WHERE (CAST(:kind AS text) IS NULL OR kind = :kind) "
                "AND (CAST(:symbol AS text) IS NULL OR symbol = :symbol) "
                "ORDER BY recorded_at DESC, id DESC LIMIT :limit"
            ),
            {"kind": kind, "symbol": symbol, "limit": limit},
        )
        return [IncidentRow(*row) for row in rows]


def incident_listing(db: Database, *, limit: int = 200, open_limit: int = 1000) -> Listing[IncidentRow]:
    """The newest ``limit`` incidents and every open one however old (the newest ``open_limit`` of them: a
    bound for a storm), open ones first, then newest first; how many are stored (:func:`count_rows`) and how
    many are open."""
    if limit < 1 or open_limit < 1:
        raise ValueError(f"limit and open_limit must be >= 1; got {limit}, {open_limit}")
    with reading(db, "feed_incidents") as conn:
        newest = [
            IncidentRow(*row) for row in newest_rows(conn, "feed_incidents", _COLUMNS, "recorded_at", limit)
        ]
        total, more = count_rows(conn, "feed_incidents", len(newest), limit)
        opened = _open_rows(conn, open_limit)
    rows = open_first(
        [*opened.newest, *newest], is_open=lambda r: r.resolved_at is None, when=lambda r: r.recorded_at
    )
    return Listing(rows=rows, limit=limit, total=total, open=opened.total, more=more)


@contextmanager
def reading(db: Database, table: str) -> Iterator[Connection]:
    """``db.begin()`` that turns a missing ``table`` into MigrationError naming the command that fixes it
    (shared by the feed and health incident tables)."""
    try:
        with db.begin() as conn:
            yield conn
    except sa_exc.ProgrammingError as exc:
        if getattr(exc.orig, "sqlstate", None) != _UNDEFINED_TABLE:
            raise
        raise MigrationError(
            f"table {table} does not exist: the database is not migrated; "
            "run `tapewatch db upgrade` (or start `tapewatch run`, which migrates)"
        ) from exc
