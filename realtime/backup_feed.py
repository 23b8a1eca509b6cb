"""The backup market-data feed: REST polling of depth, aggTrades and klines while the websockets are off.

Spec 11.1 ``switch_to_backup_feed``: when the websocket feed fails, the platform switches the service to REST.
Three pollers then cycle over the universe, each paced to its share of the process's REST weight budget
(:class:`BackupConfig`), so the backup feed never starves the other callers nor trips Binance's limit:

- depth snapshots (``limit`` 50, weight 2): a polled snapshot stands alone (no diff stream follows it);
- aggTrades (weight 20): continued with ``fromId`` = the first trade id the market state still needs (the one
  after its last applied trade, or inside an open id gap the first one not received yet), so no trade is
  counted twice and none is skipped while Binance still has it; a full page is followed by the next at once.
  A symbol whose trades the market knows only from longer ago than a gap is filled across (back in the
  universe hours later) is polled from the newest page instead, and the market skips that gap as it skips a
  websocket one (``Market.next_trade_id``);
- klines (weight 1), less often: the last few 1m and 15m bars.

The budget bounds how many symbols stay fresh: at 1920 weight a minute the aggTrades poller makes 48 requests a
minute, so a round over N symbols takes N x 1.25 s, and a symbol polled less often than ``trade_stale_after``
(60 s) is not evaluated (its trades are stale). The feed therefore follows at most
:meth:`BackupConfig.max_symbols` symbols (36 by default: a trades round within three quarters of
``trade_stale_after``, klines polled before a bar leaves the polled window), those with open signals first, then
in the order given (the universe's, by score); the others are not polled at all, and are logged and counted
(``backup_not_followed``), never silently left stale.

Every answer is handed to the service as a :class:`Polled`: the raw body for the capture (byte-exact, under
the request's ``rest:`` stream name) and the frames to apply, decoded from that body by the frame decoder
exactly as a replay of the capture line decodes them (:mod:`tapewatch.polled`): one ``AggTrade`` frame per
row of an aggTrades page, in order; one ``Kline`` frame per polled kline row (they move the candles forward,
replacing the forming bar the stopped kline stream left); one snapshot frame per depth poll. Depth and klines
polls carry the stream name of their request plus the fragment ``#poll&every_ms=N``: a fragment is never sent,
so the name still says exactly what was asked; it tells a replay that the answer stands alone (a resync
snapshot, which diffs continue, has none) and that the next poll of the same symbol is due within N ms, the
interval the book's freshness is judged against.

Stopping runs one last aggTrades poll per symbol (bounded by ``catch_up_timeout``), so the websockets take over
close to where REST left off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from functools import partial
from typing import NamedTuple

from realtime.backup_plan import BackupConfig, FollowPlan, Poll, follow_plan
from realtime.pacer import Pacer
from realtime.timebase import REAL_TIME, Timebase
from tapewatch.adapters.binance_rest import BinanceRest
from tapewatch.errors import BinanceRequestError, IpBanned, RetryableError
from tapewatch.parse import Frame, FrameDecoder
from tapewatch.polled import POLL_FRAGMENT, poll_stream

log = logging.getLogger(__name__)

__all__ = [
    "POLL_FRAGMENT",
    "BackupConfig",
    "BackupFeed",
    "FollowPlan",
    "Poll",
    "Polled",
    "fetch_trades_page",
    "follow_plan",
]

#: Symbols named in one log line; the rest are counted.
_NAMED = 20


class Polled(NamedTuple):
    """One REST answer of the backup feed: capture it as ``(recv, stream, body)``, then apply ``frames``."""

    recv: int
    stream: str
    body: bytes
    frames: tuple[Frame, ...]


Deliver = Callable[[Polled], None]
#: symbol -> the first aggTrade id the market still needs (None: none known yet or too old to page through,
#: poll the newest).
NextTradeId = Callable[[str], int | None]
#: The symbols with open signals now (``SignalEngine.open_symbols``): polled first.
OpenSymbols = Callable[[], Collection[str]]


async def fetch_trades_page(
    rest: BinanceRest,
    decoder: FrameDecoder,
    symbol: str,
    from_id: int | None,
    limit: int,
    wall_ms: Callable[[], int],
) -> tuple[Polled, bool]:
    """One ``/fapi/v1/aggTrades`` page from ``from_id`` (the newest trades when None) as a :class:`Polled`
    (one ``AggTrade`` frame per row, decoded from the body as a replay of the capture line decodes it), and
    whether the page was full (more may follow). The REST client's errors are raised.

    Full is judged on the rows the exchange sent, not on the trades kept: a page of ``limit`` rows with one
    bad trade dropped (counted by the client) still means more trades wait, so paging goes on at once. The
    count comes from the frame decoder's one decode of the body (``FrameDecoder.page_rows``)."""
    _, answer = await rest.agg_trades(symbol, from_id=from_id, limit=limit)
    recv = wall_ms()
    frames = tuple(decoder.decode_frames(recv, answer.stream, answer.body))
    full = decoder.page_rows >= limit
    return Polled(recv, answer.stream, answer.body, frames), full


class BackupFeed:
    """REST polling of the universe while switched on (:meth:`start` ... :meth:`stop`).

    ``deliver`` is called in the event loop with every answer, in the order received. ``next_trade_id``
    returns the first aggTrade id the market state still needs of a symbol (``Market.next_trade_id``; None
    when it has none yet): polls continue from it. ``open_symbols`` names the symbols with open signals, followed
    first when there are more symbols than the budget keeps fresh (:class:`FollowPlan`, re-planned at each round
    start and on every change of the symbols). Errors are counted and logged, never raised: a symbol Binance
    refuses is skipped for ``refused_pause`` seconds, a ban waits until it ends.
    """

    def __init__(
        self,
        rest: BinanceRest,
        decoder: FrameDecoder,
        deliver: Deliver,
        *,
        next_trade_id: NextTradeId,
        config: BackupConfig | None = None,
        timebase: Timebase = REAL_TIME,
        open_symbols: OpenSymbols | None = None,
    ) -> None:
        self.rest = rest
        self.decoder = decoder
        self.config = config or BackupConfig()
        self.counters: Counter[str] = Counter()
        self._deliver = deliver
        self._next_trade_id = next_trade_id
        self._tb = timebase
        self._symbols: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._refused: dict[str, float] = {}  # symbol -> monotonic time until which it is skipped
        self._pacers = {poll: Pacer(self.config.spacing(poll), timebase) for poll in Poll}
        self._open_symbols = open_symbols
        self.capacity = self.config.max_symbols()
        self._plan = FollowPlan((), ())
        self._reported: tuple[str, ...] | None = None  # the not-followed symbols last logged
        self._trades_round_ms = 0  # how long the last round of aggTrades polls took

    @property
    def on(self) -> bool:
        return bool(self._tasks)

    @property
    def symbols(self) -> list[str]:
        return list(self._symbols)

    @property
    def plan(self) -> FollowPlan:
        """The symbols polled and those not followed, as of the last round start or change of the symbols."""
        return self._plan

    def set_symbols(self, symbols: Sequence[str]) -> None:
        """Poll these symbols from the next request on."""
        self._symbols = list(dict.fromkeys(symbols))
        for gone in set(self._refused) - set(self._symbols):
            del self._refused[gone]
        self._replan()

    def _replan(self) -> FollowPlan:
        """Plan the symbols to poll (open signals first, up to :attr:`capacity`) and log a change of the ones
        not followed."""
        first = self._open_symbols() if self._open_symbols is not None else ()
        self._plan = plan = follow_plan(self._symbols, first, self.capacity)
        if plan.not_followed != self._reported:
            self._report(plan)
        return plan

    def _report(self, plan: FollowPlan) -> None:
        left = plan.not_followed
        if left:
            named = ", ".join(left[:_NAMED]) + (
                f" and {len(left) - _NAMED} more" if len(left) > _NAMED else ""
            )
            log.warning(
                "backup feed: the REST budget keeps %d of %d symbols fresh (aggTrades of each within %.0f s of "
                "trade_stale_after %.0f s); %d not followed (not polled, not evaluated until the websockets "
                "are back): %s",
                len(plan.followed),
                len(plan.followed) + len(left),
                self.config.round_seconds(Poll.TRADES, len(plan.followed)),
                self.config.trade_stale_after,
                len(left),
                named,
            )
        elif self._reported:
            log.info("backup feed: all %d symbols followed again", len(plan.followed))
        self._reported = left

    def start(self, symbols: Sequence[str]) -> None:
        """Start polling ``symbols`` (call from the event loop; a second start only changes the symbols)."""
        self.set_symbols(symbols)
        if self._tasks:
            return
        self.counters["starts"] += 1
        self._tasks = [asyncio.create_task(self._poll_loop(poll), name=f"backup-{poll}") for poll in Poll]
        n = len(self._plan.followed)
        log.info(
            "backup feed on: polling %d of %d symbols over REST, at most %d kept fresh (depth every %.1f s, "
            "aggTrades every %.1f s, klines every %.1f s)",
            n,
            len(self._symbols),
            self.capacity,
            self.config.round_seconds(Poll.DEPTH, n),
            self.config.round_seconds(Poll.TRADES, n),
            self.config.round_seconds(Poll.KLINES, n),
        )

    async def stop(self, *, catch_up: bool = True) -> None:
        """Stop polling; with ``catch_up``, first fetch each symbol's trades since its last poll."""
        tasks = self._tasks
        if not tasks:
            return
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if catch_up:
            await self._catch_up()
        self._tasks = []  # on until here: a universe change meanwhile still goes to this feed
        self._reported = None  # the next start reports the symbols not followed again
        log.info("backup feed off")

    # --- polling ------------------------------------------------------------------------------------------
    async def _poll_loop(self, poll: Poll) -> None:
        every = {
            Poll.DEPTH: self.config.depth_every,
            Poll.TRADES: self.config.trades_every,
            Poll.KLINES: self.config.klines_every,
        }[poll]
        while True:
            started = self._tb.monotonic()
            for symbol in self._replan().followed:
                if symbol not in self._symbols or self._skipped(symbol):
                    continue  # left the universe meanwhile, or refused by Binance
                if poll is Poll.KLINES:
                    for interval in self.config.intervals:
                        await self._pacers[poll].wait()
                        await self._guarded(poll, symbol, partial(self._poll_klines, symbol, interval))
                elif poll is Poll.DEPTH:
                    await self._pacers[poll].wait()
                    await self._guarded(poll, symbol, partial(self._poll_depth, symbol))
                else:
                    for _ in range(self.config.trades_max_pages):
                        await self._pacers[poll].wait()
                        full = await self._guarded(poll, symbol, partial(self._poll_trades, symbol))
                        if not full:
                            break
                        self.counters["trades_full_pages"] += 1  # behind: fetch the next page now
            took = self._tb.monotonic() - started
            if poll is Poll.TRADES:
                self._trades_round(took)
            await self._tb.sleep(max(every - took, 0.01))

    def _trades_round(self, seconds: float) -> None:
        """A round of aggTrades polls ended: keep its length; one longer than ``trade_stale_after`` left
        symbols' trades stale between two polls (busy symbols' further pages, slow answers), so say it."""
        self._trades_round_ms = round(seconds * 1000)
        if seconds <= self.config.trade_stale_after:
            return
        self.counters["trades_rounds_late"] += 1
        n = self.counters["trades_rounds_late"]
        if n <= 10 or n % 100 == 0:
            log.warning(
                "backup feed: a round of aggTrades polls over %d symbols took %.0f s, longer than "
                "trade_stale_after (%.0f s): trades went stale between polls (%d such rounds)",
                len(self._plan.followed),
                seconds,
                self.config.trade_stale_after,
                n,
            )

    def _skipped(self, symbol: str) -> bool:
        until = self._refused.get(symbol)
        if until is None:
            return False
        if self._tb.monotonic() >= until:
            del self._refused[symbol]
            return False
        return True

    async def _guarded(self, poll: Poll, symbol: str, request: Callable[[], Awaitable[bool]]) -> bool:
        """Run one poll; count and log its failure instead of raising. True when a full trades page came."""
        try:
            result = await request()
            self.counters[f"polls_{poll}"] += 1
            return bool(result)
        except BinanceRequestError as exc:
            self.counters["refused"] += 1
            self._refused[symbol] = self._tb.monotonic() + self.config.refused_pause
            log.error(
                "backup feed: Binance refused %s of %s, skipping the symbol for %.0f s: %s",
                poll,
                symbol,
                self.config.refused_pause,
                exc,
                extra={"symbol": symbol},
            )
        except IpBanned as exc:
            self.counters["banned"] += 1
            wait = max(1.0, (exc.until_ms - self._tb.wall_ms()) / 1000)
            log.error("backup feed: IP banned, polling resumes in %.0f s", wait, extra={"symbol": symbol})
            await self._tb.sleep(wait)
        except RetryableError as exc:
            self.counters[f"errors_{poll}"] += 1
            n = self.counters[f"errors_{poll}"]
            if n <= 10 or n % 100 == 0:
                log.warning("backup feed: %s of %s failed: %s", poll, symbol, exc, extra={"symbol": symbol})
        except Exception:
            # A bug here must not end the backup feed (the websockets are off): log it and go on polling.
            self.counters["bugs"] += 1
            log.exception("backup feed: %s of %s failed unexpectedly", poll, symbol, extra={"symbol": symbol})
        return False

    def every_ms(self, poll: Poll) -> int:
        """The interval (ms) until the next poll of ``poll`` of one symbol at the current universe size."""
        return round(self.config.round_seconds(poll, max(1, len(self._plan.followed))) * 1000)

    async def _poll_depth(self, symbol: str) -> bool:
        _, answer = await self.rest.depth(symbol, self.config.depth_limit)
        self._deliver_decoded(poll_stream(answer.stream, self.every_ms(Poll.DEPTH)), answer.body)
        return False

    async def _poll_trades(self, symbol: str) -> bool:
        polled, full = await fetch_trades_page(
            self.rest,
            self.decoder,
            symbol,
            self._next_trade_id(symbol),
            self.config.trades_limit,
            self._tb.wall_ms,
        )
        self._deliver(polled)
        self.counters["trades"] += len(polled.frames)
        return full

    async def _poll_klines(self, symbol: str, interval: str) -> bool:
        _, answer = await self.rest.klines(symbol, interval, self.config.klines_limit)
        self._deliver_decoded(poll_stream(answer.stream, self.every_ms(Poll.KLINES)), answer.body)
        return False

    def _deliver_decoded(self, stream: str, body: bytes) -> tuple[Frame, ...]:
        # Decoded by the frame decoder itself, as a replay of the capture line is: the same frames by
        # construction, whatever the decoder makes of the stream name.
        recv = self._tb.wall_ms()
        frames = tuple(self.decoder.decode_frames(recv, stream, body))
        self._deliver(Polled(recv, stream, body, frames))
        return frames

    async def _catch_up(self) -> None:
        symbols = [s for s in self._plan.followed if not self._skipped(s)]
        done = 0

        async def one(symbol: str) -> None:
            nonlocal done
            await self._guarded(Poll.TRADES, symbol, partial(self._poll_trades, symbol))
            done += 1

        tasks = [asyncio.create_task(one(s)) for s in symbols]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.catch_up_timeout):
                await asyncio.gather(*tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.counters["catch_up_missed"] += len(symbols) - done
        if done < len(symbols):
            log.warning(
                "backup feed: trades of %d of %d symbols not caught up within %.0f s",
                len(symbols) - done,
                len(symbols),
                self.config.catch_up_timeout,
            )

    # --- what operators see -------------------------------------------------------------------------------
    def metrics(self) -> dict[str, int | float]:
        """Counters of the backup feed as numbers (for the metrics hash)."""
        c = self.counters
        plan = self._plan if self.on else FollowPlan((), ())
        return {
            "backup_feed_on": int(self.on),
            "backup_followed": len(plan.followed),
            "backup_not_followed": len(plan.not_followed),
            "backup_max_symbols": self.capacity,
            "backup_trades_round_ms": self._trades_round_ms,
            "backup_trades_rounds_late": c["trades_rounds_late"],
            "backup_polls_depth": c["polls_depth"],
            "backup_polls_trades": c["polls_trades"],
            "backup_polls_klines": c["polls_klines"],
            "backup_trades": c["trades"],
            "backup_trades_full_pages": c["trades_full_pages"],
            "backup_errors": c["errors_depth"] + c["errors_trades"] + c["errors_klines"] + c["bugs"],
            "backup_refused": c["refused"],
        }
