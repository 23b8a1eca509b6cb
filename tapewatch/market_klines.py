"""The candle side of the market state: kline frames and REST kline history into a symbol's candle series,
and the refills a candle hole needs.

A mixin of :class:`tapewatch.market.Market` (kept apart to keep that module small). A bar the stream lost, or
one that closed unseen, leaves a hole in the series (:class:`~tapewatch.candles.CandleSeries`): the market
returns a :class:`KlineFillNeeded` and the caller fetches the bars from REST; the answer, captured, is applied
as history (``Kind.KLINES``), so a replay takes the same decisions.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, NamedTuple

from tapewatch.candles import CandleSeries
from tapewatch.events import Kline, KlineHistory
from tapewatch.market_clock import MarketClock

if TYPE_CHECKING:
    from tapewatch.market import MarketConfig, SymbolState

log = logging.getLogger("tapewatch.market")  # the market's logger: its lines keep the name they always had

#: 1-minute candles kept for the 240-minute return correlation (plus margin for gaps).
RETURNS_HISTORY_BARS = 261
#: Exchange time (ms) a kline refill may go unanswered before it is asked again (counted ``kline_fill_failed``):
#: the service paces refills (a reconnect of the whole market asks for two per symbol), so it waits long.
KLINE_FILL_TIMEOUT_MS = 600_000


def history_klines(kline_history_bars: int) -> tuple[tuple[str, int], ...]:
    """(interval, limit) of the REST kline history a symbol needs at start: the 15m context of
    ``kline_history_bars`` closed candles (one more for the forming one) and four hours of 1m candles."""
    return (("15m", kline_history_bars + 1), ("1m", RETURNS_HISTORY_BARS))


class KlineFillNeeded(NamedTuple):
    """The candle series of ``symbol`` and ``interval`` misses the bars opening from ``start`` to ``end`` (ms,
    both included: a ``startTime``/``endTime`` REST klines request) or holds them only provisionally
    (:class:`~tapewatch.candles.CandleSeries`). The answer, captured, is applied as history (``Kind.KLINES``)."""

    symbol: str
    interval: str
    start: int
    end: int
    bars: int  # the most bars the range holds: the request's limit


class MarketKlines(MarketClock):
    """The kline handlers and candle-hole refills of :class:`~tapewatch.market.Market`. A bar opening beyond the
    tolerance of the exchange's clock (:mod:`tapewatch.market_clock`) is rejected (counted ``kline_ahead``)."""

    config: MarketConfig
    counters: Counter[str]

    def _on_kline(self, st: SymbolState, ev: Kline) -> KlineFillNeeded | None:
        candle = ev.candle
        if candle.open_time > self.ahead_ms and self._kline_ahead(st, candle.open_time):
            return None
        series = st.candles.get(candle.interval) or self.series(st, candle.interval)
        series.update(candle)
        return self.kline_updated(st, series, candle.interval, ev.event_time)

    def kline_updated(
        self, st: SymbolState, series: CandleSeries, interval: str, event_time: int
    ) -> KlineFillNeeded | None:
        """After a kline of ``event_time`` went into ``series``: the refill of the hole it left, if any (asked at
        the later of the clock and the frame's time). The native replay path calls it too."""
        if series.missing is None:
            return None
        return self.kline_fill(st, series, interval, max(self.now_ms, event_time))

    def _on_kline_history(self, st: SymbolState, ev: KlineHistory) -> KlineFillNeeded | None:
        candles = ev.candles
        if candles and max(c.open_time for c in candles) > self.ahead_ms:
            candles = [c for c in candles if not self._kline_ahead(st, c.open_time)]
        series = self.series(st, ev.interval)
        filled = series.bars_filled
        series.extend_history(candles)
        self.counters["kline_bars_filled"] += series.bars_filled - filled
        asked = series.asked
        if asked is None:
            return None
        if not candles or max(c.close_time for c in candles) < asked[1]:
            # not the refill's answer (it reaches the end asked for): the history of a symbol that
            # (re)joined while a refill was in flight; the refill's own answer, or its timeout, settles it
            return None
        series.asked = None  # answered: the refill in flight is done, whatever it brought
        if series.missing is None:
            return None
        if series.missing[1] > asked[1]:  # a hole found while the refill was in flight: ask for the rest
            return self.kline_fill(st, series, ev.interval, self.now_ms)
        self._kline_fill_failed(st, series, ev.interval, "the answer lacks them: given up")
        series.missing = None  # not asked again: REST has no more to give (a later hole may span them again)
        return None

    def kline_fill(
        self, st: SymbolState, series: CandleSeries, interval: str, now: int
    ) -> KlineFillNeeded | None:
        """The refill a candle hole needs (``series.missing``), at most one in flight per symbol and interval:
        counted (``kline_gaps``) and logged once per hole; asked again, the first one given up (counted
        ``kline_fill_failed``), when the one in flight got no answer within :data:`KLINE_FILL_TIMEOUT_MS` of
        ``now`` (the exchange's time of the frame, so a replay takes the same decisions: it never hears of a
        failed request either). A hole found while a refill is in flight is asked for when its answer came."""
        missing = series.missing
        assert missing is not None
        if series.holes != series.holes_seen:
            self.counters["kline_gaps"] += series.holes - series.holes_seen
            series.holes_seen = series.holes
            log.warning(
                "%s klines missing or unclosed from %d to %d: closed provisionally, refill %s",
                interval,
                missing[0],
                missing[1],
                "asked" if series.asked is None else "asked when the one in flight is answered",
                extra={"symbol": st.symbol, "stream": f"kline_{interval}"},
            )
        asked = series.asked
        if asked is not None:
            if now - asked[0] <= KLINE_FILL_TIMEOUT_MS:
                return None
            self._kline_fill_failed(st, series, interval, "no answer in time: asked again")
        # only the bars the series keeps are worth asking for (a disconnect of hours holds more)
        last = series.closed[-1]  # a hole always follows a closed bar
        bar_ms = last.close_time - last.open_time + 1
        keep = series.closed.maxlen or len(series.closed)
        start, end = max(missing[0], missing[1] + 1 - keep * bar_ms), missing[1]
        series.missing = (start, end)
        series.asked = (now, end)
        return KlineFillNeeded(st.symbol, interval, start, end, (end - start) // bar_ms + 1)

    def _kline_fill_failed(self, st: SymbolState, series: CandleSeries, interval: str, why: str) -> None:
        """Count and log a refill that brought nothing (its bars stay as they are: provisional or absent)."""
        self.counters["kline_fill_failed"] += 1
        log.warning(
            "%s kline refill of %s failed (%s)",
            interval,
            series.missing,
            why,
            extra={"symbol": st.symbol, "stream": f"kline_{interval}"},
        )
        series.asked = None

    def _kline_ahead(self, st: SymbolState, open_time: int) -> bool:
        """Whether a bar opening at ``open_time`` lies beyond the tolerance of the running clock: every later
        bar would look older than it and be ignored, freezing the series, so it is rejected (counted
        ``kline_ahead``). Before the clock starts, and after a jump, bars are taken as they come."""
        now = self.now_ms
        if not now or open_time <= now + self.clock_tolerance_ms:
            return False
        n = self.counters["kline_ahead"] = self.counters["kline_ahead"] + 1
        if n & (n - 1) == 0:
            log.warning(
                "kline opening %.1f s ahead of the exchange clock rejected (%d so far)",
                (open_time - now) / 1000,
                n,
                extra={"symbol": st.symbol, "stream": "kline"},
            )
        return True

    def series(self, st: SymbolState, interval: str) -> CandleSeries:
        """The candle series of ``interval`` (1m keeps enough for 240 minutes of returns)."""
        series = st.candles.get(interval)
        if series is None:
            keep = (
                max(self.config.kline_history_bars, 260)
                if interval == "1m"
                else self.config.kline_history_bars
            )
            series = st.candles[interval] = CandleSeries(keep)
        return series
