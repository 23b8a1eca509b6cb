"""The market-data archive: an hour recorded by the simulator compacted into Parquet, checked, pruned."""

from __future__ import annotations

import dataclasses
import gzip
import json
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from assets.archive import (
    Gap,
    archive_dir,
    check_results,
    id_violations,
    longest_gaps,
    market_data_archive,
    neighbour_symbols,
    to_tables,
    write_tables,
)
from orchestration.resources import DatabaseResource, TapewatchSettings
from realtime.sim.record import record
from tapewatch.adapters.capture_files import (
    HourColumns,
    archived_hour,
    hour_path,
    prune_captures,
    read_hour,
)
from tapewatch.adapters.db import Database
from tapewatch.errors import CaptureError

HOUR = datetime(2026, 1, 5, 0, tzinfo=UTC)
PARTITION = "2026-01-05-00:00"
BOUNDS = {"start_ms": int(HOUR.timestamp() * 1000), "end_ms": int(HOUR.timestamp() * 1000) + 3_600_000}


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


def test_the_shards_captures_of_an_hour_are_archived_together(recorded: Path, tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    whole = hour_path(recorded, HOUR).read_bytes()
    single = hour_path(var_dir, HOUR)
    for shard in ("shard-0of2", "shard-1of2"):
        target = var_dir / "capture" / shard / single.relative_to(var_dir / "capture")
        target.parent.mkdir(parents=True)
        target.write_bytes(whole)
    (var_dir / "capture" / "shard-2of3").mkdir()  # a shard with nothing this hour
    cols = read_hour(var_dir, HOUR)
    assert [rel for rel, _ in cols.files] == [
        f"capture/shard-0of2/{single.relative_to(var_dir / 'capture').as_posix()}",
        f"capture/shard-1of2/{single.relative_to(var_dir / 'capture').as_posix()}",
    ]
    assert cols.lines == 2 * capture_counts(hour_path(recorded, HOUR))["lines"]
    assert cols.complete


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
    # within the 20 recorded minutes (over the whole hour the 40 silent minutes after them would decide)
    start_ms = BOUNDS["start_ms"]
    gaps = longest_gaps(
        tables["book_tops"], "event_time", "book_tops", start_ms=start_ms, end_ms=start_ms + 1_200_000
    )
    assert gaps[0].symbol == symbol and gaps[0].gap_ms >= 300_000


def test_silences_at_the_edges_of_the_hour_and_missing_symbols_are_gaps(recorded: Path) -> None:
    cols = read_hour(recorded, HOUR)
    # the recording covers the first 20 minutes: its last 40 are silent for every symbol
    tables = to_tables(cols)
    gaps = longest_gaps(tables["trades"], "trade_time", "trades", **BOUNDS)
    assert len(gaps) == 3 and all(g.gap_ms >= 39 * 60_000 for g in gaps)
    assert all(g.after_ms + g.gap_ms == BOUNDS["end_ms"] for g in gaps)
    # an outage at the start of the hour: one symbol's first 15 minutes dropped
    symbol = cols.trades["symbol"][0]
    cut = BOUNDS["start_ms"] + 15 * 60_000
    keep = [
        i
        for i, (s, t) in enumerate(zip(cols.trades["symbol"], cols.trades["trade_time"], strict=True))
        if s != symbol or t >= cut
    ]
    head = {name: [column[i] for i in keep if cols.trades["trade_time"][i] < BOUNDS["start_ms"] + 20 * 60_000]
            for name, column in cols.trades.items()}  # fmt: skip
    table = to_tables(_with(cols, trades=head))["trades"]
    first = longest_gaps(table, "trade_time", "trades", start_ms=BOUNDS["start_ms"], end_ms=cut + 5 * 60_000)
    assert first[0].symbol == symbol and first[0].after_ms == BOUNDS["start_ms"]
    assert first[0].gap_ms >= 15 * 60_000 > max(g.gap_ms for g in first[1:])
    # a symbol expected (seen elsewhere) without a single row is silent the whole hour
    missing = longest_gaps(tables["trades"], "trade_time", "trades", expected={"ZZZUSDT"}, **BOUNDS)
    assert missing[0] == Gap("trades", "ZZZUSDT", 3_600_000, BOUNDS["start_ms"])


def test_the_gap_check_flags_symbols_of_the_streams_and_of_the_neighbour_hours(recorded: Path) -> None:
    cols = read_hour(recorded, HOUR)
    assert len(cols.symbols) == 3
    tables = to_tables(cols)
    quiet = sorted(cols.symbols)[0]
    keep = [i for i, s in enumerate(cols.trades["symbol"]) if s != quiet]
    trades = {name: [column[i] for i in keep] for name, column in cols.trades.items()}
    tables = to_tables(_with(cols, trades=trades))
    checks = {c.check_name: c for c in check_results(cols, tables, 3_600_000, hour=HOUR)}
    # a symbol with book tops and depth but no trade in the whole hour
    assert not checks["no_time_gaps"].passed
    assert checks["no_time_gaps"].metadata["missing_symbols"].value == {"trades": [quiet], "book_tops": []}
    neighbours = check_results(cols, to_tables(cols), 3_600_000, hour=HOUR, expected={"GONEUSDT"})
    gap = {c.check_name: c for c in neighbours}["no_time_gaps"]
    assert not gap.passed
    assert gap.metadata["missing_symbols"].value == {"trades": ["GONEUSDT"], "book_tops": ["GONEUSDT"]}


def test_neighbour_symbols_come_from_the_archives_of_the_hours_around(recorded: Path, tmp_path: Path) -> None:
    tables = to_tables(read_hour(recorded, HOUR))
    assert neighbour_symbols(tmp_path, HOUR) == set()
    write_tables(archive_dir(tmp_path, HOUR - timedelta(hours=1)), tables)
    assert neighbour_symbols(tmp_path, HOUR) == set(tables["trades"].column("symbol").to_pylist())


def _with(cols: HourColumns, **columns: dict[str, list[object]]) -> HourColumns:
    return dataclasses.replace(cols, **columns)


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


def _member(lines: list[bytes], *, finish: bool) -> bytes:
    """A gzip member as the capture writer makes it; without its trailer when the writer was killed."""
    comp = zlib.compressobj(6, zlib.DEFLATED, 31)
    body = comp.compress(b"".join(x + b"\n" for x in lines))
    return body + comp.flush(zlib.Z_FINISH if finish else zlib.Z_SYNC_FLUSH)


def _trade_lines(start: int, n: int) -> list[bytes]:
    t0 = int(HOUR.timestamp() * 1000) + start * 1000
    return [
        b'{"recv":%d,"stream":"aaausdt@aggTrade","data":{"e":"aggTrade","E":%d,"s":"AAAUSDT","a":%d,'
        b'"p":"10.5","q":"2","f":%d,"l":%d,"T":%d,"m":false}}'
        % (t0 + i, t0 + i, start + i, start + i, start + i, t0 + i)
        for i in range(n)
    ]


def _capture(var_dir: Path, data: bytes) -> Path:
    """``data`` as the capture file of HOUR under ``var_dir``."""
    target = hour_path(var_dir, HOUR)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


def test_a_killed_member_followed_by_a_restart_loses_no_line(tmp_path: Path) -> None:
    # A writer killed mid-hour leaves a member without trailer; the restarted writer appends a new member.
    before, killed, after = _trade_lines(0, 100), _trade_lines(100, 40), _trade_lines(140, 100)
    target = hour_path(tmp_path, HOUR)
    target.parent.mkdir(parents=True)
    target.write_bytes(
        _member(before, finish=True) + _member(killed, finish=False) + _member(after, finish=True)
    )
    cols = read_hour(tmp_path, HOUR)
    assert cols.lines == 240 and not cols.damaged
    assert cols.trades["agg_id"] == list(range(240))
    # the same when the kill cut the member mid-write (not on a flush point): only the torn line is lost
    torn = _member(killed, finish=False)
    target.write_bytes(_member(before, finish=True) + torn[: len(torn) - 7] + _member(after, finish=True))
    cut = read_hour(tmp_path, HOUR)
    assert cut.trades["agg_id"][:100] == list(range(100)) and cut.trades["agg_id"][-100:] == list(
        range(140, 240)
    )
    assert 200 <= cut.lines < 240 and cut.torn_lines <= 1 and not cut.damaged


def test_a_file_that_yields_nothing_fails_rows_present_and_is_not_recorded(
    migrated_database_url: str, tmp_path: Path
) -> None:
    var_dir = tmp_path / "var"
    target = _capture(var_dir, _member(_trade_lines(0, 50), finish=False)[:10])  # killed after its header
    result = materialize(var_dir, migrated_database_url, capture_retention_hours="1")
    assert result.success
    rows = {c.check_name: c for c in result.get_asset_check_evaluations()}["rows_present"]
    assert not rows.passed and "yielded no line" in str(rows.description)
    db = Database(migrated_database_url)
    try:
        assert archived_hour(db, HOUR) is None
    finally:
        db.dispose()
    assert target.exists()


def test_a_damaged_hour_is_archived_as_read_but_never_recorded_or_pruned(
    migrated_database_url: str, tmp_path: Path
) -> None:
    var_dir = tmp_path / "var"
    damaged = bytearray(_member(_trade_lines(100, 200), finish=True))
    for off in range(len(damaged) // 2, len(damaged) // 2 + 40):
        damaged[off] ^= 0x5A
    target = _capture(
        var_dir,
        _member(_trade_lines(0, 100), finish=True)
        + bytes(damaged)
        + _member(_trade_lines(300, 100), finish=True),
    )
    cols = read_hour(var_dir, HOUR)
    assert cols.damaged >= 1 and not cols.complete
    assert cols.trades["agg_id"][:100] == list(range(100))
    assert cols.trades["agg_id"][-100:] == list(range(300, 400))  # read on after the damage
    # retention 1 h: an hour recorded as archived would have its raw file deleted right away
    result = materialize(var_dir, migrated_database_url, capture_retention_hours="1")
    assert result.success
    rows = {c.check_name: c for c in result.get_asset_check_evaluations()}["rows_present"]
    assert not rows.passed and "damaged" in str(rows.description)
    materialization = result.asset_materializations_for_node("market_data_archive")[0]
    assert materialization.metadata["recorded"].value is False
    assert pq.read_table(archive_dir(var_dir, HOUR) / "trades.parquet").num_rows == cols.lines
    db = Database(migrated_database_url)
    try:
        assert archived_hour(db, HOUR) is None
        assert prune_captures(db, var_dir, now=HOUR + timedelta(days=30), retention_hours=0).deleted == []
    finally:
        db.dispose()
    assert target.exists()


def test_trades_polled_by_the_backup_feed_are_archived(tmp_path: Path) -> None:
    import json

    var_dir = tmp_path / "var"
    target = hour_path(var_dir, HOUR)
    target.parent.mkdir(parents=True)
    t0 = int(HOUR.timestamp() * 1000) + 1_000
    rows = [
        {"a": 10 + i, "p": "100.5", "q": "2", "f": 20 + i, "l": 20 + i, "T": t0 + i, "m": i % 2 == 0}
        for i in range(3)
    ]
    page = {
        "recv": t0 + 10,
        "stream": "rest:/fapi/v1/aggTrades?symbol=BTCUSDT&fromId=10&limit=1000",
        "data": rows,
    }
    target.write_bytes(gzip.compress((json.dumps(page) + "\n").encode()))
    cols = read_hour(var_dir, HOUR)
    assert cols.lines == 1
    assert len(cols.trades["symbol"]) == 3 and set(cols.trades["symbol"]) == {"BTCUSDT"}


def test_rows_fewer_than_the_lines_of_their_stream_fail_the_row_check() -> None:
    """The rows are checked against the lines of their stream counted before decoding: a reader that lost
    lines on the way fails rows_present instead of passing on a non-empty table."""
    from assets.archive import _rows_verdict, rows_short
    from tapewatch.adapters.capture_files import HourColumns

    cols = HourColumns(files=[("capture/x.jsonl.gz", 10)], lines=1_000, forming_candles=90)
    cols.stream_lines.update({"aggTrade": 500, "bookTicker": 400, "kline": 100})
    whole = {"trades": 500, "book_tops": 400, "candles": 10}
    assert rows_short(cols, whole) == [] and _rows_verdict(cols, whole)[0]
    # backup-feed pages add trades beyond the websocket lines: more rows is fine
    assert rows_short(cols, whole | {"trades": 700}) == []
    half = whole | {"book_tops": 200}
    ok, note = _rows_verdict(cols, half)
    assert not ok and "book_tops: 200 rows from 400 bookTicker lines (0 lines refused by the decoder)" in note
    # lines the decoder refused are said and counted, not taken for lost rows
    cols.rejected.update({"bad_price": 200})
    assert rows_short(cols, half) == []


def test_the_stream_kind_of_a_line_is_read_from_its_name() -> None:
    from tapewatch.adapters.capture_files import _row_stream_kind

    def line(stream: str) -> bytes:
        return b'{"recv":1,"stream":"%s","data":{}}' % stream.encode()

    assert _row_stream_kind(line("btcusdt@aggTrade")) == "aggTrade"
    assert _row_stream_kind(line("btcusdt@bookTicker")) == "bookTicker"
    assert _row_stream_kind(line("btcusdt@kline_1m")) == "kline"
    assert _row_stream_kind(line("btcusdt@depth@100ms")) is None
    assert _row_stream_kind(line("rest:/fapi/v1/aggTrades?symbol=BTCUSDT&fromId=5&limit=1000")) is None
    assert _row_stream_kind(line("control:pause")) is None
    assert _row_stream_kind(b'{"recv":1,"data":{}}') is None
