"""Universe selection (spec 4) as Dagster assets: exchange symbols → per-symbol statistics → scores → universe.

Bodies are short: the fetching is :mod:`tapewatch.adapters.universe_fetch`, the scoring and selection
:func:`tapewatch.universe.select_universe`, the history :mod:`tapewatch.adapters.universe_store`. The
``universe`` asset stores the rescan as a new version in PostgreSQL and hands it to the realtime service
through the Redis control key (``RedisState.set_universe``).
"""

import time
from typing import Any

import dagster as dg

from orchestration.resources import BinanceRestResource, DatabaseResource, RedisResource, TapewatchSettings
from tapewatch.adapters.universe_fetch import exchange_symbols as fetch_exchange_symbols
from tapewatch.adapters.universe_fetch import failed_share, fetch_statistics
from tapewatch.adapters.universe_store import live_spreads, publish_current, save_rescan
from tapewatch.errors import StorageUnavailable
from tapewatch.settings import Settings
from tapewatch.universe import (
    Selection,
    SymbolStats,
    fixed_selection,
    minimums_from,
    references_from,
    select_universe,
    weights_from,
)
from tapewatch.universe_checks import confirm_spreads

GROUP = "universe"
#: More failed per-symbol fetches than this share and the rescan stops: the universe stays as it is.
MAX_FAILED_SHARE = 0.5


@dg.asset(group_name=GROUP, compute_kind="binance")
def exchange_symbols(
    context: dg.AssetExecutionContext, settings: TapewatchSettings, binance: BinanceRestResource
) -> list[str]:
    """Binance USD-M contracts that are perpetual, TRADING and USDT-margined (``exchangeInfo``)."""
    symbols = binance.run(fetch_exchange_symbols, settings.settings())
    context.add_output_metadata({"symbols": len(symbols)})
    return symbols


@dg.asset(group_name=GROUP, compute_kind="binance")
def symbol_statistics(
    context: dg.AssetExecutionContext,
    settings: TapewatchSettings,
    binance: BinanceRestResource,
    exchange_symbols: list[str],
) -> list[SymbolStats]:
    """Per symbol: 24h quote volume, open interest in USD, spread and depth within 1 % of mid, ATR/price,
    trades per second. Symbols below the volume minimum get only their ticker numbers (no extra calls), but
    for those of a fixed universe (``symbols``); a symbol the 24h tickers lack has every statistic missing."""
    config = settings.settings()
    report = binance.run(
        # a fixed universe's symbols are measured in full even below the volume minimum: their scores are kept
        lambda client: fetch_statistics(client, exchange_symbols, config, always=config.symbols),
        config,
    )
    if failed_share(report) > MAX_FAILED_SHARE:
        first = "; ".join(f"{s.symbol}: {s.errors[0]}" for s in report.stats if s.errors)[:2000]
        raise dg.Failure(
            f"REST calls failed for {report.failed} of {report.fetched} symbols; the universe is left as it is. "
            f"First errors: {first[:600]}",
            metadata={"first errors": first},
        )
    context.add_output_metadata(
        {
            "symbols": len(report.stats),
            "measured (above the volume minimum)": report.fetched,
            "with a failed call": report.failed,
            "without a 24h ticker (missing_statistic)": dg.MetadataValue.json(list(report.no_ticker)),
            "request weight": report.weight,
        }
    )
    return report.stats


def _params(config: Settings) -> dict[str, Any]:
    w, r, m = weights_from(config), references_from(config), minimums_from(config)
    return {
        "universe_size": config.universe_size,
        "fixed": list(config.symbols),
        "minimums": {k: getattr(m, k) for k in m.__slots__},
        "weights": {k: getattr(w, k) for k in w.__slots__},
        "references": {k: getattr(r, k) for k in r.__slots__},
        "atr": f"ATR({config.universe_atr_period}) on {config.universe_atr_interval}",
    }


def _table(selection: Selection, limit: int = 40) -> str:
    lines = ["| rank | symbol | score | reason |", "|---:|---|---:|---|"]
    for d in selection.decisions[:limit]:
        score = "" if d.score is None else f"{d.score:.1f}"
        lines.append(f"| {d.rank or ''} | {d.symbol} | {score} | {d.detail} |")
    return "\n".join(lines)


def _live_spreads(
    context: dg.AssetExecutionContext, redis: RedisResource, config: Settings
) -> dict[str, float]:
    """The fresh live spreads the realtime service publishes ({} when Redis is down: the snapshots stand)."""
    try:
        with redis.open() as state:
            return live_spreads(state, int(time.time() * 1000), config.universe_live_stale_after)
    except StorageUnavailable as exc:
        context.log.warning(f"no live spreads ({exc}): every spread is the REST snapshot's")
        return {}


@dg.asset(group_name=GROUP, compute_kind="python")
def symbol_scores(
    context: dg.AssetExecutionContext,
    settings: TapewatchSettings,
    redis: RedisResource,
    symbol_statistics: list[SymbolStats],
) -> Selection:
    """Spec 4.1 score of every symbol, the minimums, the rank, and the reason each one is in or out.

    A REST snapshot spread above the maximum is one moment: where the realtime service publishes a fresh live
    spread for the symbol within the maximum, that one counts (as in the quick check); elsewhere the snapshot
    does. With a fixed universe (``symbols``, TAPEWATCH_SYMBOLS) exactly its tradable symbols are selected,
    in its order, and every symbol keeps its score (:func:`~tapewatch.universe.fixed_selection`)."""
    config = settings.settings()
    stats, overruled = confirm_spreads(
        symbol_statistics, _live_spreads(context, redis, config), config.max_spread
    )
    selection = select_universe(
        stats,
        config.universe_size,
        minimums_from(config),
        weights_from(config),
        references_from(config),
    )
    if config.symbols:
        selection = fixed_selection(selection, config.symbols)
    if overruled:
        context.log.info(
            f"snapshot spread above the maximum overruled by the live spread: {', '.join(overruled)}"
        )
    context.add_output_metadata(
        {
            "selected": len(selection.symbols),
            "fixed universe (TAPEWATCH_SYMBOLS)": dg.MetadataValue.json(list(config.symbols)),
            "snapshot spread overruled by the live spread": dg.MetadataValue.json(list(overruled)),
            "reasons": dg.MetadataValue.json(selection.reasons()),
            "ranking": dg.MetadataValue.md(_table(selection)),
        }
    )
    return selection


@dg.asset(group_name=GROUP, compute_kind="postgres")
def universe(
    context: dg.AssetExecutionContext,
    settings: TapewatchSettings,
    database: DatabaseResource,
    redis: RedisResource,
    symbol_scores: Selection,
) -> list[str]:
    """The universe: stored as a new version in PostgreSQL and published to the realtime service.

    An empty selection is refused (the run fails, nothing changes): watching nothing is never what an
    operator wants from a rescan; the scores asset's metadata shows why every symbol was out."""
    if not symbol_scores.symbols:
        raise dg.Failure(
            "no symbol passed the minimums; the universe is left as it is",
            metadata={"reasons": dg.MetadataValue.json(symbol_scores.reasons())},
        )
    with database.open() as db, redis.open() as state:
        rescan = save_rescan(
            db, symbol_scores.decisions, run_id=context.run.run_id, params=_params(settings.settings())
        )
        published = publish_current(db, state, source="universe_rescan")
    if published is not None and published.rescan_id != rescan.rescan_id:
        context.log.warning(
            f"a newer universe version ({published.rescan_id}) was stored meanwhile: published it"
        )
    context.add_output_metadata(
        {
            "rescan_id": rescan.rescan_id,
            "symbols": dg.MetadataValue.json(list(rescan.symbols)),
            "added": dg.MetadataValue.json(list(rescan.added)),
            "removed": dg.MetadataValue.json(list(rescan.removed)),
        }
    )
    return list(rescan.symbols)


UNIVERSE_ASSETS = [exchange_symbols, symbol_statistics, symbol_scores, universe]
