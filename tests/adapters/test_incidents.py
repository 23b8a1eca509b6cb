"""Feed incidents in PostgreSQL: batched writes in order, resolution by key, leftovers, reading, bad rows."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from tapewatch.adapters import incidents
from tapewatch.adapters.db import Database
from tapewatch.adapters.incidents import (
    MAX_DETAIL,
    CloseLeftovers,
    NewIncident,
    Resolve,
    incident_counts,
    list_incidents,
    open_incidents,
    write_changes,
)
from tapewatch.errors import MigrationError, StorageUnavailable

T0 = datetime(2024, 8, 8, 13, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def rows(db: Database) -> list[dict[str, object]]:
    with db.begin() as conn:
        result = conn.execute(
            sa.text(
                "SELECT kind, symbol, stream, detail, event_time, recorded_at, resolved_at "
                "FROM feed_incidents ORDER BY id"
            )
        )
        return [dict(row._mapping) for row in result]


def test_changes_are_written_in_order_and_resolve_only_their_key(db: Database) -> None:
    depth = "btcusdt@depth@100ms"
    refused = write_changes(
        db,
        [
            NewIncident("gap", at(0), "BTCUSDT", depth, "gap: pu=5 but last applied u=4", 1_723_122_000_000),
            NewIncident("stale", at(1), "BTCUSDT", depth, "no depth update for 6 s"),
            NewIncident("gap", at(2), "ETHUSDT", "ethusdt@depth@100ms", "gap: pu=9 but last applied u=7"),
            Resolve("gap", at(3), "BTCUSDT", depth, "book synced again at u=12"),
            # opened again after its resolution: the new row stays open
            NewIncident("gap", at(4), "BTCUSDT", depth, "gap: pu=20 but last applied u=19"),
            NewIncident("malformed", at(5), None, None, "3 malformed frames", resolved_at=at(5)),
        ],
    )
    assert refused == 0
    found = rows(db)
    assert [(r["kind"], r["symbol"], r["resolved_at"]) for r in found] == [
        ("gap", "BTCUSDT", at(3)),
        ("stale", "BTCUSDT", None),
        ("gap", "ETHUSDT", None),
        ("gap", "BTCUSDT", None),
        ("malformed", None, at(5)),
    ]
    assert found[0]["detail"] == "gap: pu=5 but last applied u=4; book synced again at u=12"
    assert found[0]["event_time"] == 1_723_122_000_000
    assert found[0]["recorded_at"] == at(0)  # when the service saw it, not when the row was written


def test_a_resolution_never_precedes_the_recording(db: Database) -> None:
    # the wall clock stepped back between opening and resolving: the table's CHECK must still hold
    write_changes(db, [NewIncident("stale", at(10), "BTCUSDT", "s"), Resolve("stale", at(5), "BTCUSDT", "s")])
    assert rows(db)[0]["resolved_at"] == at(10)


def test_a_connection_incident_has_no_symbol_and_resolves_by_stream(db: Database) -> None:
    write_changes(
        db,
        [
            NewIncident("reconnect", at(0), None, "public-0", "connection public-0#1 dropped (stale)"),
            NewIncident("reconnect", at(0), None, "market-0", "connection market-0#1 dropped (error)"),
            Resolve("reconnect", at(2), None, "public-0", "reconnected as public-0#2"),
        ],
    )
    assert [r["resolved_at"] for r in rows(db)] == [at(2), None]


def test_leftovers_of_a_previous_run_are_closed(db: Database) -> None:
    write_changes(
        db, [NewIncident("stale", at(0), "BTCUSDT", "s"), NewIncident("gap", at(9), "ETHUSDT", "e")]
    )
    write_changes(db, [CloseLeftovers(at(5))])
    first, second = rows(db)
    assert first["resolved_at"] == at(5)
    assert str(first["detail"]).endswith("closed: the realtime service restarted")
    assert second["resolved_at"] is None  # recorded after the restart: not a leftover


def test_open_incidents_are_counted_and_listed_newest_first(db: Database) -> None:
    changes: list[NewIncident | Resolve] = [
        NewIncident("stale", at(i), f"SYM{i}", f"sym{i}@depth@100ms", f"#{i}") for i in range(25)
    ]
    changes.append(Resolve("stale", at(30), "SYM3", "sym3@depth@100ms"))
    write_changes(db, changes)
    found = open_incidents(db, limit=20)
    assert found.total == 24
    assert [row.detail for row in found.newest] == [f"#{i}" for i in range(24, 4, -1)]
    assert found.newest[0].to_json()["recorded_at"] == at(24).isoformat()
    assert incident_counts(db, at(20)) == {"stale": 5}
    assert len(list_incidents(db, kind="stale", symbol="SYM3")) == 1
    assert list_incidents(db, kind="gap") == []


def test_bad_incidents_are_refused_before_reaching_the_database() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        NewIncident("exploded", at(0))
    with pytest.raises(ValueError, match="upper-case"):
        NewIncident("gap", at(0), symbol="btc-usdt")
    with pytest.raises(ValueError, match="event_time"):
        NewIncident("gap", at(0), event_time=-1)
    with pytest.raises(ValueError, match="kind"):
        Resolve("nope", at(0))
    long = NewIncident("malformed", at(0), detail="x" * 10_000)
    assert len(long.detail) == MAX_DETAIL and long.detail.endswith("…")


def test_a_row_the_table_refuses_is_skipped_and_the_rest_written(db: Database) -> None:
    refused = write_changes(
        db,
        [
            NewIncident("gap", at(0), "BTCUSDT", "a"),
            NewIncident("gap", at(1), "ETHUSDT", "b", event_time=2**63),  # beyond bigint
            NewIncident("gap", at(2), "SOLUSDT", "c"),
        ],
    )
    assert refused == 1
    assert [r["symbol"] for r in rows(db)] == ["BTCUSDT", "SOLUSDT"]


def test_an_unmigrated_database_is_a_clear_error(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    try:
        with pytest.raises(MigrationError, match="tapewatch db upgrade"):
            open_incidents(db)
    finally:
        db.dispose()


def test_an_unreachable_server_is_storage_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    db = Database(f"postgresql://tw@127.0.0.1:{port}/tapewatch", connect_timeout=2)
    try:
        with pytest.raises(StorageUnavailable, match="TAPEWATCH_DATABASE_URL"):
            write_changes(db, [NewIncident("gap", at(0), "BTCUSDT")])
        with pytest.raises(StorageUnavailable):
            open_incidents(db)
    finally:
        db.dispose()


def test_a_missing_table_is_an_outage_not_a_refused_row(db: Database) -> None:
    """Not the data's fault (a table renamed away, a grant revoked): skipping would lose every incident."""
    with db.begin() as conn:
        conn.execute(sa.text("ALTER TABLE feed_incidents RENAME TO feed_incidents_away"))
    try:
        with pytest.raises(StorageUnavailable, match="42P01"):
            write_changes(db, [NewIncident("gap", at(0), "BTCUSDT", "a")])
    finally:
        with db.begin() as conn:
            conn.execute(sa.text("ALTER TABLE feed_incidents_away RENAME TO feed_incidents"))
    assert rows(db) == []


def test_an_outage_while_writing_one_by_one_says_how_many_are_settled(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused row sends the batch one change at a time; PostgreSQL going away after two of them must not
    make the caller write those two again (an incident opened twice)."""
    real, calls = incidents.apply_changes, []

    def apply(conn: sa.Connection, changes: list[incidents.Change]) -> None:
        calls.append(len(changes))
        if len(calls) == 4:  # the batch, then one by one: the third change finds its table gone
            with db.begin() as other:  # another session: this transaction has not touched the table yet
                other.execute(sa.text("ALTER TABLE feed_incidents RENAME TO feed_incidents_away"))
        real(conn, changes)

    monkeypatch.setattr(incidents, "apply_changes", apply)
    batch = [
        NewIncident("gap", at(0), "BTCUSDT", "a"),
        NewIncident("gap", at(1), "ETHUSDT", "b", event_time=2**63),  # beyond bigint: refused
        NewIncident("gap", at(2), "SOLUSDT", "c"),
    ]
    try:
        with pytest.raises(incidents.PartlyWritten) as caught:
            write_changes(db, batch)
    finally:
        with db.begin() as conn:
            conn.execute(sa.text("ALTER TABLE feed_incidents_away RENAME TO feed_incidents"))
    assert (caught.value.done, caught.value.refused) == (2, 1)
    assert isinstance(caught.value, StorageUnavailable)  # held and retried by the recorder
    monkeypatch.setattr(incidents, "apply_changes", real)
    assert write_changes(db, batch[caught.value.done :]) == 0  # the recorder retries the rest only
    assert [r["symbol"] for r in rows(db)] == ["BTCUSDT", "SOLUSDT"]
