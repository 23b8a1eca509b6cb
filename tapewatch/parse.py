"""Decode raw frames (websocket combined-stream frames, capture lines) into typed events.

A frame that cannot be decoded is never raised into the service: it is counted under a reason
(``malformed_json``, ``schema``, ``bad_value``, ``unknown_stream``, ``symbol_mismatch``, ``interval_mismatch``,
``ignored``) and skipped. A websocket payload must name the symbol of its stream (``s``), and a kline the
interval of its stream (``k.i``): an ETHUSDT trade on ``btcusdt@aggTrade`` would enter BTCUSDT's windows, a
``kline_1m`` payload of interval ``7x`` open a candle series of its own.

The backup feed's REST answers (:mod:`tapewatch.polled`) decode here too: a polled depth snapshot into one frame,
an aggTrades page or polled klines into one frame per row (``take_pending`` after the None they return, or
``decode_frames`` for all of them at once).

A REST list answer (kline history, an aggTrades page, polled klines) with a few bad rows keeps its good rows:
each bad row is counted under its own reason (``bad_value`` or ``schema``) and logged, and the rest is decoded
(:class:`tapewatch.events.RowsDecoder`); a dropped kline is a missing candle, a dropped trade a missing id.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec

from tapewatch.events import (
    CONTROL_BOOK_CHECKPOINT,
    CONTROL_DEPTH_RESTART,
    CONTROL_ENGINE_START,
    CONTROL_INSTRUMENTS,
    CONTROL_PAUSED,
    AggTrade,
    BadRow,
    BookCheckpoint,
    BookTicker,
    ControlChange,
    DepthRestart,
    DepthSnapshot,
    DepthUpdate,
    EngineStart,
    Instruments,
    Kline,
    KlineHistory,
    KlineRow,
    MarketEvent,
    RowsDecoder,
    Trade,
    candles_from_rows,
)
from tapewatch.polled import PolledTarget, decode_polled, polled_target
from tapewatch.streams import Kind, UnknownStream, parse_stream

log = logging.getLogger(__name__)

_DECODERS: dict[Kind, msgspec.json.Decoder[Any]] = {
    Kind.DEPTH: msgspec.json.Decoder(DepthUpdate, strict=False),
    Kind.BOOK_TICKER: msgspec.json.Decoder(BookTicker, strict=False),
    Kind.AGG_TRADE: msgspec.json.Decoder(AggTrade, strict=False),
    Kind.TRADE: msgspec.json.Decoder(Trade, strict=False),
    Kind.KLINE: msgspec.json.Decoder(Kline, strict=False),
    Kind.SNAPSHOT: msgspec.json.Decoder(DepthSnapshot, strict=False),
}
_KLINE_ROWS = RowsDecoder(KlineRow)

REST_DEPTH_PATHS = ("/fapi/v1/depth", "/dapi/v1/depth")
REST_KLINES_PATHS = ("/fapi/v1/klines", "/dapi/v1/klines")
#: Rejection reasons that mean the exchange (or the wire) sent something wrong.
MALFORMED_REASONS = (
    "malformed_json",
    "schema",
    "bad_value",
    "unknown_stream",
    "symbol_mismatch",
    "interval_mismatch",
)
#: The websocket payloads that carry their symbol (``s``), checked against the stream's.
_SYMBOL_KINDS = frozenset({Kind.DEPTH, Kind.BOOK_TICKER, Kind.AGG_TRADE, Kind.TRADE, Kind.KLINE})
#: What a value-out-of-bounds message holds (msgspec's ``Meta`` bounds, :func:`tapewatch.events.check_ohlc`).
_BOUND_MARKS = (" > ", " >= ", " < ", " <= ")


class CaptureLine(msgspec.Struct, frozen=True, gc=False):
    """One line of a capture file; ``data`` stays undecoded until its stream is known."""

    recv: int
    stream: str
    data: msgspec.Raw


class Envelope(msgspec.Struct, frozen=True, gc=False):
    """A combined-stream websocket frame ``{"stream": ..., "data": ...}``."""

    stream: str
    data: msgspec.Raw


class Frame(msgspec.Struct, frozen=True, gc=False):
    """A decoded frame: receive time (ms), stream name, symbol (upper case), kind and typed event.

    A msgspec struct rather than a NamedTuple: one is made per message, and its construction is C code."""

    recv: int
    stream: str
    symbol: str
    kind: Kind
    event: MarketEvent


_line_decoder = msgspec.json.Decoder(CaptureLine)
_control_decoder = msgspec.json.Decoder(ControlChange)
_restart_decoder = msgspec.json.Decoder(DepthRestart)
_checkpoint_decoder = msgspec.json.Decoder(BookCheckpoint)
_engine_start_decoder = msgspec.json.Decoder(EngineStart)
_instruments_decoder = msgspec.json.Decoder(Instruments)


# Fast path for capture lines of websocket payloads: one decode of the whole line, the payload type picked
# by its "e" field. Anything it cannot take (REST answers, bad frames) goes the two-step way, which
# classifies rejections.
class _DepthE(DepthUpdate, frozen=True, gc=False, tag_field="e", tag="depthUpdate"):
    pass


class _BookTickerE(BookTicker, frozen=True, gc=False, tag_field="e", tag="bookTicker"):
    pass


class _AggTradeE(AggTrade, frozen=True, gc=False, tag_field="e", tag="aggTrade"):
    pass


class _TradeE(Trade, frozen=True, gc=False, tag_field="e", tag="trade"):
    pass


class _KlineE(Kline, frozen=True, gc=False, tag_field="e", tag="kline"):
    pass


class _WsLine(msgspec.Struct, frozen=True, gc=False):
    recv: int
    stream: str
    data: _DepthE | _BookTickerE | _AggTradeE | _TradeE | _KlineE


_fast_decoder = msgspec.json.Decoder(_WsLine, strict=False)
_FAST_KIND: dict[type, Kind] = {
    _DepthE: Kind.DEPTH,
    _BookTickerE: Kind.BOOK_TICKER,
    _AggTradeE: Kind.AGG_TRADE,
    _TradeE: Kind.TRADE,
    _KlineE: Kind.KLINE,
}
_FAST_TYPE: dict[Kind, type] = {kind: cls for cls, kind in _FAST_KIND.items()}
_envelope_decoder = msgspec.json.Decoder(Envelope)
#: Route of a stream the fast path cannot take (a REST answer, an unknown stream): no payload has this type.
_NO_FAST_TYPE = type(None)


def _rest_target(stream: str) -> tuple[str, Kind, str] | None:
    """(SYMBOL, kind, interval) of a captured REST answer replay uses: a depth snapshot
    ``rest:/fapi/v1/depth?symbol=X&limit=N`` or kline history ``rest:/fapi/v1/klines?symbol=X&interval=15m``."""
    url = urlsplit(stream[5:])
    if url.fragment:
        return None  # a backup-feed poll (``#poll``): see tapewatch.polled
    query = parse_qs(url.query)
    symbols = query.get("symbol")
    if not symbols:
        return None
    if url.path in REST_DEPTH_PATHS:
        return symbols[0].upper(), Kind.SNAPSHOT, ""
    if url.path in REST_KLINES_PATHS and query.get("interval"):
        return symbols[0].upper(), Kind.KLINES, query["interval"][0]
    return None


def _invalid_reason(msg: str) -> str:
    """``bad_value`` for a bound msgspec checks ("Expected `float` > 0") or a cross-field one (an impossible
    candle), else ``schema``."""
    return "bad_value" if any(op in msg for op in _BOUND_MARKS) else "schema"


class FrameDecoder:
    """Decodes frames into :class:`Frame` and counts every rejection by reason.

    ``rejected`` counts per reason; ``rejected_by_stream`` per (reason, stream) so an operator can see
    which stream sends bad data.
    """

    def __init__(self) -> None:
        self.rejected: Counter[str] = Counter()
        self.rejected_by_stream: Counter[tuple[str, str]] = Counter()
        self.decoded = 0
        self._streams: dict[str, tuple[str, Kind, str] | None] = {}
        # stream -> (SYMBOL, kind, payload type the fast path must have decoded, a kline stream's interval or
        # None): one probe per line
        self._fast_routes: dict[str, tuple[str, Kind, type, str | None]] = {}
        self._polled: dict[str, PolledTarget | None] = {}
        self._pending: list[Frame] = []  # the frames of the last polled page (see take_pending)
        #: how many rows the page last decoded by :meth:`decode_frames` held, its dropped rows included (0 for
        #: anything but an aggTrades page or polled klines, or a body that could not be used): a page is full
        #: by this count, taken from the one decode of the body, not by the frames kept
        self.page_rows = 0

    def _reject(self, reason: str, stream: str, detail: object = "") -> None:
        self.rejected[reason] += 1
        self.rejected_by_stream[(reason, stream)] += 1
        if reason != "ignored" and (self.rejected[reason] <= 10 or self.rejected[reason] % 1000 == 0):
            log.warning(
                "frame rejected (%s) on %s: %s",
                reason,
                stream,
                detail,
                extra={"stream": stream, "reason": reason},
            )

    def _target(self, stream: str) -> tuple[str, Kind, str] | None:
        try:
            return self._streams[stream]
        except KeyError:
            pass
        target: tuple[str, Kind, str] | None
        if stream.startswith("rest:"):
            target = _rest_target(stream)
        else:
            try:
                name = parse_stream(stream)
                target = (name.symbol, name.kind, name.detail) if name.kind in _DECODERS else None
            except UnknownStream:
                target = None
        if len(self._streams) < 100_000:
            self._streams[stream] = target
        return target

    def _fast_route(self, stream: str) -> tuple[str, Kind, type, str | None]:
        target = self._target(stream)
        if target is None or target[1] not in _FAST_TYPE:
            # REST answers and unknown streams: a type no payload has, so they take the two-step way
            route: tuple[str, Kind, type, str | None] = ("", Kind.SNAPSHOT, _NO_FAST_TYPE, None)
        else:
            symbol, kind, detail = target
            route = (symbol, kind, _FAST_TYPE[kind], detail if kind is Kind.KLINE else None)
        if len(self._fast_routes) < 100_000:
            self._fast_routes[stream] = route
        return route

    def websocket_route(self, stream: str) -> tuple[str, Kind, str | None] | None:
        """(SYMBOL, kind, interval of a kline stream else None) of a websocket stream whose lines
        :meth:`decode_capture_line` decodes in one step; None for REST answers, control lines and unknown
        streams."""
        route = self._fast_routes.get(stream) or self._fast_route(stream)
        return None if route[2] is _NO_FAST_TYPE else (route[0], route[1], route[3])

    def decode_payload(self, recv: int, stream: str, data: bytes | msgspec.Raw) -> Frame | None:
        """Decode one payload of a known stream name; None (and counted) when it cannot be used."""
        target = self._target(stream)
        if target is None:
            if stream.startswith("rest:"):
                return self._decode_polled(recv, stream, data)
            if stream == CONTROL_PAUSED:
                self._decode_control(recv, stream, data, _control_decoder)
                return None
            if stream == CONTROL_ENGINE_START:
                self._decode_control(recv, stream, data, _engine_start_decoder)
                return None
            if stream == CONTROL_INSTRUMENTS:
                self._decode_control(recv, stream, data, _instruments_decoder)
                return None
            if stream == CONTROL_DEPTH_RESTART:
                return self._decode_symbol_control(recv, stream, data, _restart_decoder)
            if stream == CONTROL_BOOK_CHECKPOINT:
                return self._decode_symbol_control(recv, stream, data, _checkpoint_decoder)
            self._reject("unknown_stream", stream)
            return None
        symbol, kind, detail = target
        try:
            if kind is Kind.KLINES:
                rows, bad = _KLINE_ROWS.decode(data)
                self._reject_rows(stream, bad)
                # Binance lists the forming candle last; its close time is still ahead of the answer
                event = KlineHistory(detail, candles_from_rows(rows, detail, recv))
            else:
                event = _DECODERS[kind].decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self._reject_body(stream, exc)
            return None
        if kind in _SYMBOL_KINDS and self._mismatch(stream, symbol, detail, event):
            return None
        self.decoded += 1
        return Frame(recv, stream, symbol, kind, event)

    def _mismatch(self, stream: str, symbol: str, detail: str, event: Any) -> bool:
        """Reject (counted, logged) a websocket payload naming another symbol than its stream
        (``symbol_mismatch``), or a kline another interval (``interval_mismatch``): taken, it would feed the
        other symbol's data into this one's windows and book, or start a candle series of a stray interval."""
        if event.symbol != symbol:
            self._reject("symbol_mismatch", stream, f"payload symbol {event.symbol!r}, stream {symbol!r}")
            return True
        if type(event) is Kline and event.candle.interval != detail:
            self._reject(
                "interval_mismatch", stream, f"kline interval {event.candle.interval!r}, stream {detail!r}"
            )
            return True
        return False

    def _reject_body(self, stream: str, exc: msgspec.ValidationError | msgspec.DecodeError) -> None:
        if isinstance(exc, msgspec.ValidationError):
            msg = str(exc)
            self._reject(_invalid_reason(msg), stream, msg)
        else:
            self._reject("malformed_json", stream, exc)

    def _reject_rows(self, stream: str, bad: list[BadRow]) -> None:
        """Count and log each row dropped from an answer whose other rows are used."""
        for row in bad:
            self._reject(_invalid_reason(row.error), stream, f"row dropped (key {row.key}): {row.error}")

    # --- the backup feed's polls (tapewatch.polled) ---------------------------------------------------------
    def _decode_polled(self, recv: int, stream: str, data: bytes | msgspec.Raw) -> Frame | None:
        """A ``rest:`` answer no other route takes: a polled depth snapshot (returned), an aggTrades page or
        polled klines (several frames: None is returned and the frames wait in :meth:`take_pending`), or
        something replay does not use (counted ``ignored``)."""
        target = self._polled.get(stream)
        if target is None:
            target = polled_target(stream)
            if len(self._polled) < 100_000:
                self._polled[stream] = target
        if target is None:
            self._reject("ignored", stream)
            return None
        try:
            events, rows = decode_polled(target, recv, data, lambda bad: self._reject_rows(stream, bad))
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self._reject_body(stream, exc)
            return None
        symbol, kind = target.symbol, target.kind
        self.decoded += 1
        if kind is Kind.SNAPSHOT:
            return Frame(recv, stream, symbol, kind, events[0])
        self._pending = [Frame(recv, stream, symbol, kind, event) for event in events]
        self.page_rows = rows
        return None

    def _decode_control(
        self,
        recv: int,
        stream: str,
        data: bytes | msgspec.Raw,
        decoder: msgspec.json.Decoder[ControlChange]
        | msgspec.json.Decoder[EngineStart]
        | msgspec.json.Decoder[Instruments],
    ) -> None:
        """A captured pause/resume, engine start or instruments line: like a page, it waits in
        :meth:`take_pending` (None is returned), so only the callers that apply pending frames see it — never the
        market's per-message path."""
        try:
            event = decoder.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self._reject_body(stream, exc)
            return
        self.decoded += 1
        self._pending = [Frame(recv, stream, "", Kind.CONTROL, event)]

    def _decode_symbol_control(
        self,
        recv: int,
        stream: str,
        data: bytes | msgspec.Raw,
        decoder: msgspec.json.Decoder[DepthRestart] | msgspec.json.Decoder[BookCheckpoint],
    ) -> Frame | None:
        """A captured depth stream restart or book checkpoint: unlike a pause it is returned, a
        :attr:`Kind.CONTROL` frame of its symbol, so it takes the market's per-message path (``Market.on_frame``
        restarts the book, or checks it against the checkpoint)."""
        try:
            event = decoder.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self._reject_body(stream, exc)
            return None
        self.decoded += 1
        return Frame(recv, stream, event.symbol, Kind.CONTROL, event)

    def take_pending(self) -> list[Frame]:
        """The frames of the last page decoded (an aggTrades page, polled klines), in order; each once.

        :meth:`decode_payload` and :meth:`decode_capture_line` return None for such a line: a caller that
        applies frames (replay) takes them here right after that None."""
        pending, self._pending = self._pending, []
        return pending

    def decode_frames(self, recv: int, stream: str, data: bytes | msgspec.Raw) -> list[Frame]:
        """Every frame of one payload, in order: one for a stream message or a REST snapshot or history,
        one per row of a polled page; none when it cannot be used (counted). :attr:`page_rows` then says how
        many rows a page held."""
        self._pending = []
        self.page_rows = 0
        frame = self.decode_payload(recv, stream, data)
        return [frame] if frame is not None else self.take_pending()

    def decode_capture_line(self, line: bytes) -> Frame | None:
        """Decode one capture line ``{"recv", "stream", "data"}``."""
        try:
            fast = _fast_decoder.decode(line)
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass
        else:
            stream, event = fast.stream, fast.data
            try:  # a subscript, not .get(): one probe per line without a method call
                symbol, kind, payload, interval = self._fast_routes[stream]
            except KeyError:
                symbol, kind, payload, interval = self._fast_route(stream)
            # the payload is what the stream name says it carries, for its symbol (and interval), else the
            # two-step way below classifies the rejection
            if (
                type(event) is payload
                and event.symbol == symbol
                and (interval is None or event.candle.interval == interval)  # type: ignore[union-attr]
            ):
                self.decoded += 1
                return Frame(fast.recv, stream, symbol, kind, event)
        try:
            cap = _line_decoder.decode(line)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self._reject("malformed_json", "<capture>", exc)
            return None
        return self.decode_payload(cap.recv, cap.stream, cap.data)

    def decode_ws_frame(self, recv: int, frame: bytes | str) -> Frame | None:
        """Decode one combined-stream websocket frame; control replies must be filtered before this."""
        try:
            env = _envelope_decoder.decode(frame)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self._reject("malformed_json", "<ws>", exc)
            return None
        return self.decode_payload(recv, env.stream, env.data)
