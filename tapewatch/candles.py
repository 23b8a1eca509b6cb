"""Candles per interval from kline events (and REST klines): the closed history plus the forming bar."""

from __future__ import annotations

from collections import deque

from tapewatch.events import Candle


class CandleSeries:
    """Closed candles of one symbol and interval (at most ``keep``), plus the forming one.

    Updates for an older bar than the latest are ignored (counted in ``stale_updates``); a bar that closes
    is appended once even if its closing kline is received twice.
    """

    __slots__ = ("closed", "forming", "stale_updates")

    def __init__(self, keep: int) -> None:
        self.closed: deque[Candle] = deque(maxlen=keep)
        self.forming: Candle | None = None
        self.stale_updates = 0

    @property
    def last_open_time(self) -> int:
        if self.forming is not None:
            return self.forming.open_time
        return self.closed[-1].open_time if self.closed else -1

    def update(self, candle: Candle) -> bool:
        """Apply a kline; returns True when it closed a bar."""
        forming, closed, open_time = self.forming, self.closed, candle.open_time
        # last_open_time inlined: one kline in six of a whole-market replay lands here
        last_open = forming.open_time if forming is not None else (closed[-1].open_time if closed else -1)
        if open_time < last_open or (closed and open_time <= closed[-1].open_time):
            self.stale_updates += 1
            return False
        if candle.closed:
            self.closed.append(candle)
            self.forming = None
            return True
        self.forming = candle
        return False

    def extend_history(self, candles: list[Candle]) -> int:
        """Fill with REST klines (oldest first); only closed bars newer than what is held are added."""
        added = 0
        for candle in candles:
            if candle.closed and (not self.closed or candle.open_time > self.closed[-1].open_time):
                if self.forming is not None and candle.open_time >= self.forming.open_time:
                    break
                self.closed.append(candle)
                added += 1
        return added

    def bars(self, include_forming: bool = True) -> list[Candle]:
        bars = list(self.closed)
        if include_forming and self.forming is not None:
            bars.append(self.forming)
        return bars
