"""Fetch what a universe rescan needs from Binance USD-M REST (or the simulator), within the weight budget.

Cost, per rescan: exchangeInfo (1) + all 24h tickers (40), then only for the symbols whose 24h volume
reaches ``min_24h_volume`` (the prefilter: a symbol below it is out whatever its other numbers) a depth
snapshot (``universe_depth_limit`` levels: 10 for 500), klines (``universe_atr_period`` + 2 candles: 1) and
open interest (1). 100 liquid symbols ≈ 1 240 weight: well inside one minute of the 1 920 we allow
ourselves; a larger market simply waits for the budget (the client paces every call).

A failed call (5xx after retries, timeout, -1121 invalid symbol, a malformed body) is recorded as that
symbol's error and its statistic stays missing; it never fails the whole rescan. An IP ban does: every
call would fail, and a universe built from nothing must not replace the current one. One bad row of the 24h
tickers (a negative price) loses only its symbol's ticker: the client drops it (counted in ``dropped_rows``,
logged). A symbol without a 24h ticker row (a new listing, a dropped bad row) is kept with every statistic
missing and the reason in its ``errors``: the rescan records it out as ``missing_statistic`` (the quick check
keeps it as unknown) instead of losing it without a word. A dropped kline leaves the ATR one candle short.
"""

from __future__ import annotations

import asyncio
import logging
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

log = logging.getLogger(__name__)

#: Symbols measured at once (the weight budget paces them anyway; this bounds open sockets).
CONCURRENCY = 8


@dataclass(frozen=True, slots=True)
class FetchReport:
    """What a fetch measured and what it cost: the statistics, how many symbols got per-symbol calls,
    how many of those had a failed call, the request weight reserved, and the symbols the 24h tickers had no
    row for (in ``stats`` with every statistic missing)."""

    stats: list[SymbolStats]
    fetched: int
    failed: int
    weight: int
    no_ticker: tuple[str, ...] = ()


#: The error recorded for a symbol the 24h tickers have no (valid) row for.
NO_TICKER = "24h ticker: no row for the symbol (not listed in /fapi/v1/ticker/24hr, or its row was invalid)"


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
    client: BinanceRest,
    symbols: Collection[str],
    settings: Settings,
    *,
    full: bool = True,
    always: Collection[str] = (),
) -> FetchReport:
    """Statistics of every symbol of ``symbols``; one the 24h tickers have no row for gets every statistic
    missing and :data:`NO_TICKER` in its ``errors`` (``missing_statistic`` in a rescan, never dropped unseen).

    Symbols below ``min_24h_volume`` get only their ticker numbers (they are out anyway), except those of
    ``always`` (a fixed universe: measured in full, so their scores are recorded). ``full=False`` (the quick
    check) skips the klines. Raises IpBanned (nothing can be measured) and FeedError when even the 24h tickers
    cannot be fetched."""
    wanted = set(symbols)
    start_weight = client.budget.stats.weight_reserved
    tickers, _ = await client.ticker_24hr()
    rows = sorted((_ticker(t) for t in tickers if t.symbol in wanted), key=lambda t: t.symbol)
    forced = set(always)
    above = [t for t in rows if t.quote_volume >= settings.min_24h_volume or t.symbol in forced]
    below = [t for t in rows if t.quote_volume < settings.min_24h_volume and t.symbol not in forced]
    no_ticker = tuple(sorted(wanted - {t.symbol for t in rows}))
    if no_ticker:
        log.warning(
            "universe: no 24h ticker row for %d symbols (recorded as missing_statistic): %s",
            len(no_ticker),
            ", ".join(no_ticker[:20]) + (" ..." if len(no_ticker) > 20 else ""),
        )
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(t: TickerStats) -> SymbolStats:
        async with gate:
            return await _measure_one(client, t, settings, full)

    measured = list(await asyncio.gather(*(one(t) for t in above)))
    stats = (
        measured
        + [measure(t, atr_period=settings.universe_atr_period) for t in below]
        + [SymbolStats(symbol, errors=(NO_TICKER,)) for symbol in no_ticker]
    )
    return FetchReport(
        stats=sorted(stats, key=lambda s: s.symbol),
        fetched=len(above),
        failed=sum(1 for s in measured if s.errors),
        weight=client.budget.stats.weight_reserved - start_weight,
        no_ticker=no_ticker,
    )


def failed_share(report: FetchReport) -> float:
    """The share of symbols that could not be measured: per-symbol fetches with at least one failed call, and
    symbols without a 24h ticker row, among both (0 when there were none). A ticker answer that lost most of
    its rows must stop a rescan as surely as failing calls do."""
    attempted = report.fetched + len(report.no_ticker)
    return (report.failed + len(report.no_ticker)) / attempted if attempted else 0.0
