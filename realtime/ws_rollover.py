"""Hand a set of streams over from an old connection to its replacement without a gap or a duplicate.

During a planned rollover both connections carry the same streams and Binance sends both the same
events, byte for byte, in the same order. For each stream, the switch finds a frame both connections
have seen and makes it the switch point: frames up to it come from the old connection, frames after it
from the new one; every other copy is dropped (and counted).

* The new connection is ahead (its first frames are ones the old one has not delivered yet): its
  frames are held back; when the old connection delivers the first held frame, that is the switch
  point and the rest of the held frames follow it.
* The new connection is behind (its first frame is one the old one already delivered): that frame is
  the switch point; the new connection's next frames that the old one already delivered are dropped.

A stream for which no switch point is found before the deadline (the copies differ, or the new
connection delivered nothing while the old one did) is handed over with a restart marker instead,
so the consumer treats it like a reconnect (new book snapshot). A stream silent on both connections
is handed over silently: nothing can be lost in a stream that carries nothing.

Pure: no I/O, no clock. Items are ``(recv_ms, raw)``; frames are matched on ``raw``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

Item = tuple[int, bytes]

#: Old-connection frames remembered per stream to recognise a new connection that is behind.
HISTORY = 512


class RolloverSwitch:
    """Per-stream switch between an ``old`` and a ``new`` connection carrying the same ``streams``."""

    def __init__(self, streams: Iterable[str], history: int = HISTORY) -> None:
        self._pending: set[str] = set(streams)
        self._switched: set[str] = set()
        self._unclean: set[str] = set()
        self._history = history
        self._old_recent: dict[str, deque[bytes]] = {}
        self._old_seen: set[str] = set()
        self._new_buffer: dict[str, list[Item]] = {}
        # After a switch where the new connection was behind: frames it still owes that were delivered.
        self._owed: dict[str, deque[bytes]] = {}
        self.duplicates_dropped = 0
        self.mismatches = 0

    @property
    def complete(self) -> bool:
        """Every stream has its switch point and the new connection has caught up on all of them."""
        return not self._pending and not self._owed

    def pending(self) -> frozenset[str]:
        """Streams still delivered from the old connection."""
        return frozenset(self._pending)

    def from_old(self, stream: str, item: Item) -> list[Item]:
        """A frame from the old connection; returns what to deliver now, in order."""
        if stream in self._switched:
            self.duplicates_dropped += 1
            return []
        if stream not in self._pending or stream in self._unclean:
            return [item]
        raw = item[1]
        self._old_seen.add(stream)
        buffer = self._new_buffer.get(stream)
        if buffer:
            if buffer[0][1] == raw:
                # Switch point: the old copy goes out now, then what the new connection held back.
                self._switch(stream)
                del self._new_buffer[stream]
                self.duplicates_dropped += 1
                return [item, *buffer[1:]]
            if any(b == raw for _, b in buffer):
                # The new connection has this frame but not as its first: the two disagree.
                self._mark_unclean(stream)
                return [item]
        recent = self._old_recent.get(stream)
        if recent is None:
            recent = self._old_recent[stream] = deque(maxlen=self._history)
        recent.append(raw)
        return [item]

    def from_new(self, stream: str, item: Item) -> list[Item]:
        """A frame from the new connection; returns what to deliver now, in order."""
        raw = item[1]
        if stream in self._switched:
            owed = self._owed.get(stream)
            if owed:
                if owed[0] == raw:
                    owed.popleft()
                    if not owed:
                        del self._owed[stream]
                    self.duplicates_dropped += 1
                    return []
                # Not the frame we expected: deliver rather than risk losing data.
                self.mismatches += 1
                del self._owed[stream]
            return [item]
        if stream not in self._pending:
            return [item]
        buffer = self._new_buffer.setdefault(stream, [])
        recent = self._old_recent.get(stream)
        if not buffer and stream not in self._unclean and recent:
            for index, old_raw in enumerate(recent):
                if old_raw == raw:
                    # Switch point, new connection behind: it still owes what old delivered after this.
                    self._switch(stream)
                    del self._new_buffer[stream]
                    still_owed = list(recent)[index + 1 :]
                    if still_owed:
                        self._owed[stream] = deque(still_owed)
                    self.duplicates_dropped += 1
                    return []
        buffer.append(item)
        return []

    def finish(self) -> dict[str, list[Item]]:
        """End the overlap: every stream now comes from the new connection.

        Returns the streams without a clean switch point (each needs a restart marker) with the frames
        the new connection held back for them, to deliver after the marker. Owed duplicates that never
        arrived are forgotten.
        """
        restart: dict[str, list[Item]] = {}
        for stream in sorted(self._pending):
            held = self._new_buffer.pop(stream, [])
            if held or stream in self._old_seen or stream in self._unclean:
                restart[stream] = held
            self._switched.add(stream)
        self._pending.clear()
        self._owed.clear()
        self._old_recent.clear()
        return restart

    def _switch(self, stream: str) -> None:
        self._pending.discard(stream)
        self._switched.add(stream)
        self._old_recent.pop(stream, None)

    def _mark_unclean(self, stream: str) -> None:
        self.mismatches += 1
        self._unclean.add(stream)
