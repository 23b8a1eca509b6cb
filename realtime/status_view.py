"""Views of the running service's state: the feed stats of a symbol (what ``publish_feed`` writes), the
plain-text status table of ``tapewatch run --status-every`` and the end-of-run summary."""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from tapewatch.adapters.redis_state import SymbolFeed

if TYPE_CHECKING:
    from realtime.service import FeedService
    from tapewatch.market import SymbolState


def window_covered_s(joined_ms: int | None, now_ms: int, window_ms: int) -> float | None:
    """Seconds of trades the trade window covers at ``now_ms`` (wall clock) for a symbol whose trades are
    counted since ``joined_ms`` (it joined the universe, or the service started): the window, or less while
    it fills; None when the symbol never joined."""
    if joined_ms is None:
        return None
    return round(max(0, min(window_ms, now_ms - joined_ms)) / 1000, 3)


def last_market_event_ms(st: SymbolState) -> int | None:
    """The exchange time of the newest market event received for the symbol, whatever became of it: a depth
    diff (applied, or held while the book waits for a resync snapshot), a polled snapshot, or a trade; None
    before any.

    Not the book's own last event time: a book waiting for a snapshot (REST depth failing, a ban, the growing
    retry delay) holds its diffs unapplied, so its time stops while the symbol trades on, and the emergency
    sensor would read the wait as "no event, $0 volume" and exclude a busy symbol."""
    newest = max(st.last_event_time, st.book.last_event_time, st.flow.last_time)
    return newest or None


def symbol_feed(service: FeedService, symbol: str, now_ms: int | None = None) -> SymbolFeed:
    """The symbol's feed stats as published (book figures None while the book is not usable; ``last_event_ms``
    the newest market event of any kind, see :func:`last_market_event_ms`); the
    liquidity figures are computed here, once per publish, not per message. ``now_ms``: the wall clock
    (default: read now), against which the seconds the trade window covers are measured."""
    wall_ms = int(time.time() * 1000) if now_ms is None else now_ms
    st = service.market.state(symbol)
    book = st.book
    health = book.health(service.market.now_ms, service.market.config.stale_after_ms)
    usable = health.state == "synced"
    top = book.top() if usable else None
    spread = depth = None
    if top is not None:
        mid = (top.bid_price + top.ask_price) / 2
        spread = round((top.ask_price - top.bid_price) / mid, 9)
        depth = round(sum(book.depth_within(0.01)), 2)
    counts = service.engine.per_symbol.get(symbol)
    not_evaluated = counts.not_evaluated if counts is not None else Counter[str]()
    quiet_ms = service.quiet.quiet.get(symbol)
    return SymbolFeed(
        state=str(health.state),
        update_id=book.last_update_id or None,
        best_bid=top.bid_price if top else None,
        best_ask=top.ask_price if top else None,
        imbalance_top10=round(book.imbalance(10), 6) if usable else None,
        last_event_ms=last_market_event_ms(st),
        lag_ms=service.lag_ms.get(symbol),
        messages=book.applied,
        gaps=book.gaps,
        resyncs=book.resyncs,
        book_checks=st.check.checks,
        book_mismatches=st.check.mismatches,
        spread=spread,
        depth_1pct_usd=depth,
        quote_volume_window=round(st.flow.quote_volume, 2) if len(st.flow) else None,
        window_covered_s=window_covered_s(service.joined_ms(symbol), wall_ms, st.flow.window_ms),
        last_price=st.flow.last_price,
        evaluations=counts.evaluations if counts is not None else 0,
        not_evaluated=sum(not_evaluated.values()),
        not_evaluated_reason=not_evaluated.most_common(1)[0][0] if not_evaluated else None,
        quiet_s=quiet_ms / 1000 if quiet_ms is not None else None,
        shard=service.shard.label,
    )


#: Symbols shown in the live table; the rest are counted in one line (the dashboard's Live page shows any
#: symbol's book in its symbol panel; ``tapewatch status`` counts every symbol's feed state).
TABLE_SYMBOLS = 12


def status_table(service: FeedService, limit: int = TABLE_SYMBOLS) -> str:
    """A plain-text table of the live book and flow state of the first ``limit`` symbols of the universe,
    then ``… and N more`` when there are more, then the service's totals."""
    rows = [
        f"{'symbol':<12}{'book':<11}{'bid':>14}{'ask':>14}{'imb10':>8}{'LB5m':>6}{'LS5m':>6}"
        f"{'qvol5m $':>14}{'vwap1h':>14}{'gaps':>6}{'resync':>7}{'checks':>8}{'bad':>5}"
    ]
    for symbol in service.universe[:limit]:
        f = symbol_feed(service, symbol)
        st = service.market.state(symbol)
        vwap = st.vwap.vwap
        rows.append(
            f"{symbol:<12}{f.state:<11}{_num(f.best_bid):>14}{_num(f.best_ask):>14}"
            f"{_num(f.imbalance_top10, 3):>8}{st.flow.large_buys:>6}{st.flow.large_sells:>6}"
            f"{st.flow.quote_volume:>14,.0f}{_num(vwap):>14}{f.gaps:>6}{f.resyncs:>7}"
            f"{f.book_checks:>8}{f.book_mismatches:>5}"
        )
    hidden = len(service.universe) - limit
    if hidden > 0:
        rows.append(
            f"… and {hidden} more symbol{'s' if hidden > 1 else ''} "
            "(any symbol: the dashboard's Live page; feed states of all: tapewatch status)"
        )
    m = service.metrics()
    rows.append(
        f"messages {m['messages']:,}  synced {m['synced']}/{m['symbols']}  retained {m['retained_symbols']}  "
        f"malformed {m['malformed']}  "
        f"gaps {m['gaps']}  resyncs {m['resyncs']}  reconnects {m['reconnects']}  "
        f"book checks {m['book_checks']:,} (mismatches {m['book_mismatches']})"
    )
    return "\n".join(rows)


def _num(value: float | None, digits: int = 6) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}"


def summary(service: FeedService) -> dict[str, Any]:
    """End-of-run summary (same keys as replay where they mean the same)."""
    return {**service.metrics(), "rejected": dict(service.decoder.rejected)}
