"""The recent aggTrades of one simulated symbol, packed, for REST ``/fapi/v1/aggTrades``.

Binance keeps every aggTrade; the simulator keeps at least :data:`KEEP` per symbol, enough for the widest gap
tapewatch fills (``FILL_MAX_PAGES * FILL_PAGE_SIZE`` ids, :mod:`tapewatch.trade_gaps`). Full chunks of
:data:`CHUNK` fills are packed into numpy rows (37 bytes a trade instead of ~280 for a tuple): measured with
tracemalloc, 376-445 kB a symbol, 300-350 MB for 800 symbols (the former 2 000 tuples a
symbol took 440 MB). Agg ids of one symbol are consecutive, so a ``fromId`` is found by arithmetic and a time
window by bisection (times never decrease).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from realtime.sim.model import Fill
from tapewatch.trade_gaps import FILL_MAX_PAGES, FILL_PAGE_SIZE

CHUNK = 250
KEEP = FILL_MAX_PAGES * FILL_PAGE_SIZE  # the widest gap tapewatch fills by fromId paging
_ROW = np.dtype(
    [("tick", "<i8"), ("qty", "<i8"), ("first", "<i8"), ("count", "<i4"), ("time", "<i8"), ("maker", "?")]
)


def _pack(fills: list[Fill]) -> np.ndarray:
    return np.array(
        [(tick, qty, first, last - first + 1, t, m) for _, tick, qty, first, last, t, m in fills], _ROW
    )


class TradeTape:
    """The last :data:`KEEP` to ``KEEP + CHUNK - 1`` aggTrades of one symbol, oldest first."""

    __slots__ = ("_closed", "_first_id", "_open")

    def __init__(self) -> None:
        self._closed: deque[np.ndarray] = deque()
        self._open: list[Fill] = []
        self._first_id: int | None = None  # agg id of the oldest kept trade

    def __len__(self) -> int:
        return len(self._closed) * CHUNK + len(self._open)

    @property
    def first_id(self) -> int | None:
        """The oldest agg id still kept (None before the first trade)."""
        return self._first_id

    @property
    def next_id(self) -> int | None:
        """The agg id the next trade will take (None before the first trade)."""
        return None if self._first_id is None else self._first_id + len(self)

    def extend(self, fills: list[Fill]) -> None:
        """Append fills in agg id order; a chunk is packed once full and the oldest dropped past KEEP."""
        for fill in fills:
            if self._first_id is None:
                self._first_id = fill[0]
            elif fill[0] != self._first_id + len(self):
                raise ValueError(f"agg id {fill[0]} does not follow {self._first_id + len(self) - 1}")
            self._open.append(fill)
            if len(self._open) == CHUNK:
                self._closed.append(_pack(self._open))
                self._open = []
                if len(self._closed) * CHUNK > KEEP:
                    self._closed.popleft()
                    self._first_id += CHUNK

    def since(self, from_id: int, limit: int) -> list[Fill]:
        """Up to ``limit`` trades from agg id ``from_id`` on (from the oldest kept when it is older)."""
        if self._first_id is None:
            return []
        start = max(0, from_id - self._first_id)
        return self._rows(start, start + limit)

    def between(self, lo: int, hi: int, limit: int) -> list[Fill]:
        """Up to ``limit`` trades with ``lo <= time <= hi`` (both inclusive), oldest first."""
        times = self._times()
        start = int(np.searchsorted(times, lo, side="left"))
        stop = int(np.searchsorted(times, hi, side="right"))
        return self._rows(start, min(stop, start + limit))

    def latest(self, limit: int) -> list[Fill]:
        """The ``limit`` newest trades, oldest first."""
        n = len(self)
        return self._rows(max(0, n - limit), n)

    def _times(self) -> np.ndarray:
        parts = [c["time"] for c in self._closed]
        parts.append(np.fromiter((f[5] for f in self._open), dtype=np.int64, count=len(self._open)))
        return np.concatenate(parts)

    def _rows(self, start: int, stop: int) -> list[Fill]:
        """Rows ``start:stop`` (positions from the oldest kept) as fills."""
        if self._first_id is None or start >= stop:
            return []
        out: list[Fill] = []
        closed = len(self._closed) * CHUNK
        for c in range(start // CHUNK, min(stop, closed) // CHUNK + 1):
            if c >= len(self._closed):
                break
            lo, hi = max(start - c * CHUNK, 0), min(stop - c * CHUNK, CHUNK)
            if lo >= hi:
                continue
            base = self._first_id + c * CHUNK
            rows = self._closed[c][lo:hi].tolist()
            out.extend(
                (base + lo + k, tick, qty, first, first + count - 1, t, maker)
                for k, (tick, qty, first, count, t, maker) in enumerate(rows)
            )
        if stop > closed:
            out.extend(self._open[max(start - closed, 0) : stop - closed])
        return out
