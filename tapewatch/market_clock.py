"""The exchange's "now" of the market state, and why one frame stamped far ahead cannot move it.

The clock (:attr:`MarketClock.now_ms`) is the latest event time of the depth diffs and polled snapshots of any
symbol: every book's staleness is judged against it and the engine expires signals by it. Taken unchecked, one
frame stamped a year ahead would make every other book stale and expire every open signal at once.

The rule reads frame contents alone — never the wall clock nor ``recv``, which the simulator's accelerated clock
outruns — so a replay takes the decisions the live run took:

- A frame at most ``tolerance_ms`` of event time past now advances the clock freely (the common path: one
  comparison with :attr:`MarketClock.ahead_ms`, which is ``now_ms + tolerance_ms``).
- A frame further ahead is a *suspect*: it is rejected — a diff not applied to its book, a polled snapshot not
  loaded, a trade not added to the windows — and counted (``event_time_ahead``).
- The jump is real, and accepted, when it is confirmed before the clock moved on: by a frame of *another* symbol
  also beyond the tolerance (after an outage every symbol's next event is minutes later), or by the same
  symbol's next frame within the tolerance of the suspect's time (a single-symbol universe). The clock then
  moves to the earlier of the two times (counted ``event_time_jumps``); the confirming frame is applied when it
  lies within the tolerance of that time, else it becomes the next suspect.
- A frame that advances the clock normally voids the suspect: other symbols still run on the old time, so one
  symbol's stamps far ahead are its own fault and each is rejected.
- Trades never advance the clock (they confirm a jump, like any frame). A trade within the tolerance of its
  own symbol's last accepted trade is taken as it is, so a tape that runs on while every depth stream is quiet
  loses nothing. Before the first diff or polled snapshot
  starts it, trades are taken as they come, and that first frame is a suspect when it lies beyond the tolerance
  of the latest trade seen (with no trade before it, it is trusted).

A real jump costs its first frame: a diff of a book that restarts from a snapshot after a reconnect anyway, a
poll repeated seconds later, or one trade (the first trades after an outage usually wait in an aggTrade gap fill
and are applied later, within the tolerance by then). A trade far ahead keeps its id: the aggTrade gap bookkeeping
sees its time before the windows reject it, so one that opens a gap has it skipped as too old to fill, and one
held in a fill gives the fill up early (both counted, as :mod:`tapewatch.trade_gaps` counts them).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import NamedTuple

log = logging.getLogger(__name__)

#: Event time a frame may lead the exchange's now by and still advance it freely. Binance stamps differ by about
#: a second between streams; the simulator (any ``--speed``) moves 50 ms of event time a step.
CLOCK_TOLERANCE_MS = 60_000


class Suspect(NamedTuple):
    """A frame of ``symbol`` at event time ``time``, beyond the tolerance of the clock while it read ``base``."""

    symbol: str
    time: int
    base: int


class MarketClock:
    """The exchange's now (see the module docstring); a base of :class:`~tapewatch.market.Market`, whose frame
    handlers compare an event time with :attr:`ahead_ms` and call :meth:`jump` past it."""

    counters: Counter[str]

    def __init__(self, tolerance_ms: int = CLOCK_TOLERANCE_MS) -> None:
        if tolerance_ms <= 0:
            raise ValueError(f"clock tolerance must be > 0 ms, got {tolerance_ms}")
        self.clock_tolerance_ms = tolerance_ms
        #: The exchange's "now": the latest accepted event time of a depth diff or polled snapshot of any symbol.
        self.now_ms = 0
        #: The latest event time a frame is accepted at without :meth:`jump` (``now_ms`` + tolerance; 0 while the
        #: clock has not started, so that every frame is looked at until it does).
        self.ahead_ms = 0
        #: The frame beyond the tolerance that a next one may confirm.
        self.suspect: Suspect | None = None
        self._trades_before_ms = 0  # the latest trade time seen before the clock started

    def advance(self, t: int) -> None:
        """Move the clock to ``t`` if later (a time not beyond :attr:`ahead_ms`, or one :meth:`jump` accepted)."""
        if t > self.now_ms:
            self.now_ms = t
            self.ahead_ms = t + self.clock_tolerance_ms

    def jump(self, symbol: str, t: int, *, trade: bool = False) -> bool:
        """A frame of ``symbol`` at event time ``t`` > :attr:`ahead_ms`. True: apply it (the clock has not started,
        or the frame confirms a suspect jump and lies within the tolerance of where the clock jumped); a diff or
        polled snapshot then advances the clock to ``t``. False: rejected, counted, and the new suspect."""
        now = self.now_ms
        if not now:  # no clock yet
            if trade:
                if t > self._trades_before_ms:
                    self._trades_before_ms = t
                return True
            if not self._trades_before_ms or t <= self._trades_before_ms + self.clock_tolerance_ms:
                return True
        s = self.suspect
        if (
            s is not None
            and s.base == now
            and (s.symbol != symbol or abs(t - s.time) <= self.clock_tolerance_ms)
        ):
            to = min(t, s.time)
            self.counters["event_time_jumps"] += 1
            log.warning(
                "exchange clock jumps %.1f s ahead: %s at %d confirmed by %s at %d",
                (to - (now or self._trades_before_ms)) / 1000,
                s.symbol,
                s.time,
                symbol,
                t,
                extra={"symbol": symbol},
            )
            self.suspect = None
            self.advance(to)
            if t <= self.ahead_ms:
                return True
        self.suspect = Suspect(symbol, t, self.now_ms)
        n = self.counters["event_time_ahead"] = self.counters["event_time_ahead"] + 1
        if n & (n - 1) == 0:  # 1, 2, 4, ...: a symbol whose stamps keep running ahead does not flood the log
            log.warning(
                "frame %.1f s ahead of the exchange clock rejected (%d so far)",
                (t - (self.now_ms or self._trades_before_ms)) / 1000,
                n,
                extra={"symbol": symbol},
            )
        return False
