"""Health incidents in PostgreSQL: open (once per kind), close, list, bad input; shown by ``tapewatch status``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tapewatch.adapters.db import Database
from tapewatch.adapters.health_store import (
    close_incident,
    list_health_incidents,
    open_health_incidents,
    open_incident,
)
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.status import gather_status
from tapewatch.adapters.status_format import format_status
from tapewatch.errors import MigrationError, StorageUnavailable
from tapewatch.settings import load_settings

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_open_is_once_per_kind_and_close_records_the_recovery(db: Database) -> None:
    first = open_incident(db, "data_quality", reason="spread anomaly", action="signalling paused",
                          values={"n": 1}, at=T0)  # fmt: skip
    again = open_incident(
        db, "data_quality", reason="other", action="other", values={"n": 2}, at=T0 + timedelta(minutes=1)
    )
    assert again.id == first.id and again.reason == "spread anomaly" and again.values == {"n": 2}
    assert again.action == "other"  # the action in force (a second universe cut names its new cap)
    other = open_incident(db, "api_connectivity", reason="ping failed", action="backup feed on", at=T0)
    assert other.id != first.id
    assert {i.kind for i in open_health_incidents(db)} == {"api_connectivity", "data_quality"}

    closed = close_incident(db, "data_quality", recovery="signalling resumed", values={"clean": 5},
                            at=T0 + timedelta(minutes=7))  # fmt: skip
    assert closed is not None and not closed.open
    assert closed.values == {"n": 2, "clean": 5}
    assert closed.ended_at == T0 + timedelta(minutes=7)
    assert close_incident(db, "data_quality", recovery="again") is None  # idempotent
    # a new episode is a new row
    reopened = open_incident(db, "data_quality", reason="price jump", action="signalling paused")
    assert reopened.id != first.id
    assert len(list_health_incidents(db, kind="data_quality")) == 2
    assert list_health_incidents(db, since=T0 + timedelta(days=365)) == []
    assert closed.to_json()["ended_at"] == (T0 + timedelta(minutes=7)).isoformat()


def test_an_end_before_the_start_is_clamped_to_the_start(db: Database) -> None:
    open_incident(db, "system_performance", reason="CPU 95 %", action="max universe 15", at=T0)
    closed = close_incident(db, "system_performance", recovery="cap lifted", at=T0 - timedelta(hours=1))
    assert closed is not None and closed.ended_at == T0


def test_bad_input_is_refused_with_the_allowed_values(db: Database) -> None:
    with pytest.raises(ValueError, match="api_connectivity, data_quality, system_performance"):
        open_incident(db, "disk", reason="full", action="none")
    with pytest.raises(ValueError, match="reason and an action"):
        open_incident(db, "data_quality", reason="", action="paused")
    with pytest.raises(ValueError, match="recovery"):
        close_incident(db, "data_quality", recovery="")
    with pytest.raises(ValueError, match="limit"):
        list_health_incidents(db, limit=0)


def test_missing_table_and_unreachable_server_say_what_to_do(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    try:
        with pytest.raises(MigrationError, match="tapewatch db upgrade"):
            open_health_incidents(db)
    finally:
        db.dispose()
    down = Database("postgresql://nobody@127.0.0.1:1/nothing", connect_timeout=2)
    try:
        with pytest.raises(StorageUnavailable, match="TAPEWATCH_DATABASE_URL"):
            open_health_incidents(down)
    finally:
        down.dispose()


def test_status_lists_open_health_incidents_beside_feed_incidents(
    db: Database, migrated_database_url: str, redis_url: str, redis_keys: Keyspace, tmp_path: Path
) -> None:
    settings = load_settings(
        database_url=migrated_database_url,
        redis_url=redis_url,
        redis_prefix=redis_keys.prefix,
        var_dir=tmp_path,
    )
    assert "health actions in force: none" in format_status(gather_status(settings))
    open_incident(
        db, "api_connectivity", reason="5 failed checks in a row: ping refused", action="backup feed on"
    )
    status = gather_status(settings)
    [row] = status.health_incidents
    assert row.action == "backup feed on"
    text = format_status(status)
    assert "health actions in force: 1" in text and "backup feed on" in text and "ping refused" in text
    assert status.to_json()["incidents"]["health_open"][0]["kind"] == "api_connectivity"
