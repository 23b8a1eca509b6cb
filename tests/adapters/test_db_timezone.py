"""Sessions are in UTC whatever the server, database, role or client (PGTZ) default: what is labelled UTC is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tapewatch.adapters.db import Database, create_engine
from tapewatch.adapters.performance_store import incidents


def test_a_session_is_in_utc_whatever_the_defaults(
    migrated_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = make_url(migrated_database_url).database
    setup = create_engine(migrated_database_url)
    with setup.begin() as conn:
        conn.execute(sa.text(f"ALTER DATABASE \"{name}\" SET timezone TO 'Asia/Kolkata'"))
    setup.dispose()
    for pgtz in (None, "America/New_York"):  # the database's default, then the client's on top
        if pgtz:
            monkeypatch.setenv("PGTZ", pgtz)
        engine = create_engine(migrated_database_url)
        try:
            with engine.connect() as conn:
                assert conn.execute(sa.text("SHOW timezone")).scalar() == "UTC"
                when = conn.execute(sa.text("SELECT timestamptz '2024-03-11 03:00:00+00'")).scalar()
            assert isinstance(when, datetime) and when.utcoffset() == timedelta(0) and when.hour == 3
        finally:
            engine.dispose()


def test_report_incident_times_are_utc_under_another_client_zone(
    migrated_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGTZ", "America/New_York")
    db = Database(migrated_database_url)
    try:
        with db.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO feed_incidents (kind, symbol, detail, recorded_at) "
                    "VALUES ('gap', 'BTCUSDT', 'x', '2024-03-11 03:00:00+00')"
                )
            )
        (found,) = incidents(db, datetime(2024, 3, 11, tzinfo=UTC), datetime(2024, 3, 12, tzinfo=UTC))
        # the report prints it under "started (UTC)" with strftime: it must be 03:00, not 23:00 the day before
        assert found.started.strftime("%Y-%m-%d %H:%M") == "2024-03-11 03:00"
    finally:
        db.dispose()
