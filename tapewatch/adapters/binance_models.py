"""Typed bodies of the Binance USD-M REST endpoints tapewatch calls (one frozen struct per shape).

Depth snapshots decode into :class:`tapewatch.events.DepthSnapshot`; kline rows and aggTrades are
converted into :class:`tapewatch.events.Candle` and :class:`tapewatch.events.AggTrade` so back-filled
data and live stream data are the same types. Decimal strings become floats (``strict=False``); prices
and quantities are range-checked as in :mod:`tapewatch.events`, so NaN or negative prices fail decoding.
Unknown fields are ignored: Binance adds fields over time.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from tapewatch.events import (
    DepthSnapshot,
    KlineRow,
    Qty,
    RestAggTrade,
    agg_trades_from_rest,
    candles_from_rows,
)

Finite = Annotated[float, msgspec.Meta(gt=-1e18, lt=1e18)]


class ServerTime(msgspec.Struct, frozen=True, gc=False):
    """``/fapi/v1/time``."""

    server_time: int = msgspec.field(name="serverTime")


class RateLimit(msgspec.Struct, frozen=True, gc=False):
    """One entry of ``exchangeInfo.rateLimits`` (e.g. REQUEST_WEIGHT per 1 MINUTE = 2400)."""

    rate_limit_type: str = msgspec.field(name="rateLimitType")
    interval: str
    interval_num: int = msgspec.field(name="intervalNum")
    limit: int


class SymbolFilter(msgspec.Struct, frozen=True, gc=False):
    """One entry of a symbol's ``filters``; only the fields of its ``filter_type`` are set."""

    filter_type: str = msgspec.field(name="filterType")
    tick_size: float | None = msgspec.field(name="tickSize", default=None)
    min_price: float | None = msgspec.field(name="minPrice", default=None)
    max_price: float | None = msgspec.field(name="maxPrice", default=None)
    step_size: float | None = msgspec.field(name="stepSize", default=None)
    min_qty: float | None = msgspec.field(name="minQty", default=None)
    max_qty: float | None = msgspec.field(name="maxQty", default=None)
    notional: float | None = None
    limit: int | None = None


class SymbolInfo(msgspec.Struct, frozen=True, gc=False):
    """One contract of ``exchangeInfo.symbols``. ``status`` is ``TRADING`` for a live contract."""

    symbol: str
    pair: str = ""
    contract_type: str = msgspec.field(name="contractType", default="")
    status: str = ""
    base_asset: str = msgspec.field(name="baseAsset", default="")
    quote_asset: str = msgspec.field(name="quoteAsset", default="")
    margin_asset: str = msgspec.field(name="marginAsset", default="")
    price_precision: int = msgspec.field(name="pricePrecision", default=0)
    quantity_precision: int = msgspec.field(name="quantityPrecision", default=0)
    onboard_date: int = msgspec.field(name="onboardDate", default=0)
    delivery_date: int = msgspec.field(name="deliveryDate", default=0)
    filters: list[SymbolFilter] = []

    def _filter(self, filter_type: str) -> SymbolFilter | None:
        for f in self.filters:
            if f.filter_type == filter_type:
                return f
        return None

    @property
    def tick_size(self) -> float | None:
        """Price step (``PRICE_FILTER.tickSize``)."""
        f = self._filter("PRICE_FILTER")
        return None if f is None else f.tick_size

    @property
    def step_size(self) -> float | None:
        """Quantity step (``LOT_SIZE.stepSize``)."""
        f = self._filter("LOT_SIZE")
        return None if f is None else f.step_size

    @property
    def min_notional(self) -> float | None:
        """Smallest order value (``MIN_NOTIONAL.notional``)."""
        f = self._filter("MIN_NOTIONAL")
        return None if f is None else f.notional

    @property
    def is_perpetual(self) -> bool:
        return self.contract_type == "PERPETUAL"


class ExchangeInfo(msgspec.Struct, frozen=True, gc=False):
    """``/fapi/v1/exchangeInfo``: the contracts and Binance's rate limits."""

    server_time: int = msgspec.field(name="serverTime")
    symbols: list[SymbolInfo]
    timezone: str = "UTC"
    rate_limits: list[RateLimit] = msgspec.field(name="rateLimits", default_factory=list)

    def symbol(self, name: str) -> SymbolInfo | None:
        """The contract called ``name`` (case-insensitive), or None."""
        name = name.upper()
        for info in self.symbols:
            if info.symbol == name:
                return info
        return None


class Ticker24hr(msgspec.Struct, frozen=True, gc=False):
    """``/fapi/v1/ticker/24hr``: rolling 24 h statistics of one symbol (volumes in base and quote)."""

    symbol: str
    price_change: Finite = msgspec.field(name="priceChange")
    price_change_percent: Finite = msgspec.field(name="priceChangePercent")
    weighted_avg_price: Qty = msgspec.field(name="weightedAvgPrice")
    last_price: Qty = msgspec.field(name="lastPrice")
    open_price: Qty = msgspec.field(name="openPrice")
    high_price: Qty = msgspec.field(name="highPrice")
    low_price: Qty = msgspec.field(name="lowPrice")
    volume: Qty
    quote_volume: Qty = msgspec.field(name="quoteVolume")
    open_time: int = msgspec.field(name="openTime")
    close_time: int = msgspec.field(name="closeTime")
    count: int = 0
    last_qty: Qty = msgspec.field(name="lastQty", default=0.0)
    first_id: int = msgspec.field(name="firstId", default=0)
    last_id: int = msgspec.field(name="lastId", default=0)


class OpenInterest(msgspec.Struct, frozen=True, gc=False):
    """``/fapi/v1/openInterest``: open interest of one symbol, in contracts (base asset)."""

    symbol: str
    open_interest: Qty = msgspec.field(name="openInterest")
    time: int = 0


class RestBookTicker(msgspec.Struct, frozen=True, gc=False):
    """``/fapi/v1/ticker/bookTicker``: best bid/ask. ``last_update_id`` only on newer answers."""

    symbol: str
    bid_price: Qty = msgspec.field(name="bidPrice")
    bid_qty: Qty = msgspec.field(name="bidQty")
    ask_price: Qty = msgspec.field(name="askPrice")
    ask_qty: Qty = msgspec.field(name="askQty")
    time: int = 0
    last_update_id: int | None = msgspec.field(name="lastUpdateId", default=None)


def decoder(kind: Any) -> msgspec.json.Decoder[Any]:
    """A lenient JSON decoder for ``kind``: decimal strings become numbers, unknown fields are ignored."""
    return msgspec.json.Decoder(kind, strict=False)


__all__ = [
    "DepthSnapshot",
    "ExchangeInfo",
    "KlineRow",
    "OpenInterest",
    "RateLimit",
    "RestAggTrade",
    "RestBookTicker",
    "ServerTime",
    "SymbolFilter",
    "SymbolInfo",
    "Ticker24hr",
    "agg_trades_from_rest",
    "candles_from_rows",
    "decoder",
]
