"""The rolling one-minute log behind the weight budget: our reservations and the server's corrections.

Pure bookkeeping (no clock of its own, no asyncio): every method takes ``now`` in monotonic seconds.
Each entry holds the weight we reserved (``weight``, what the pools count) and the weight the total
counts (``counted``: the reservation as corrected by the server). The total is an estimate; the
server's count wins. :meth:`WeightLog.answer` corrects it to ``X-MBX-USED-WEIGHT-1M``:

- up, when the server counts more than we have answered *and* in flight (another process on the same IP,
  or a weight we did not know), by adding an unattributed entry. Our requests in flight may already be in
  the server's count, so only weight beyond them is surely someone else's; counting it twice would block
  every caller for a minute;
- down, when it counts less than we have answered (its minute rolled over), by forgetting the oldest
  answered weight, but only on the answer to the most recently sent request so far: concurrent answers
  arrive out of order, and an older one carries an older count.

The snapshot sub-budget is our own policy, so it counts our own snapshot reservations, uncorrected.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

Pool = Literal["general", "snapshot"]


@dataclass(slots=True, eq=False)
class LogEntry:
    time: float
    weight: int
    counted: int
    pool: Pool
    in_flight: bool
    seq: int


class WeightLog:
    """Weight reserved in the last ``window`` seconds, in total and by the snapshot pool."""

    def __init__(self, window: float) -> None:
        if window <= 0:
            raise ValueError(f"window must be > 0 seconds; got {window}")
        self.window = window
        self.used = 0  # total counted; read after prune(now)
        self.snapshot_used = 0
        self.in_flight = 0  # requests reserved and not yet answered
        self._entries: deque[LogEntry] = deque()
        self._seq = 0
        self._freshest_seq = 0

    def prune(self, now: float) -> None:
        """Drop the entries that have left the window ``(now - window, now]``."""
        horizon = now - self.window
        entries = self._entries
        while entries and entries[0].time <= horizon:
            self._drop(entries.popleft())

    def reserve(self, now: float, weight: int, pool: Pool) -> LogEntry:
        """Count ``weight`` for a request about to be sent (in flight until answered)."""
        self.in_flight += 1
        return self._add(now, weight, weight, pool, in_flight=True)

    def answer(self, entry: LogEntry, server_used: int | None, now: float) -> tuple[int, int]:
        """The request of ``entry`` got its answer (or none); correct to ``server_used``.

        Returns the weight added and forgotten by the correction. Answering twice changes nothing.
        """
        if not entry.in_flight:
            return 0, 0
        entry.in_flight = False
        self.in_flight -= 1
        if server_used is None or server_used < 0:
            return 0, 0
        return self._correct(server_used, entry.seq, now)

    def forget(self, entry: LogEntry, now: float) -> None:
        """Give back the weight of a reservation whose request was never sent."""
        self.prune(now)
        if entry.time > now - self.window:  # still counted (pruned entries were subtracted already)
            self._drop(entry)
        entry.weight = entry.counted = 0
        if entry.in_flight:
            entry.in_flight = False
            self.in_flight -= 1

    def free_at(self, excess: int, pool: Pool | None = None) -> float:
        """When ``excess`` weight (of ``pool``, or of the total) will have left the window; inf if never."""
        freed = 0
        for entry in self._entries:
            if pool is None:
                freed += entry.counted
            elif entry.pool == pool:
                freed += entry.weight
            else:
                continue
            if freed >= excess:
                return entry.time + self.window
        return float("inf")

    def _add(self, now: float, weight: int, counted: int, pool: Pool, in_flight: bool) -> LogEntry:
        self._seq += 1
        entry = LogEntry(now, weight, counted, pool, in_flight, self._seq)
        self._entries.append(entry)
        self.used += counted
        if pool == "snapshot":
            self.snapshot_used += weight
        return entry

    def _drop(self, entry: LogEntry) -> None:
        self.used -= entry.counted
        if entry.pool == "snapshot":
            self.snapshot_used -= entry.weight

    def _correct(self, server_used: int, seq: int, now: float) -> tuple[int, int]:
        self.prune(now)
        answered = in_flight = 0
        for entry in self._entries:
            if entry.in_flight:
                in_flight += entry.counted
            else:
                answered += entry.counted
        fresh = seq > self._freshest_seq
        self._freshest_seq = max(self._freshest_seq, seq)
        extra = server_used - answered - in_flight
        if extra > 0:
            self._add(now, 0, extra, "general", in_flight=False)
            return extra, 0
        if server_used >= answered or not fresh:
            return 0, 0
        left = answered - server_used
        for entry in self._entries:  # oldest first
            if left == 0:
                break
            if entry.in_flight or entry.counted == 0:
                continue
            take = min(entry.counted, left)
            entry.counted -= take
            self.used -= take
            left -= take
        return 0, answered - server_used - left
