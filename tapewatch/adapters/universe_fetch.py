"""Fetch what a universe rescan needs from Binance USD-M REST (or the simulator), within the weight budget.

Cost, per rescan: exchangeInfo (1) + all 24h tickers (40), then only for the symbols whose 24h volume
reaches ``min_24h_volume`` (the prefilter: a symbol below it is out whatever its other numbers) a depth
snapshot (``universe_depth_limit`` levels: 10 for 500), klines (``universe_atr_period`` + 2 candles: 1) and
open interest (1). 100 liquid symbols ≈ 1 240 weight: well inside one minute of the 1 920 we allow
ourselves; a larger market simply waits for the budget (the client paces every call).

A failed call (5xx after retries, timeout, -1121 invalid symbol, a malformed body) is recorded as that
symbol's error and its statistic stays missing; it never fails the whole rescan. An IP ban does: every
call would fail, and a universe built from nothing must not replace the current one. One bad row of the 24h
tickers (a negative price) loses only its symbol: the client drops it (counted in ``dropped_rows``, logged) and
the symbol is skipped like one Binance did not list; a dropped kline leaves the ATR one candle short.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Collection
from dataclasses import dataclass
from typing import TypeVar

from tapewatch.adapters.binance_models import Ticker24hr
from tapewatch.adapters.binance_rest import BinanceRest
from tapewatch.errors import IpBanned, TapewatchError
from tapewatch.events import Candle
from tapewatch.settings import Settings
from tapewatch.universe import SymbolStats, tradable_perpetuals
from tapewatch.universe_stats import TickerStats, measure

T = TypeVar("T")

#: Symbols measured at once (the weight budget paces them anyway; this bounds open sockets).
CONCURRENCY = 8


@dataclass(frozen=True, slots=True)
class FetchReport:
    """What a fetch measured and what it cost: the statistics, how many symbols got per-symbol calls,
    how many of those had a failed call, and the request weight reserved."""

    stats: list[SymbolStats]
    fetched: int
    failed: int
    weight: int


async def exchange_symbols(client: BinanceRest) -> list[str]:
    """The perpetual, TRADING, USDT-margined contracts, sorted by name."""
    info, _ = await client.exchange_info()
    return sorted(tradable_perpetuals(info.symbols))


def _ticker(t: Ticker24hr) -> TickerStats:
    return TickerStats(t.symbol, t.quote_volume, t.last_price, t.count)


async def _call(call: Awaitable[T]) -> T | str:
    """The call's result, or its error as text (recorded with the symbol); an IP ban propagates."""
    try:
        return await call
    except IpBanned:
        raise
    except (TapewatchError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


async def _measure_one(client: BinanceRest, t: TickerStats, settings: Settings, full: bool) -> SymbolStats:
    period = settings.universe_atr_period
    depth = await _call(client.depth(t.symbol, settings.universe_depth_limit))
    oi = await _call(client.open_interest(t.symbol))
    candles: list[Candle] | str | None = None
    if full:  # the quick check needs no ATR
        kl = await _call(client.klines(t.symbol, settings.universe_atr_interval, period + 2))
        candles = kl if isinstance(kl, str) else kl[0]
    return measure(
        t,
        depth=depth if isinstance(depth, str) else depth[0],
        candles=candles,
        open_interest=oi if isinstance(oi, str) else oi[0].open_interest,
        atr_period=period,
    )


async def fetch_statistics(
    client: BinanceRest, symbols: Collection[str], settings: Settings, *, full: bool = True
) -> FetchReport:
    """Statistics of every symbol of ``symbols`` (those absent from the 24h tickers are skipped).

    Symbols below ``min_24h_volume`` get only their ticker numbers (they are out anyway). ``full=False``
    (the quick check) skips the klines. Raises IpBanned (nothing can be measured) and FeedError when even
    the 24h tickers cannot be fetched."""
    wanted = set(symbols)
    start_weight = client.budget.stats.weight_reserved
    tickers, _ = await client.ticker_24hr()
    rows = sorted((_ticker(t) for t in tickers if t.symbol in wanted), key=lambda t: t.symbol)
    above = [t for t in rows if t.quote_volume >= settings.min_24h_volume]
    below = [t for t in rows if t.quote_volume < settings.min_24h_volume]
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(t: TickerStats) -> SymbolStats:
        async with gate:
            return await _measure_one(client, t, settings, full)

    measured = list(await asyncio.gather(*(one(t) for t in above)))
    stats = measured + [measure(t, atr_period=settings.universe_atr_period) for t in below]
    return FetchReport(
        stats=sorted(stats, key=lambda s: s.symbol),
        fetched=len(above),
        failed=sum(1 for s in measured if s.errors),
        weight=client.budget.stats.weight_reserved - start_weight,
    )


def failed_share(report: FetchReport) -> float:
    """The share of per-symbol fetches with at least one failed call (0 when none were made)."""
    return report.failed / report.fetched if report.fetched else 0.0
