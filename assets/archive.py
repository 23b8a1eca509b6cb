"""``market_data_archive``: each UTC hour of raw capture compacted into Parquet, checked, and old raw files pruned.

Per hour ``H`` (partition key ``YYYY-MM-DD-HH:00``) it reads ``<var_dir>/capture/YYYY/MM/DD/HH.jsonl.gz``
(``tapewatch.adapters.capture_files``) and writes ``<var_dir>/archive/YYYY/MM/DD/HH/`` with
``trades.parquet`` (aggTrade), ``book_tops.parquet`` (bookTicker) and ``candles.parquet`` (closed klines),
zstd-compressed, each replaced atomically. Checks (computed here, reported with the materialization):

- ``rows_present``: every table has rows when the hour has capture lines, at least one per websocket line of
  its stream (aggTrade, bookTicker, kline; counted from the lines' stream names before decoding) less the lines
  the decoder refused; fails when the hour's file exists but yields no line, or was damaged (bytes that did not
  inflate were skipped: their lines are lost), or when rows were lost between the file and a table;
- ``no_time_gaps``: per symbol, no silence longer than ``archive_max_gap_seconds`` in its trades or book
  tops, counting from the start of the hour to the first event and from the last event to the end of the
  hour; a symbol expected but without rows (it has frames in another stream of this hour, or rows in the
  archive of the hour before or after) is silent the whole hour. A warning: a quiet symbol can
  legitimately not trade, and a symbol that joined or left the universe at the hour's edge shows too;
- ``monotone_ids``: per symbol, in receive order, aggregate trade ids strictly increase and book-top update
  ids never decrease (an error: the capture was reordered or duplicated).

Only an hour read whole (file present, lines read, nothing damaged) is recorded as archived; then raw
capture files of recorded hours older than ``capture_retention_hours`` are pruned. A damaged hour keeps
its raw file (its Parquet holds what could be read) until an operator deals with it.
"""

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import AssetExecutionContext

from orchestration.resources import DatabaseResource, TapewatchSettings
from tapewatch.adapters.capture_files import (
    HourColumns,
    hour_start,
    prune_captures,
    read_hour,
    record_archived,
)

ARCHIVE_PARTITIONS = dg.HourlyPartitionsDefinition(start_date="2025-01-01-00:00", timezone="UTC")

_TRADES = pa.schema(
    [
        ("symbol", pa.string()), ("recv", pa.int64()), ("event_time", pa.int64()), ("trade_time", pa.int64()),
        ("agg_id", pa.int64()), ("first_trade_id", pa.int64()), ("last_trade_id", pa.int64()),
        ("price", pa.float64()), ("qty", pa.float64()), ("buyer_is_maker", pa.bool_()),
    ]
)  # fmt: skip
_TOPS = pa.schema(
    [
        ("symbol", pa.string()), ("recv", pa.int64()), ("event_time", pa.int64()),
        ("transaction_time", pa.int64()), ("update_id", pa.int64()), ("bid_price", pa.float64()),
        ("bid_qty", pa.float64()), ("ask_price", pa.float64()), ("ask_qty", pa.float64()),
    ]
)  # fmt: skip
_CANDLES = pa.schema(
    [
        ("symbol", pa.string()), ("interval", pa.string()), ("open_time", pa.int64()),
        ("close_time", pa.int64()), ("event_time", pa.int64()), ("open", pa.float64()), ("high", pa.float64()),
        ("low", pa.float64()), ("close", pa.float64()), ("volume", pa.float64()),
        ("quote_volume", pa.float64()), ("trades", pa.int64()), ("taker_buy_volume", pa.float64()),
        ("taker_buy_quote_volume", pa.float64()),
    ]
)  # fmt: skip
TABLES = ("trades", "book_tops", "candles")


def archive_dir(var_dir: Path, hour: datetime) -> Path:
    """Where the Parquet files of ``hour`` go: ``var_dir/archive/YYYY/MM/DD/HH``."""
    h = hour_start(hour)
    return var_dir / "archive" / f"{h:%Y}" / f"{h:%m}" / f"{h:%d}" / f"{h:%H}"


def hour_of_partition(key: str) -> datetime:
    """The UTC hour of a partition key (``2026-01-05-13:00``)."""
    return datetime.strptime(key, "%Y-%m-%d-%H:%M").replace(tzinfo=UTC)


def to_tables(cols: HourColumns) -> dict[str, pa.Table]:
    """The three Parquet tables of an hour's columns."""
    return {
        "trades": pa.Table.from_pydict(cols.trades, schema=_TRADES),
        "book_tops": pa.Table.from_pydict(cols.tops, schema=_TOPS),
        "candles": pa.Table.from_pydict(cols.candles, schema=_CANDLES),
    }


def write_tables(directory: Path, tables: Mapping[str, pa.Table]) -> dict[str, Path]:
    """Write each table to ``directory/<name>.parquet`` through a temporary file renamed into place, so a
    reader never sees half a file and a re-materialization replaces the previous one."""
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, table in tables.items():
        path = directory / f"{name}.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
        written[name] = path
    return written


@dataclass(frozen=True, slots=True)
class Gap:
    """The longest silence of one symbol's stream within the hour, starting at ``after_ms`` (the hour's start
    when the silence opens the hour)."""

    table: str
    symbol: str
    gap_ms: int
    after_ms: int


def longest_gaps(
    table: pa.Table,
    time_column: str,
    name: str,
    *,
    start_ms: int,
    end_ms: int,
    expected: Iterable[str] = (),
) -> list[Gap]:
    """Per symbol, the longest silence within ``[start_ms, end_ms)``: between consecutive event times, from
    ``start_ms`` to the first and from the last to ``end_ms`` (times outside the hour count as its edges).
    A symbol of ``expected`` without rows is silent the whole hour. Longest first."""
    symbols = np.asarray(table.column("symbol").to_pylist(), dtype=object)
    times = np.clip(table.column(time_column).to_numpy(), start_ms, end_ms)
    gaps: list[Gap] = []
    for symbol in np.unique(symbols) if len(symbols) else ():
        t = np.concatenate(([start_ms], np.sort(times[symbols == symbol]), [end_ms]))
        diffs = np.diff(t)
        i = int(np.argmax(diffs))
        gaps.append(Gap(name, str(symbol), int(diffs[i]), int(t[i])))
    present = set(symbols.tolist())
    gaps += [Gap(name, s, end_ms - start_ms, start_ms) for s in sorted(set(expected) - present)]
    return sorted(gaps, key=lambda g: (-g.gap_ms, g.symbol))


def neighbour_symbols(var_dir: Path, hour: datetime) -> set[str]:
    """The symbols with rows in the archive (trades or book tops) of the hour before or after ``hour``;
    an hour not archived adds none."""
    found: set[str] = set()
    for other in (hour - timedelta(hours=1), hour + timedelta(hours=1)):
        for name in ("trades", "book_tops"):
            path = archive_dir(var_dir, other) / f"{name}.parquet"
            if path.is_file():
                found.update(pq.read_table(path, columns=["symbol"]).column("symbol").unique().to_pylist())
    return found


def id_violations(table: pa.Table, id_column: str, *, strict: bool) -> dict[str, int]:
    """Per symbol, how many times the id went backwards (or, ``strict``, failed to increase), in row
    (receive) order. Symbols without violations are left out."""
    if table.num_rows == 0:
        return {}
    symbols = np.asarray(table.column("symbol").to_pylist())
    ids = table.column(id_column).to_numpy()
    found: dict[str, int] = {}
    for symbol in np.unique(symbols):
        diffs = np.diff(ids[symbols == symbol])
        bad = int(np.count_nonzero(diffs <= 0 if strict else diffs < 0))
        if bad:
            found[str(symbol)] = bad
    return found


def _rows_verdict(cols: HourColumns, counts: Mapping[str, int]) -> tuple[bool, str]:
    empty = [name for name, n in counts.items() if n == 0]
    if not cols.files:
        return True, "no capture for this hour"
    if cols.lines == 0:
        return False, "the capture file exists but yielded no line (empty or unreadable); not recorded"
    if cols.damaged:
        return False, (
            f"the capture file is damaged ({cols.damaged} stretch(es) that do not inflate were skipped; "
            "their lines are lost): not recorded as archived, so its raw file is never pruned"
        )
    if empty:
        return False, f"empty despite {cols.lines} lines: {empty}"
    short = rows_short(cols, counts)
    if short:
        return False, "fewer rows than the capture's lines of their streams: " + "; ".join(short)
    return True, "every table has rows, at least one per websocket line of its stream"


#: Table → the websocket stream kind whose each line is one of its rows (REST pages add more).
_ROWS_FROM = {"trades": "aggTrade", "book_tops": "bookTicker", "candles": "kline"}


def rows_short(cols: HourColumns, counts: Mapping[str, int]) -> list[str]:
    """The tables with fewer rows than the hour's websocket lines of their stream (counted from the stream
    names, before decoding) less every line the decoder refused: rows lost between the file and the table.
    A kline line of a candle still forming makes no row, and is counted apart."""
    short = []
    for table, kind in _ROWS_FROM.items():
        lines = cols.stream_lines[kind]
        made = counts.get(table, 0) + (cols.forming_candles if kind == "kline" else 0)
        if made < lines - cols.rejected_total:
            short.append(
                f"{table}: {counts.get(table, 0)} rows from {lines} {kind} lines "
                f"({cols.rejected_total} lines refused by the decoder)"
            )
    return short


def check_results(
    cols: HourColumns,
    tables: Mapping[str, pa.Table],
    max_gap_ms: int,
    *,
    hour: datetime,
    expected: Iterable[str] = (),
) -> list[dg.AssetCheckResult]:
    """The three checks of an archived hour (see the module docstring); ``expected``: symbols that should
    have rows (besides those seen in the hour's capture)."""
    counts = {name: table.num_rows for name, table in tables.items()}
    rows_ok, rows_note = _rows_verdict(cols, counts)
    start = int(hour_start(hour).timestamp() * 1000)
    bounds = {"start_ms": start, "end_ms": start + 3_600_000}
    # an hour without capture has nothing to judge: its absence is rows_present's business
    wanted = (cols.symbols | set(expected)) if cols.lines else set()
    gaps = longest_gaps(tables["trades"], "trade_time", "trades", expected=wanted, **bounds) + longest_gaps(
        tables["book_tops"], "event_time", "book_tops", expected=wanted, **bounds
    )
    missing = {
        name: sorted(wanted - set(tables[name].column("symbol").to_pylist()))
        for name in ("trades", "book_tops")
    }
    too_long = [g for g in gaps if g.gap_ms > max_gap_ms]
    trade_bad = id_violations(tables["trades"], "agg_id", strict=True)
    top_bad = id_violations(tables["book_tops"], "update_id", strict=False)
    return [
        dg.AssetCheckResult(
            check_name="rows_present",
            passed=rows_ok,
            severity=dg.AssetCheckSeverity.ERROR,
            description=rows_note,
            metadata={
                "lines": cols.lines,
                "damaged": cols.damaged,
                **{f"{k}_rows": v for k, v in counts.items()},
            },
        ),
        dg.AssetCheckResult(
            check_name="no_time_gaps",
            passed=not too_long and not any(missing.values()),
            severity=dg.AssetCheckSeverity.WARN,
            description=(
                f"longest silence {max((g.gap_ms for g in gaps), default=0) / 1000:g} s "
                f"(limit {max_gap_ms / 1000:g} s)"
                + "".join(f"; no {name} for {', '.join(syms)}" for name, syms in missing.items() if syms)
            ),
            metadata={
                "gaps_over_limit": len(too_long),
                "missing_symbols": missing,
                "worst": [
                    f"{g.table} {g.symbol} {g.gap_ms / 1000:g} s after {g.after_ms}" for g in too_long[:10]
                ],
            },
        ),
        dg.AssetCheckResult(
            check_name="monotone_ids",
            passed=not trade_bad and not top_bad,
            severity=dg.AssetCheckSeverity.ERROR,
            description="ids in order" if not (trade_bad or top_bad) else "ids out of order",
            metadata={"agg_id_violations": trade_bad, "update_id_violations": top_bad},
        ),
    ]


@dg.asset(
    partitions_def=ARCHIVE_PARTITIONS,
    check_specs=[
        dg.AssetCheckSpec("rows_present", asset="market_data_archive"),
        dg.AssetCheckSpec("no_time_gaps", asset="market_data_archive"),
        dg.AssetCheckSpec("monotone_ids", asset="market_data_archive"),
    ],
    group_name="archive",
    description="An hour of raw capture as Parquet (trades, book tops, candles); prunes old raw captures.",
)
def market_data_archive(
    context: AssetExecutionContext, settings: TapewatchSettings, database: DatabaseResource
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    s = settings.settings()
    hour = hour_of_partition(context.partition_key)
    cols = read_hour(s.var_dir, hour)
    tables = to_tables(cols)
    written = write_tables(archive_dir(s.var_dir, hour), tables) if cols.lines else {}
    with database.open() as db:
        if cols.complete:  # a damaged hour is not recorded, so its raw file is never pruned
            record_archived(db, hour, cols)
        pruned = prune_captures(
            db, s.var_dir, now=datetime.now(UTC), retention_hours=s.capture_retention_hours
        )
    if pruned.changed:
        context.log.warning("capture files changed since archived, not pruned: %s", pruned.changed)
    return dg.MaterializeResult(
        metadata={
            "hour": hour.isoformat(),
            "capture_lines": cols.lines,
            "torn_lines": cols.torn_lines,
            "damaged_stretches": cols.damaged,
            "recorded": cols.complete,
            "rejected": dict(cols.rejected),
            "forming_candles_skipped": cols.forming_candles,
            **{f"{name}_rows": t.num_rows for name, t in tables.items()},
            "files": [str(p) for p in written.values()],
            "pruned_files": len(pruned.deleted),
            "pruned_bytes": pruned.freed_bytes,
        },
        check_results=check_results(
            cols,
            tables,
            int(s.archive_max_gap_seconds * 1000),
            hour=hour,
            expected=neighbour_symbols(s.var_dir, hour),
        ),
    )
