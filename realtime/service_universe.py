"""Which symbols the realtime service follows: the universe it is given (or chooses at start), and the
*retained* symbols, out of the universe but still followed for their open signals (see :mod:`realtime.service`);
the streams of both subscribed on the websocket pool, or polled by the backup feed while it is on.

A mixin of :class:`realtime.service.FeedService` (kept apart to keep that module small).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Collection
from typing import TYPE_CHECKING

import msgspec

from realtime.backup_feed import BackupFeed
from realtime.history import HistoryLoader
from realtime.snapshots import SnapshotScheduler
from realtime.timebase import _wall_ms
from realtime.trade_fill import TradeFiller
from realtime.ws_pool import StreamPool
from tapewatch.adapters.binance_rest import BinanceRest
from tapewatch.engine import DEPTH_UNSUBSCRIBED, SignalEngine
from tapewatch.errors import ConfigError, FatalError, RetryableError
from tapewatch.events import CONTROL_INSTRUMENTS
from tapewatch.settings import PRIMARY_TF, Settings
from tapewatch.streams import Kind, parse_stream, symbol_streams
from tapewatch.universe import top_by_volume, tradable_instruments, tradable_perpetuals

if TYPE_CHECKING:
    from realtime.capture import CaptureWriter
    from tapewatch.market_depth import SnapshotNeeded

log = logging.getLogger("realtime.service")  # the service's logger: its lines keep the name they always had

TIMEFRAMES = ("1m", PRIMARY_TF)
#: What a retained symbol keeps (see the module docstring): its trades and its 1m candles.
RETAINED_KINDS = (Kind.AGG_TRADE, Kind.KLINE)
RETAINED_TIMEFRAMES = ("1m",)


async def choose_universe(
    rest: BinanceRest, settings: Settings, tradable: Collection[str] | None = None
) -> list[str]:
    """``Settings.symbols`` if given (unknown names are dropped with an error; ConfigError when none is left:
    a fixed list is not silently replaced by nothing), else the top by volume.

    ``tradable``: the tradable symbols of exchangeInfo when already fetched."""
    if tradable is None:
        info, _ = await rest.exchange_info()
        tradable = tradable_perpetuals(info.symbols)
    if settings.symbols:
        unknown = sorted(set(settings.symbols) - set(tradable))
        chosen = [s for s in settings.symbols if s in tradable]
        if not chosen:
            raise ConfigError(
                f"--symbols / TAPEWATCH_SYMBOLS: none of {', '.join(unknown)} is a tradable USDT perpetual of "
                f"{settings.binance_rest_url}; give listed symbols, like BTCUSDT,ETHUSDT"
            )
        if unknown:
            log.error(
                "not tradable USDT perpetuals, ignored: %s (check --symbols / TAPEWATCH_SYMBOLS)",
                ", ".join(unknown),
            )
        return chosen
    tickers, _ = await rest.ticker_24hr()
    return top_by_volume(set(tradable), tickers, settings.universe_size)


class FeedUniverse:
    """The universe and retained-symbol methods of :class:`~realtime.service.FeedService`."""

    settings: Settings
    rest: BinanceRest
    pool: StreamPool
    capture: CaptureWriter | None
    engine: SignalEngine
    snapshots: SnapshotScheduler
    fills: TradeFiller
    history: HistoryLoader
    backup: BackupFeed
    universe: list[str]
    retained: list[str]
    _wanted: frozenset[str]
    _joined: dict[str, int]
    _tradable: frozenset[str] | None
    counters: Counter[str]

    if TYPE_CHECKING:

        def _restart_depth(self, symbol: str, reason: str) -> SnapshotNeeded | None: ...

    def set_universe(self, symbols: list[str]) -> None:
        """Watch exactly these symbols (subscribe/unsubscribe live; no reconnect). A symbol out of them with
        open signals is retained until they end (see the module docstring)."""
        held = self.engine.open_symbols()
        for gone in set(self.universe) - set(symbols):
            self.snapshots.cancel(gone)
            if gone not in held:
                self.fills.cancel(gone)  # a retained symbol's trades must stay whole: its gap fills go on
                self.history.cancel(gone)  # a retained one still wants its 1m history (_history_wanted)
        for new in [s for s in symbols if s not in self.universe]:
            # still retained, or released while the engine still skips it (its depth restart never came:
            # the backup feed starts no stream)
            if new in self.retained or self.engine.is_retained(new):
                self._rejoined(new)
            self._joined[new] = _wall_ms()
            self.history.start(new)
        kept = [s for s in self.retained if s not in symbols]
        for sym, ids in held.items():
            if sym not in symbols and sym not in kept:
                self._retain(sym, ids)
                kept.append(sym)
        self.universe = list(symbols)
        self.retained = kept
        self._follow_streams()

    def _retain(self, symbol: str, signal_ids: list[str]) -> None:
        """``symbol`` leaves the universe with open signals: its book goes, its trades stay followed."""
        self._restart_depth(symbol, DEPTH_UNSUBSCRIBED)  # from here on not evaluated, live and in replay
        log.info(
            "%s left the universe; kept subscribed while signal %s %s open",
            symbol,
            ", ".join(signal_ids),
            "is" if len(signal_ids) == 1 else "are",
            extra={"symbol": symbol, "signal_id": signal_ids[0]},
        )

    def _rejoined(self, symbol: str) -> None:
        """A retained symbol is back in the universe: evaluated again once its depth stream starts (the pool
        reports it); the backup feed starts no stream, so the service restarts the book itself."""
        if self.backup.on:
            self._restart_depth(symbol, "subscribe")
        log.info(
            "%s is back in the universe (was kept for its open signals)", symbol, extra={"symbol": symbol}
        )

    def _release_finished(self) -> None:
        """Unsubscribe the retained symbols whose last open signal just ended."""
        held = self.engine.open_symbols()
        done = [s for s in self.retained if s not in held]
        if not done:
            return
        self.retained = [s for s in self.retained if s in held]
        for symbol in done:
            self.fills.cancel(symbol)
            log.info(
                "%s released: its last open signal ended, unsubscribed", symbol, extra={"symbol": symbol}
            )
        self._follow_streams()

    @property
    def followed(self) -> list[str]:
        """The symbols whose data flows in: the universe, then the retained ones."""
        return [*self.universe, *self.retained]

    def _follow_streams(self) -> None:
        """Subscribe (or poll) exactly the streams of the universe and of the retained symbols."""
        streams = self._followed_streams()
        self._wanted = frozenset(streams)
        if self.backup.on:  # the websockets stay off: the backup feed polls the new universe
            self.backup.set_symbols(self.followed)
            log.info(
                "universe: %d symbols (%d retained), polled by the backup feed",
                len(self.universe),
                len(self.retained),
            )
            return
        self.pool.set_streams(streams)
        log.info(
            "universe: %d symbols, %d streams (%d symbols retained for open signals)",
            len(self.universe),
            len(streams),
            len(self.retained),
        )

    def _streams(self, symbols: list[str]) -> list[str]:
        return [s for sym in symbols for s in symbol_streams(sym, self.settings.update_frequency, TIMEFRAMES)]

    def _followed_streams(self) -> list[str]:
        """The streams of the universe's symbols, then the retained symbols' trades and 1m candles."""
        freq = self.settings.update_frequency
        return self._streams(self.universe) + [
            s
            for sym in self.retained
            for s in symbol_streams(sym, freq, RETAINED_TIMEFRAMES)
            if parse_stream(s).kind in RETAINED_KINDS
        ]

    async def tradable_symbols(self) -> frozenset[str]:
        """The tradable USDT perpetuals of exchangeInfo, fetched once and kept (the REST client's errors
        are raised while it cannot be fetched); :meth:`refresh_tradable` fetches them again."""
        if self._tradable is None:
            return await self.refresh_tradable()
        return self._tradable

    async def refresh_tradable(self) -> frozenset[str]:
        """Fetch exchangeInfo (through the REST weight budget) and keep its tradable USDT perpetuals; their tick
        sizes go to the engine through a ``control:instruments`` line captured right there, so a replay puts
        stops and targets on the same grid from the same place in the tape. The control loop calls it when a
        universe names a symbol the kept list lacks (listed since the start)."""
        info, _ = await self.rest.exchange_info()
        listed, line = tradable_instruments(info.symbols)
        tradable = frozenset(listed)
        self._tradable = tradable
        if self.capture is not None:
            self.capture.write(_wall_ms(), CONTROL_INSTRUMENTS, msgspec.json.encode(line))
        self.engine.set_instruments(line)
        return tradable

    async def refresh_instruments_loop(self) -> None:
        """exchangeInfo again every ``exchange_info_refresh`` seconds (0: never): Binance changes tick sizes
        (a price step made finer or coarser) and lists and delists contracts while the service runs, and the
        engine puts stops and targets on the tick sizes it has. Each fetch is counted (``instruments_refreshed``)
        and captured as a ``control:instruments`` line (:meth:`refresh_tradable`); a fetch that fails once the
        REST client's retries are spent is counted (``instruments_refresh_failed``) and logged, and the kept
        list and tick sizes stand until the next one."""
        every = self.settings.exchange_info_refresh
        if every <= 0:
            return
        while True:
            await asyncio.sleep(every)
            try:
                await self.refresh_tradable()
            except (RetryableError, FatalError) as exc:
                self.counters["instruments_refresh_failed"] += 1
                log.warning(
                    "exchangeInfo refresh failed (%s): the kept tick sizes and listings stand; next try in %.0f s",
                    exc,
                    every,
                )
            else:
                self.counters["instruments_refreshed"] += 1

    def _history_wanted(self, symbol: str, interval: str) -> bool:
        """Whether ``symbol`` still needs its ``interval`` history: in the universe, or retained for open
        signals (then only what a retained symbol follows, its 1m candles)."""
        return symbol in self.universe or (symbol in self.retained and interval in RETAINED_TIMEFRAMES)
