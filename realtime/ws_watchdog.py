"""The per-stream stale rule of one connection slot: which silent stream is worth a reconnect.

Binance can stop one stream of a connection while its other streams flow; only a new connection brings
it back. But a silent stream may just be a quiet market: aggTrade of an illiquid symbol can be silent for
minutes, and even bookTicker and depth are pushed only when the book changes, so an illiquid symbol's
book streams may stay silent past ``stale_after`` again and again. A reconnect resyncs every book of the
connection (up to 200 streams), so, for a connection whose other streams flow (a connection silent as a
whole is reconnected by :mod:`realtime.ws_slot` every time, with backoff):

- a stream of a *continuous* kind (:data:`CONTINUOUS_KINDS`: depth, bookTicker, markPrice) silent for its
  *limit* gets its connection reconnected. The limit is ``stale_after × 2**n``, ``n`` the reconnects this
  stream already caused (its *strikes*), at most ``2**MAX_DOUBLINGS`` times ``stale_after``: a stream that
  keeps going silent after delivering a little is a sparse market, and each of its repeat reconnects needs
  twice the silence of the one before;
- after its reconnect, the stream is *suspect* until it delivers a frame: silent again on the new
  connection, it is a quiet market, reported and never reconnected for until it has delivered;
- a strike is forgiven after the stream has been observed flowing for ``decay_after`` (an hour) with no
  silence of ``stale_after``, one strike per such period. So the rare real glitch of a liquid stream is
  again caught after ``stale_after`` a few hours later, while a sparse stream (silent past ``stale_after``
  every few minutes) keeps its strikes for as long as it is subscribed: at worst it reconnects its
  connection once per ``stale_after × 2**MAX_DOUBLINGS`` (16 min with the default 15 s);
- any other silent stream (aggTrade, trade, klines) is reported only.

Every silent stream (``stale_after``) that does not cause a reconnect is listed in
:attr:`StreamWatch.reported` (the pool's ``stale_streams``) and counted once per silence in
``stale_stream_reports``; those of a continuous kind that already have strikes are counted as quiet too
(``stale_stream_quiet``). A stream that leaves the wanted set (:meth:`StreamWatch.keep_only`) is
forgotten entirely: its strikes, suspect mark and report; coming back, it starts trusted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tapewatch.streams import Kind, UnknownStream, parse_stream

#: Stream kinds Binance pushes at a fixed pace (or on every book change) while the market lives.
CONTINUOUS_KINDS = frozenset({Kind.DEPTH, Kind.BOOK_TICKER, Kind.MARK_PRICE})

#: A stream's silence limit doubles per reconnect it caused, up to ``stale_after × 2**MAX_DOUBLINGS``.
MAX_DOUBLINGS = 6

#: Seconds a stream must be seen flowing with no ``stale_after`` silence to be forgiven one strike.
DECAY_AFTER = 3600.0


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
    it). ``reported``: streams newly reported silent; ``quiet``: those of them of a continuous kind that
    already caused a reconnect; ``resumed``: reported streams that spoke again (or left the connection).
    """

    reconnect_for: tuple[str, ...] = ()
    reported: tuple[str, ...] = ()
    quiet: tuple[str, ...] = ()
    resumed: tuple[str, ...] = ()


@dataclass(slots=True)
class _Strikes:
    """The reconnect history of one continuous stream."""

    count: int  # reconnects this stream caused, less the forgiven ones
    calm_since: float  # when it was last seen silent for stale_after (or caused a reconnect)
    suspect_at: int | None  # its frame count at its last reconnect; None once it delivered since


class StreamWatch:
    """The stale-stream state of one slot: what is reported, which stream caused how many reconnects."""

    def __init__(
        self,
        stale_after: float,
        *,
        max_doublings: int = MAX_DOUBLINGS,
        decay_after: float = DECAY_AFTER,
    ) -> None:
        if stale_after <= 0 or max_doublings < 0 or decay_after <= 0:
            raise ValueError(
                f"need stale_after > 0, max_doublings >= 0, decay_after > 0; got "
                f"{stale_after}, {max_doublings}, {decay_after}"
            )
        self.stale_after = stale_after
        self.max_doublings = max_doublings
        self.decay_after = decay_after
        self.reported: set[str] = set()
        self._strikes: dict[str, _Strikes] = {}
        self._wanted: frozenset[str] | None = None  # None: every stream is judged

    @property
    def suspects(self) -> frozenset[str]:
        """Continuous streams that got a reconnect for their silence and have not delivered since."""
        return frozenset(s for s, h in self._strikes.items() if h.suspect_at is not None)

    def strikes(self, stream: str) -> int:
        """Reconnects ``stream`` caused that are not forgiven yet."""
        history = self._strikes.get(stream)
        return 0 if history is None else history.count

    def limit(self, stream: str) -> float:
        """Seconds of silence after which ``stream`` (once trusted) gets its connection reconnected."""
        return self.stale_after * 2.0 ** min(self.strikes(stream), self.max_doublings)

    def check(
        self, silences: Mapping[str, float], frames: Mapping[str, int], *, now: float, may_reconnect: bool
    ) -> StaleVerdict:
        """Judge the streams of a connection whose other streams flow, at ``now`` (seconds, any epoch).

        ``silences``: seconds since each stream of the connection last delivered (or was subscribed);
        ``frames``: frames received per stream so far (a suspect whose count moved is trusted again);
        ``may_reconnect``: False while a reconnect is not an option (a rollover is under way).
        """
        wanted = self._wanted
        seen = {s: t for s, t in silences.items() if wanted is None or s in wanted}
        silent = {s for s, t in seen.items() if t >= self.stale_after}
        self._update_strikes(seen, silent, frames, now)
        if may_reconnect:
            broken = tuple(sorted(s for s in silent if is_continuous(s) and self._due(s, seen[s])))
            if broken:
                for stream in broken:
                    self._strike(stream, frames.get(stream, 0), now)
                return StaleVerdict(reconnect_for=broken)
        new = silent - self.reported
        resumed = self.reported - silent
        self.reported = silent
        return StaleVerdict(
            reported=tuple(sorted(new)),
            quiet=tuple(sorted(new & self._strikes.keys())),
            resumed=tuple(sorted(resumed)),
        )

    def keep_only(self, streams: Iterable[str]) -> None:
        """Judge only ``streams`` from now on; forget everything about the others (a return starts
        trusted, and a stream leaving is neither reported again nor reported resumed)."""
        wanted = frozenset(streams)
        self._wanted = wanted
        self.reported &= wanted
        for stream in self._strikes.keys() - wanted:
            del self._strikes[stream]

    def connection_ended(self) -> None:
        """The connection is gone: nothing is reported about it any more (strikes and suspects stay)."""
        self.reported = set()

    def _update_strikes(
        self, seen: Mapping[str, float], silent: set[str], frames: Mapping[str, int], now: float
    ) -> None:
        for stream, history in list(self._strikes.items()):
            if history.suspect_at is not None and frames.get(stream, 0) > history.suspect_at:
                history.suspect_at = None
            if stream in silent:
                history.calm_since = now
            elif stream in seen and now - history.calm_since >= self.decay_after:
                history.count -= 1
                history.calm_since = now
                if history.count <= 0:
                    del self._strikes[stream]

    def _due(self, stream: str, silence: float) -> bool:
        """Whether ``stream``'s ``silence`` is worth a reconnect: trusted and silent past its limit."""
        history = self._strikes.get(stream)
        if history is not None and history.suspect_at is not None:
            return False
        return silence >= self.limit(stream)

    def _strike(self, stream: str, frame_count: int, now: float) -> None:
        history = self._strikes.get(stream)
        if history is None:
            self._strikes[stream] = _Strikes(1, now, frame_count)
        else:
            # capped: past the longest limit more strikes change nothing but how long forgiving takes
            history.count = min(history.count + 1, max(self.max_doublings, 1))
            history.calm_since = now
            history.suspect_at = frame_count
