"""The backup feed feeds the engine: polled books usable, polled trades in the trade windows once each across
both switches, and a replay of the capture written meanwhile ends in the live run's state."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path

import pytest

from realtime.capture import iter_capture
from realtime.replay import run_replay
from realtime.service import FeedService
from realtime.sim.server import SimExchange
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import RedisState
from tapewatch.book import BookState, Health
from tapewatch.engine import EngineOutput
from tapewatch.settings import load_settings
from tests.realtime.control_helpers import all_synced, running_service, sim_settings, wait_for

pytestmark = [pytest.mark.db, pytest.mark.e2e, pytest.mark.slow]


class ListSink:
    def __init__(self) -> None:
        self.outputs: list[EngineOutput] = []

    def accept(self, output: EngineOutput) -> None:
        self.outputs.append(output)


def _polled_books_usable(service: FeedService) -> bool:
    """Every book of the universe loaded from a poll and usable at the time the engine judges it."""
    market = service.market
    for symbol in service.universe:
        st = market.state(symbol)
        now = max(market.now_ms, st.flow.last_time)  # the engine's "now" on a trade event
        if st.book.state is not BookState.POLLED:
            return False
        if st.book.health(now, market.config.stale_after_ms).state is not Health.SYNCED:
            return False
    return True


def _unique_trades(capture: Path) -> dict[str, dict[int, float]]:
    """Per symbol, quantity by aggregate trade id over the whole capture (websocket and REST lines), each id
    once: what the trade windows must hold if nothing was counted twice."""
    trades: dict[str, dict[int, float]] = defaultdict(dict)
    for line in iter_capture([capture]):
        record = json.loads(line)
        stream, data = record["stream"], record["data"]
        if stream.endswith("@aggTrade"):
            trades[data["s"]][data["a"]] = float(data["q"])
        elif stream.startswith("rest:/fapi/v1/aggTrades?"):
            symbol = stream.split("symbol=")[1].split("&")[0]
            for row in data:
                trades[symbol][row["a"]] = float(row["q"])
    return trades


def test_the_engine_runs_on_polled_books_and_a_replay_matches_the_live_run(
    tmp_path: Path, redis_url: str, redis_keys: Keyspace, redis_state: RedisState
) -> None:
    sink = ListSink()
    during: dict[str, int] = {}

    async def scenario() -> FeedService:
        async with SimExchange(port=0, seed=9, symbols=6, speed=2.0) as sim:
            settings = sim_settings(sim, tmp_path, redis_keys.prefix, universe_size=3)
            async with running_service(settings, redis_url, sink=sink) as run:
                service = run.service
                universe = list(service.universe)
                await wait_for(lambda: all_synced(service), "books synced from the websockets")
                await wait_for(
                    lambda: all(service.market.state(s).last_agg_id >= 0 for s in universe),
                    "websocket trades",
                )
                await asyncio.to_thread(redis_state.set_backup_feed, True, source="test")
                await wait_for(lambda: service.backup.on, "the backup feed on")
                await wait_for(lambda: _polled_books_usable(service), "books usable from polled snapshots")
                evaluated = {s: service.engine.per_symbol[s].evaluations for s in universe}
                last = {s: service.market.state(s).last_agg_id for s in universe}
                await wait_for(
                    lambda: all(service.market.state(s).last_agg_id > last[s] for s in universe),
                    "polled trades in the trade windows",
                )
                assert all(service.engine.per_symbol[s].evaluations > evaluated[s] for s in universe)
                await wait_for(lambda: _polled_books_usable(service), "polled books still usable")
                during.update(polls=service.market.counters["polled_snapshots"])
                metrics = service.metrics()
                assert (
                    metrics["backup_polled_books"] == len(universe) and metrics["backup_polls_dropped"] == 0
                )

                await asyncio.to_thread(redis_state.set_backup_feed, False, source="test")
                await wait_for(
                    lambda: not service.backup.on and bool(service.pool.streams()), "websockets on"
                )
                await wait_for(
                    lambda: (
                        all_synced(service)
                        and all(service.market.state(s).book.state is BookState.SYNCED for s in universe)
                    ),
                    "books resynced by snapshot + diffs",
                )
                last = {s: service.market.state(s).last_agg_id for s in universe}
                await wait_for(
                    lambda: all(service.market.state(s).last_agg_id > last[s] for s in universe),
                    "websocket trades again",
                )
                return service

    service = asyncio.run(scenario())
    market = service.market
    assert during["polls"] >= 3 and market.counters["polled_snapshots_dropped"] == 0
    assert market.totals()["book_mismatches"] == 0

    # every trade id in the windows once, across REST and both switches (the 1 h window holds the whole run)
    capture = tmp_path / "capture"
    unique = _unique_trades(capture)
    streams = [json.loads(line)["stream"] for line in iter_capture([capture])]
    assert any(s.startswith("rest:/fapi/v1/depth?") and "#poll&every_ms=" in s for s in streams)
    assert any(s.startswith("rest:/fapi/v1/klines?") and "#poll&every_ms=" in s for s in streams)
    assert sum(s.startswith("rest:/fapi/v1/aggTrades?") for s in streams) >= len(service.universe)
    for symbol in service.universe:
        st = market.state(symbol)
        assert len(st.vwap) == len(unique[symbol]), symbol
        assert st.vwap.q == pytest.approx(sum(unique[symbol].values()), rel=1e-9), symbol
        assert st.last_agg_id == max(unique[symbol])

    # the capture, polled answers included, replays into the live run's final state and outputs
    result = run_replay([capture], load_settings())
    assert result.summary["book_mismatches"] == 0
    assert result.summary["final"] == market.final()
    assert result.engine is not None and result.engine.market.messages == market.messages
    assert [s.signal_id for s in result.signals] == [s.signal_id for o in sink.outputs for s in o.signals]
    assert [c.candidate_id for c in result.candidates] == [
        c.candidate_id for o in sink.outputs for c in o.candidates
    ]
