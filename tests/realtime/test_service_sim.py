"""The realtime service against the simulated exchange: books stay exact through faults, live state reaches
Redis, and a replay of the capture the run wrote rebuilds the same state."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy

from realtime.main import exchange_settings, run_service
from realtime.replay import replay, run_replay
from realtime.service import FeedService
from realtime.service_universe import choose_universe
from realtime.sim.server import SimExchange
from tapewatch.adapters.binance_rest import BinanceRest
from tapewatch.adapters.cancels import await_chain, where
from tapewatch.adapters.db import normalize_url
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import RedisState
from tapewatch.engine import EngineOutput
from tapewatch.settings import Settings, load_settings

pytestmark = [pytest.mark.db, pytest.mark.e2e, pytest.mark.slow]


def settings_for(sim: SimExchange, var_dir: Path, prefix: str, **extra: object) -> Settings:
    base = load_settings(
        var_dir=var_dir,
        universe_size=5,
        redis_prefix=prefix,
        ws_connect_interval=0.05,
        resync_min_interval=0.2,
        **extra,
    )
    return exchange_settings(base, "sim", host=sim.host, port=sim.port)


async def universe_of(settings: Settings) -> list[str]:
    """The symbols the service will choose at start (the same function it uses)."""
    async with BinanceRest.from_settings(settings) as rest:
        return await choose_universe(rest, settings)


#: Seconds the service may take, after its run and fault script, to stop (well above a normal stop).
STOP_GRACE_S = 90.0
#: Seconds a fault script may take: the probes sample for ~20 s in 0.1 s sleeps, which a loaded machine stretches
#: (the service, the simulator and the probe share one event loop); the stop deadline counts from its end.
FAULT_SCRIPT_LIMIT_S = 180.0


def until_signals(
    signals: Callable[[], int], at_least_s: float = 25.0, at_most_s: float = 120.0
) -> Callable[[SimExchange], Awaitable[None]]:
    """A fault script that injects nothing: the run goes on for ``at_least_s`` of wall time, and on until it
    has issued a signal (at most ``at_most_s``). A loaded machine slows the simulated market the service
    keeps up with, so a fixed run may end before the first planted episode has played out."""

    async def wait(sim: SimExchange) -> None:
        started = time.monotonic()
        await asyncio.sleep(at_least_s)
        for _ in range(int((at_most_s - at_least_s) / 0.25)):
            if signals() or time.monotonic() - started >= at_most_s:
                return
            await asyncio.sleep(0.25)

    return wait


def _fail_with_stacks(message: str, *tasks: asyncio.Task[Any]) -> None:
    """A hang: say where every task waits, instead of a bare timeout of the whole test. Each task's whole await
    chain is printed, innermost frame last (Python 3.11's ``Task.print_stack`` shows only the outermost)."""

    def chain(task: asyncio.Task[Any]) -> str:
        lines = [f"    {where(frame)}" for frame in await_chain(task)]
        # the leaf: the Future the task waits on
        lines.append(f"    awaiting {getattr(task, '_fut_waiter', None)!r}")
        return "\n".join(lines)

    stacks = io.StringIO()
    for task in asyncio.all_tasks():
        stacks.write(f"{task!r}\n{chain(task)}\n")
    for task in tasks:
        task.cancel()
    pytest.fail(f"{message}; tasks:\n{stacks.getvalue()}")


async def run_with(
    sim: SimExchange,
    settings: Settings,
    redis_url: str,
    seconds: float,
    faults: Callable[[SimExchange], Awaitable[None]] | None = None,
    **service: Any,
) -> FeedService:
    """Run the service against ``sim`` for ``seconds`` after the fault script; ``service`` goes to run_service."""
    stop = asyncio.Event()

    async def inject() -> None:
        try:
            if faults is not None:
                await faults(sim)
            await asyncio.sleep(seconds)
        finally:
            stop.set()  # a failing fault script must not leave the service running

    injector = asyncio.create_task(inject())
    running = asyncio.create_task(run_service(settings, redis_url=redis_url, stop=stop, **service))
    await asyncio.wait({injector, running}, timeout=FAULT_SCRIPT_LIMIT_S, return_when=asyncio.FIRST_COMPLETED)
    if not injector.done() and not running.done():
        _fail_with_stacks(
            f"the fault script did not end within {FAULT_SCRIPT_LIMIT_S:.0f} s", injector, running
        )
    done, _ = await asyncio.wait({running}, timeout=seconds + STOP_GRACE_S)
    if not done:
        _fail_with_stacks(
            f"the service did not stop within {STOP_GRACE_S:.0f} s of its run", injector, running
        )
    await injector
    return running.result()


def test_books_stay_exact_and_replay_rebuilds_the_same_state(
    tmp_path: Path, redis_url: str, redis_keys: Keyspace
) -> None:
    async def scenario() -> FeedService:
        async with SimExchange(port=0, seed=11, symbols=12, speed=1.0) as sim:
            return await run_with(sim, settings_for(sim, tmp_path, redis_keys.prefix), redis_url, 8.0)

    service = asyncio.run(scenario())
    market = service.market
    assert len(service.universe) == 5
    totals = market.totals()
    assert totals["book_mismatches"] == 0
    assert totals["book_checks"] > 50
    assert totals["gaps"] == 0
    for symbol in service.universe:
        assert market.book_usable(symbol), symbol
    # live state reached Redis under this test's prefix
    state = RedisState.from_url(redis_url, keys=redis_keys)
    try:
        feeds = state.feeds()
        assert set(feeds) == set(service.universe)
        assert all(f.state == "synced" and f.best_bid for f in feeds.values())
        assert state.metrics()["book_checks"] > 0
    finally:
        state.close()
    # the capture replays into exactly the state the live run ended with
    summary = replay([tmp_path / "capture"], load_settings())
    assert summary["book_mismatches"] == 0
    assert summary["messages"] == market.messages
    assert summary["final"] == market.final()


def test_books_recover_from_every_injected_fault(
    tmp_path: Path, redis_url: str, redis_keys: Keyspace
) -> None:
    async def faults(sim: SimExchange) -> None:
        await asyncio.sleep(2.5)  # let the books sync first
        symbol = service_symbols[0]
        sim.faults.gap(symbol)  # a missing diff
        for kind in ("invalid_json", "nan_price", "negative_qty", "unknown_stream"):
            sim.faults.malformed(kind)
        await asyncio.sleep(1.5)
        sim.faults.slow_snapshots(0.5, count=2)
        sim.faults.rest_error(503, count=1, path="/fapi/v1/depth")
        sim.faults.drop_connections()  # every book must resync
        await asyncio.sleep(1.0)

    service_symbols: list[str] = []

    async def scenario() -> FeedService:
        async with SimExchange(port=0, seed=5, symbols=10, speed=1.0) as sim:
            settings = settings_for(sim, tmp_path, redis_keys.prefix, rest_max_retries=3)
            service_symbols.extend(await universe_of(settings))
            return await run_with(sim, settings, redis_url, 6.0, faults)

    service = asyncio.run(scenario())
    market = service.market
    totals = market.totals()
    assert totals["book_mismatches"] == 0
    assert totals["gaps"] >= 1  # the missing diff was noticed ...
    assert totals["resyncs"] >= 1 + 4  # ... and every book resynced after the dropped connections
    # invalid JSON and frames of unknown streams stop at the transport; bad values at the decoder
    stats, rejected = service.pool.stats, service.decoder.rejected
    assert stats.malformed >= 1 and stats.unowned_frames >= 1
    assert rejected["bad_value"] + rejected["schema"] >= 2
    assert service.metrics()["malformed"] >= 4
    assert service.pool.stats.reconnects, "the dropped connections were reconnected"
    for symbol in service.universe:
        assert market.book_usable(symbol), (symbol, market.state(symbol).book.health(market.now_ms, 5000))


class ListSink:
    """Collects what the engine produced during a live run."""

    def __init__(self) -> None:
        self.outputs: list[EngineOutput] = []

    def accept(self, output: EngineOutput) -> None:
        self.outputs.append(output)


def test_live_signals_are_the_ones_a_replay_of_the_capture_gives(
    tmp_path: Path, redis_url: str, redis_keys: Keyspace
) -> None:
    """An accelerated market with planted episodes: the live run's signal ids come back from its capture."""
    sink = ListSink()

    async def scenario() -> FeedService:
        async with SimExchange(port=0, seed=3, symbols=6, speed=40.0, episode_rate_scale=20.0) as sim:
            settings = settings_for(sim, tmp_path, redis_keys.prefix)
            issued = until_signals(lambda: sum(len(out.signals) for out in sink.outputs))
            return await run_with(sim, settings, redis_url, 0.0, issued, sink=sink)

    service = asyncio.run(scenario())
    live = [s.signal_id for out in sink.outputs for s in out.signals]
    live_candidates = [c.candidate_id for out in sink.outputs for c in out.candidates]
    assert service.engine.counters["evaluations"] > 0
    assert live, "no signal in 1000 simulated seconds with planted episodes"
    result = run_replay([tmp_path / "capture"], load_settings())
    assert [s.signal_id for s in result.signals] == live
    assert [c.candidate_id for c in result.candidates] == live_candidates
    assert result.summary["book_mismatches"] == 0


def test_books_recover_from_a_stale_stream_a_429_and_the_connection_cut(
    tmp_path: Path, redis_url: str, redis_keys: Keyspace
) -> None:
    """A depth stream that goes quiet (its book goes stale, then resumes past a gap), a 429 on the snapshots
    that follow, and the exchange cutting every connection at its age limit (Binance's 24-hour cut)."""
    symbols: list[str] = []

    async def faults(sim: SimExchange) -> None:
        await asyncio.sleep(2.5)
        sim.faults.stale(f"{symbols[0].lower()}@depth@100ms", 1.5)
        await asyncio.sleep(2.0)
        sim.faults.rest_error(429, count=1, path="/fapi/v1/depth")
        sim.faults.cut_connections_after(1.0)  # every connection is now past its age: cut
        await asyncio.sleep(1.5)
        sim.faults.cut_connections_after(86_400)

    async def scenario() -> FeedService:
        async with SimExchange(port=0, seed=8, symbols=8, speed=1.0) as sim:
            settings = settings_for(sim, tmp_path, redis_keys.prefix)
            symbols.extend(await universe_of(settings))
            return await run_with(sim, settings, redis_url, 8.0, faults)

    service = asyncio.run(scenario())
    market = service.market
    totals = market.totals()
    assert totals["book_mismatches"] == 0
    assert market.state(symbols[0]).book.gaps >= 1  # the stream resumed past the diffs it never sent
    assert service.pool.stats.reconnects.total() >= 2  # both routed connections were cut and came back
    assert service.rest.stats.requests[("depth", "429")] >= 1
    for symbol in service.universe:
        assert market.book_usable(symbol), (symbol, market.state(symbol).book.health(market.now_ms, 5000))


def test_live_signals_are_stored_and_published_exactly_once(
    tmp_path: Path, redis_url: str, redis_keys: Keyspace, migrated_database_url: str
) -> None:
    """With PostgreSQL and Redis, every signal of the live run is one row and one stream entry."""
    services: list[FeedService] = []

    async def scenario() -> FeedService:
        async with SimExchange(port=0, seed=3, symbols=6, speed=40.0, episode_rate_scale=20.0) as sim:
            settings = settings_for(sim, tmp_path, redis_keys.prefix)
            issued = until_signals(lambda: services[0].engine.counters["signals"] if services else 0)
            return await run_with(
                sim,
                settings,
                redis_url,
                0.0,
                issued,
                database_url=migrated_database_url,
                started=services.append,
            )

    service = asyncio.run(scenario())
    expected = [s.signal_id for s in run_replay([tmp_path / "capture"], load_settings()).signals]
    assert expected, "no signal in 1000 simulated seconds with planted episodes"
    engine = sqlalchemy.create_engine(normalize_url(migrated_database_url))
    try:
        with engine.connect() as conn:
            stored = [str(r[0]) for r in conn.execute(sqlalchemy.text("SELECT signal_id FROM signals"))]
            published = conn.execute(
                sqlalchemy.text("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            )
            unpublished = published.scalar_one()
    finally:
        engine.dispose()
    assert sorted(stored) == sorted(expected)
    assert unpublished == 0
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        entries = client.xrange(redis_keys.signals_stream)
    finally:
        client.close()
    assert sorted(fields["signal_id"] for _, fields in entries) == sorted(expected)
    assert service.engine.counters["signals"] >= 1
    state = RedisState.from_url(redis_url, keys=redis_keys)
    try:
        last = state.last_signal()  # what `tapewatch status` prints as last_signal
    finally:
        state.close()
    assert last is not None and last.info["signal_id"] in expected  # published once a second
