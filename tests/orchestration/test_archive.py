"""The market-data archive: an hour recorded by the simulator compacted into Parquet, checked, pruned."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from assets.archive import archive_dir, id_violations, longest_gaps, market_data_archive, to_tables
from orchestration.resources import DatabaseResource, TapewatchSettings
from realtime.sim.record import record
from tapewatch.adapters.capture_files import archived_hour, hour_path, prune_captures, read_hour
from tapewatch.adapters.db import Database
from tapewatch.errors import CaptureError

HOUR = datetime(2026, 1, 5, 0, tzinfo=UTC)
PARTITION = "2026-01-05-00:00"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twenty simulated minutes of three symbols: the var dir holding the capture."""
    out = tmp_path_factory.mktemp("rec")
    record(out, 20 * 60 * 1000, seed=4, symbols=3)
    return out / "var"


def capture_counts(path: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    with gzip.open(path, "rb") as fh:
        for line in fh:
            obj = json.loads(line)
            stream, data = obj["stream"], obj["data"]
            if stream.endswith("@aggTrade"):
                counts["trades"] += 1
            elif stream.endswith("@bookTicker"):
                counts["book_tops"] += 1
            elif "@kline_" in stream and data["k"]["x"]:
                counts["candles"] += 1
            counts["lines"] += 1
    return counts


def materialize(var_dir: Path, database_url: str, **overrides: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [market_data_archive],
        partition_key=PARTITION,
        resources={
            "settings": TapewatchSettings(overrides={"var_dir": str(var_dir), **overrides}),
            "database": DatabaseResource(url=database_url),
        },
    )


def test_an_hour_becomes_parquet_with_the_capture_row_counts(
    recorded: Path, migrated_database_url: str, tmp_path: Path
) -> None:
    var_dir = tmp_path / "var"
    (var_dir / "capture").mkdir(parents=True)
    source = hour_path(recorded, HOUR)
    target = hour_path(var_dir, HOUR)
    target.parent.mkdir(parents=True)
    target.write_bytes(source.read_bytes())
    expected = capture_counts(target)

    result = materialize(var_dir, migrated_database_url, capture_retention_hours="100000")
    assert result.success
    out = archive_dir(var_dir, HOUR)
    rows = {
        name: pq.read_table(out / f"{name}.parquet").num_rows for name in ("trades", "book_tops", "candles")
    }
    assert rows == {k: expected[k] for k in rows}
    assert min(rows.values()) > 0
    trades = pq.read_table(out / "trades.parquet")
    assert len(set(trades.column("symbol").to_pylist())) == 3
    candles = pq.read_table(out / "candles.parquet")
    assert set(candles.column("interval").to_pylist()) <= {"1m", "15m"}
    assert all(candles.column("close_time").to_numpy() > candles.column("open_time").to_numpy())

    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert set(checks) == {"rows_present", "no_time_gaps", "monotone_ids"}
    assert checks["rows_present"].passed and checks["monotone_ids"].passed
    materialization = result.asset_materializations_for_node("market_data_archive")[0]
    assert materialization.metadata["capture_lines"].value == expected["lines"]
    assert materialization.metadata["torn_lines"].value == 0

    db = Database(migrated_database_url)
    try:
        row = archived_hour(db, HOUR)
        assert row is not None and row.trades == expected["trades"] and row.pruned_at is None
        assert row.files == [(target.relative_to(var_dir).as_posix(), target.stat().st_size)]
    finally:
        db.dispose()
    assert target.exists()  # retention not reached


def test_a_torn_last_line_is_skipped_and_counted(recorded: Path, tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    target = hour_path(var_dir, HOUR)
    target.parent.mkdir(parents=True)
    whole = hour_path(recorded, HOUR).read_bytes()
    extra = gzip.compress(b'{"recv":1767571300000,"stream":"sim1usdt@aggTrade","data":{"e":"aggTr')
    target.write_bytes(whole + extra)
    cols = read_hour(var_dir, HOUR)
    assert cols.torn_lines == 1
    assert cols.lines == capture_counts(hour_path(recorded, HOUR))["lines"]
    # a member cut in the middle of its deflate stream (the writer was killed mid-flush)
    target.write_bytes(whole + extra[: len(extra) // 2])
    cut = read_hour(var_dir, HOUR)
    assert cut.lines == cols.lines


def test_a_file_that_is_not_gzip_is_a_clear_error(tmp_path: Path) -> None:
    target = hour_path(tmp_path, HOUR)
    target.parent.mkdir(parents=True)
    target.write_text('{"recv": 1}\n')
    with pytest.raises(CaptureError, match="not a gzip file"):
        read_hour(tmp_path, HOUR)


def test_an_hour_without_capture_archives_nothing_and_passes(
    migrated_database_url: str, tmp_path: Path
) -> None:
    result = materialize(tmp_path / "var", migrated_database_url)
    assert result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["rows_present"].passed and checks["rows_present"].description == "no capture for this hour"
    assert not archive_dir(tmp_path / "var", HOUR).exists()


def test_checks_find_gaps_and_ids_out_of_order(recorded: Path) -> None:
    cols = read_hour(recorded, HOUR)
    # swap two trades of one symbol and drop five minutes of another's book tops
    first = cols.trades["symbol"].index(cols.trades["symbol"][0])
    second = cols.trades["symbol"].index(cols.trades["symbol"][0], first + 1)
    for column in cols.trades.values():
        column[first], column[second] = column[second], column[first]
    symbol = cols.tops["symbol"][0]
    times = cols.tops["event_time"]
    start = min(t for s, t in zip(cols.tops["symbol"], times, strict=True) if s == symbol) + 60_000
    keep = [
        i
        for i, (s, t) in enumerate(zip(cols.tops["symbol"], times, strict=True))
        if not (s == symbol and start <= t < start + 300_000)
    ]
    for name, column in cols.tops.items():
        cols.tops[name] = [column[i] for i in keep]
    tables = to_tables(cols)
    assert id_violations(tables["trades"], "agg_id", strict=True) == {cols.trades["symbol"][first]: 1}
    gaps = longest_gaps(tables["book_tops"], "event_time", "book_tops")
    assert gaps[0].symbol == symbol and gaps[0].gap_ms >= 300_000


def test_pruning_deletes_only_archived_unchanged_files_past_retention(
    recorded: Path, migrated_database_url: str, tmp_path: Path
) -> None:
    var_dir = tmp_path / "var"
    target = hour_path(var_dir, HOUR)
    target.parent.mkdir(parents=True)
    target.write_bytes(hour_path(recorded, HOUR).read_bytes())
    later = HOUR + timedelta(hours=1)
    unarchived = hour_path(var_dir, later)
    unarchived.parent.mkdir(parents=True, exist_ok=True)
    unarchived.write_bytes(target.read_bytes())
    assert materialize(var_dir, migrated_database_url, capture_retention_hours="100000").success
    db = Database(migrated_database_url)
    try:
        # within the retention: nothing goes
        assert prune_captures(db, var_dir, now=HOUR + timedelta(hours=2), retention_hours=3).deleted == []
        # a file that grew after it was archived is kept (archive it again first)
        with target.open("ab") as fh:
            fh.write(gzip.compress(b"{}\n"))
        grown = prune_captures(db, var_dir, now=HOUR + timedelta(hours=10), retention_hours=3)
        assert grown.deleted == [] and grown.changed == [target.relative_to(var_dir).as_posix()]
        assert materialize(var_dir, migrated_database_url, capture_retention_hours="100000").success
        done = prune_captures(db, var_dir, now=HOUR + timedelta(hours=10), retention_hours=3)
        assert done.deleted == [target.relative_to(var_dir).as_posix()] and done.freed_bytes > 0
        assert not target.exists() and unarchived.exists()  # never archived: kept
        row = archived_hour(db, HOUR)
        assert row is not None and row.pruned_at is not None
    finally:
        db.dispose()
    assert (archive_dir(var_dir, HOUR) / "trades.parquet").exists()
