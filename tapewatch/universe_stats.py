"""The per-symbol statistics of a universe rescan, measured from Binance REST answers (pure).

Inputs are the typed REST bodies (24h ticker, depth snapshot, klines, open interest); the output is a
:class:`~tapewatch.universe.SymbolStats` with None for whatever could not be measured and the reason in
``errors``. Definitions (the README repeats them for traders):

- 24h volume: the ticker's ``quoteVolume`` (USDT).
- open interest in USD: ``openInterest`` (contracts, base asset) × the ticker's ``lastPrice``.
- spread: (best ask - best bid) / mid of the depth snapshot.
- depth within 1 %: Σ price × quantity of the snapshot's bids with price >= mid × 0.99 and asks with
  price <= mid × 1.01 (a lower bound when the snapshot's levels end before 1 %).
- ATR/price: Wilder ATR(period) over the closed candles, divided by the last close.
- trades per second: the ticker's 24h trade ``count`` / 86 400.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from tapewatch.events import Candle, DepthSnapshot
from tapewatch.indicators import atr
from tapewatch.universe import SymbolStats

DAY_SECONDS = 86_400
DEPTH_BAND = 0.01


@dataclass(frozen=True, slots=True)
class TickerStats:
    """The 24h ticker fields a rescan uses."""

    symbol: str
    quote_volume: float
    last_price: float
    count: int


def book_spread_and_depth(snapshot: DepthSnapshot, band: float = DEPTH_BAND) -> tuple[float, float]:
    """``(spread, depth_usd)`` of a snapshot: relative spread and USD resting within ``band`` of mid.

    Raises ValueError for an empty side or a crossed/locked book: such a snapshot measures nothing."""
    if not snapshot.bids or not snapshot.asks:
        raise ValueError("depth snapshot has an empty side")
    bid, ask = snapshot.bids[0][0], snapshot.asks[0][0]
    if not ask > bid > 0:
        raise ValueError(f"depth snapshot is crossed or locked (bid {bid}, ask {ask})")
    mid = (bid + ask) / 2
    low, high = mid * (1 - band), mid * (1 + band)
    depth = sum(p * q for p, q in snapshot.bids if p >= low) + sum(
        p * q for p, q in snapshot.asks if p <= high
    )
    return (ask - bid) / mid, depth


def atr_ratio(candles: Sequence[Candle], period: int) -> float:
    """ATR(``period``) of the closed candles (oldest first) over the last close.

    Raises ValueError with fewer than ``period + 1`` closed candles."""
    closed = [c for c in candles if c.closed]
    value = atr(closed, period) if len(closed) > period else None
    if value is None:
        raise ValueError(f"{len(closed)} closed candles, ATR({period}) needs {period + 1}")
    return value / closed[-1].close


def measure(
    ticker: TickerStats,
    *,
    depth: DepthSnapshot | str | None = None,
    candles: Sequence[Candle] | str | None = None,
    open_interest: float | str | None = None,
    atr_period: int = 14,
) -> SymbolStats:
    """The statistics of one symbol. Each REST part is its body, or the error text of the failed request
    (recorded in ``errors``), or None when it was not fetched (the symbol was below the volume minimum)."""
    errors: list[str] = []
    spread = depth_usd = ratio = oi_usd = None
    if isinstance(depth, str):
        errors.append(f"depth: {depth}")
    elif depth is not None:
        try:
            spread, depth_usd = book_spread_and_depth(depth)
        except ValueError as exc:
            errors.append(f"depth: {exc}")
    if isinstance(candles, str):
        errors.append(f"klines: {candles}")
    elif candles is not None:
        try:
            ratio = atr_ratio(candles, atr_period)
        except ValueError as exc:
            errors.append(f"klines: {exc}")
    if isinstance(open_interest, str):
        errors.append(f"open interest: {open_interest}")
    elif open_interest is not None:
        oi_usd = open_interest * ticker.last_price
    price = ticker.last_price if math.isfinite(ticker.last_price) and ticker.last_price > 0 else None
    return SymbolStats(
        symbol=ticker.symbol,
        quote_volume_24h=ticker.quote_volume,
        open_interest_usd=oi_usd if price is not None else None,
        spread=spread,
        depth_1pct_usd=depth_usd,
        atr_ratio=ratio,
        trades_per_second=ticker.count / DAY_SECONDS if ticker.count >= 0 else None,
        last_price=price,
        errors=tuple(errors),
    )
