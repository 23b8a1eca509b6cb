"""Fetch the aggTrades an id gap misses (the market state's :class:`~tapewatch.trade_gaps.TradeFillNeeded`).

The market holds a symbol's later trades while its gap is open; this worker fetches
``/fapi/v1/aggTrades?symbol=S&fromId=F&limit=N`` pages (the backup feed's own page fetch,
:func:`realtime.backup_feed.fetch_trades_page`, through the weight-accounted REST client; ``N`` is the ids
still missing, at most 1000: rows past the gap would only repeat the held trades, and the weight is the same)
until the gap is covered, and hands each page to ``deliver``, which captures it under its ``rest:`` stream name and applies
its frames — so a replay of the capture applies the same rows at the same place in the tape.

Requests are served one at a time, newest per symbol: after a reconnect of many streams the weight budget
paces them, and a request the market no longer needs (filled meanwhile, or given up by trade time) is
skipped before it costs weight. A failed request is counted (``trade_fill_failed``) and not retried: the
market's give-up by trade time then counts the trades as lost, the same way in live and in replay.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

from realtime.backup_feed import Deliver, fetch_trades_page
from realtime.timebase import REAL_TIME, Timebase
from tapewatch.adapters.binance_rest import BinanceRest
from tapewatch.errors import FatalError, RetryableError
from tapewatch.events import AggTrade
from tapewatch.parse import FrameDecoder
from tapewatch.trade_gaps import FILL_MAX_PAGES, FILL_PAGE_SIZE, TradeFillNeeded

log = logging.getLogger(__name__)

#: Pages fetched for one gap at most: the market skips a wider gap instead of asking for it
#: (``MarketConfig.trade_fill_max_ids`` = pages × page size), so a fill always covers its gap.
MAX_FILL_PAGES = FILL_MAX_PAGES

#: ``(symbol, from_id)`` -> whether the market still waits for trades from ``from_id`` on.
StillWanted = Callable[[str, int], bool]


class TradeFiller:
    """Serves fill requests (:meth:`request`) from :meth:`run`, one REST page at a time."""

    def __init__(
        self,
        rest: BinanceRest,
        decoder: FrameDecoder,
        deliver: Deliver,
        *,
        wanted: StillWanted,
        limit: int = FILL_PAGE_SIZE,
        max_pages: int = MAX_FILL_PAGES,
        timebase: Timebase = REAL_TIME,
    ) -> None:
        self.rest = rest
        self.decoder = decoder
        self.counters: Counter[str] = Counter()
        self._deliver = deliver
        self._wanted = wanted
        self._limit = limit
        self._max_pages = max_pages
        self._tb = timebase
        self._queue: dict[str, TradeFillNeeded] = {}  # symbol -> its newest request, in arrival order
        self._ready = asyncio.Event()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def request(self, need: TradeFillNeeded) -> None:
        """Queue a fill (a newer request of the same symbol replaces the older one)."""
        self._queue.pop(need.symbol, None)
        self._queue[need.symbol] = need
        self.counters["requests"] += 1
        self._ready.set()

    def cancel(self, symbol: str) -> None:
        self._queue.pop(symbol, None)

    async def run(self) -> None:
        """Serve requests forever (cancel to stop)."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                symbol = next(iter(self._queue))
                need = self._queue.pop(symbol)
                await self.fill(need)

    async def fill(self, need: TradeFillNeeded) -> None:
        """Fetch and deliver pages from ``need.from_id`` until the gap is covered, the market stops waiting,
        a page comes back short, or ``max_pages`` were fetched. Errors are counted and logged, never raised."""
        from_id = need.from_id
        for _ in range(self._max_pages):
            if not self._wanted(need.symbol, from_id):
                if from_id == need.from_id:
                    self.counters["skipped"] += 1  # filled or given up before its turn: no weight spent
                return
            try:
                limit = min(self._limit, need.to_id - from_id + 1)
                polled, full = await fetch_trades_page(
                    self.rest, self.decoder, need.symbol, from_id, limit, self._tb.wall_ms
                )
            except (RetryableError, FatalError) as exc:
                self.counters["failed"] += 1
                log.warning(
                    "aggTrade fill %s failed (the gap is given up by trade time): %s",
                    need.reason,
                    exc,
                    extra={"symbol": need.symbol, "stream": "aggTrade"},
                )
                return
            self.counters["pages"] += 1
            self.counters["rows"] += len(polled.frames)
            self._deliver(polled)
            last = polled.frames[-1].event if polled.frames else None
            if not full or not isinstance(last, AggTrade):
                return
            from_id = last.agg_id + 1
            if from_id > need.to_id:
                return
        self.counters["page_limit"] += 1

    def metrics(self) -> dict[str, int]:
        c = self.counters
        return {
            "trade_fill_requests": c["requests"],
            "trade_fill_pages": c["pages"],
            "trade_fill_failed": c["failed"],
            "trade_fill_skipped": c["skipped"],
            "trade_fill_waiting": self.waiting,
        }
