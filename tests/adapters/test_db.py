"""The PostgreSQL adapter: URLs, connectivity errors, and the migration runner against real servers."""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from tapewatch.adapters.db import (
    SQL_DIR,
    Database,
    applied_migrations,
    check_connection,
    cli_upgrade,
    create_engine,
    load_migrations,
    normalize_url,
    open_database,
    upgrade,
)
from tapewatch.adapters.embedded import start_postgres, stop_postgres
from tapewatch.errors import ConfigError, MigrationError, StorageUnavailable
from tapewatch.settings import Settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


# --- URLs and migration files (no server) ----------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["postgresql://u:p@h:5/d", "postgres://u:p@h:5/d", "postgresql+psycopg://u:p@h:5/d"],
)
def test_urls_are_normalised_to_psycopg3(url: str) -> None:
    assert normalize_url(url) == "postgresql+psycopg://u:p@h:5/d"


@pytest.mark.parametrize("url", ["mysql://u@h/d", "postgresql+psycopg2://u@h/d", "h:5432/d", ""])
def test_other_urls_are_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="postgresql://"):
        normalize_url(url)


def test_passwords_never_reach_messages() -> None:
    assert "secret" not in repr(Database("postgresql://tw:secret@db:5432/tapewatch"))


def test_the_shipped_migrations_load_in_order() -> None:
    migrations = load_migrations()
    assert migrations[0].label == "0001_market_data"
    assert [m.version for m in migrations] == sorted({m.version for m in migrations})
    assert all(m.path.parent == SQL_DIR and len(m.checksum) == 64 for m in migrations)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"1_short.sql": "SELECT 1;"}, "named NNNN_name.sql"),
        ({"0001_Upper.sql": "SELECT 1;"}, "named NNNN_name.sql"),
        ({"0001_a.sql": "SELECT 1;", "0001_b.sql": "SELECT 2;"}, "same number"),
        ({"0001_blank.sql": "  \n\n"}, "empty"),
    ],
)
def test_bad_migration_files_are_refused(tmp_path: Path, files: dict[str, str], message: str) -> None:
    with pytest.raises(MigrationError, match=message):
        load_migrations(_write(tmp_path / "sql", files))


def test_non_utf8_and_missing_directories_are_refused(tmp_path: Path) -> None:
    directory = tmp_path / "sql"
    directory.mkdir()
    (directory / "0001_latin.sql").write_bytes(b"SELECT '\xe9';")
    with pytest.raises(MigrationError, match="not UTF-8"):
        load_migrations(directory)
    with pytest.raises(MigrationError, match="does not exist"):
        load_migrations(tmp_path / "nowhere")


def test_other_files_beside_migrations_are_ignored(tmp_path: Path) -> None:
    directory = _write(tmp_path / "sql", {"0001_a.sql": "SELECT 1;", "README.md": "notes"})
    assert [m.label for m in load_migrations(directory)] == ["0001_a"]


# --- upgrade against a real server ------------------------------------------------------------------------


def test_upgrade_applies_everything_once_and_records_it(empty_database_url: str) -> None:
    engine = create_engine(empty_database_url)
    try:
        assert applied_migrations(engine) == []
        applied = upgrade(engine)
        assert applied == [m.label for m in load_migrations()]
        assert upgrade(engine) == []  # idempotent
        rows = applied_migrations(engine)
        assert [(r.version, r.name, r.checksum) for r in rows] == [
            (m.version, m.name, m.checksum) for m in load_migrations()
        ]
        assert all(r.applied_at.tzinfo is not None for r in rows)
        assert {"schema_migrations", "feed_incidents", "capture_files"} <= _tables(engine)
    finally:
        engine.dispose()


def test_market_data_schema_keeps_bad_rows_out(engine: sa.Engine) -> None:
    insert_incident = sa.text(
        "INSERT INTO feed_incidents (symbol, stream, kind, detail, event_time) VALUES (:s, :st, :k, :d, :e)"
    )
    insert_file = sa.text("INSERT INTO capture_files (path, hour, lines, bytes) VALUES (:p, :h, 1, 10)")
    with engine.begin() as conn:
        conn.execute(
            insert_incident, {"s": "BTCUSDT", "st": "btcusdt@depth@100ms", "k": "gap", "d": "", "e": 1}
        )
        conn.execute(insert_incident, {"s": None, "st": None, "k": "reconnect", "d": "socket 1", "e": None})
        conn.execute(insert_file, {"p": "capture/2024/08/08/13.jsonl.gz", "h": "2024-08-08T13:00:00Z"})
        open_count = conn.execute(
            sa.text("SELECT count(*) FROM feed_incidents WHERE resolved_at IS NULL")
        ).scalar()
    assert open_count == 2
    bad: list[tuple[sa.TextClause, dict[str, object]]] = [
        (insert_incident, {"s": "BTCUSDT", "st": None, "k": "weird", "d": "", "e": 1}),  # unknown kind
        (insert_incident, {"s": "btc usdt", "st": None, "k": "gap", "d": "", "e": 1}),  # not a symbol
        (insert_incident, {"s": "BTCUSDT", "st": None, "k": "gap", "d": "", "e": -5}),  # negative time
        (insert_file, {"p": "capture/x.jsonl.gz", "h": "2024-08-08T13:30:00Z"}),  # not an hour start
    ]
    for statement, params in bad:
        with pytest.raises(sa_exc.IntegrityError), engine.begin() as conn:
            conn.execute(statement, params)
    indexes = {ix["name"] for ix in sa.inspect(engine).get_indexes("feed_incidents")}
    assert {"feed_incidents_open_idx", "feed_incidents_symbol_idx"} <= indexes


def test_an_edited_applied_migration_is_a_clear_error(tmp_path: Path, empty_database_url: str) -> None:
    directory = _write(tmp_path / "sql", {"0001_first.sql": "CREATE TABLE first (id int);"})
    engine = create_engine(empty_database_url)
    try:
        assert upgrade(engine, directory) == ["0001_first"]
        _write(
            directory,
            {"0001_first.sql": "CREATE TABLE first (id bigint);", "0002_next.sql": "CREATE TABLE nx ();"},
        )
        with pytest.raises(MigrationError, match=r"0001_first.sql was changed after it was applied"):
            upgrade(engine, directory)
        assert "nx" not in _tables(engine)  # nothing applied after the mismatch was found
    finally:
        engine.dispose()


def test_a_failing_migration_is_rolled_back_and_can_be_fixed(tmp_path: Path, empty_database_url: str) -> None:
    directory = _write(
        tmp_path / "sql",
        {
            # several statements, and '%' that a driver must not take for a placeholder
            "0001_ok.sql": "CREATE TABLE ok (t text);\nINSERT INTO ok VALUES ('100% %s %(x)s');",
            "0002_broken.sql": "CREATE TABLE half (id int);\nSELEKT 1;",
            "0003_later.sql": "CREATE TABLE later (id int);",
        },
    )
    engine = create_engine(empty_database_url)
    try:
        with pytest.raises(MigrationError, match=r"0002_broken.sql failed and was rolled back: .*SELEKT"):
            upgrade(engine, directory)
        assert [r.name for r in applied_migrations(engine)] == ["ok"]
        assert {"ok"} <= _tables(engine) and not {"half", "later"} & _tables(engine)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT t FROM ok")).scalar() == "100% %s %(x)s"
        _write(directory, {"0002_broken.sql": "CREATE TABLE half (id int);"})
        assert upgrade(engine, directory) == ["0002_broken", "0003_later"]
    finally:
        engine.dispose()


def test_concurrent_upgrades_apply_each_migration_once(tmp_path: Path, empty_database_url: str) -> None:
    # The slow migration keeps the first upgrade busy while the second one arrives.
    directory = _write(
        tmp_path / "sql",
        {
            "0001_slow.sql": "SELECT pg_sleep(0.3);\nCREATE TABLE once (id int);",
            "0002_more.sql": "CREATE TABLE m ();",
        },
    )
    engines = [create_engine(empty_database_url) for _ in range(2)]
    barrier = threading.Barrier(2)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run(engine: sa.Engine) -> None:
        barrier.wait()
        try:
            results.append(upgrade(engine, directory))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    try:
        assert errors == []
        assert sorted(results) == [[], ["0001_slow", "0002_more"]]
        assert [r.version for r in applied_migrations(engines[0])] == [1, 2]
    finally:
        for e in engines:
            e.dispose()


def test_upgrade_gives_up_when_another_process_holds_the_lock(
    tmp_path: Path, empty_database_url: str
) -> None:
    directory = _write(tmp_path / "sql", {"0001_a.sql": "CREATE TABLE a ();"})
    engine, other_process = create_engine(empty_database_url), create_engine(empty_database_url)
    try:
        with other_process.connect() as holder:
            holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": 0x7461706577617463})
            holder.commit()
            with pytest.raises(MigrationError, match="another process has held the migration lock"):
                upgrade(engine, directory, lock_timeout=0.2)
        other_process.dispose()  # its session ends, and the lock with it
        assert upgrade(engine, directory) == ["0001_a"]
    finally:
        engine.dispose()
        other_process.dispose()


def test_a_migration_unknown_to_this_version_is_only_a_warning(
    tmp_path: Path, empty_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    directory = _write(
        tmp_path / "sql", {"0001_a.sql": "CREATE TABLE a ();", "0002_b.sql": "CREATE TABLE b ();"}
    )
    engine = create_engine(empty_database_url)
    try:
        upgrade(engine, directory)
        (directory / "0002_b.sql").unlink()  # an older tapewatch against a newer database
        with caplog.at_level(logging.WARNING, logger="tapewatch.adapters.db"):
            assert upgrade(engine, directory) == []
        assert "0002_b" in caplog.text and "does not ship" in caplog.text
    finally:
        engine.dispose()


# --- start-up and the CLI ---------------------------------------------------------------------------------


def test_open_database_checks_and_migrates(empty_database_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=empty_database_url, var_dir=tmp_path)
    db = open_database(settings)
    try:
        assert "feed_incidents" in _tables(db.engine)
        with db.begin() as conn:
            conn.execute(sa.text("INSERT INTO feed_incidents (kind) VALUES ('stale')"))
        with db.begin() as conn:
            assert conn.execute(sa.text("SELECT kind FROM feed_incidents")).scalar() == "stale"
    finally:
        db.dispose()
    assert cli_upgrade(settings) == []
    assert not (tmp_path / "pg").exists()  # a configured URL starts no embedded server


def test_cli_upgrade_reports_what_it_applied(empty_database_url: str) -> None:
    settings = Settings(database_url=empty_database_url)
    assert cli_upgrade(settings) == [m.label for m in load_migrations()]
    assert cli_upgrade(settings) == []


# --- PostgreSQL unreachable or going away -----------------------------------------------------------------


def test_an_unreachable_server_is_storage_unavailable_with_advice() -> None:
    engine = create_engine(f"postgresql://tw:secret@127.0.0.1:{_free_port()}/tapewatch", connect_timeout=2)
    try:
        with pytest.raises(StorageUnavailable) as caught:
            check_connection(engine)
        message = str(caught.value)
        assert "TAPEWATCH_DATABASE_URL" in message and "running" in message and "127.0.0.1" in message
        assert "secret" not in message
        with pytest.raises(StorageUnavailable):
            upgrade(engine)
        with pytest.raises(StorageUnavailable):
            applied_migrations(engine)
    finally:
        engine.dispose()


@pytest.mark.db
@pytest.mark.slow
def test_a_server_going_away_and_coming_back(server_tmp_path: Path) -> None:
    # A PostgreSQL of this test's own: stopping the session's (or the machine's) server would hurt others.
    pgdata = server_tmp_path / "pg"
    db = Database(start_postgres(pgdata))
    try:
        db.check()
        assert db.upgrade() == [m.label for m in load_migrations()]
        assert stop_postgres(pgdata)
        with pytest.raises(StorageUnavailable, match="TAPEWATCH_DATABASE_URL"):
            db.check()
        with pytest.raises(StorageUnavailable), db.begin() as conn:
            conn.execute(sa.text("SELECT 1"))
        with pytest.raises(StorageUnavailable):
            db.upgrade()
        start_postgres(pgdata)
        db.check()  # the pool's pre-ping replaces dead connections: no restart of the process needed
        assert db.upgrade() == []
    finally:
        db.dispose()
        stop_postgres(pgdata)
