"""The raw capture files of an hour (DESIGN §3) as columns, their archive record, and their pruning.

Capture files are gzip JSON Lines, one per UTC hour: ``<var_dir>/capture/YYYY/MM/DD/HH.jsonl.gz`` (a restart
within the hour appends a gzip member to the same file). :func:`read_hour` reads every complete line of an
hour, decodes it with :class:`~tapewatch.parse.FrameDecoder` and gathers three column sets: trades
(``aggTrade``), book tops (``bookTicker``) and closed candles (``kline``, the final state of each candle).
Depth diffs and REST answers are not archived (the book can be rebuilt from the raw capture while it is
kept). A torn last line (the writer was killed mid-write) is skipped and counted; lines the decoder refuses
are counted by reason.

The table ``archive_hours`` (sql/0005) records what was archived, with the size of each file then; pruning
deletes the raw files of archived hours older than the retention, and only when a file is still exactly the
size it had when archived (a file that grew afterwards is archived again first).
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from tapewatch.adapters.db import Database
from tapewatch.errors import CaptureError
from tapewatch.events import AggTrade, BookTicker, Kline
from tapewatch.parse import FrameDecoder

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"

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


@dataclass(slots=True)
class HourColumns:
    """The decoded rows of an hour, column by column, and what could not be used.

    ``lines``: complete lines read; ``torn_lines``: partial lines skipped at a cut; ``rejected``: lines
    the decoder refused, by reason; ``forming_candles``: kline updates of candles not yet closed (skipped)."""

    files: list[tuple[str, int]] = field(default_factory=list)
    lines: int = 0
    torn_lines: int = 0
    forming_candles: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    trades: dict[str, list[Any]] = field(default_factory=lambda: {c: [] for c in TRADE_COLUMNS})
    tops: dict[str, list[Any]] = field(default_factory=lambda: {c: [] for c in TOP_COLUMNS})
    candles: dict[str, list[Any]] = field(default_factory=lambda: {c: [] for c in CANDLE_COLUMNS})

    @property
    def rejected_total(self) -> int:
        return sum(n for reason, n in self.rejected.items() if reason != "ignored")


def read_hour(var_dir: Path, hour: datetime) -> HourColumns:
    """Every usable row of the capture of ``hour`` (empty columns when there is no file).

    Raises CaptureError when the file exists but is not gzip."""
    out = HourColumns()
    path = hour_path(var_dir, hour)
    if not path.is_file():
        return out
    out.files.append((path.relative_to(var_dir).as_posix(), path.stat().st_size))
    decoder = FrameDecoder()
    for line in iter_lines(path, out):
        out.lines += 1
        frame = decoder.decode_capture_line(line)
        if frame is None:
            continue
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
    return out


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


def iter_lines(path: Path, out: HourColumns) -> Iterator[bytes]:
    """Complete lines of a gzip capture file (every member), without newlines; empty lines skipped.

    Where the gzip stream is cut short or damaged, reading of the file stops there: the partial line before
    the cut is skipped and counted in ``out.torn_lines`` (unless it is a whole JSON object: written, but
    cut right before its newline)."""
    with path.open("rb") as fh:
        if fh.read(2) != _GZIP_MAGIC:
            raise CaptureError(f"{path} is not a gzip file; capture files are gzip JSON Lines")
        fh.seek(0)
        carry = b""
        inflater = zlib.decompressobj(wbits=31)
        cut = False
        while chunk := fh.read(_CHUNK):
            data = chunk
            text = b""
            try:
                while data:
                    text += inflater.decompress(data)
                    data = inflater.unused_data
                    if data or inflater.eof:
                        # a member ended: the next one (a restart's append) starts afresh
                        inflater = zlib.decompressobj(wbits=31)
            except zlib.error as exc:
                log.warning("capture file %s is damaged (%s); reading stops at the damage", path, exc)
                cut = True
            pieces = (carry + text).split(b"\n")
            carry = pieces.pop()
            yield from (p for p in pieces if p)
            if cut:
                break
    if carry:
        if _whole(carry):
            yield carry
        else:
            out.torn_lines += 1
            log.warning("capture file %s ends with a torn line (%d bytes), skipped", path, len(carry))


def _whole(text: bytes) -> bool:
    # A proper prefix of a JSON object is never valid JSON: this tells a whole line from a torn one.
    try:
        msgspec.json.decode(text)
    except msgspec.DecodeError:
        return False
    return True


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
