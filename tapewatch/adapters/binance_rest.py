"""Typed Binance USD-M REST market-data endpoints, paced by the process's shared weight budget.

Each call returns ``(typed value, RestResponse)``: the value decoded with msgspec (depth snapshots as
:class:`~tapewatch.events.DepthSnapshot`, klines as :class:`~tapewatch.events.Candle`, aggTrades as
:class:`~tapewatch.events.AggTrade`) and the response with the body bytes exactly as received, which the
realtime service writes to its capture as ``{"stream": response.stream, "data": <body>}``. Weight,
retries and errors are handled by :class:`~tapewatch.adapters.rest_session.RestSession`.

List answers (klines, aggTrades, all 24h tickers, all book tickers, the contracts of exchangeInfo) keep their
good rows when some are bad (an impossible candle, a negative price): each bad row is dropped, logged with what
identifies it and counted in ``stats.dropped_rows``; a dropped kline is a missing candle, a dropped aggTrade a
missing trade id, a dropped ticker or contract a symbol the answer did not list. A depth snapshot with one bad
level is rejected whole (:class:`~tapewatch.errors.FeedError`, counted in ``malformed``): a book loaded
without a level would be wrong, so the caller fetches another snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TypeVar, overload

import msgspec

from tapewatch.adapters import binance_weights as weights
from tapewatch.adapters.binance_models import (
    ExchangeInfo,
    KlineRow,
    OpenInterest,
    RateLimit,
    RestAggTrade,
    RestBookTicker,
    ServerTime,
    SymbolInfo,
    Ticker24hr,
    agg_trades_from_rest,
    candles_from_rows,
    decoder,
)
from tapewatch.adapters.rest_session import RestResponse, RestSession
from tapewatch.adapters.weight_budget import Clock, Sleep, WeightBudget
from tapewatch.events import AggTrade, BadRow, Candle, DepthSnapshot, RowsDecoder
from tapewatch.settings import TIMEFRAMES, Settings

__all__ = ["BinanceRest", "RestResponse"]

log = logging.getLogger(__name__)
R = TypeVar("R")


class _ExchangeInfoBody(msgspec.Struct, frozen=True, gc=False):
    """exchangeInfo with its contracts left undecoded, so one bad contract does not lose the others."""

    server_time: int = msgspec.field(name="serverTime")
    symbols: msgspec.Raw
    timezone: str = "UTC"
    rate_limits: list[RateLimit] = msgspec.field(name="rateLimits", default_factory=list)


class _ExchangeInfoDecoder:
    """Decodes exchangeInfo keeping its good contracts when some are bad (returned as :class:`BadRow` s)."""

    _body = decoder(_ExchangeInfoBody)
    _symbols = RowsDecoder(SymbolInfo)

    def decode(self, buf: bytes) -> tuple[ExchangeInfo, list[BadRow]]:
        body = self._body.decode(buf)
        symbols, bad = self._symbols.decode(body.symbols)
        return ExchangeInfo(body.server_time, symbols, body.timezone, body.rate_limits), bad


_DEC_SERVER_TIME = decoder(ServerTime)
_DEC_EXCHANGE_INFO = _ExchangeInfoDecoder()
_DEC_TICKER = decoder(Ticker24hr)
_DEC_TICKERS = RowsDecoder(Ticker24hr)
_DEC_DEPTH = decoder(DepthSnapshot)
_DEC_KLINES = RowsDecoder(KlineRow)
_DEC_OPEN_INTEREST = decoder(OpenInterest)
_DEC_AGG_TRADES = RowsDecoder(RestAggTrade)
_DEC_BOOK_TICKER = decoder(RestBookTicker)
_DEC_BOOK_TICKERS = RowsDecoder(RestBookTicker)
_HOUR_MS = 3_600_000


def _symbol(symbol: str) -> str:
    """``symbol`` upper-cased; ValueError for anything that is not letters, digits and ``_``."""
    name = symbol.strip().upper()
    if not name or len(name) > 40 or not name.replace("_", "").isalnum():
        raise ValueError(f"not a Binance symbol (letters and digits, like BTCUSDT): {symbol!r}")
    return name


class BinanceRest(RestSession):
    """Binance USD-M REST market-data client. Use as ``async with``; share one budget per process."""

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        budget: WeightBudget | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        on_response: Callable[[RestResponse], None] | None = None,
    ) -> BinanceRest:
        """A client of ``binance_rest_url`` with the settings' timeout and retries.

        Pass the process's shared ``budget``; without one a new budget is made from the settings.
        """
        if budget is None:
            budget = WeightBudget.from_settings(settings, clock=clock, sleep=sleep)
        return cls(
            settings.binance_rest_url,
            budget,
            timeout=settings.rest_timeout,
            max_retries=settings.rest_max_retries,
            sleep=sleep,
            on_response=on_response,
        )

    def _rows(self, endpoint: str, resp: RestResponse, dec: RowsDecoder[R], what: str, key: str) -> list[R]:
        """The good rows of a list answer (FeedError when it is not one, or when every row is bad); each bad row
        is counted in ``stats.dropped_rows[endpoint]`` and logged as ``what`` with its ``key`` field."""
        rows, bad = self.decode(endpoint, resp, dec)
        for row in bad:
            self._dropped(endpoint, resp, what, key, row, len(rows))
        return rows

    def _dropped(
        self, endpoint: str, resp: RestResponse, what: str, key: str, row: BadRow, kept: int
    ) -> None:
        self.stats.dropped_rows[endpoint] += 1
        log.warning(
            "GET %s: dropped a bad %s (%s %s): %s; the %d good rows are kept",
            resp.path_and_query, what, key, row.key, row.error, kept,
            extra={"endpoint": endpoint, "stream": resp.stream},
        )  # fmt: skip

    async def ping(self) -> RestResponse:
        """``/fapi/v1/ping``: the API answers (weight 1)."""
        return await self.get("ping", "/fapi/v1/ping", {}, weights.PING_WEIGHT)

    async def server_time(self) -> tuple[ServerTime, RestResponse]:
        """``/fapi/v1/time`` (weight 1)."""
        resp = await self.get("time", "/fapi/v1/time", {}, weights.SERVER_TIME_WEIGHT)
        return self.decode("time", resp, _DEC_SERVER_TIME), resp

    async def exchange_info(self) -> tuple[ExchangeInfo, RestResponse]:
        """``/fapi/v1/exchangeInfo``: every contract and the rate limits (weight 1)."""
        resp = await self.get("exchangeInfo", "/fapi/v1/exchangeInfo", {}, weights.EXCHANGE_INFO_WEIGHT)
        info, bad = self.decode("exchangeInfo", resp, _DEC_EXCHANGE_INFO)
        for row in bad:  # a contract left out is one we do not trade: the others stay usable
            self._dropped("exchangeInfo", resp, "contract", "symbol", row, len(info.symbols))
        return info, resp

    @overload
    async def ticker_24hr(self, symbol: str) -> tuple[Ticker24hr, RestResponse]: ...
    @overload
    async def ticker_24hr(self, symbol: None = None) -> tuple[list[Ticker24hr], RestResponse]: ...
    async def ticker_24hr(
        self, symbol: str | None = None
    ) -> tuple[Ticker24hr | list[Ticker24hr], RestResponse]:
        """``/fapi/v1/ticker/24hr`` of one symbol (weight 1) or, without a symbol, of all (weight 40)."""
        params = {} if symbol is None else {"symbol": _symbol(symbol)}
        weight = weights.ticker_24hr_weight(symbol is not None)
        resp = await self.get("ticker24hr", "/fapi/v1/ticker/24hr", params, weight)
        if symbol is None:
            return self._rows("ticker24hr", resp, _DEC_TICKERS, "ticker", "symbol"), resp
        return self.decode("ticker24hr", resp, _DEC_TICKER), resp

    async def depth(self, symbol: str, limit: int = 1000) -> tuple[DepthSnapshot, RestResponse]:
        """``/fapi/v1/depth`` order-book snapshot (weight 2..20 by ``limit``), from the snapshot sub-budget."""
        weight = weights.depth_weight(limit)
        params: dict[str, str | int | None] = {"symbol": _symbol(symbol), "limit": limit}
        resp = await self.get("depth", "/fapi/v1/depth", params, weight, pool="snapshot")
        return self.decode("depth", resp, _DEC_DEPTH), resp

    async def klines(
        self,
        symbol: str,
        interval: str,
        limit: int = 500,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> tuple[list[Candle], RestResponse]:
        """``/fapi/v1/klines`` as :class:`Candle` s, oldest first (weight 1..10 by ``limit``).

        Binance includes the forming candle last; ``closed`` is true when its close time is past
        (by the wall clock).
        """
        if interval not in TIMEFRAMES:
            raise ValueError(f"kline interval must be one of {', '.join(TIMEFRAMES)}; got {interval!r}")
        weight = weights.klines_weight(limit)
        params: dict[str, str | int | None] = {
            "symbol": _symbol(symbol),
            "interval": interval,
            "limit": limit,
            "startTime": start_ms,
            "endTime": end_ms,
        }
        resp = await self.get("klines", "/fapi/v1/klines", params, weight)
        rows = self._rows("klines", resp, _DEC_KLINES, f"{params['symbol']} {interval} kline", "open time")
        return candles_from_rows(rows, interval, int(self._wall_clock() * 1000)), resp

    async def open_interest(self, symbol: str) -> tuple[OpenInterest, RestResponse]:
        """``/fapi/v1/openInterest`` of one symbol (weight 1)."""
        params = {"symbol": _symbol(symbol)}
        resp = await self.get("openInterest", "/fapi/v1/openInterest", params, weights.OPEN_INTEREST_WEIGHT)
        return self.decode("openInterest", resp, _DEC_OPEN_INTEREST), resp

    async def agg_trades(
        self,
        symbol: str,
        *,
        from_id: int | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> tuple[list[AggTrade], RestResponse]:
        """``/fapi/v1/aggTrades`` as :class:`AggTrade` s (weight 20). A time range must be under 1 hour."""
        if not 1 <= limit <= weights.MAX_AGG_TRADES_LIMIT:
            raise ValueError(
                f"aggTrades limit must be between 1 and {weights.MAX_AGG_TRADES_LIMIT}; got {limit}"
            )
        if start_ms is not None and end_ms is not None and not 0 <= end_ms - start_ms < _HOUR_MS:
            raise ValueError(f"aggTrades time range must be shorter than 1 hour; got {start_ms}..{end_ms}")
        name = _symbol(symbol)
        params: dict[str, str | int | None] = {
            "symbol": name,
            "fromId": from_id,
            "startTime": start_ms,
            "endTime": end_ms,
            "limit": limit,
        }
        resp = await self.get("aggTrades", "/fapi/v1/aggTrades", params, weights.AGG_TRADES_WEIGHT)
        rows = self._rows("aggTrades", resp, _DEC_AGG_TRADES, f"{name} aggTrade", "id")
        return agg_trades_from_rest(rows, name), resp

    @overload
    async def book_ticker(self, symbol: str) -> tuple[RestBookTicker, RestResponse]: ...
    @overload
    async def book_ticker(self, symbol: None = None) -> tuple[list[RestBookTicker], RestResponse]: ...
    async def book_ticker(
        self, symbol: str | None = None
    ) -> tuple[RestBookTicker | list[RestBookTicker], RestResponse]:
        """``/fapi/v1/ticker/bookTicker`` of one symbol (weight 2) or of all (weight 5)."""
        params = {} if symbol is None else {"symbol": _symbol(symbol)}
        weight = weights.book_ticker_weight(symbol is not None)
        resp = await self.get("bookTicker", "/fapi/v1/ticker/bookTicker", params, weight)
        if symbol is None:
            return self._rows("bookTicker", resp, _DEC_BOOK_TICKERS, "book ticker", "symbol"), resp
        return self.decode("bookTicker", resp, _DEC_BOOK_TICKER), resp
