"""The per-stream stale rule of one connection slot: which silent stream is worth a reconnect.

Binance can stop one stream of a connection while its other streams flow; only a new connection brings
it back. But a silent stream may just be a quiet market: aggTrade of an illiquid symbol can be silent for
minutes. So, for a connection whose other streams flow (a connection silent as a whole is reconnected by
:mod:`realtime.ws_slot` every time, with backoff):

- a stream of a *continuous* kind (:data:`CONTINUOUS_KINDS`: depth, bookTicker, markPrice — Binance pushes
  them at a fixed pace while the market lives) silent for ``stale_after`` seconds gets its connection
  reconnected, once: the stream is then *suspect* until it delivers a frame again;
- a suspect silent again for ``stale_after`` on the new connection is a quiet market: it is reported and
  counted (``stale_stream_quiet``), never reconnected again until it has delivered in between — no loop;
- any other silent stream (aggTrade, trade, klines) is reported only.

Every silent stream that does not cause a reconnect is listed in :attr:`StreamWatch.reported` (the pool's
``stale_streams``) and counted once per silence in ``stale_stream_reports``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tapewatch.streams import Kind, UnknownStream, parse_stream

#: Stream kinds Binance pushes at a fixed pace whatever the trading: silence means a broken stream.
CONTINUOUS_KINDS = frozenset({Kind.DEPTH, Kind.BOOK_TICKER, Kind.MARK_PRICE})


def is_continuous(stream: str) -> bool:
    """Whether ``stream`` normally never stays silent for long (its silence is worth a reconnect)."""
    try:
        return parse_stream(stream).kind in CONTINUOUS_KINDS
    except UnknownStream:
        return False


@dataclass(frozen=True, slots=True)
class StaleVerdict:
    """What one look at a connection's silent streams decided.

    ``reconnect_for``: continuous streams whose silence warrants reconnecting the connection (empty: keep
    it). ``reported``: streams newly reported silent; ``quiet``: those of them silent again after the
    reconnect they already got; ``resumed``: reported streams that spoke again (or left).
    """

    reconnect_for: tuple[str, ...] = ()
    reported: tuple[str, ...] = ()
    quiet: tuple[str, ...] = ()
    resumed: tuple[str, ...] = ()


class StreamWatch:
    """The stale-stream state of one slot: what is reported, which streams already got their reconnect."""

    def __init__(self) -> None:
        self.reported: set[str] = set()
        # stream -> its frame count when its silence reconnected the connection; it stays here (and
        # gets no second reconnect) until the count moves
        self._suspects: dict[str, int] = {}

    @property
    def suspects(self) -> frozenset[str]:
        """Continuous streams that got a reconnect for their silence and have not delivered since."""
        return frozenset(self._suspects)

    def check(self, silent: Iterable[str], frames: Mapping[str, int], *, may_reconnect: bool) -> StaleVerdict:
        """Judge the streams ``silent`` for ``stale_after`` on a connection whose other streams flow.

        ``frames``: frames received per stream so far (a suspect whose count moved is trusted again);
        ``may_reconnect``: False while a reconnect is not an option (a rollover is under way).
        """
        for stream, count in list(self._suspects.items()):
            if frames.get(stream, 0) > count:
                del self._suspects[stream]
        silent = set(silent)
        if may_reconnect:
            broken = tuple(sorted(s for s in silent if s not in self._suspects and is_continuous(s)))
            if broken:
                for stream in broken:
                    self._suspects[stream] = frames.get(stream, 0)
                return StaleVerdict(reconnect_for=broken)
        new = silent - self.reported
        resumed = self.reported - silent
        self.reported = silent
        return StaleVerdict(
            reported=tuple(sorted(new)),
            quiet=tuple(sorted(new & self._suspects.keys())),
            resumed=tuple(sorted(resumed)),
        )

    def keep_only(self, streams: Iterable[str]) -> None:
        """Forget suspects that are no longer wanted (a later return starts trusted)."""
        wanted = set(streams)
        for stream in self._suspects.keys() - wanted:
            del self._suspects[stream]

    def connection_ended(self) -> None:
        """The connection is gone: nothing is reported about it any more (suspects stay suspect)."""
        self.reported = set()
