"""What a PostgreSQL error means to a writer that must not lose what it writes: a refused row, or an outage.

A **refused row** fails the same way however often it is retried: PostgreSQL refused the data itself
(SQLSTATE class 22 *data exception*, class 23 *integrity constraint violation*), or the driver did so before
sending it (a psycopg ``DataError`` without a SQLSTATE, e.g. a NUL character in a text). The writer logs it,
counts it and skips it, so it never blocks the rows behind it.

Anything else is an **outage**, to be held and retried: the server unreachable or gone, a read-only server (a
standby after a failover, ``default_transaction_read_only``), a statement or lock wait cut by
``statement_timeout``/``lock_timeout`` (57014, 55P03), a missing table or grant. Skipping a row then would
drop it for good, and every row behind it the same way.

:func:`is_refused_row` is the one classification (:func:`is_outage` for any exception, for callers that do
not import the database libraries); the pending writes, the incident recorder and the outbox relay use it,
and :func:`describe`/:func:`as_outage` to say what failed.
"""

from __future__ import annotations

import psycopg
import sqlalchemy.exc as sa_exc

from tapewatch.errors import StorageUnavailable

#: SQLSTATE classes of the data itself being refused: retrying the same row cannot help.
REFUSED_CLASSES = frozenset({"22", "23"})
#: Conditions worth naming in a log line: what timed out, or why writes are refused.
CONDITIONS = {
    "57014": "statement timeout or cancel",
    "55P03": "lock wait timeout",
    "25P03": "idle-in-transaction timeout",
    "25006": "read-only server",
}
_STATEMENT_SHOWN = 120  # characters of the failed statement in a log line


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of ``exc`` (a psycopg error, a SQLAlchemy error wrapping one, or an error raised from
    one); None when no server error is behind it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(current, "sqlstate", None)
        if isinstance(code, str) and code:
            return code
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return None


def is_refused_row(exc: BaseException) -> bool:
    """True when ``exc`` refuses the row being written (skip it); False when it is an outage (hold, retry).

    See the module docstring: SQLSTATE class 22 or 23, or a driver ``DataError`` raised before sending."""
    if isinstance(exc, StorageUnavailable):
        return False
    code = sqlstate(exc)
    if code is not None:
        return code[:2] in REFUSED_CLASSES
    driver = getattr(exc, "orig", None) or exc
    return isinstance(driver, psycopg.DataError)


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` is a database error (StorageUnavailable included) that is not a refused row: hold
    what was being written and retry. False for a refused row and for anything else (a bug)."""
    database = isinstance(exc, (StorageUnavailable, sa_exc.SQLAlchemyError, psycopg.Error))
    return database and not is_refused_row(exc)


def describe(exc: BaseException) -> str:
    """``exc`` in one line for a log: its SQLSTATE (named when it is a timeout or a read-only server), the
    server's message and the start of the statement it stopped, e.g. ``lock wait timeout [55P03]: canceling
    statement due to lock timeout; in: INSERT INTO outbox ...``."""
    driver = getattr(exc, "orig", None) or exc
    lines = str(driver).strip().splitlines()
    text = f"{type(driver).__name__}: {lines[0]}" if lines else type(driver).__name__
    code = sqlstate(exc)
    if code is not None:
        text = f"{CONDITIONS.get(code, type(driver).__name__)} [{code}]: {lines[0] if lines else code}"
    statement = getattr(exc, "statement", None)
    if isinstance(statement, str) and statement.strip():
        flat = " ".join(statement.split())
        text += f"; in: {flat[:_STATEMENT_SHOWN]}{' ...' if len(flat) > _STATEMENT_SHOWN else ''}"
    return text


def as_outage(exc: BaseException) -> StorageUnavailable:
    """``exc``, a database error that is not a refused row, as the StorageUnavailable callers hold and retry
    on (caused by ``exc``); a StorageUnavailable is returned as it is."""
    if isinstance(exc, StorageUnavailable):
        return exc
    outage = StorageUnavailable(f"PostgreSQL error ({describe(exc)})")
    outage.__cause__ = exc
    return outage


__all__ = [
    "CONDITIONS",
    "REFUSED_CLASSES",
    "as_outage",
    "describe",
    "is_outage",
    "is_refused_row",
    "sqlstate",
]
