"""The exchange's "now" of the market state, and why a few frames stamped far ahead cannot move it.

The clock (:attr:`MarketClock.now_ms`) is the latest event time of the depth diffs and polled snapshots of any
symbol: every book's staleness is judged against it and the engine expires signals by it. Taken unchecked, one
frame stamped a year ahead would make every other book stale and expire every open signal at once.

The rule reads frame contents alone — never the wall clock nor ``recv``, which the simulator's accelerated clock
outruns — so a replay takes the decisions the live run took:

- A frame at most ``tolerance_ms`` of event time past now advances the clock freely (the common path: one
  comparison with :attr:`MarketClock.ahead_ms`, which is ``now_ms + tolerance_ms``).
- A frame further ahead is a *suspect* of a *candidate jump*: it is held, not applied yet — a diff not applied
  to its book, a polled snapshot not loaded, a trade not added to the windows.
- The jump is real, and accepted (counted ``event_time_jumps``), when suspects *consistent with each other*
  (all within ``tolerance_ms`` of one another) come from a *quorum* of distinct symbols before the clock moved
  on: ``min(JUMP_QUORUM, active)`` symbols and at least two frames, ``active`` being the symbols whose diffs or
  polls the clock took within the tolerance before the candidate started. After an outage every symbol's next
  frame is minutes later, so three symbols' first frames confirm it within milliseconds; two bad frames of two
  symbols (a corrupted relay) do not, and neither do bad stamps that disagree with each other. A universe of one
  symbol is confirmed by that symbol's next frame, one of two by both symbols. The clock moves to the earliest
  suspect's time, the held frames are applied then (in arrival order) and the confirming frame after them: a real
  jump costs no frame, so a synced book, or one whose snapshot waits for the diff that spans it, runs on without
  a resync (a REST snapshot of weight 20).
- Held frames are bounded: one diff or polled snapshot and one trade per symbol of the candidate, whose symbols
  are fewer than the quorum. A suspect that is not consistent with the candidate starts a new one; a second
  frame of a kind a symbol already holds counts toward the confirmation but is rejected (unless it
  is the frame that confirms the jump: that one is applied, after the held ones). A frame that advances
  the clock normally voids the candidate (other symbols still run on the old time, so its stamps far ahead are
  their own fault). A frame rejected for good — a voided or replaced candidate's held frames included — is
  counted ``event_time_ahead``; the frames held right now are :attr:`MarketClock.held` (``event_time_held``).
  While a candidate is held, :attr:`MarketClock.ahead_ms` is ``now_ms``, so the first frame that would advance
  the clock takes the slow path and voids it (the common path stays one comparison).
- Trades never advance the clock (they take part in a jump, like any frame). A trade within the tolerance of
  its own symbol's last accepted trade is taken as it is, so a tape that runs on while every depth stream is
  quiet loses nothing. Before the first diff or polled snapshot starts it, trades are taken as they come, and
  that first frame is a suspect when it lies beyond the tolerance of the latest trade seen (with no trade before
  it, it is trusted).

A trade far ahead keeps its id: the aggTrade gap bookkeeping sees its time before the windows hold or reject it,
so one that opens a gap has it skipped as too old to fill, and one held in a fill gives the fill up early (both
counted, as :mod:`tapewatch.trade_gaps` counts them). A held trade that a confirmed jump applies also goes to the
followers of open signals (``SymbolState.caught_up``), which see only the newest trade of a frame. A held frame
whose replay asks for a snapshot (a book that went out of sync meanwhile) leaves its book waiting with no request
in flight: the symbol's next diff asks (``held_frame_resyncs``).

Frames not checked, and why (:class:`~tapewatch.market.Market`):

- klines: the event time ``E`` is never read; a bar's open time ``t`` is, and a bar opening past
  :attr:`MarketClock.ahead_ms` while the clock runs is rejected (``kline_ahead``), since a forming or closed bar
  a year ahead would make every later bar look older and freeze the series (REST kline history likewise);
- bookTickers: ``E``/``T`` are never read; a ticker is matched with the book by update id only;
- REST depth snapshots: their ``E`` becomes the book's time only until the diff that syncs the book replaces it,
  and the book is not read before; a snapshot never moves the clock.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

log = logging.getLogger(__name__)

#: Event time a frame may lead the exchange's now by and still advance it freely. Binance stamps differ by about
#: a second between streams; the simulator (any ``--speed``) moves 50 ms of event time a step.
CLOCK_TOLERANCE_MS = 60_000

#: Distinct symbols whose consistent frames far ahead confirm a jump (fewer when fewer symbols are active): more
#: than the two bad frames a corrupted relay may send, and still reached by the first frames after an outage.
JUMP_QUORUM = 3

#: Re-applies a held frame once its jump is confirmed.
Replay = Callable[[], object]


class Candidate:
    """A jump the suspect frames suggest: taken while the clock read ``base``, their times within
    ``[lo, hi]``; confirmed by ``quorum`` distinct symbols (and at least two frames)."""

    __slots__ = ("base", "frames", "held", "hi", "lo", "quorum", "symbols")

    def __init__(self, base: int, t: int, quorum: int) -> None:
        self.base = base
        self.lo = self.hi = t
        self.quorum = quorum
        self.frames = 0
        self.symbols: set[str] = set()
        #: (symbol, trade?) -> the held frame's replay, in arrival order
        self.held: dict[tuple[str, bool], Replay] = {}

    def fits(self, t: int, tolerance_ms: int) -> bool:
        """Whether ``t`` lies within the tolerance of every frame of the candidate."""
        return max(self.hi, t) - min(self.lo, t) <= tolerance_ms

    def add(self, symbol: str, t: int, trade: bool, replay: Replay | None) -> bool:
        """Count the frame; hold its replay unless the symbol already holds one of its kind (False: rejected)."""
        self.frames += 1
        self.symbols.add(symbol)
        self.lo, self.hi = min(self.lo, t), max(self.hi, t)
        key = (symbol, trade)
        if replay is None or key in self.held:
            return False
        self.held[key] = replay
        return True

    @property
    def confirmed(self) -> bool:
        return len(self.symbols) >= self.quorum and self.frames >= 2


class MarketClock:
    """The exchange's now (see the module docstring); a base of :class:`~tapewatch.market.Market`, whose frame
    handlers compare an event time with :attr:`ahead_ms` and call :meth:`jump` past it."""

    counters: Counter[str]

    def __init__(self, tolerance_ms: int = CLOCK_TOLERANCE_MS, quorum: int = JUMP_QUORUM) -> None:
        if tolerance_ms <= 0:
            raise ValueError(f"clock tolerance must be > 0 ms, got {tolerance_ms}")
        if quorum < 1:
            raise ValueError(f"clock jump quorum must be >= 1 symbol, got {quorum}")
        self.clock_tolerance_ms = tolerance_ms
        self.jump_quorum = quorum
        #: The exchange's "now": the latest accepted event time of a depth diff or polled snapshot of any symbol.
        self.now_ms = 0
        #: The latest event time a frame is accepted at without :meth:`jump` (``now_ms`` + tolerance; ``now_ms``
        #: while a candidate jump is held, 0 while the clock has not started, so that those frames are looked at).
        self.ahead_ms = 0
        #: The jump the held frames suggest, or None.
        self.candidate: Candidate | None = None
        self._trades_before_ms = 0  # the latest trade time seen before the clock started
        #: Frames :meth:`jump` did not let apply at once (held or rejected), so far.
        self.deferred = 0

    @property
    def held(self) -> int:
        """Frames held far ahead of the clock, waiting for their jump to be confirmed or voided."""
        return len(self.candidate.held) if self.candidate is not None else 0

    def active_symbols(self) -> int:
        """Symbols whose frames the clock took lately (the quorum's cap); the market counts its symbols."""
        return 1

    def advance(self, t: int) -> None:
        """Move the clock to ``t`` if later (a time not beyond :attr:`ahead_ms`, or one :meth:`jump` accepted)."""
        if t > self.now_ms:
            self.now_ms = t
            self.ahead_ms = t + self.clock_tolerance_ms

    def jump(self, symbol: str, t: int, replay: Replay | None = None, *, trade: bool = False) -> bool:
        """A frame of ``symbol`` at event time ``t`` > :attr:`ahead_ms`. True: apply it now (the clock has not
        started, it lies within the tolerance — a held candidate is then void unless it is a trade — or it
        confirms a jump); a diff or polled snapshot then advances the clock to ``t``. False: not applied now —
        held (``replay`` is called if its jump is confirmed) or rejected and counted."""
        now = self.now_ms
        if not now:  # no clock yet
            if trade:
                if t > self._trades_before_ms:
                    self._trades_before_ms = t
                return True
            if not self._trades_before_ms or t <= self._trades_before_ms + self.clock_tolerance_ms:
                self._drop("the clock started")
                return True
        elif t <= now + self.clock_tolerance_ms:  # within the tolerance, while a candidate lowered ahead_ms
            if not trade:
                self._drop("the clock moved on")
            return True
        c = self.candidate
        if c is None or c.base != now or not c.fits(t, self.clock_tolerance_ms):
            self._drop("a later frame far ahead disagrees with it")
            c = self.candidate = Candidate(now, t, min(self.jump_quorum, self.active_symbols()))
            self.ahead_ms = now  # the next frame that would advance the clock voids the candidate
        stored = c.add(symbol, t, trade, replay)
        if not c.confirmed:
            self.deferred += 1
            if not stored:
                self._rejected(1, symbol, t)
            return False  # held, or rejected
        if stored:  # the caller applies the confirming frame itself, after the frames held before it
            del c.held[symbol, trade]
        self._confirm(c, symbol)
        return True

    def _confirm(self, c: Candidate, symbol: str) -> None:
        """Move the clock to the candidate's earliest time and apply the frames it held, in arrival order."""
        base = self.now_ms or self._trades_before_ms
        self.candidate = None
        self.counters["event_time_jumps"] += 1
        log.warning(
            "exchange clock jumps %.1f s ahead: %d symbols agree (%d frames, %d held ones applied)",
            (c.lo - base) / 1000,
            len(c.symbols),
            c.frames,
            len(c.held),
            extra={"symbol": symbol},
        )
        self.advance(c.lo)
        for replay in c.held.values():
            replay()

    def _drop(self, why: str) -> None:
        """Void the held candidate: its frames are rejected for good and the tolerance is restored."""
        c = self.candidate
        if c is None:
            return
        self.candidate = None
        self.ahead_ms = self.now_ms + self.clock_tolerance_ms if self.now_ms else 0
        if c.held:
            symbol = next(iter(c.held))[0]
            self._rejected(len(c.held), symbol, c.lo, why)

    def _rejected(self, k: int, symbol: str, t: int, why: str = "not confirmed") -> None:
        before = self.counters["event_time_ahead"]
        n = self.counters["event_time_ahead"] = before + k
        if before.bit_length() != n.bit_length():  # 1, 2, 4, ...: stamps that keep running ahead do not flood
            log.warning(
                "frame %.1f s ahead of the exchange clock rejected (%s; %d so far)",
                (t - (self.now_ms or self._trades_before_ms)) / 1000,
                why,
                n,
                extra={"symbol": symbol},
            )
