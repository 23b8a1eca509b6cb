"""Record mode: write, without any network, the capture a live tapewatch run against the simulator writes.

The market is the same as the live server's for the same seed and start. A live client is emulated:
it subscribes to ``<s>@depth@100ms``, ``<s>@bookTicker`` (on ``/public``), ``<s>@aggTrade``,
``<s>@kline_1m`` and ``<s>@kline_15m`` (on ``/market``) of every symbol at the start, then requests one
depth snapshot per symbol, paced by the REST weight budget, so each snapshot arrives after a few diffs.
The server answers a snapshot right after the first step in which that symbol's book changed, as the
live server does. ``recv`` is the event time plus a small deterministic latency that never reorders a
connection's frames. An injected gap drops one diff; the emulated client notices it at the next diff and
fetches a resync snapshot, so replay's resync path is exercised. Like the live service after its exchangeInfo
fetch, the capture starts with a ``control:instruments`` line (the tick sizes of the simulator's tradable
symbols), so a replay puts stops and targets on the same price grid.
"""

from __future__ import annotations

import logging
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np

from realtime.capture_writer import capture_path
from realtime.sim.capture_line import capture_line
from realtime.sim.draws import Draws
from realtime.sim.episodes import Episode, ground_truth_json
from realtime.sim.faults import parse_duration
from realtime.sim.model import SymbolState
from realtime.sim.protocol import dumps
from realtime.sim.record_books import ClientBooks
from realtime.sim.venue import Venue
from tapewatch.adapters.binance_models import SymbolInfo
from tapewatch.book_types import FULL_DEPTH
from tapewatch.events import CONTROL_INSTRUMENTS, Instruments
from tapewatch.market_klines import history_klines
from tapewatch.settings import SNAPSHOT_WEIGHTS
from tapewatch.universe import tradable_instruments

log = logging.getLogger(__name__)

DEFAULT_RECORD_START_MS = 1_767_571_200_000  # 2026-01-05T00:00:00Z
RECORD_KLINES = ("1m", "15m")
FLUSH_POINT_MS = 1000  # a full-flush point per second of receive time, like a live capture's
_FLUSH_LAG_MS = 250  # a frame produced later can never be received more than this before ``now``
_REST_ONE_WAY_MS = 15
_REST_BODY_MS = 25
_INSTRUMENTS_AFTER_MS = 10  # the exchangeInfo answer, before the kline history is asked for


@dataclass(frozen=True, slots=True)
class RecordResult:
    """What :func:`record` wrote: the hour files, the line count, and the planted episodes."""

    files: list[Path]
    lines: int
    episodes: list[Episode]
    episodes_path: Path


class _Connection:
    """Receive times of one websocket connection: event time + latency, never earlier than the last frame."""

    __slots__ = ("_draws", "last", "lines")

    def __init__(self, draws: Draws) -> None:
        self._draws = draws
        self.last = 0
        self.lines: deque[tuple[int, str]] = deque()

    def receive(self, event_time: int, stream: str, payload: str) -> int:
        recv = max(self.last, event_time + 30 + int(self._draws.u() * 20))
        self.last = recv
        self.lines.append((recv, capture_line(recv, stream, payload)))
        return recv


class _Writer:
    """Hour files under ``root`` (``YYYY/MM/DD/HH.jsonl.gz``), each one deterministic gzip member with a
    full-flush point (``Z_FULL_FLUSH``, between whole lines) every ``FLUSH_POINT_MS`` of receive time, as
    the live capture writer (:mod:`realtime.capture_writer`) makes one every ``flush_interval`` (1 s): a
    damaged byte then costs the reader about a second of lines, not the rest of the hour."""

    def __init__(self, root: Path, books: ClientBooks | None = None) -> None:
        self.root = root
        self.books = books
        self.files: list[Path] = []
        self.lines = 0
        self._path: Path | None = None
        self._hour = -1
        self._z: zlib._Compress | None = None
        self._buf: list[str] = []
        self._next_flush = 0  # receive time (ms) of the next flush point

    def write(self, recv: int, line: str) -> None:
        """Write one line; with ``books``, the book checkpoint first when the line opens a new period, and
        the line applied to the client's books after."""
        if self.books is None:
            self._put(recv, line)
            return
        self.books.before(recv, self._put)
        self._put(recv, line)
        self.books.after(line)

    def _put(self, recv: int, line: str) -> None:
        hour = recv // 3_600_000
        if hour != self._hour:
            self._close()
            self._hour = hour
            path = capture_path(self.root, recv)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._path = path
            self._z = zlib.compressobj(3, zlib.DEFLATED, 31)  # gzip wrapper, mtime 0, no name
            self.files.append(path)
            path.write_bytes(b"")
            self._next_flush = (recv // FLUSH_POINT_MS + 1) * FLUSH_POINT_MS
        elif recv >= self._next_flush:
            self._flush(zlib.Z_FULL_FLUSH)  # the lines before this one end an interval
            self._next_flush = (recv // FLUSH_POINT_MS + 1) * FLUSH_POINT_MS
        self._buf.append(line)
        self.lines += 1
        if len(self._buf) >= 4096:
            self._flush()

    def _flush(self, mode: int | None = None) -> None:
        if self._z is not None and self._path is not None and (self._buf or mode is not None):
            data = self._z.compress("".join(self._buf).encode())
            if mode is not None:
                data += self._z.flush(mode)
            self._buf.clear()
            with self._path.open("ab") as fh:
                fh.write(data)

    def _close(self) -> None:
        if self._z is not None and self._path is not None:
            self._flush()
            with self._path.open("ab") as fh:
                fh.write(self._z.flush())
        self._z = None
        self._path = None

    def close(self) -> None:
        self._close()


#: How far past the recording's end a line's receive time may lie (latency, a REST answer's body).
_LAST_RECV_LAG_MS = 60_000

#: (interval, limit) of the kline history fetched at start, as ``tapewatch run`` does with the defaults.
HISTORY_KLINES = history_klines(100)


def record(
    out_dir: Path,
    duration_ms: int,
    seed: int = 1,
    symbols: int = 40,
    start_ms: int | None = None,
    *,
    gaps: Sequence[tuple[str, int]] = (),
    episode_rate_scale: float = 1.0,
    snapshot_limit: int = 1000,
    tail_snapshot_limit: int = 100,
    full_snapshot_symbols: int = 30,
    weight_per_minute: int = 1920,
    checkpoint_s: int = 3600,
) -> RecordResult:
    """Write ``duration_ms`` of simulated market to ``out_dir/var/capture/YYYY/MM/DD/HH.jsonl.gz``.

    ``gaps``: (symbol, offset ms from the start) pairs; the first ``depth@100ms`` diff of that symbol at
    or after the offset is dropped and a resync snapshot follows. The first ``full_snapshot_symbols``
    symbols get ``snapshot_limit``-level snapshots, the rest ``tail_snapshot_limit`` (weight 20 / 5). Every
    ``checkpoint_s`` of receive time (each hour file's start by default) the client's synced books are written
    as the live service writes them (``control:book_checkpoint``, :mod:`realtime.sim.record_books`).
    Also writes ``out_dir/episodes.json``. Same arguments, byte-identical output.
    """
    if duration_ms <= 0:
        raise ValueError(f"duration must be positive, got {duration_ms} ms")
    for limit in (snapshot_limit, tail_snapshot_limit):
        if limit not in SNAPSHOT_WEIGHTS:
            raise ValueError(f"snapshot limit must be one of {sorted(SNAPSHOT_WEIGHTS)}, got {limit}")
    start = DEFAULT_RECORD_START_MS if start_ms is None else start_ms
    venue = Venue(
        seed,
        symbols,
        start,
        depth_speeds=(100,),
        kline_intervals=RECORD_KLINES,
        episode_rate_scale=episode_rate_scale,
    )
    start = venue.now_ms
    end = start + duration_ms
    streams: set[str] = set()
    for spec in venue.specs:
        s = spec.stream_prefix
        streams.update(
            (f"{s}@depth@100ms", f"{s}@bookTicker", f"{s}@aggTrade", f"{s}@kline_1m", f"{s}@kline_15m")
        )
    want = streams.__contains__
    jitter = Draws(np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed & 0xFFFFFFFF, 0x7EC]))))
    public, market = _Connection(jitter), _Connection(jitter)
    rest: deque[tuple[int, str]] = deque()
    # As the live service does at start: exchangeInfo, whose tick sizes it captures (realtime.service_universe)
    recv = start + _INSTRUMENTS_AFTER_MS
    body = msgspec.json.encode(_instruments(venue)).decode()
    rest.append((recv, capture_line(recv, CONTROL_INSTRUMENTS, body)))
    # and the candle history behind the 15m context and 1m returns.
    for n, spec in enumerate(venue.specs):
        sym = venue.market.symbols[spec.index]
        for interval, limit in HISTORY_KLINES:
            recv = start + 50 + n // 8
            stream = f"rest:/fapi/v1/klines?symbol={spec.symbol}&interval={interval}&limit={limit}"
            body = dumps(venue.klines(sym, interval, None, None, limit)).decode()
            rest.append((recv, capture_line(recv, stream, body)))
    # the client's books cost a decode of every depth line: kept only when a checkpoint falls within the recording
    period_ms = checkpoint_s * 1000
    due = period_ms and (start // period_ms + 1) * period_ms <= end + _LAST_RECV_LAG_MS
    writer = _Writer(out_dir / "var" / "capture", ClientBooks(checkpoint_s, start) if due else None)

    # Initial snapshot requests, in symbol order, spread out by their REST weight.
    requests: list[tuple[int, int, int]] = []  # (arrival at the server, symbol index, limit)
    spent = 0
    for spec in venue.specs:
        limit = snapshot_limit if spec.index < full_snapshot_symbols else tail_snapshot_limit
        sent = start + 300 + spent * 60_000 // weight_per_minute
        requests.append((sent + _REST_ONE_WAY_MS, spec.index, limit))
        spent += SNAPSHOT_WEIGHTS[limit]
    requests.sort()
    pending: dict[int, int] = {}  # symbol index -> limit, requests that reached the server
    gap_at: dict[int, int] = {}
    for name, offset in gaps:
        if name.upper() not in venue.index or not 0 <= offset < duration_ms:
            raise ValueError(f"gap {name}@{offset} ms: not a simulated symbol or not within the recording")
        gap_at[venue.index[name.upper()]] = start + offset
    gapped: set[int] = set()
    # symbol index -> the worst bid and ask (ticks) its last partial snapshot listed (None: the side was listed
    # whole): the client's book resyncs once the best price moves past them (tapewatch.book's blind spot)
    bounds: dict[int, tuple[int | None, int | None]] = {}
    depth_stream = {f"{spec.stream_prefix}@depth@100ms": spec.index for spec in venue.specs}

    while venue.now_ms < end:
        msgs = venue.step(want)
        now = venue.now_ms
        for path, stream, payload, e in msgs:
            i = depth_stream.get(stream)
            if i is not None and i in gap_at and e >= gap_at[i]:
                del gap_at[i]
                gapped.add(i)
                continue  # lost on the way: the client never sees this diff
            recv = (public if path == "public" else market).receive(e, stream, payload)
            resync = False
            if i is not None and i in gapped:
                gapped.discard(i)  # the client sees pu != its last u and asks for a new snapshot
                resync = True
            elif i is not None and i in bounds and _beyond(venue.market.symbols[i], bounds[i]):
                del bounds[i]  # the client's book moved past its partial snapshot: it asks for a new one
                resync = True
            if resync:
                assert i is not None
                limit = snapshot_limit if i < full_snapshot_symbols else tail_snapshot_limit
                requests.append((recv + _REST_ONE_WAY_MS, i, limit))
                requests.sort()
        while requests and requests[0][0] < now:
            _, i, limit = requests.pop(0)
            pending[i] = limit
        for i in [i for i in venue.market.touched if i in pending]:
            limit = pending.pop(i)
            sym = venue.market.symbols[i]
            if limit < FULL_DEPTH:
                bids, asks = sym.bids.top(limit), sym.asks.top(limit)
                bounds[i] = (
                    bids[-1][0] if len(bids) >= limit else None,
                    asks[-1][0] if len(asks) >= limit else None,
                )
            recv = now + _REST_BODY_MS
            stream = f"rest:/fapi/v1/depth?symbol={sym.spec.symbol}&limit={limit}"
            rest.append((recv, capture_line(recv, stream, venue.snapshot(sym, limit))))
        _drain((public.lines, market.lines, rest), writer, now - _FLUSH_LAG_MS)
    _drain((public.lines, market.lines, rest), writer, None)
    writer.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    episodes = [e for e in venue.market.episodes if e.start_ms < end]
    episodes_path = out_dir / "episodes.json"
    episodes_path.write_text(ground_truth_json(episodes))
    log.info(
        "recorded %d lines in %d files, %d episodes", writer.lines, len(writer.files), len(episodes),
        extra={"out_dir": str(out_dir), "seed": seed, "symbols": symbols},
    )  # fmt: skip
    return RecordResult(writer.files, writer.lines, episodes, episodes_path)


def _instruments(venue: Venue) -> Instruments:
    """The ``control:instruments`` line the live service captures from this exchangeInfo: the tick sizes of its
    tradable USDT perpetuals, decoded as the REST client decodes them."""
    symbols = msgspec.json.decode(
        dumps(venue.exchange_info()["symbols"]), type=list[SymbolInfo], strict=False
    )
    return tradable_instruments(symbols)[1]


def _beyond(sym: SymbolState, bound: tuple[int | None, int | None]) -> bool:
    """Whether ``sym``'s best bid or ask has moved past the worst price its client's partial snapshot listed."""
    floor, ceiling = bound
    return (floor is not None and len(sym.bids) > 0 and sym.bids.best() < floor) or (
        ceiling is not None and len(sym.asks) > 0 and sym.asks.best() > ceiling
    )


def parse_gap(text: str) -> tuple[str, int]:
    """``"ETHUSDT@30m"`` -> ``("ETHUSDT", 1_800_000)``: a ``gaps`` entry for :func:`record` (CLI ``--gap``)."""
    symbol, sep, offset = text.partition("@")
    if not sep or not symbol.isalnum():
        raise ValueError(f"a gap is SYMBOL@OFFSET, like ETHUSDT@30m; got {text!r}")
    return symbol.upper(), int(parse_duration(offset) * 1000)


def _drain(queues: tuple[deque[tuple[int, str]], ...], writer: _Writer, before: int | None) -> None:
    """Write queued lines in receive order (ties: public, market, rest) up to ``before`` (all if None)."""
    while True:
        best: deque[tuple[int, str]] | None = None
        for q in queues:
            if q and (best is None or q[0][0] < best[0][0]):
                best = q
        if best is None or (before is not None and best[0][0] >= before):
            return
        recv, line = best.popleft()
        writer.write(recv, line)
