"""The feature vector of a symbol at an evaluation, read from its market state (DESIGN §4).

Called by the engine once the cheap required conditions held and the book is synced: the book's top and depth,
the trade window's large trades, the 15m candle features (RSI, divergence, levels, ATR) and the data quality
behind them. Pure: ``now`` is the evaluation's event time.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from tapewatch.book_analytics import book_walls
from tapewatch.book_incidents import BookIncidents
from tapewatch.candle_features import candle_features
from tapewatch.events import Candle
from tapewatch.features import DataQuality, Features, large_trade_sizes
from tapewatch.market import SymbolState
from tapewatch.polled import depth_coverage
from tapewatch.settings import PRIMARY_TF as PRIMARY_TF  # the candles of the context (the setting primary_tf)


def feature_vector(
    st: SymbolState,
    now: int,
    imbalance: float,
    intensity: float | None,
    price: float,
    vwap: float,
    incidents: BookIncidents | None,
) -> Features:
    """The features of ``st`` at event time ``now``, with the values the engine has already read (imbalance,
    intensity, price, VWAP); ``incidents`` gives the book's gaps and resyncs within the trade window (none
    seen: 0). Raises ValueError for an impossible value (see :class:`Features`)."""
    book = st.book
    top = book.top()
    assert top is not None  # the book is synced
    bars: Sequence[Candle] = st.candles[PRIMARY_TF].bars() if PRIMARY_TF in st.candles else []
    cf = candle_features(bars, price) if bars else None
    bid_usd, ask_usd = book.depth_within(0.01)
    coverage = depth_coverage(book, 0.01)  # a polled book knows 50 levels a side: flagged
    buy_sizes, sell_sizes = large_trade_sizes(st.flow)  # kept so tuning can re-count at a larger size
    gaps, resyncs = incidents.counts(now) if incidents is not None else (0, 0)
    return Features(
        symbol=st.symbol,
        event_time=now,
        price=price,
        best_bid=top.bid_price,
        best_ask=top.ask_price,
        imbalance_top10=imbalance,
        large_buys=st.flow.large_buys,
        large_sells=st.flow.large_sells,
        large_buy_sizes=buy_sizes,
        large_sell_sizes=sell_sizes,
        volume_intensity=intensity,
        vwap_1h=vwap,
        rsi9=cf.rsi if cf else None,
        bullish_divergence=(cf.divergence == "bullish") if cf else None,
        bearish_divergence=(cf.divergence == "bearish") if cf else None,
        support=cf.support if cf else None,
        resistance=cf.resistance if cf else None,
        atr_15m=cf.atr if cf else None,
        data_quality=DataQuality(
            book_sync_age_ms=max(0, now - book.synced_at) if book.synced_at else None,
            gaps_in_window=gaps,
            resyncs_in_window=resyncs,
            depth_bid_usd=bid_usd,
            depth_ask_usd=ask_usd,
            book_source=coverage.source,
            depth_levels=coverage.levels,
            depth_truncated=coverage.truncated,
        ),
    )


def with_walls(features: Features, st: SymbolState, depth: int) -> Features:
    """``features`` with the book's walls (spec 6.1 ``detect_large_orders`` over the top ``depth`` levels a side,
    one average for both sides: :func:`tapewatch.book_analytics.book_walls`). Read once per candidate, not per
    evaluation: the engine evaluates on every event, a candidate is stored once per setup."""
    bid_walls, ask_walls = book_walls(st.book.bids.top(depth), st.book.asks.top(depth))
    return msgspec.structs.replace(
        features,
        bid_walls=tuple((w.price, w.qty, round(w.size_multiple, 3)) for w in bid_walls),
        ask_walls=tuple((w.price, w.qty, round(w.size_multiple, 3)) for w in ask_walls),
    )
