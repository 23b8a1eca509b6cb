"""The realtime service's live view in Redis: open signals with their live outcome, and each symbol's last
features.

- ``Keyspace.open_signals`` (hash signal_id → JSON of :func:`tapewatch.live_view.open_signal_view`): written
  as soon as an ENTRY is produced or an outcome changes state (TRIGGERED, TP1), refreshed with the
  unrealised R once per ``interval``, removed when the signal finishes. The first write after start — and
  after any failed write — replaces the whole hash with the engine's open signals (those it resumed from
  PostgreSQL), so a signal that finished while the service was down or Redis was away never lingers.
- ``Keyspace.symbol_features(symbol)`` (``{"ts", "features"}`` of :func:`tapewatch.live_view.live_features`,
  the book's top ``orderbook_depth`` levels a side and their walls included; with a TTL): once per
  ``interval`` for each symbol evaluated since the last write.

Redis being away is counted (``live_errors``) and logged once per outage; the engine never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from tapewatch.adapters.redis_state import AsyncRedisState
from tapewatch.engine import EngineOutput, SignalEngine
from tapewatch.errors import StorageUnavailable
from tapewatch.live_view import live_features, open_signal_view

log = logging.getLogger(__name__)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class LiveState:
    """Keeps the open signals and the symbols' last features in Redis in step with the engine."""

    def __init__(
        self,
        redis: AsyncRedisState,
        engine: SignalEngine,
        *,
        interval: float = 1.0,
        features_ttl: float = 120.0,
        wall_ms: Callable[[], int] = _wall_ms,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        self.redis = redis
        self.owns = owns  # a shard's symbols: its rebuild leaves the other shards' open signals alone
        self.engine = engine
        self.interval = interval
        self.features_ttl = features_ttl
        self.wall_ms = wall_ms
        self.counters = {"live_writes": 0, "live_errors": 0, "live_rebuilds": 0, "features_written": 0}
        self._dirty: set[str] = set()
        self._removed: set[str] = set()
        self._rebuild = True  # the first write replaces what a previous run left
        self._published_eval: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._down = False

    # --- fed by the service (sync, never blocks) --------------------------------------------------------------
    def on_output(self, out: EngineOutput) -> None:
        """Note the signals one engine step opened, moved or finished; the writer picks them up at once."""
        for signal in out.signals:
            if signal.signal_type == "ENTRY":
                self._dirty.add(signal.signal_id)
        for outcome in out.updated:
            self._dirty.add(outcome.signal.signal_id)
        for outcome in out.finished:
            self._dirty.discard(outcome.signal.signal_id)
            self._removed.add(outcome.signal.signal_id)
        if self._dirty or self._removed:
            self._wake.set()

    # --- the writer ---------------------------------------------------------------------------------------------
    def view(self, signal_id: str, now_ms: int) -> dict[str, Any] | None:
        """The JSON object of an open signal, marked at its symbol's last trade price; None once finished."""
        held = self.engine.open.get(signal_id)
        if held is None:
            return None
        st = self.engine.market.symbols.get(held.signal.symbol)
        price = st.flow.last_price if st is not None else None
        return open_signal_view(
            held.signal, held.tracker.outcome(), price, self.engine.outcome_params.taker_fee, now_ms
        )

    async def flush(self, refresh: bool) -> None:
        """Write what changed; with ``refresh``, every open signal (unrealised R) and the features of the
        symbols evaluated since the last refresh. Raises StorageUnavailable (nothing is lost: the next
        successful write rebuilds the whole hash)."""
        now = self.wall_ms()
        rebuild = self._rebuild
        ids = set(self.engine.open) if (refresh or rebuild) else self._dirty
        removed = [] if rebuild else sorted(self._removed - set(self.engine.open))
        changed = {sid: view for sid in ids if (view := self.view(sid, now)) is not None}
        self._dirty, self._removed = set(), set()
        try:
            if changed or removed or rebuild:
                await self.redis.update_open_signals(changed, removed, replace=rebuild, owns=self.owns)
                self.counters["live_writes"] += 1
                if rebuild:
                    self.counters["live_rebuilds"] += 1
                    log.info("open signals in Redis rebuilt: %d open", len(changed))
            if refresh:
                await self._write_features()
        except StorageUnavailable:
            self._rebuild = True
            raise
        self._rebuild = False

    async def _write_features(self) -> None:
        batch: dict[str, tuple[int, dict[str, Any]]] = {}
        for symbol, counts in self.engine.per_symbol.items():
            if counts.last_evaluated <= self._published_eval.get(symbol, 0):
                continue  # not evaluated since the last write
            entry = live_features(self.engine, symbol)
            if entry is not None:
                batch[symbol] = entry
        if not batch:
            return
        await self.redis.publish_features(batch, ttl_s=self.features_ttl)
        for symbol, (ts, _) in batch.items():
            self._published_eval[symbol] = ts
        self.counters["features_written"] += len(batch)

    async def run(self) -> None:
        """Write changes as they come and refresh once per ``interval``, until cancelled."""
        loop = asyncio.get_running_loop()
        next_refresh = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_refresh - loop.time())):
                    await self._wake.wait()
            self._wake.clear()
            refresh = loop.time() >= next_refresh
            if refresh:
                next_refresh = loop.time() + self.interval
            try:
                await self.flush(refresh)
            except StorageUnavailable as exc:
                self.counters["live_errors"] += 1
                if not self._down:
                    log.warning(
                        "cannot write open signals/features to Redis (will rebuild on return): %s", exc
                    )
                self._down = True
                await asyncio.sleep(self.interval)  # no hot retry loop while Redis is away
                continue
            if self._down:
                log.info("open signals/features written to Redis again")
                self._down = False

    def metrics(self) -> dict[str, int]:
        """``live_writes``, ``live_errors``, ``live_rebuilds``, ``features_written`` (since start)."""
        return dict(self.counters)
