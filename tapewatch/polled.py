"""What the backup feed's REST polls mean to the market state, decoded the same way live and in replay.

While the websockets are off the backup feed (``realtime.backup_feed``) polls REST and captures each answer
under its request's ``rest:`` stream name. Three kinds of answer become market events here:

- a depth snapshot polled with the fragment ``#poll`` (``rest:/fapi/v1/depth?symbol=X&limit=50#poll&every_ms=4688``)
  is a :class:`PolledSnapshot`: it stands alone (no diff stream continues it) and ``every_ms`` is the poller's
  interval between two polls of that book, against which the book's freshness is judged;
- an aggTrades page (``rest:/fapi/v1/aggTrades?symbol=X&fromId=N&limit=1000``) is one ``AggTrade`` per row, in
  order, exactly as the stream would have carried them (event time = trade time, REST has no ``E``);
- a klines answer polled with ``#poll`` is one ``Kline`` per row, oldest first (event time = receive time, the
  time the ``closed`` flag was judged at), so the bars move forward like the kline stream's updates: a closed bar
  closes the forming one, the forming row replaces the held forming bar.

A fragment is never sent to the exchange, so the name still says exactly what was asked. A ``rest:`` klines or
depth answer without ``#poll`` is the start-up history or a resync snapshot, decoded by :mod:`tapewatch.parse`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple
from urllib.parse import parse_qs, urlsplit

import msgspec

from tapewatch.book import BookState, OrderBook
from tapewatch.events import (
    AggTrade,
    BadRow,
    DepthSnapshot,
    Kline,
    KlineRow,
    RestAggTrade,
    RowsDecoder,
    agg_trades_from_rest,
    candles_from_rows,
)
from tapewatch.streams import Kind

#: Appended to the stream name of a polled depth or klines request (with ``&every_ms=<interval>``).
POLL_FRAGMENT = "#poll"
AGG_TRADES_PATHS = ("/fapi/v1/aggTrades", "/dapi/v1/aggTrades")
_DEPTH_PATHS = ("/fapi/v1/depth", "/dapi/v1/depth")
_KLINES_PATHS = ("/fapi/v1/klines", "/dapi/v1/klines")


def poll_stream(stream: str, every_ms: int) -> str:
    """The capture name of a polled answer: the request's ``rest:`` name plus the poll fragment."""
    return f"{stream}{POLL_FRAGMENT}&every_ms={max(0, int(every_ms))}"


class PolledSnapshot(DepthSnapshot, frozen=True, gc=False):
    """A depth snapshot the backup feed polled; ``every_ms`` (from the stream name, never from the body) is
    the interval until the next poll of the same book, 0 when the name does not say."""

    every_ms: int = 0


class PolledTarget(NamedTuple):
    """What a polled ``rest:`` stream carries: the symbol, the kind of its frames (SNAPSHOT, KLINE or
    AGG_TRADE), the klines interval and the poll interval the name states."""

    symbol: str
    kind: Kind
    interval: str
    every_ms: int


def polled_target(stream: str) -> PolledTarget | None:
    """The target of a backup-feed stream name; None for anything else (including a ``#poll`` name whose
    path is neither depth nor klines, or one without a symbol)."""
    if not stream.startswith("rest:"):
        return None
    url = urlsplit(stream[5:])
    query = parse_qs(url.query)
    symbols = query.get("symbol")
    if not symbols:
        return None
    symbol = symbols[0].upper()
    fragment = url.fragment.split("&", 1)
    polled = fragment[0] == POLL_FRAGMENT[1:]
    every = parse_qs(fragment[1]).get("every_ms", ["0"])[0] if len(fragment) > 1 else "0"
    every_ms = int(every) if every.isdigit() else 0
    if url.path in AGG_TRADES_PATHS:
        return PolledTarget(symbol, Kind.AGG_TRADE, "", every_ms)
    if polled and url.path in _DEPTH_PATHS:
        return PolledTarget(symbol, Kind.SNAPSHOT, "", every_ms)
    intervals = query.get("interval")
    if polled and url.path in _KLINES_PATHS and intervals:
        return PolledTarget(symbol, Kind.KLINE, intervals[0], every_ms)
    return None


_SNAPSHOT_DECODER = msgspec.json.Decoder(DepthSnapshot, strict=False)
_TRADES_DECODER = RowsDecoder(RestAggTrade)
_KLINES_DECODER = RowsDecoder(KlineRow)


class PolledEvents(NamedTuple):
    """The events of one polled answer, in order, and how many rows its list held, the bad rows left out of
    ``events`` included (0 for a depth snapshot): a page is full by ``rows``, not by the events kept."""

    events: list[PolledSnapshot] | list[AggTrade] | list[Kline]
    rows: int


def decode_polled(
    target: PolledTarget,
    recv: int,
    data: bytes | msgspec.Raw,
    on_bad_rows: Callable[[list[BadRow]], None],
) -> PolledEvents:
    """The events of one polled answer, in order (one snapshot, or one per row), with its row count. Raises
    ``msgspec.ValidationError`` / ``msgspec.DecodeError`` for a body that does not fit, and for a snapshot with
    one bad level (a book without it would be wrong). A bad row of an aggTrades page or of polled klines is
    left out and passed to ``on_bad_rows`` (to be counted): the other rows are kept."""
    if target.kind is Kind.SNAPSHOT:
        snap = _SNAPSHOT_DECODER.decode(data)
        polled = PolledSnapshot(
            snap.last_update_id,
            snap.bids,
            snap.asks,
            snap.event_time,
            snap.transaction_time,
            target.every_ms,
        )
        return PolledEvents([polled], 0)
    if target.kind is Kind.AGG_TRADE:
        trades, bad = _TRADES_DECODER.decode(data)
        if bad:
            on_bad_rows(bad)
        return PolledEvents(agg_trades_from_rest(trades, target.symbol), len(trades) + len(bad))
    rows, bad = _KLINES_DECODER.decode(data)
    if bad:
        on_bad_rows(bad)
    candles = candles_from_rows(rows, target.interval, recv)
    klines = [Kline(symbol=target.symbol, event_time=recv, candle=c) for c in candles]
    return PolledEvents(klines, len(rows) + len(bad))


class DepthCoverage(NamedTuple):
    """How much of the book a feature vector's depth figures could see (see ``DataQuality``)."""

    source: Literal["stream", "poll"]
    levels: int | None
    truncated: bool


def depth_coverage(book: OrderBook, fraction: float) -> DepthCoverage:
    """``poll`` with its levels a side, and whether the band of ``fraction`` around the mid reaches past the
    worst level the polled snapshot listed on either side; ``stream`` (full coverage) for a diff-kept book."""
    if book.state is not BookState.POLLED:
        return DepthCoverage("stream", None, False)
    mid = book.mid()
    worst_bid, worst_ask = book.bids.worst_price(), book.asks.worst_price()
    truncated = (
        mid is None
        or worst_bid is None
        or worst_ask is None
        or worst_bid > mid * (1 - fraction)
        or worst_ask < mid * (1 + fraction)
    )
    return DepthCoverage("poll", book.polled_levels, truncated)
