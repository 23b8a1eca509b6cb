"""Typed market-data events: one frozen struct per Binance wire message.

Decoded once at the edge (:mod:`tapewatch.parse`); nothing past the parser sees a raw dict or a string
price. Prices and quantities are parsed from Binance's decimal strings into the nearest double (correctly
rounded), so the same text always gives the same key and distinct ticks never collide; the raw text stays
byte-exact in the capture files. A price must be finite and > 0, a quantity finite and >= 0, and a candle
possible (``low <= open, close <= high``): anything else fails decoding and is counted as ``bad_value``.
A REST answer that is a list of rows (klines, aggTrades, all tickers) is decoded row by row when a row is
bad (:class:`RowsDecoder`): the bad row is dropped and reported, the good rows are kept.
"""

from __future__ import annotations

from typing import Annotated, Generic, NamedTuple, TypeVar

import msgspec

Price = Annotated[float, msgspec.Meta(gt=0, lt=1e15)]
Qty = Annotated[float, msgspec.Meta(ge=0, lt=1e18)]
Level = tuple[Price, Qty]


class DepthUpdate(msgspec.Struct, frozen=True, gc=False):
    """``<symbol>@depth[@100ms|@0ms|@500ms]``: a diff of the book between update ids ``first_id..final_id``."""

    symbol: str = msgspec.field(name="s")
    event_time: int = msgspec.field(name="E")
    transaction_time: int = msgspec.field(name="T")
    first_id: int = msgspec.field(name="U")
    final_id: int = msgspec.field(name="u")
    prev_final_id: int = msgspec.field(name="pu")
    bids: list[Level] = msgspec.field(name="b")
    asks: list[Level] = msgspec.field(name="a")


class DepthSnapshot(msgspec.Struct, frozen=True, gc=False):
    """REST ``/fapi/v1/depth`` body. ``E``/``T`` are absent from old COIN-M and spot-style answers."""

    last_update_id: int = msgspec.field(name="lastUpdateId")
    bids: list[Level]
    asks: list[Level]
    event_time: int = msgspec.field(name="E", default=0)
    transaction_time: int = msgspec.field(name="T", default=0)


class BookTicker(msgspec.Struct, frozen=True, gc=False):
    """``<symbol>@bookTicker``: best bid/ask as of update id ``update_id``."""

    symbol: str = msgspec.field(name="s")
    update_id: int = msgspec.field(name="u")
    bid_price: Price = msgspec.field(name="b")
    bid_qty: Qty = msgspec.field(name="B")
    ask_price: Price = msgspec.field(name="a")
    ask_qty: Qty = msgspec.field(name="A")
    event_time: int = msgspec.field(name="E", default=0)
    transaction_time: int = msgspec.field(name="T", default=0)


class AggTrade(msgspec.Struct, frozen=True, gc=False):
    """``<symbol>@aggTrade``. ``buyer_is_maker`` true means the aggressor sold."""

    symbol: str = msgspec.field(name="s")
    event_time: int = msgspec.field(name="E")
    agg_id: int = msgspec.field(name="a")
    price: Price = msgspec.field(name="p")
    qty: Annotated[float, msgspec.Meta(gt=0, lt=1e18)] = msgspec.field(name="q")
    first_trade_id: int = msgspec.field(name="f")
    last_trade_id: int = msgspec.field(name="l")
    trade_time: int = msgspec.field(name="T")
    buyer_is_maker: bool = msgspec.field(name="m")


class Trade(msgspec.Struct, frozen=True, gc=False):
    """``<symbol>@trade`` (single fills). ``kind`` is ``MARKET`` for ordinary trades."""

    symbol: str = msgspec.field(name="s")
    event_time: int = msgspec.field(name="E")
    trade_id: int = msgspec.field(name="t")
    price: Price = msgspec.field(name="p")
    qty: Annotated[float, msgspec.Meta(gt=0, lt=1e18)] = msgspec.field(name="q")
    trade_time: int = msgspec.field(name="T")
    buyer_is_maker: bool = msgspec.field(name="m")
    kind: str = msgspec.field(name="X", default="MARKET")


def check_ohlc(open_: float, high: float, low: float, close: float) -> None:
    """Raise ValueError when the prices break ``low <= open, close <= high``: such a candle would sit in the
    history and fail every feature computation of its symbol (msgspec turns the error into a
    ``ValidationError`` at decode, counted as ``bad_value``). A NaN breaks no comparison here: finiteness is
    the decoder's bound (:data:`Price`) and the analytics' check."""
    if low > high or open_ < low or open_ > high or close < low or close > high:
        raise ValueError(
            f"impossible candle: needs low <= open, close <= high; got open {open_}, high {high}, "
            f"low {low}, close {close}"
        )


class Candle(msgspec.Struct, frozen=True, gc=False):
    """The ``k`` object of a kline event (and one row of REST klines). Impossible prices (see
    :func:`check_ohlc`) fail decoding and construction alike."""

    open_time: int = msgspec.field(name="t")
    close_time: int = msgspec.field(name="T")
    interval: str = msgspec.field(name="i")
    open: Price = msgspec.field(name="o")
    close: Price = msgspec.field(name="c")
    high: Price = msgspec.field(name="h")
    low: Price = msgspec.field(name="l")
    volume: Qty = msgspec.field(name="v")
    trades: int = msgspec.field(name="n")
    closed: bool = msgspec.field(name="x")
    quote_volume: Qty = msgspec.field(name="q")
    taker_buy_volume: Qty = msgspec.field(name="V", default=0.0)
    taker_buy_quote_volume: Qty = msgspec.field(name="Q", default=0.0)

    def __post_init__(self) -> None:
        check_ohlc(self.open, self.high, self.low, self.close)


class Kline(msgspec.Struct, frozen=True, gc=False):
    """``<symbol>@kline_<interval>``: the forming (``closed`` false) or just-closed candle."""

    symbol: str = msgspec.field(name="s")
    event_time: int = msgspec.field(name="E")
    candle: Candle = msgspec.field(name="k")


class KlineHistory(msgspec.Struct, frozen=True, gc=False):
    """Candles of one symbol and interval fetched by REST (history at start or after a gap), oldest first."""

    interval: str
    candles: list[Candle]


class ControlChange(msgspec.Struct, frozen=True, gc=False):
    """A platform command the engine obeys, captured so a replay obeys it at the same place in the tape
    (stream ``control:paused``): signalling paused (with why) or resumed."""

    paused: bool
    reason: str = ""


#: The capture stream of pause/resume commands (see :class:`ControlChange`).
CONTROL_PAUSED = "control:paused"


class DepthRestart(msgspec.Struct, frozen=True, gc=False):
    """The depth stream of ``symbol`` (re)started (``reason``: ``connect``, ``reconnect``, ``subscribe``,
    ``rollover``): the frames after it do not continue the ones before, so the book starts over from a new
    snapshot. Captured (stream ``control:depth_restart``) where the live service restarted the book, so a replay
    restarts it at the same place in the tape."""

    symbol: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]  # as the stream name has it
    reason: str = ""


#: The capture stream of depth stream restarts (see :class:`DepthRestart`).
CONTROL_DEPTH_RESTART = "control:depth_restart"


class EngineStart(msgspec.Struct, frozen=True, gc=False):
    """The realtime service started its signal engine (one line per start, stream ``control:engine_start``),
    so a capture replays to the live run's signals on its own: ``parameters``, the tunable parameter values
    the run used (the applied tuning laid over its settings), ``tuning``, the id of the applied
    ``tuning_applications`` row (0: none; None: not known), and ``state``, what the engine was rebuilt with
    from PostgreSQL (:class:`tapewatch.engine.EngineState`, kept undecoded here). A replay starts a fresh engine
    there, as the live run did. ``version`` is the line's format (:data:`ENGINE_START_VERSION`)."""

    version: int
    parameters: dict[str, float | int]
    tuning: int | None
    state: msgspec.Raw


class BookCheckpoint(msgspec.Struct, frozen=True, gc=False):
    """The live service's book of ``symbol``, synced, as of the diff with final id ``last_update_id``: every
    level (best first), the event time of that diff (``event_time``) and of the diff that completed the book's
    last sync (``synced_at``), and the bounds of the partial snapshot it grew from (``bid_floor``: 0.0 for none;
    ``ask_ceiling``: None for none). Captured (stream ``control:book_checkpoint``) for every synced book at the
    start of each checkpoint period (``capture_checkpoint_seconds``; each hour file starts with one), before the
    first frame of the period: a replay that reaches it with the book synced checks that its book is the
    live one (``checkpoint_checks``, ``checkpoint_mismatches``), and one that starts there (the run's earlier
    hour files pruned) takes the book from it instead of waiting for a snapshot that never comes."""

    symbol: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    last_update_id: Annotated[int, msgspec.Meta(ge=1)]
    event_time: Annotated[int, msgspec.Meta(ge=0)]
    synced_at: Annotated[int, msgspec.Meta(ge=0)]
    bid_floor: Annotated[float, msgspec.Meta(ge=0, lt=1e15)]
    ask_ceiling: Price | None
    bids: list[Level]
    asks: list[Level]


#: The capture stream of book checkpoints (see :class:`BookCheckpoint`).
CONTROL_BOOK_CHECKPOINT = "control:book_checkpoint"


#: The capture stream of engine starts (see :class:`EngineStart`), and the format its lines have now.
CONTROL_ENGINE_START = "control:engine_start"
ENGINE_START_VERSION = 1


class Instruments(msgspec.Struct, frozen=True, gc=False):
    """The symbols' price steps (exchangeInfo ``PRICE_FILTER.tickSize``, as plain decimals: ``{"BTCUSDT":
    "0.1"}``), the grid the signal engine puts stops and targets on. The realtime service captures one line
    (stream ``control:instruments``) each time it fetches exchangeInfo, and applies it to its engine right
    there, so a replay rounds from the same place in the tape. Each line replaces the previous one whole."""

    tick_sizes: dict[str, str]


#: The capture stream of the symbols' price steps (see :class:`Instruments`).
CONTROL_INSTRUMENTS = "control:instruments"


class KlineRow(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One row of ``/fapi/v1/klines`` (an array; the trailing "ignore" element is dropped)."""

    open_time: int
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Qty
    close_time: int
    quote_volume: Qty
    trades: int
    taker_buy_volume: Qty
    taker_buy_quote_volume: Qty

    def __post_init__(self) -> None:
        # checked here too, so a bad row fails the answer's decode rather than candles_from_rows
        check_ohlc(self.open, self.high, self.low, self.close)


def candles_from_rows(rows: list[KlineRow], interval: str, now_ms: int) -> list[Candle]:
    """Kline rows as :class:`Candle` s; a row is ``closed`` when its close time is before ``now_ms``.

    Binance returns the still-forming candle last; ``now_ms`` (the caller's estimate of exchange time)
    tells it apart. Every row before the last is closed whatever ``now_ms`` says: the exchange has opened the
    next candle, so it is past their close (a caller's clock behind the exchange's — a simulator at
    ``--speed`` — must not turn closed candles into forming ones).
    """
    if rows:
        now_ms = max(now_ms, rows[-1].open_time)
    return [
        Candle(
            open_time=r.open_time,
            close_time=r.close_time,
            interval=interval,
            open=r.open,
            close=r.close,
            high=r.high,
            low=r.low,
            volume=r.volume,
            trades=r.trades,
            closed=r.close_time < now_ms,
            quote_volume=r.quote_volume,
            taker_buy_volume=r.taker_buy_volume,
            taker_buy_quote_volume=r.taker_buy_quote_volume,
        )
        for r in rows
    ]


MarketEvent = (
    DepthUpdate
    | DepthSnapshot
    | BookTicker
    | AggTrade
    | Trade
    | Kline
    | KlineHistory
    | ControlChange
    | BookCheckpoint
    | DepthRestart
    | EngineStart
    | Instruments
)


class RestAggTrade(msgspec.Struct, frozen=True, gc=False):
    """One element of ``/fapi/v1/aggTrades`` (the stream payload without ``s`` and ``E``)."""

    agg_id: int = msgspec.field(name="a")
    price: Price = msgspec.field(name="p")
    qty: Annotated[float, msgspec.Meta(gt=0, lt=1e18)] = msgspec.field(name="q")
    first_trade_id: int = msgspec.field(name="f")
    last_trade_id: int = msgspec.field(name="l")
    trade_time: int = msgspec.field(name="T")
    buyer_is_maker: bool = msgspec.field(name="m")


def agg_trades_from_rest(rows: list[RestAggTrade], symbol: str) -> list[AggTrade]:
    """REST aggTrades as stream :class:`AggTrade` s of ``symbol``; event time is the trade time."""
    return [
        AggTrade(
            symbol=symbol,
            event_time=r.trade_time,
            agg_id=r.agg_id,
            price=r.price,
            qty=r.qty,
            first_trade_id=r.first_trade_id,
            last_trade_id=r.last_trade_id,
            trade_time=r.trade_time,
            buyer_is_maker=r.buyer_is_maker,
        )
        for r in rows
    ]


R = TypeVar("R")
_RAW_ROWS = msgspec.json.Decoder(list[msgspec.Raw])


def rows_sent(body: bytes) -> int:
    """How many rows a JSON list answer holds, bad ones included (0 when it is not a list: the client has
    rejected such a body before this is asked). A page is full by this count, not by the rows kept: a page
    of ``limit`` rows with one bad row dropped still means more rows wait. This decodes the body again: where
    a :class:`RowsDecoder` has just decoded it, count its rows and bad rows instead (the backup feed does)."""
    try:
        return len(_RAW_ROWS.decode(body))
    except msgspec.DecodeError:
        return 0


class BadRow(NamedTuple):
    """One element of a REST list answer that failed decoding: its position, its key as far as it can be read
    (a kline's open time, an aggTrade's id, a ticker's symbol; None when unreadable) and why it failed."""

    position: int
    key: object
    error: str


def _row_key(raw: msgspec.Raw) -> object:
    """The identifying field of an undecodable row, for the log line that reports it."""
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    if isinstance(value, list) and value:
        return value[0]  # a kline row: its open time
    if isinstance(value, dict):
        return value.get("symbol", value.get("a"))  # a ticker's symbol, an aggTrade's id
    return None


class RowsDecoder(Generic[R]):
    """Decodes a JSON list of ``row`` s, dropping the rows that fail (one impossible kline, one ticker with a
    negative price) instead of losing the whole answer: ``decode`` returns the good rows, in order, and the
    bad ones as :class:`BadRow` s for the caller to count and log. Every row of the list is one or the other, so
    ``len(rows) + len(bad)`` is how many rows the list held: a page is full by that count, not by the rows kept.

    The whole list is decoded at once first (the usual case costs nothing extra); only when that fails are the
    rows decoded one by one. A body that is not JSON or not a list, or a non-empty list whose every row fails
    (the format changed, not one bad value), still raises ``msgspec.DecodeError`` / ``ValidationError``.
    Use it only where a row can be missing without making the rest wrong (not for a depth snapshot's levels).
    """

    def __init__(self, row: type[R]) -> None:
        self.row = row
        self._whole = msgspec.json.Decoder(list[row], strict=False)  # type: ignore[valid-type]
        self._one = msgspec.json.Decoder(row, strict=False)

    def decode(self, data: bytes | msgspec.Raw) -> tuple[list[R], list[BadRow]]:
        """The good rows and the bad ones of the JSON list ``data``."""
        try:
            return self._whole.decode(data), []
        except msgspec.ValidationError:
            pass
        raws = _RAW_ROWS.decode(data)
        rows: list[R] = []
        bad: list[BadRow] = []
        for index, raw in enumerate(raws):
            try:
                rows.append(self._one.decode(raw))
            except msgspec.ValidationError as exc:
                bad.append(BadRow(index, _row_key(raw), f"row {index}: {exc}"))
        if not rows:
            raise msgspec.ValidationError(f"all {len(raws)} rows are bad; the first: {bad[0].error}")
        return rows, bad
