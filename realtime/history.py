"""The kline history of a symbol that joins the universe, fetched until it is had.

A joining symbol needs its candle history over REST (``/fapi/v1/klines``, see
:func:`tapewatch.market.history_klines`): the ``kline_history_bars`` closed 15m candles of the volume-intensity
context and RSI, and the 1m candles behind the correlation rule's 240 returns. Without it the context is
averaged over the few bars the streams have closed since, and the correlation rule cannot see the symbol for
half an hour (``MIN_POINTS`` returns), so a failed request is not the end of it: it is counted
(``history_failed``, one per failed attempt), logged, and tried again (``history_retries``) after a backoff
with full jitter, :attr:`HistoryRetry.base` (5 s) doubling up to :attr:`HistoryRetry.cap` (5 min), and at
least as long as a 418 ban has still to run. It stops when the request succeeds or the symbol no longer
needs that interval (``wanted``: it left the universe and is not retained for open signals; a retained symbol
keeps its 1m candles only). Every attempt goes through the REST client and so through the process's weight
budget: a 429 pauses it, and the retry waits its turn there. A request Binance refuses as bad (another 4xx:
:class:`~tapewatch.errors.BinanceRequestError`, or any other fatal error but a ban) is not repeated.

Replay: only answers are captured (``apply`` writes each under its ``rest:`` name where it is applied); a
failed attempt leaves nothing in the capture, so a replay applies the answer of the attempt that succeeded at
the place the live run applied it, and rebuilds the same candles.

Any other exception (a bug, a limit the REST client refuses) ends that interval's request, not the symbol's
task: it is logged with the traceback and counted (``history_errors``), and the next interval is fetched (a
15m request that failed so left the 1m history unfetched too). An exception outside a request still ends the
task; its done-callback logs and counts it the same way, so no task ends with an exception nobody retrieved.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from realtime.backoff import Backoff
from realtime.snapshots import RestAnswer
from realtime.timebase import REAL_TIME, Timebase
from tapewatch.errors import FatalError, IpBanned, RetryableError

log = logging.getLogger(__name__)

#: ``(symbol, interval, limit)`` -> the klines answer (the REST client's errors raised).
FetchKlines = Callable[[str, str, int], Awaitable[RestAnswer]]
#: ``(symbol, interval)`` -> whether the symbol still needs that interval's history.
Wanted = Callable[[str, str], bool]


@dataclass(frozen=True, slots=True)
class HistoryRetry:
    """Delays between the attempts of one history request: full jitter, ``base`` doubling up to ``cap`` s."""

    base: float = 5.0
    cap: float = 300.0


class HistoryLoader:
    """One task per joining symbol (:meth:`start`), fetching its history intervals in turn."""

    def __init__(
        self,
        fetch: FetchKlines,
        apply: Callable[[RestAnswer], None],
        wanted: Wanted,
        intervals: Sequence[tuple[str, int]],
        *,
        counters: Counter[str],
        ban_left: Callable[[], float] = lambda: 0.0,
        retry: HistoryRetry | None = None,
        timebase: Timebase = REAL_TIME,
    ) -> None:
        self.retry = retry or HistoryRetry()
        self.counters = counters  # the service's: history_failed, history_retries, history_errors
        #: the running tasks (a symbol's newest one is in ``_of``)
        self.tasks: set[asyncio.Task[None]] = set()
        self._fetch = fetch
        self._apply = apply
        self._wanted = wanted
        self._intervals = tuple(intervals)
        self._ban_left = ban_left
        self._tb = timebase
        self._of: dict[str, asyncio.Task[None]] = {}

    def start(self, symbol: str) -> asyncio.Task[None]:
        """Fetch ``symbol``'s history in a new task (one still running for it, from an earlier join, is
        cancelled: the new one fetches all of it again)."""
        self.cancel(symbol)
        task = asyncio.get_running_loop().create_task(self.load(symbol), name=f"history-{symbol}")
        self.tasks.add(task)
        self._of[symbol] = task
        task.add_done_callback(lambda t: self._done(symbol, t))
        return task

    def cancel(self, symbol: str) -> None:
        """Stop fetching ``symbol``'s history (it left the universe)."""
        task = self._of.pop(symbol, None)
        if task is not None:
            task.cancel()

    async def stop(self) -> None:
        """Cancel every task and wait for them to end (the service stops)."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        # an exception of a task is its done-callback's (logged, counted): not raised here
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def pending(self) -> int:
        """Symbols whose history is still being fetched."""
        return len(self._of)

    async def load(self, symbol: str) -> None:
        """Every history interval of ``symbol``, each retried until it succeeds or is no longer wanted."""
        for interval, limit in self._intervals:
            try:
                await self._load_interval(symbol, interval, limit)
            except Exception as exc:  # a bug, a limit refused: logged and counted; the next interval goes on
                self.counters["history_errors"] += 1
                log.error(
                    "the %s kline history request failed (not retried): %r",
                    interval,
                    exc,
                    exc_info=exc,
                    extra={"symbol": symbol, "stream": f"kline_{interval}"},
                )

    async def _load_interval(self, symbol: str, interval: str, limit: int) -> None:
        backoff = Backoff(self.retry.base, self.retry.cap, healthy_after=math.inf, random=self._tb.random)
        extra = {"symbol": symbol, "stream": f"kline_{interval}"}
        failed = 0
        while self._wanted(symbol, interval):
            if failed:
                self.counters["history_retries"] += 1
            try:
                answer = await self._fetch(symbol, interval, limit)
            except (RetryableError, FatalError) as exc:
                failed += 1
                self.counters["history_failed"] += 1
                if isinstance(exc, FatalError) and not isinstance(exc, IpBanned):
                    log.warning("no %s kline history (not retried): %s", interval, exc, extra=extra)
                    return
                delay = max(backoff.next_delay(self._tb.monotonic()), self._ban_left())
                log.warning(
                    "no %s kline history (attempt %d): %s; retry in %.1f s", interval, failed, exc, delay,
                    extra=extra,
                )  # fmt: skip
                await self._tb.sleep(delay)
                continue
            self._apply(answer)
            if failed:
                log.info("%s kline history fetched after %d failed attempts", interval, failed, extra=extra)
            return
        if failed:
            log.info(
                "%s kline history no longer needed (the symbol left the universe) after %d failed attempts",
                interval,
                failed,
                extra=extra,
            )

    def _done(self, symbol: str, task: asyncio.Task[None]) -> None:
        """A task ended: forgotten, and an unexpected exception logged and counted (so it is retrieved)."""
        self.tasks.discard(task)
        if self._of.get(symbol) is task:
            del self._of[symbol]
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.counters["history_errors"] += 1
            log.error("the kline history task failed: %r", exc, exc_info=exc, extra={"symbol": symbol})
