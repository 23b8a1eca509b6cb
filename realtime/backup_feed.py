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
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import NamedTuple

from realtime.pacer import Pacer
from realtime.timebase import REAL_TIME, Timebase
from tapewatch.adapters import binance_weights as weights
from tapewatch.adapters.binance_rest import BinanceRest
from tapewatch.errors import BinanceRequestError, IpBanned, RetryableError
from tapewatch.parse import Frame, FrameDecoder
from tapewatch.polled import POLL_FRAGMENT, poll_stream
from tapewatch.settings import SNAPSHOT_WEIGHTS, Settings

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

#: Seconds per unit of a kline interval (``1m``, ``15m``, ``1h``, ...).
_INTERVAL_UNIT_S = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
#: Symbols named in one log line; the rest are counted.
_NAMED = 20


class Poll(StrEnum):
    DEPTH = "depth"
    TRADES = "trades"
    KLINES = "klines"


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


class FollowPlan(NamedTuple):
    """The symbols the backup feed polls (``followed``, in polling order) and those beyond what its budget
    keeps fresh (``not_followed``, not polled at all)."""

    followed: tuple[str, ...]
    not_followed: tuple[str, ...]


def follow_plan(symbols: Sequence[str], first: Collection[str], capacity: int) -> FollowPlan:
    """The first ``capacity`` of ``symbols``, those in ``first`` (with open signals) ahead of the others, each
    group in the order given (the universe's, best score first); the rest are not followed."""
    ordered = [s for s in symbols if s in first] + [s for s in symbols if s not in first]
    cut = max(0, capacity)
    return FollowPlan(tuple(ordered[:cut]), tuple(ordered[cut:]))


def _interval_seconds(interval: str) -> int:
    """Length of a kline interval such as ``1m`` or ``15m``; ValueError for one this feed cannot poll."""
    unit = _INTERVAL_UNIT_S.get(interval[-1:])
    if unit is None or not interval[:-1].isdigit() or int(interval[:-1]) < 1:
        raise ValueError(f"backup feed kline interval must look like 1m, 15m, 1h, 1d or 1w; got {interval!r}")
    return int(interval[:-1]) * unit


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


@dataclass(frozen=True, slots=True)
class BackupConfig:
    """What the backup feed polls and how fast.

    ``weight_per_minute`` is the process's usable REST weight (``Settings.usable_weight_per_minute``); each
    poller gets its ``*_share`` of it (together at most 1, the rest stays for other callers) and never polls
    one symbol more often than its ``*_every`` seconds. ``trade_stale_after`` is the engine's
    (``Settings.trade_stale_after``): a trades round may take ``trades_round_share`` of it, the rest is slack
    for a busy symbol's further pages and slow answers (see :meth:`max_symbols`).
    """

    weight_per_minute: int = 1920
    depth_share: float = 0.4
    trades_share: float = 0.5
    klines_share: float = 0.05
    depth_limit: int = 50
    depth_every: float = 1.0
    trades_limit: int = weights.MAX_AGG_TRADES_LIMIT
    trades_every: float = 1.0
    trades_max_pages: int = 3
    klines_every: float = 60.0
    klines_limit: int = 3
    intervals: tuple[str, ...] = ("1m", "15m")
    catch_up_timeout: float = 10.0
    refused_pause: float = 300.0
    trade_stale_after: float = 60.0
    trades_round_share: float = 0.75

    def __post_init__(self) -> None:
        if self.weight_per_minute < 1:
            raise ValueError(f"backup feed weight_per_minute must be >= 1; got {self.weight_per_minute}")
        shares = (self.depth_share, self.trades_share, self.klines_share)
        if any(not 0 < s <= 1 for s in shares) or sum(shares) > 1 + 1e-9:
            raise ValueError(f"backup feed shares must be in (0, 1] and sum to at most 1; got {shares}")
        if self.depth_limit not in SNAPSHOT_WEIGHTS:
            raise ValueError(f"depth_limit must be one of {sorted(SNAPSHOT_WEIGHTS)}; got {self.depth_limit}")
        weights.klines_weight(self.klines_limit)  # ValueError outside 1..1500
        if not 1 <= self.trades_limit <= weights.MAX_AGG_TRADES_LIMIT or self.trades_max_pages < 1:
            raise ValueError("trades_limit must be within 1..1000 and trades_max_pages >= 1")
        if min(self.depth_every, self.trades_every, self.klines_every, self.catch_up_timeout) <= 0:
            raise ValueError("backup feed intervals and catch_up_timeout must be > 0 s")
        if self.trade_stale_after <= 0 or not 0 < self.trades_round_share <= 1:
            raise ValueError("trade_stale_after must be > 0 s and trades_round_share within (0, 1]")
        if not self.intervals:
            raise ValueError("backup feed intervals must name at least one kline interval")
        for interval in self.intervals:
            _interval_seconds(interval)

    @classmethod
    def from_settings(cls, settings: Settings) -> BackupConfig:
        return cls(
            weight_per_minute=settings.usable_weight_per_minute,
            trade_stale_after=settings.trade_stale_after,
        )

    def weight(self, poll: Poll) -> int:
        """Request weight of one poll of ``poll``."""
        if poll is Poll.DEPTH:
            return weights.depth_weight(self.depth_limit)
        if poll is Poll.TRADES:
            return weights.AGG_TRADES_WEIGHT
        return weights.klines_weight(self.klines_limit)

    def spacing(self, poll: Poll) -> float:
        """Seconds between two requests of ``poll`` so that it stays within its share of the budget."""
        share = {Poll.DEPTH: self.depth_share, Poll.TRADES: self.trades_share, Poll.KLINES: self.klines_share}
        return self.weight(poll) * 60.0 / (share[poll] * self.weight_per_minute)

    def round_seconds(self, poll: Poll, symbols: int) -> float:
        """How long one round of ``poll`` over ``symbols`` symbols takes: how stale its data gets."""
        requests = symbols * (len(self.intervals) if poll is Poll.KLINES else 1)
        every = {Poll.DEPTH: self.depth_every, Poll.TRADES: self.trades_every, Poll.KLINES: self.klines_every}
        return max(every[poll], requests * self.spacing(poll))

    def max_symbols(self) -> int:
        """The most symbols the budget keeps fresh (at least 1): one aggTrades page each within
        ``trades_round_share`` of ``trade_stale_after``, and every kline polled before it leaves the last
        ``klines_limit`` bars of the shortest interval (so each bar is seen closed). Depth needs no bound: a
        polled book is judged against the interval its poll states."""
        trades = self.trades_round_share * self.trade_stale_after / self.spacing(Poll.TRADES)
        bars = max(1, self.klines_limit - 1) * min(_interval_seconds(i) for i in self.intervals)
        klines = bars / (len(self.intervals) * self.spacing(Poll.KLINES))
        return max(1, math.floor(min(trades, klines) + 1e-9))


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
