"""The REST endpoints ``/fapi/v1/...``: request weights, parameter checks and bodies, as Binance answers.

:func:`weight_of` prices a request before it is answered (an unknown symbol still costs its route's
weight, as on Binance); :func:`answer` builds the reply from the :class:`~realtime.sim.venue.Venue`.
A depth snapshot is not answered at once: :class:`SnapshotWait` tells the server to answer it after the
symbol's next book change (see :mod:`realtime.sim.server`), which is what lets a client following
Binance's procedure always sync.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from realtime.sim.candles import INTERVAL_MS
from realtime.sim.model import SymbolState
from realtime.sim.protocol import dumps, error_body
from realtime.sim.venue import Venue
from tapewatch.settings import SNAPSHOT_WEIGHTS

DEPTH_WEIGHTS = SNAPSHOT_WEIGHTS  # 5..50: 2, 100: 5, 500: 10, 1000: 20
DEFAULT_DEPTH_LIMIT = 500
DEFAULT_KLINES_LIMIT = 500
MAX_KLINES_LIMIT = 1500
MAX_AGG_TRADES_LIMIT = 1000
ROUTES = (
    "/fapi/v1/ping", "/fapi/v1/time", "/fapi/v1/exchangeInfo", "/fapi/v1/ticker/24hr", "/fapi/v1/depth",
    "/fapi/v1/klines", "/fapi/v1/openInterest", "/fapi/v1/aggTrades", "/fapi/v1/ticker/bookTicker",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class SnapshotWait:
    """Answer with the book of ``symbol`` after its next change."""

    symbol: SymbolState
    limit: int


class BadRequest(Exception):
    """A Binance 400: ``code`` and ``msg`` as Binance words them."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status


def _int(params: Mapping[str, str], key: str, default: int | None = None) -> int | None:
    raw = params.get(key)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or len(raw) > 20:
        raise BadRequest(
            -1100, f"Illegal characters found in parameter '{key}'; legal range is '^[0-9]{{1,20}}$'."
        )
    return int(raw)


def _time_range(params: Mapping[str, str]) -> tuple[int | None, int | None]:
    """``startTime`` and ``endTime``; a start after the end is Binance's -1023 (not an empty answer)."""
    start, end = _int(params, "startTime"), _int(params, "endTime")
    if start is not None and end is not None and start > end:
        raise BadRequest(-1023, "Start time is greater than end time.")
    return start, end


def _klines_weight(limit: int) -> int:
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


def weight_of(path: str, params: Mapping[str, str]) -> int:
    """Binance's request weight of ``path`` with ``params`` (1 for anything unknown or malformed)."""
    one = bool(params.get("symbol"))
    try:
        if path == "/fapi/v1/depth":
            return DEPTH_WEIGHTS.get(_int(params, "limit", DEFAULT_DEPTH_LIMIT) or 0, 1)
        if path == "/fapi/v1/klines":
            return _klines_weight(_int(params, "limit", DEFAULT_KLINES_LIMIT) or 0)
    except BadRequest:
        return 1
    if path == "/fapi/v1/ticker/24hr":
        return 1 if one else 40
    if path == "/fapi/v1/ticker/bookTicker":
        return 2 if one else 5
    if path == "/fapi/v1/aggTrades":
        return 20
    return 1


def _symbol(venue: Venue, params: Mapping[str, str]) -> SymbolState:
    name = params.get("symbol")
    if not name:
        raise BadRequest(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
    sym = venue.symbol(name)
    if sym is None:
        raise BadRequest(-1121, "Invalid symbol.")
    return sym


def answer(venue: Venue, path: str, params: Mapping[str, str]) -> Reply | SnapshotWait:
    """The reply to ``GET path?params`` (errors included, with Binance's codes)."""
    try:
        return _answer(venue, path, params)
    except BadRequest as exc:
        return Reply(exc.status, error_body(exc.code, exc.msg))


def _ok(obj: Any) -> Reply:
    return Reply(200, dumps(obj))


def _answer(venue: Venue, path: str, params: Mapping[str, str]) -> Reply | SnapshotWait:
    if path == "/fapi/v1/ping":
        return _ok({})
    if path == "/fapi/v1/time":
        return _ok({"serverTime": venue.now_ms})
    if path == "/fapi/v1/exchangeInfo":
        return _ok(venue.exchange_info())
    if path in ("/fapi/v1/ticker/24hr", "/fapi/v1/ticker/bookTicker"):
        body = venue.ticker_24h if path.endswith("24hr") else venue.book_ticker
        if params.get("symbol") is not None:
            return _ok(body(_symbol(venue, params)))
        return _ok([body(sym) for sym in venue.market.symbols])
    if path == "/fapi/v1/depth":
        sym = _symbol(venue, params)
        limit = _int(params, "limit", DEFAULT_DEPTH_LIMIT) or 0
        if limit not in DEPTH_WEIGHTS:
            raise BadRequest(-4021, f"{limit} is not valid depth limit")
        return SnapshotWait(sym, limit)
    if path == "/fapi/v1/klines":
        sym = _symbol(venue, params)
        interval = params.get("interval", "")
        if interval not in INTERVAL_MS:
            raise BadRequest(-1120, "Invalid interval.")
        limit = _int(params, "limit", DEFAULT_KLINES_LIMIT) or 0
        if not 1 <= limit <= MAX_KLINES_LIMIT:
            raise BadRequest(-1130, "Data sent for parameter 'limit' is not valid.")
        start, end = _time_range(params)
        return _ok(venue.klines(sym, interval, start, end, limit))
    if path == "/fapi/v1/openInterest":
        return _ok(venue.open_interest(_symbol(venue, params)))
    if path == "/fapi/v1/aggTrades":
        sym = _symbol(venue, params)
        limit = _int(params, "limit", 500) or 0
        if not 1 <= limit <= MAX_AGG_TRADES_LIMIT:
            raise BadRequest(-1130, "Data sent for parameter 'limit' is not valid.")
        start, end = _time_range(params)
        if start is not None and end is not None and end - start >= 3_600_000:
            raise BadRequest(-1127, "More than 1 hours between startTime and endTime.")
        rows = venue.agg_trades(sym, _int(params, "fromId"), start, end, limit)
        return _ok(rows)
    raise BadRequest(-5000, f"Path {path}, Method GET is invalid", status=404)
