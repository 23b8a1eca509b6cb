"""What counts as a feed incident: the feed service's observations, turned into recorder calls.

As things happen (the service calls these on the event loop; they only queue):
- :meth:`IncidentWatch.on_snapshot_needed`: a book asked for a snapshot. ``gap: ...`` opens a ``gap``
  incident; a cold start or a first subscription is normal; anything else (crossed book, snapshot too old,
  depth stream reconnect or rollover) opens a ``resync`` incident. Both stay open until the book is synced.
- :meth:`IncidentWatch.on_marker`: a connection dropped (error, stale, server close) opens a ``reconnect``
  incident for its slot (``public-0``, ...), resolved when the slot reconnects.

Once a second, :meth:`IncidentWatch.check` polls counters rather than hooking internals:
- books of the universe that are stale (``OrderBook.health``) open a ``stale`` incident until they are not;
- gap/resync incidents of books synced again (or gone from the universe) are resolved;
- decoder rejections and malformed websocket frames are summed per stream and recorded once per stream
  per minute (``malformed``, a point event with the counts in its detail);
- the REST client's 429/403/418 counters open ``rate_limited`` (429, or 403: Binance's firewall)/``banned``,
  resolved when the pause or ban ends.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Collection
from datetime import UTC, datetime

from realtime.incidents import IncidentRecorder
from realtime.ws_delivery import StreamsStarted, StreamsStopped
from realtime.ws_stats import TransportStats
from tapewatch.adapters.rest_session import RestSession
from tapewatch.book import Health
from tapewatch.market import Market
from tapewatch.parse import MALFORMED_REASONS, FrameDecoder
from tapewatch.streams import UnknownStream, parse_stream, symbol_streams

log = logging.getLogger(__name__)

#: Snapshot reasons that are part of normal operation, not incidents.
NORMAL_SNAPSHOT_REASONS = ("cold start", "depth stream connect", "depth stream subscribe")
#: Why a connection ended that makes its reconnect an incident (see ``realtime.ws_stats``).
DROP_REASONS = ("error", "stale", "server_close")
#: The ``stream`` of REST incidents (429, 418): they concern every call, not one endpoint.
REST = "rest"
#: Most malformed rows per minute; streams beyond it are summed into one row without a stream.
MAX_MALFORMED_STREAMS = 100
_MAX_STREAM = 200
_SYMBOL = re.compile(r"^[A-Z0-9]+$")


def incident_kind(reason: str) -> str | None:
    """The incident a snapshot request's ``reason`` means: ``gap``, ``resync``, or None (normal)."""
    if reason.startswith("gap"):
        return "gap"
    if reason in NORMAL_SNAPSHOT_REASONS:
        return None
    return "resync"


def table_symbol(symbol: str) -> str | None:
    """``symbol`` when the incidents table accepts it (``^[A-Z0-9]+$``); None otherwise (the stream says)."""
    return symbol if _SYMBOL.match(symbol) else None


def stream_symbol(stream: str) -> str | None:
    """The symbol a stream name is about, when it names one the table accepts."""
    try:
        return table_symbol(parse_stream(stream).symbol)
    except UnknownStream:
        return None


class IncidentWatch:
    """Turns what the feed service sees into incidents on ``recorder`` (see the module docstring).

    ``clock`` (epoch seconds) delimits the malformed-frame minutes; exchange time is read from the market."""

    def __init__(
        self,
        recorder: IncidentRecorder,
        *,
        update_frequency: int = 100,
        malformed_window: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.recorder = recorder
        self._frequency = update_frequency
        self._window_s = malformed_window
        self._clock = clock
        self._desynced: dict[str, set[str]] = {}  # symbol -> open gap/resync kinds
        self._stale: set[str] = set()
        self._window: int | None = None
        self._malformed: dict[str | None, Counter[str]] = {}
        self._seen_rejected: Counter[tuple[str, str]] = Counter()
        self._seen_total = 0
        self._seen_transport = (0, 0)
        self._seen_rest = (0, 0, 0)  # 429s, 418s, 403s seen

    def depth_stream(self, symbol: str) -> str:
        """The depth stream name of ``symbol`` (the ``stream`` of its gap, resync and stale incidents)."""
        return symbol_streams(symbol, self._frequency, ())[0]

    # --- as things happen ----------------------------------------------------------------------------
    def on_snapshot_needed(self, symbol: str, reason: str, event_time: int | None = None) -> None:
        """A book asked for a snapshot for ``reason`` (at exchange time ``event_time``, when known)."""
        kind = incident_kind(reason)
        if kind is None:
            return
        self._desynced.setdefault(symbol, set()).add(kind)
        self.recorder.open(
            kind,
            symbol=table_symbol(symbol),
            stream=self.depth_stream(symbol),
            detail=reason,
            event_time=event_time if event_time and event_time > 0 else None,
        )

    def on_marker(self, marker: StreamsStarted | StreamsStopped) -> None:
        """A transport lifecycle marker: a dropped connection opens ``reconnect``, its reconnect resolves it."""
        slot = marker.conn.partition("#")[0]
        if isinstance(marker, StreamsStopped):
            if marker.reason in DROP_REASONS:
                self.recorder.open(
                    "reconnect",
                    stream=slot,
                    detail=f"connection {marker.conn} dropped ({marker.reason}); "
                    f"{len(marker.streams)} streams stopped",
                )
            return
        if marker.reason != "reconnect":
            return
        note = f"reconnected as {marker.conn} with {len(marker.streams)} streams"
        if not self.recorder.resolve("reconnect", stream=slot, note=note):
            # The drop was not seen (it happened before this watch started): record the reconnect itself.
            self.recorder.record("reconnect", stream=slot, detail=note)

    # --- once a second -------------------------------------------------------------------------------
    def check(
        self,
        market: Market,
        universe: Collection[str],
        decoder: FrameDecoder,
        transport: TransportStats | None = None,
        rest: RestSession | None = None,
    ) -> None:
        """Poll books, counters and the clock: open and resolve what changed since the last check."""
        self._check_books(market, universe)
        window = int(self._clock() // self._window_s)
        if window != self._window:
            self._flush_malformed()  # the minute that just ended
            self._window = window
        self._count_malformed(decoder, transport)
        if rest is not None:
            self._check_rest(rest)

    def flush(self) -> None:
        """Record the malformed frames counted so far (at shutdown), without waiting for the minute's end."""
        self._flush_malformed()

    def _check_books(self, market: Market, universe: Collection[str]) -> None:
        members = universe if isinstance(universe, set | frozenset) else set(universe)
        for symbol, kinds in list(self._desynced.items()):
            st = market.symbols.get(symbol)
            if symbol not in members:
                note = "symbol left the universe"
            elif st is not None and st.book.synced:
                note = f"book synced again at u={st.book.last_update_id}"
            else:
                continue
            # the recovery is logged as the problem was (spec 13.1: errors and recoveries), once per incident
            log.info(
                "book incident resolved (%s): %s",
                ", ".join(sorted(kinds)),
                note,
                extra={"symbol": symbol, "stream": self.depth_stream(symbol)},
            )
            for kind in sorted(kinds):
                self.recorder.resolve(
                    kind, symbol=table_symbol(symbol), stream=self.depth_stream(symbol), note=note
                )
            del self._desynced[symbol]
        stale_after = market.config.stale_after_ms
        for symbol in members:
            st = market.symbols.get(symbol)
            if st is None:
                continue
            health = st.book.health(market.now_ms, stale_after)
            if health.state is Health.STALE:
                if symbol not in self._stale:
                    self._stale.add(symbol)
                    self.recorder.open(
                        "stale",
                        symbol=table_symbol(symbol),
                        stream=self.depth_stream(symbol),
                        detail=f"no depth update for {health.age_ms / 1000:.1f} s of exchange time "
                        f"(stale after {stale_after / 1000:g} s); last u={health.last_update_id}",
                        event_time=health.last_event_time or None,
                    )
            elif symbol in self._stale:
                out_of_sync = health.state is Health.RESYNCING or health.state is Health.SYNCING
                self._resolve_stale(symbol, f"book {health.state}" if out_of_sync else "updates resumed")
        for symbol in self._stale - members:
            self._resolve_stale(symbol, "symbol left the universe")

    def _resolve_stale(self, symbol: str, note: str) -> None:
        self._stale.discard(symbol)
        self.recorder.resolve(
            "stale", symbol=table_symbol(symbol), stream=self.depth_stream(symbol), note=note
        )

    def _count_malformed(self, decoder: FrameDecoder, transport: TransportStats | None) -> None:
        total = sum(decoder.rejected[r] for r in MALFORMED_REASONS)
        if total != self._seen_total:  # the per-stream counters are only walked when something changed
            self._seen_total = total
            for key, n in decoder.rejected_by_stream.items():
                reason, stream = key
                if reason in MALFORMED_REASONS and n > self._seen_rejected[key]:
                    self._malformed.setdefault(stream[:_MAX_STREAM], Counter())[reason] += (
                        n - self._seen_rejected[key]
                    )
                    self._seen_rejected[key] = n
        if transport is not None:
            seen_bad, seen_unowned = self._seen_transport
            # frames still in flight after their stream's UNSUBSCRIBE (a universe change) are expected, not
            # malformed: counted apart (late_unsubscribed), as the malformed metric counts them
            unowned = transport.unowned_frames - transport.late_unsubscribed
            if transport.malformed > seen_bad:
                self._malformed.setdefault(None, Counter())["invalid_frame"] += transport.malformed - seen_bad
            if unowned > seen_unowned:
                self._malformed.setdefault(None, Counter())["unsubscribed_stream"] += unowned - seen_unowned
            self._seen_transport = (transport.malformed, unowned)

    def _flush_malformed(self) -> None:
        if not self._malformed:
            return
        counts, self._malformed = self._malformed, {}
        since = _hhmmss((self._window or 0) * self._window_s)
        streams = sorted(counts, key=lambda s: (s is None, s or ""))
        if len(streams) > MAX_MALFORMED_STREAMS:  # a flood of made-up stream names must not flood the table
            rest = counts.setdefault(None, Counter())
            for stream in streams[MAX_MALFORMED_STREAMS:]:
                if stream is not None:
                    rest.update(counts.pop(stream))
            streams = sorted(counts, key=lambda s: (s is None, s or ""))
        for stream in streams:
            reasons = counts[stream]
            where = "" if stream is not None else " (frames naming no subscribed stream, or no stream at all)"
            detail = f"{reasons.total()} malformed frames since {since} UTC{where}: " + ", ".join(
                f"{reason} {n}" for reason, n in sorted(reasons.items())
            )
            self.recorder.record(
                "malformed", symbol=stream_symbol(stream) if stream else None, stream=stream, detail=detail
            )

    def _check_rest(self, rest: RestSession) -> None:
        stats, budget = rest.stats, rest.budget
        seen_429, seen_418, seen_403 = self._seen_rest
        self._seen_rest = (stats.rate_limited, stats.banned, stats.waf_blocked)
        if stats.rate_limited > seen_429 or stats.waf_blocked > seen_403:
            answered = [
                f"429 (too many requests) {stats.rate_limited - seen_429} times"
                if stats.rate_limited > seen_429
                else "",
                f"403 (its web application firewall: fewer requests from this IP) {stats.waf_blocked - seen_403} times"
                if stats.waf_blocked > seen_403
                else "",
            ]
            self.recorder.open(
                "rate_limited",
                stream=REST,
                detail=f"Binance answered {' and '.join(a for a in answered if a)}; "
                f"every REST call paused {budget.paused_for():.0f} s",
            )
        elif budget.paused_for() <= 0:
            self.recorder.resolve("rate_limited", stream=REST, note="REST calls resumed")
        if stats.banned > seen_418:
            until = budget.banned_until_ms
            self.recorder.open(
                "banned",
                stream=REST,
                detail=f"Binance banned this IP (418) until {_iso(until / 1000)} UTC; no REST call until then",
            )
        elif budget.banned_for() <= 0:
            self.recorder.resolve("banned", stream=REST, note="ban over")


def _hhmmss(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%H:%M:%S")


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M:%S")
