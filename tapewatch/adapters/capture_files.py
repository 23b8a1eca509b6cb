"""The raw capture files of an hour (DESIGN §3) as columns, their archive record, and their pruning.

Capture files are gzip JSON Lines, one per UTC hour: ``<var_dir>/capture/YYYY/MM/DD/HH.jsonl.gz`` (a restart
within the hour appends a gzip member to the same file). :func:`read_hour` reads every complete line of an
hour with the reader replay uses (:mod:`tapewatch.adapters.capture_reader`: a member a killed writer left
without its trailer, followed by the restarted writer's member, is read whole), decodes it with
:class:`~tapewatch.parse.FrameDecoder` and gathers three column sets: trades (``aggTrade``), book tops
(``bookTicker``) and closed candles (``kline``, the final state of each candle). Depth diffs and REST answers
are not archived (the book can be rebuilt from the raw capture while it is kept). Torn lines (the writer was
killed mid-write) are skipped and counted; damaged stretches (bytes that do not inflate: their lines are
lost) are counted in ``damaged``; lines the decoder refuses are counted by reason.

The table ``archive_hours`` (sql/0005) records what was archived, with the size of each file then; pruning
deletes the raw files of archived hours older than the retention, and only when a file is still exactly the
size it had when archived (a file that grew afterwards is archived again first).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from tapewatch.adapters.capture_reader import ReadStats, iter_capture
from tapewatch.adapters.db import Database
from tapewatch.events import AggTrade, BookTicker, Kline
from tapewatch.parse import FrameDecoder

log = logging.getLogger(__name__)

TRADE_COLUMNS = (
    "symbol", "recv", "event_time", "trade_time", "agg_id", "first_trade_id", "last_trade_id",
    "price", "qty", "buyer_is_maker",
)  # fmt: skip
TOP_COLUMNS = (
    "symbol", "recv", "event_time", "transaction_time", "update_id", "bid_price", "bid_qty", "ask_price",
    "ask_qty",
)  # fmt: skip
CANDLE_COLUMNS = (
    "symbol", "interval", "open_time", "close_time", "event_time", "open", "high", "low", "close", "volume",
    "quote_volume", "trades", "taker_buy_volume", "taker_buy_quote_volume",
)  # fmt: skip


def hour_start(at: datetime) -> datetime:
    """The start of the UTC hour holding ``at`` (naive datetimes are taken as UTC)."""
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.replace(minute=0, second=0, microsecond=0)


def hour_path(var_dir: Path, hour: datetime) -> Path:
    """The capture file of ``hour``: ``var_dir/capture/YYYY/MM/DD/HH.jsonl.gz``."""
    h = hour_start(hour)
    return var_dir / "capture" / f"{h:%Y}" / f"{h:%m}" / f"{h:%d}" / f"{h:%H}.jsonl.gz"


def hour_paths(var_dir: Path, hour: datetime) -> list[Path]:
    """Every capture file of ``hour`` that exists: the single instance's, then each shard's
    (``var_dir/capture/shard-IofN/YYYY/MM/DD/HH.jsonl.gz``, written by ``tapewatch run --shard I/N``)."""
    single = hour_path(var_dir, hour)
    tail = single.relative_to(var_dir / "capture")
    shards = sorted(d / tail for d in (var_dir / "capture").glob("shard-*") if d.is_dir())
    return [path for path in [single, *shards] if path.is_file()]


@dataclass(slots=True)
class HourColumns:
    """The decoded rows of an hour, column by column, and what could not be used.

    ``lines``: complete lines read; ``torn_lines``: partial lines skipped at a cut; ``damaged``: stretches
    of the file that did not inflate (their lines are lost: the read was cut short); ``rejected``: lines the
    decoder refused, by reason; ``forming_candles``: kline updates of candles not yet closed (skipped);
    ``symbols``: every symbol with a decoded frame in any stream (depth and REST answers included);
    ``stream_lines``: websocket lines of each stream kind that makes rows (``aggTrade``, ``bookTicker``,
    ``kline``), counted from the line's stream name before any decoding — what the rows are checked against."""

    files: list[tuple[str, int]] = field(default_factory=list)
    lines: int = 0
    torn_lines: int = 0
    damaged: int = 0
    forming_candles: int = 0
    symbols: set[str] = field(default_factory=set)
    rejected: Counter[str] = field(default_factory=Counter)
    stream_lines: Counter[str] = field(default_factory=Counter)
    trades: dict[str, list[Any]] = field(default_factory=lambda: {c: [] for c in TRADE_COLUMNS})
    tops: dict[str, list[Any]] = field(default_factory=lambda: {c: [] for c in TOP_COLUMNS})
    candles: dict[str, list[Any]] = field(default_factory=lambda: {c: [] for c in CANDLE_COLUMNS})

    @property
    def rejected_total(self) -> int:
        return sum(n for reason, n in self.rejected.items() if reason != "ignored")

    @property
    def complete(self) -> bool:
        """True when the hour's file was read whole: it exists, yielded lines and nothing was damaged.
        Only such an hour is recorded as archived (and so may have its raw file pruned)."""
        return bool(self.files) and self.lines > 0 and self.damaged == 0


def read_hour(var_dir: Path, hour: datetime) -> HourColumns:
    """Every usable row of the capture files of ``hour`` (all shards'; empty columns when there is none).

    Raises CaptureError when the file exists but is not gzip."""
    out = HourColumns()
    paths = hour_paths(var_dir, hour)
    if not paths:
        return out
    for path in paths:
        out.files.append((path.relative_to(var_dir).as_posix(), path.stat().st_size))
    decoder = FrameDecoder()
    stats = ReadStats()
    kinds = out.stream_lines
    for line in iter_capture(paths, stats):
        out.lines += 1
        kind = _row_stream_kind(line)
        if kind is not None:
            kinds[kind] += 1
        first = decoder.decode_capture_line(line)
        # a backup-feed page (polled aggTrades or klines) decodes to several frames, taken after the None
        for frame in [first] if first is not None else decoder.take_pending():
            if not frame.symbol:  # a captured command (pause/resume), not market data
                continue
            out.symbols.add(frame.symbol)
            event = frame.event
            if isinstance(event, AggTrade):
                _append(out.trades, frame.symbol, frame.recv, event)
            elif isinstance(event, BookTicker):
                _append_top(out.tops, frame.symbol, frame.recv, event)
            elif isinstance(event, Kline):
                if event.candle.closed:
                    _append_candle(out.candles, frame.symbol, event)
                else:
                    out.forming_candles += 1
    out.rejected.update(decoder.rejected)
    out.torn_lines, out.damaged = stats.torn_lines, stats.damaged
    return out


_STREAM_KEY = b'"stream":"'
#: Websocket stream name endings whose each line is one row (a trade, a book top, a kline update).
_ROW_STREAMS = ((b"@aggTrade", "aggTrade"), (b"@bookTicker", "bookTicker"))


def _row_stream_kind(line: bytes) -> str | None:
    """The kind of a websocket line that makes one row, read from its stream name alone (REST pages and
    other streams: None)."""
    start = line.find(_STREAM_KEY)
    if start < 0:
        return None
    start += len(_STREAM_KEY)
    stream = line[start : line.find(b'"', start)]
    for suffix, kind in _ROW_STREAMS:
        if stream.endswith(suffix):
            return kind
    return "kline" if b"@kline_" in stream and not stream.startswith(b"rest:") else None


def _append(cols: dict[str, list[Any]], symbol: str, recv: int, t: AggTrade) -> None:
    for name, value in zip(
        TRADE_COLUMNS,
        (symbol, recv, t.event_time, t.trade_time, t.agg_id, t.first_trade_id, t.last_trade_id, t.price,
         t.qty, t.buyer_is_maker),
        strict=True,
    ):  # fmt: skip
        cols[name].append(value)


def _append_top(cols: dict[str, list[Any]], symbol: str, recv: int, b: BookTicker) -> None:
    for name, value in zip(
        TOP_COLUMNS,
        (symbol, recv, b.event_time, b.transaction_time, b.update_id, b.bid_price, b.bid_qty, b.ask_price,
         b.ask_qty),
        strict=True,
    ):  # fmt: skip
        cols[name].append(value)


def _append_candle(cols: dict[str, list[Any]], symbol: str, k: Kline) -> None:
    c = k.candle
    for name, value in zip(
        CANDLE_COLUMNS,
        (symbol, c.interval, c.open_time, c.close_time, k.event_time, c.open, c.high, c.low, c.close,
         c.volume, c.quote_volume, c.trades, c.taker_buy_volume, c.taker_buy_quote_volume),
        strict=True,
    ):  # fmt: skip
        cols[name].append(value)


# --- the archive record and pruning -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArchivedHour:
    """One row of ``archive_hours``."""

    hour: datetime
    files: list[tuple[str, int]]
    lines: int
    torn_lines: int
    rejected: int
    trades: int
    book_tops: int
    candles: int
    archived_at: datetime
    pruned_at: datetime | None


_HOUR_COLUMNS = "hour, files, lines, torn_lines, rejected, trades, book_tops, candles, archived_at, pruned_at"


def record_archived(db: Database, hour: datetime, cols: HourColumns) -> None:
    """Record (or re-record, after a re-materialization) that ``hour`` was archived from ``cols``."""
    with db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO archive_hours (hour, files, lines, torn_lines, rejected, trades, book_tops, candles) "
                "VALUES (:hour, :files, :lines, :torn, :rejected, :trades, :tops, :candles) "
                "ON CONFLICT (hour) DO UPDATE SET files = EXCLUDED.files, lines = EXCLUDED.lines, "
                "torn_lines = EXCLUDED.torn_lines, rejected = EXCLUDED.rejected, trades = EXCLUDED.trades, "
                "book_tops = EXCLUDED.book_tops, candles = EXCLUDED.candles, archived_at = now(), "
                "pruned_at = NULL"
            ).bindparams(sa.bindparam("files", type_=JSONB)),
            {
                "hour": hour_start(hour),
                "files": [list(f) for f in cols.files],
                "lines": cols.lines,
                "torn": cols.torn_lines,
                "rejected": cols.rejected_total,
                "trades": len(cols.trades["symbol"]),
                "tops": len(cols.tops["symbol"]),
                "candles": len(cols.candles["symbol"]),
            },
        )


def archived_hour(db: Database, hour: datetime) -> ArchivedHour | None:
    """The archive record of ``hour``; None when it was never archived."""
    with db.begin() as conn:
        row = conn.execute(
            sa.text(f"SELECT {_HOUR_COLUMNS} FROM archive_hours WHERE hour = :hour"),
            {"hour": hour_start(hour)},
        ).first()
    return None if row is None else _archived(row)


def _archived(row: Any) -> ArchivedHour:
    files = [(str(p), int(size)) for p, size in row.files]
    return ArchivedHour(row.hour, files, *row[2:])


@dataclass(slots=True)
class PruneResult:
    """What pruning did: files deleted (relative paths), bytes freed, files kept because they changed."""

    deleted: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def prune_captures(db: Database, var_dir: Path, *, now: datetime, retention_hours: float) -> PruneResult:
    """Delete the raw capture files of archived hours that ended more than ``retention_hours`` before
    ``now``, when each file still has the size it had when archived; mark those hours pruned."""
    cutoff = hour_start(now) - timedelta(hours=retention_hours)
    result = PruneResult()
    with db.begin() as conn:
        rows = conn.execute(
            sa.text(
                f"SELECT {_HOUR_COLUMNS} FROM archive_hours WHERE pruned_at IS NULL "
                "AND hour + interval '1 hour' <= :cutoff ORDER BY hour"
            ),
            {"cutoff": cutoff},
        ).all()
    for row in map(_archived, rows):
        done = True
        for rel, size in row.files:
            path = var_dir / rel
            if not path.exists():
                result.missing.append(rel)
                continue
            if path.stat().st_size != size:
                result.changed.append(rel)
                done = False
                continue
            path.unlink()
            result.deleted.append(rel)
            result.freed_bytes += size
        if done:
            with db.begin() as conn:
                conn.execute(
                    sa.text("UPDATE archive_hours SET pruned_at = now() WHERE hour = :hour"),
                    {"hour": row.hour},
                )
    return result
