"""Candles per interval from kline events (and REST klines): the closed history plus the forming bar."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import msgspec

from tapewatch.events import Candle


class CandleSeries:
    """Closed candles of one symbol and interval (at most ``keep``), plus the forming one.

    Updates for an older bar than the latest are ignored (counted in ``stale_updates``); a bar that closes
    is appended once even if its closing kline is received twice.

    A bar's closing kline (``x`` true) comes on one frame only, so a reconnect across a bar boundary loses it,
    and a long disconnect loses whole bars. Both are found here, when a bar opens later than the next one
    expected (``holes`` counts them), and the bars between are kept in ``missing`` (first and last open time)
    for a REST refill (:class:`tapewatch.market.KlineFillNeeded`), applied by :meth:`extend_history`:

    - the forming bar that never closed is closed *provisionally* from its last update (``provisional``: their
      open times), with ``closed`` true, as every consumer wants it: ATR and the volume context read closed
      bars only, RSI and the swings read their closes in order, the correlation aligns closes by open time. Its
      last update is the best estimate there is (Binance sends one every 250 ms, so after a reconnect at the
      boundary it is within a second of the close); left out, the bar would be missing from all of them, and
      the 1m return across it would span two minutes. A closed kline for it (a backup-feed poll, a REST
      refill) replaces it;
    - bars never seen at all are left out until the refill brings them (nothing to estimate them from).

    ``asked``: (time asked, last open time asked) of the refill in flight, and ``holes_seen``: the holes
    counted so far, are the market state's bookkeeping (:meth:`tapewatch.market.Market.kline_fill`).

    ``revision`` grows whenever a closed bar changes in place or bars are inserted (a confirmation, a refill,
    the history): with the newest closed bar's open time, it tells a reader caching something derived from the
    closed bars (the volume context, the published closes) that it is stale.
    """

    __slots__ = (
        "asked",
        "bars_filled",
        "closed",
        "forming",
        "holes",
        "holes_seen",
        "missing",
        "provisional",
        "revision",
        "stale_updates",
    )

    def __init__(self, keep: int) -> None:
        self.closed: deque[Candle] = deque(maxlen=keep)
        self.forming: Candle | None = None
        self.stale_updates = 0
        self.provisional: set[int] = set()
        self.missing: tuple[int, int] | None = None
        self.holes = 0
        self.bars_filled = 0  # provisional bars replaced by closed ones, missing bars brought by a refill
        self.asked: tuple[int, int] | None = None
        self.holes_seen = 0
        self.revision = 0

    @property
    def last_open_time(self) -> int:
        if self.forming is not None:
            return self.forming.open_time
        return self.closed[-1].open_time if self.closed else -1

    def update(self, candle: Candle) -> bool:
        """Apply a kline; returns True when it closed a bar (a provisional one included)."""
        forming, closed, open_time = self.forming, self.closed, candle.open_time
        # last_open_time inlined: one kline in six of a whole-market replay lands here
        last_open = forming.open_time if forming is not None else (closed[-1].open_time if closed else -1)
        if open_time < last_open or (closed and open_time <= closed[-1].open_time):
            if self.provisional and candle.closed and open_time in self.provisional:
                return self._confirm(candle)
            self.stale_updates += 1
            return False
        if forming is not None:
            if open_time != forming.open_time:  # the forming bar's closing kline was lost
                self._close_provisionally(forming, open_time)
        elif closed and open_time > closed[-1].close_time + 1:  # whole bars lost after the last closed one
            self._hole(closed[-1].close_time + 1, open_time - 1)
        if candle.closed:
            self.closed.append(candle)
            self.forming = None
            return True
        self.forming = candle
        return False

    def _close_provisionally(self, forming: Candle, next_open: int) -> None:
        self.closed.append(msgspec.structs.replace(forming, closed=True))
        self.provisional.add(forming.open_time)
        self.forming = None
        self._hole(forming.open_time, next_open - 1)

    def _hole(self, first: int, last: int) -> None:
        """Bars opening within ``first..last`` (ms) are missing or provisional: one more hole to refill."""
        self.holes += 1
        if self.missing is not None:
            first, last = min(first, self.missing[0]), max(last, self.missing[1])
        self.missing = (first, last)
        oldest = self.closed[0].open_time if self.closed else first
        if self.provisional and min(self.provisional) < oldest:  # fell out of the kept bars
            self.provisional = {t for t in self.provisional if t >= oldest}

    def _confirm(self, candle: Candle) -> bool:
        """A closed kline for a provisionally closed bar: it takes the bar's place."""
        closed = self.closed
        for i in range(len(closed) - 1, -1, -1):
            if closed[i].open_time == candle.open_time:
                closed[i] = candle
                break
        self.provisional.discard(candle.open_time)
        self.bars_filled += 1
        self.revision += 1
        return True

    def extend_history(self, candles: Iterable[Candle]) -> int:
        """Fill with REST klines (oldest first): closed bars older than the forming one that are not held are
        added in their place (the history at start, a refill of ``missing``), a provisional bar is replaced;
        bars already closed are kept as they are. A bar that closes before the newest one the stream opened
        counts as closed even when the answer marked it forming (its ``closed`` flag comes from the REST
        client's clock, which may run behind the exchange's). Returns how many bars were added or replaced; ``missing``
        is narrowed to what is still missing (None when nothing is)."""
        closed, forming = self.closed, self.forming
        before = forming.open_time if forming is not None else None
        held = {c.open_time for c in closed}
        # A bar closing before the newest bar the stream opened is closed on the exchange, whatever the REST
        # client's clock made of it (a refill's single row looks forming to a clock behind the exchange's).
        newest = self.last_open_time
        news = [
            c if c.closed else msgspec.structs.replace(c, closed=True)
            for c in candles
            if (c.closed or c.close_time < newest)
            and (before is None or c.open_time < before)
            and (c.open_time not in held or c.open_time in self.provisional)
        ]
        if not news:
            return 0
        missing = self.missing
        filled = sum(
            1
            for c in news
            if c.open_time in self.provisional
            or (missing is not None and missing[0] <= c.open_time <= missing[1])
        )
        if not closed or news[0].open_time > closed[-1].open_time:
            closed.extend(news)  # the common case: history older than nothing held, or newer than all of it
        else:
            merged = {c.open_time: c for c in closed}
            merged.update((c.open_time, c) for c in news)
            bars = [merged[t] for t in sorted(merged)]
            closed.clear()
            closed.extend(bars)
        self.provisional.difference_update(c.open_time for c in news)
        self.bars_filled += filled
        self.revision += 1
        if missing is not None:
            self.missing = self._still_missing(*missing)
        return len(news)

    def _still_missing(self, first: int, last: int) -> tuple[int, int] | None:
        """The part of ``first..last`` from its first provisional or absent bar on (None when all are held)."""
        after: int | None = None  # where the bar after the previous one held opens
        for c in self.bars():
            if after is not None and after < c.open_time and after <= last and c.open_time > first:
                return max(after, first), last  # absent bars between the previous one and c
            if c.open_time > last:
                return None
            if c.open_time >= first and c.open_time in self.provisional:
                return c.open_time, last
            after = c.close_time + 1
        if after is not None and after <= last:  # bars after the last one held (no forming bar yet)
            return max(after, first), last
        return None

    def bars(self, include_forming: bool = True) -> list[Candle]:
        bars = list(self.closed)
        if include_forming and self.forming is not None:
            bars.append(self.forming)
        return bars
