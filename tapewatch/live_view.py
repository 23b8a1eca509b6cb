"""What the dashboard sees of the running service, computed from plain values (pure: "now" is a parameter).

- :func:`open_signal_view`: an open ENTRY signal as one JSON object (the spec 8.2 fields plus its live
  outcome: ``state``, ``realised_r``, ``unrealised_r``, ``last_price`` ...);
- :func:`unrealised_r`: the open share of a position marked at a price, in R after both sides' taker fees;
- :func:`percentile` over a small ring of recent values (event→signal latency, loop lag);
- :func:`live_features`: the values a symbol was last evaluated on, with the required conditions they meet;
- :func:`quiet_symbols`: the symbols that went silent while the others still flow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tapewatch.book_analytics import book_levels_view
from tapewatch.engine import SignalEngine
from tapewatch.outcome import Outcome, OutcomeState
from tapewatch.signal import Signal, published_fields
from tapewatch.trade_plan import net_per_unit


def open_share(outcome: Outcome) -> float:
    """The share of the position still open: 1 until a target or the stop closes part of it."""
    closed = sum(event.closed_share for event in outcome.events)
    return max(0.0, 1.0 - closed)


def unrealised_r(outcome: Outcome, price: float | None, taker_fee: float) -> float:
    """The open share of a triggered position marked at ``price``, in R (the stop distance at creation), after
    the taker fee of both sides — what closing it now would add to ``pnl_r``. 0 while waiting, once finished,
    or without a usable price."""
    sig = outcome.signal
    if (
        outcome.state is OutcomeState.WAITING
        or outcome.finished
        or price is None
        or not math.isfinite(price)
        or price <= 0
    ):
        return 0.0
    per_unit = net_per_unit(sig.sign, sig.entry, price, taker_fee)
    return open_share(outcome) * per_unit / sig.risk


def open_signal_view(
    signal: Signal, outcome: Outcome, price: float | None, taker_fee: float, now_ms: int
) -> dict[str, Any]:
    """The JSON object of ``Keyspace.open_signals`` for one open signal: every field of ``signal`` plus
    ``state``, ``realised_r`` (closed shares, after fees), ``unrealised_r`` (the open share at ``price``),
    ``last_price``, ``trigger_time``, ``mfe_r``, ``mae_r``, ``as_of`` (event time of the outcome) and
    ``updated_ms`` (``now_ms``, wall clock)."""
    view = published_fields(signal)
    mark = price if price is not None else outcome.last_price
    view.update(
        state=str(outcome.state),
        realised_r=round(outcome.pnl_r, 6),
        unrealised_r=round(unrealised_r(outcome, mark, taker_fee), 6),
        last_price=mark,
        trigger_time=outcome.trigger_time,
        mfe_r=round(outcome.mfe_r, 6),
        mae_r=round(outcome.mae_r, 6),
        as_of=outcome.as_of,
        updated_ms=now_ms,
    )
    return view


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100, nearest rank) of ``values``; None when there are none."""
    if not 0 <= q <= 100:
        raise ValueError(f"a percentile is within 0..100; got {q}")
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def quiet_symbols(
    last_seen: Mapping[str, int],
    symbols: Sequence[str],
    now_ms: int,
    quiet_after_ms: int,
    joined: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Symbols silent for more than ``quiet_after_ms`` while the market as a whole still flows: symbol → ms
    since its last event, or since it joined the universe (``joined``) when that is later.

    When every symbol is silent the feed is down, not a symbol quiet: that is the transport's incident, so
    nothing is returned."""
    newest = max((last_seen.get(s, 0) for s in symbols), default=0)
    if not newest or now_ms - newest > quiet_after_ms:
        return {}
    quiet: dict[str, int] = {}
    for symbol in symbols:
        silent = now_ms - max(last_seen.get(symbol, 0), joined.get(symbol, 0) if joined else 0)
        if silent > quiet_after_ms:
            quiet[symbol] = silent
    return quiet


def live_features(engine: SignalEngine, symbol: str) -> tuple[int, dict[str, Any]] | None:
    """(event time of the symbol's last evaluation, the values it is judged on now and the spec 7.1 required
    conditions they meet); None before its first evaluation. Book values are None unless the book is usable;
    they include its top ``orderbook_depth`` levels a side and their walls (:func:`book_levels_view`).

    Cheap (no candle features): the live view of the engine's quick test, not the full candidate vector."""
    counts = engine.per_symbol.get(symbol)
    st = engine.market.symbols.get(symbol)
    if counts is None or st is None:
        return None
    s = engine.settings
    config = engine.market.config
    book, flow = st.book, st.flow
    health = book.health(engine.market.now_ms, config.stale_after_ms)
    usable = health.state == "synced"
    top = book.top() if usable else None
    imbalance = book.imbalance(config.imbalance_levels) if usable else None
    price, vwap = flow.last_price, st.vwap.vwap
    intensity = engine.intensity(st)
    bid_usd, ask_usd = book.depth_within(0.01) if usable else (None, None)
    levels: dict[str, Any] = (
        book_levels_view(book.bids.top(s.orderbook_depth), book.asks.top(s.orderbook_depth))
        if usable
        else dict.fromkeys(("bids", "asks", "bid_walls", "ask_walls"))
    )
    # the 15m context: none yet, or its newest closed bar too old to judge on (the engine skips the symbol)
    now = engine.market.now_ms
    context = "none" if intensity is None else "stale" if engine.context_stale(st, now) else "fresh"
    volume_ok = context == "fresh" and intensity is not None and intensity > s.volume_confirmation_multiplier
    above = price is not None and vwap is not None and price > vwap
    below = price is not None and vwap is not None and price < vwap
    threshold = s.orderbook_imbalance_threshold
    trades = engine.trades_state(st, now)
    fresh = trades == "fresh"  # the engine judges no setup on stale or held-back trades
    features: dict[str, Any] = {
        "price": price,
        "vwap_1h": vwap,
        "vwap_window": s.context_tf,  # the VWAP's rolling window (context_tf; the key keeps its 1h name)
        "large_buys": flow.large_buys,
        "large_sells": flow.large_sells,
        "quote_volume_window": round(flow.quote_volume, 2),
        "volume_intensity": None if intensity is None else round(intensity, 6),
        "imbalance_top10": None if imbalance is None else round(imbalance, 6),
        "best_bid": top.bid_price if top else None,
        "best_ask": top.ask_price if top else None,
        "depth_bid_usd": None if bid_usd is None else round(bid_usd, 2),
        "depth_ask_usd": None if ask_usd is None else round(ask_usd, 2),
        "book": str(health.state),
        **levels,
        "trades": trades,
        "context": context,
        "long_required": bool(
            fresh
            and flow.large_buys >= s.min_large_trades
            and above
            and volume_ok
            and imbalance is not None
            and imbalance > threshold
        ),
        "short_required": bool(
            fresh
            and flow.large_sells >= s.min_large_trades
            and below
            and volume_ok
            and imbalance is not None
            and imbalance < -threshold
        ),
        "evaluations": counts.evaluations,
        "not_evaluated": dict(counts.not_evaluated),
    }
    return counts.last_evaluated, features
