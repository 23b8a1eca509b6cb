"""Scale-out: each shard publishes its symbols' closed 1m closes to Redis, for the other shards' correlation.

The correlation rule compares a candidate with every open signal in the same direction, across shards
(:class:`tapewatch.adapters.risk_ledger.RiskLedger`). A shard holds candles only for its own symbols, so each
shard writes ``Keyspace.closes(symbol)`` — the last :data:`CLOSES_KEPT` closed 1m closes of each of its
symbols — whenever a symbol closes a new 1m candle (about once a minute live), and reads another shard's
symbol from there (:meth:`tapewatch.adapters.redis_state.RedisState.closes`). The keys expire, so a dead
shard's closes vanish and its symbols' correlation becomes unknown, which never rejects.
"""

from __future__ import annotations

from collections.abc import Iterable

from tapewatch.adapters.redis_state import AsyncRedisState
from tapewatch.market import Market

#: 241 closes give the 240 one-minute returns of the correlation window.
CLOSES_KEPT = 241
INTERVAL = "1m"


class ClosesPublisher:
    """Publishes the symbols whose last closed 1m candle changed since their last publication."""

    def __init__(self, redis: AsyncRedisState, market: Market, *, ttl_s: float = 300.0) -> None:
        self.redis = redis
        self.market = market
        self.ttl_s = ttl_s
        self.published = 0  # symbol publications so far
        # symbol -> (open time of the last close published, the series' revision then)
        self._last: dict[str, tuple[int, int]] = {}
        self._due_revisions: dict[str, int] = {}

    def due(self, symbols: Iterable[str]) -> dict[str, list[tuple[int, float]]]:
        """The closes to publish now: symbols of ``symbols`` with a closed 1m candle not published yet."""
        out: dict[str, list[tuple[int, float]]] = {}
        for symbol in symbols:
            st = self.market.symbols.get(symbol)
            series = st.candles.get(INTERVAL) if st is not None else None
            if series is None or not series.closed:
                continue
            if (series.closed[-1].open_time, series.revision) == self._last.get(symbol):
                continue  # nothing new, and no bar replaced in place (a refill, a confirmation)
            bars = list(series.closed)[-CLOSES_KEPT:]
            out[symbol] = [(c.open_time, c.close) for c in bars]
            self._due_revisions[symbol] = series.revision
        return out

    async def publish(self, symbols: Iterable[str]) -> int:
        """Write what :meth:`due` finds; returns how many symbols were written. Raises StorageUnavailable
        (nothing is marked published then: the next call tries them again)."""
        due = self.due(symbols)
        if not due:
            return 0
        await self.redis.publish_closes(due, ttl_s=self.ttl_s)
        for symbol, bars in due.items():
            self._last[symbol] = (bars[-1][0], self._due_revisions.pop(symbol, 0))
        self.published += len(due)
        return len(due)
