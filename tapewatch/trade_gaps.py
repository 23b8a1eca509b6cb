"""aggTrade id gaps: detect them, hold later trades until the missing ones are filled, give up by trade time.

On Binance USD-M the aggregate trade ids of one symbol are consecutive, so a trade whose id is more than one
past the last applied one means trades were missed (a websocket reconnect, the switch back from the backup
feed). The market state then asks its caller for the missing ids (:class:`TradeFillNeeded`) and keeps the
symbol's later trades in a :class:`PendingFill` instead of its windows, so trades still enter the windows in
id order. The fill comes back as ordinary aggTrade frames (a REST ``aggTrades`` page, captured under its
``rest:`` stream name), so live and replay see the same frames in the same order.

Giving up never reads a clock: when the held trades span more than ``timeout_ms`` of trade time, or more
than ``max_held`` trades are held, the gap is resolved with what arrived and the rest counts as lost. Replay
of the capture therefore takes exactly the decisions the live run took.

A gap the fetcher could not fill (more ids than ``max_ids``, its pages times their size) or one that opened
longer ago than the longest trade window (``max_age_ms``: a symbol back in the universe after days) is not
filled at all: :meth:`TradeGapConfig.skip_reason` names why, and the market applies the trade at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from tapewatch.events import AggTrade

#: aggTrades a fill fetches per page (Binance's largest ``limit``) and pages per gap at most: a gap of more
#: ids is not filled (the fetcher, :mod:`realtime.trade_fill`, and the market's skip rule share these).
FILL_PAGE_SIZE = 1000
FILL_MAX_PAGES = 10


class TradeFillNeeded(NamedTuple):
    """Trades ``from_id..to_id`` (inclusive) of ``symbol`` are missing: fetch them (REST ``fromId``)."""

    symbol: str
    from_id: int
    to_id: int

    @property
    def reason(self) -> str:
        return f"aggTrade gap {self.from_id}..{self.to_id}"

    @property
    def missing(self) -> int:
        return self.to_id - self.from_id + 1


@dataclass(frozen=True, slots=True)
class TradeGapConfig:
    """``timeout_ms``: trade time the held trades may span before the gap is given up; ``max_held``: the
    most trades held meanwhile (whichever is reached first). ``max_ids``: the widest gap filled;
    ``max_age_ms``: the longest trade time since the last applied trade a gap is filled across."""

    timeout_ms: int = 10_000
    max_held: int = 20_000
    max_ids: int = FILL_MAX_PAGES * FILL_PAGE_SIZE
    max_age_ms: int = 3_600_000

    def __post_init__(self) -> None:
        if self.timeout_ms < 0 or self.max_held < 1 or self.max_ids < 1 or self.max_age_ms < 0:
            raise ValueError(
                f"trade gap timeout_ms and max_age_ms must be >= 0, max_held and max_ids >= 1; got {self}"
            )

    def skip_reason(self, missing: int, since_ms: int) -> str | None:
        """Why a gap of ``missing`` ids opened ``since_ms`` of trade time after the last applied trade is not
        worth filling (None: fill it)."""
        if missing > self.max_ids:
            return f"{missing} ids, more than the {self.max_ids} a fill fetches"
        if self.too_old(since_ms):
            return f"{since_ms / 1000:.0f} s after the last trade, longer than the {self.max_age_ms // 1000} s window"
        return None

    def too_old(self, since_ms: int) -> bool:
        """True when trades ``since_ms`` of trade time after the last applied one are past filling (the age half
        of :meth:`skip_reason`, which the backup feed's start point also follows)."""
        return since_ms > self.max_age_ms


class Resolved(NamedTuple):
    """A gap resolved: apply ``filled`` (ids within the gap, ascending, applied as they are), then ``held``
    (ascending, through the ordinary path: a hole among them is a new gap). ``lost``: the gap's ids never
    received, as inclusive ranges; ``gave_up``: resolved by the timeout or the buffer bound, not complete."""

    filled: list[AggTrade]
    held: list[AggTrade]
    lost: list[tuple[int, int]]
    gave_up: bool


#: :meth:`PendingFill.add` result for a trade already received (or older than the gap): dropped.
DUPLICATE = "duplicate"
#: :meth:`PendingFill.add` result for a trade kept until the gap resolves.
HELD = "held"


class PendingFill:
    """One symbol's open gap: ids ``from_id..to_id`` missing; ``first`` (id ``to_id + 1``) revealed it."""

    __slots__ = ("_filled", "_held", "_max_held", "_timeout_ms", "first_time", "from_id", "next_id", "to_id")

    def __init__(self, from_id: int, first: AggTrade, config: TradeGapConfig) -> None:
        self.from_id = from_id
        self.to_id = first.agg_id - 1
        self.first_time = first.trade_time
        self._timeout_ms = config.timeout_ms
        self._max_held = config.max_held
        self._filled: dict[int, AggTrade] = {}
        self._held: dict[int, AggTrade] = {first.agg_id: first}
        #: the first id still missing: ``from_id`` plus the ids received contiguously from it
        self.next_id = from_id

    @property
    def request(self) -> tuple[int, int]:
        return self.from_id, self.to_id

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def filled(self) -> int:
        return len(self._filled)

    @property
    def missing(self) -> int:
        """Ids of the gap (counted filled or lost when it resolves)."""
        return self.to_id - self.from_id + 1

    @property
    def gives_up_by(self) -> int:
        """The trade time past which the held trades give the gap up (the revealing trade's time plus the
        timeout): a later trade of the symbol resolves it, whatever the fill did."""
        return self.first_time + self._timeout_ms

    def add(self, ev: AggTrade) -> Resolved | str:
        """Take one more trade of the symbol: :data:`DUPLICATE`, :data:`HELD`, or the gap
        :class:`Resolved` (complete, or given up because the held trades now span more than the timeout of
        trade time or exceed the bound)."""
        a = ev.agg_id
        if a < self.from_id or a in self._filled or a in self._held:
            return DUPLICATE
        if a <= self.to_id:
            self._filled[a] = ev
            if len(self._filled) == self.to_id - self.from_id + 1:
                return self._resolve(gave_up=False)
            while self.next_id in self._filled:
                self.next_id += 1
            return HELD
        self._held[a] = ev
        if ev.trade_time - self.first_time > self._timeout_ms or len(self._held) > self._max_held:
            return self._resolve(gave_up=True)
        return HELD

    def _resolve(self, *, gave_up: bool) -> Resolved:
        filled = [self._filled[i] for i in sorted(self._filled)]
        held = [self._held[i] for i in sorted(self._held)]
        return Resolved(filled, held, missing_ranges(self.from_id, self.to_id, self._filled), gave_up)


def missing_ranges(from_id: int, to_id: int, have: dict[int, AggTrade]) -> list[tuple[int, int]]:
    """The ids of ``from_id..to_id`` not in ``have``, as inclusive ranges, ascending."""
    ranges: list[tuple[int, int]] = []
    start = from_id
    for a in sorted(have):
        if a > start:
            ranges.append((start, a - 1))
        start = a + 1
    if start <= to_id:
        ranges.append((start, to_id))
    return ranges
