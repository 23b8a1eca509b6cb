"""When a symbol's book had its sequence gaps and resyncs: what ``gaps_in_window`` and ``resyncs_in_window`` of
a feature vector's data quality count.

The book counts them over its lifetime (``OrderBook.gaps``, ``OrderBook.resyncs``); :class:`BookIncidents`
notes the event time at which it sees each count grow (the engine shows it every depth, snapshot and control
frame of the symbol, so that is the time of the frame that caused it) and counts those within a window before
an evaluation. Memory is bounded: times older than the window go as new ones come, and at most
:data:`MAX_KEPT` of each are kept (a count past it saturates). Pure; event time only.
"""

from __future__ import annotations

from collections import deque

#: Incident times kept per kind and symbol: far above what a window can hold at one resync a second.
MAX_KEPT = 1_024


class BookIncidents:
    """The gaps and resyncs of one symbol's book by event time, within ``window_ms`` (inclusive, as the trade
    window: an incident at ``now - window_ms`` counts)."""

    __slots__ = ("_gaps", "_gaps_seen", "_resyncs", "_resyncs_seen", "window_ms")

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self._gaps: deque[int] = deque(maxlen=MAX_KEPT)
        self._resyncs: deque[int] = deque(maxlen=MAX_KEPT)
        self._gaps_seen = 0
        self._resyncs_seen = 0

    def observe(self, gaps: int, resyncs: int, time: int) -> None:
        """The book's lifetime counts now, at event time ``time``: each increase is an incident at ``time``."""
        if gaps != self._gaps_seen:
            self._note(self._gaps, gaps - self._gaps_seen, time)
            self._gaps_seen = gaps
        if resyncs != self._resyncs_seen:
            self._note(self._resyncs, resyncs - self._resyncs_seen, time)
            self._resyncs_seen = resyncs

    def counts(self, now: int) -> tuple[int, int]:
        """(gaps, resyncs) with an event time in ``[now - window_ms, now]``."""
        return self._within(self._gaps, now), self._within(self._resyncs, now)

    def _note(self, times: deque[int], added: int, time: int) -> None:
        self._drop_before(times, time - self.window_ms)
        times.extend([time] * min(max(0, added), MAX_KEPT))

    def _within(self, times: deque[int], now: int) -> int:
        self._drop_before(times, now - self.window_ms)
        return sum(1 for t in times if t <= now)

    @staticmethod
    def _drop_before(times: deque[int], cutoff: int) -> None:
        while times and times[0] < cutoff:
            times.popleft()
