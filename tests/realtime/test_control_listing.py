"""A contract listed after the service started is followed when a universe command names it.

The audit: exchangeInfo was fetched once at start and kept, so a symbol listed since and chosen by a rescan was
"ignoring 1 unknown or non-tradable symbols", for good (the verdict was cached). Now a universe naming a symbol the
kept list lacks has exchangeInfo fetched again (at most once per ``recheck_after``), and the fetch re-captures
the tick sizes (``control:instruments``) the engine puts stops and targets on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any

import orjson
import pytest

from realtime.capture import capture_files, iter_capture
from realtime.control import ControlConfig, ControlLoop
from realtime.sim.server import SimExchange
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import AsyncRedisState, RedisState
from tapewatch.events import CONTROL_INSTRUMENTS
from tests.realtime.control_helpers import all_synced, running_service, sim_settings, wait_for
from tests.realtime.test_control import START, Target


def test_a_universe_naming_an_unlisted_symbol_refetches_exchange_info_at_most_once_per_recheck(
    redis_url: str, redis_keys: Keyspace, redis_state: RedisState, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="realtime.control")
    listed = set(START)  # what the exchange lists now
    kept = frozenset(START)  # what the service fetched at start
    refetches: list[float] = []

    async def tradable() -> Collection[str]:
        return kept

    async def refresh() -> Collection[str]:
        nonlocal kept
        refetches.append(asyncio.get_running_loop().time())
        kept = frozenset(listed)
        return kept

    async def scenario() -> None:
        target = Target()
        state = AsyncRedisState.from_url(redis_url, keys=redis_keys)
        config = ControlConfig(reread_every=0.1, recheck_after=1.0)
        loop = ControlLoop(state, target, tradable=tradable, refresh=refresh, config=config)
        task = asyncio.create_task(loop.run())
        try:
            await wait_for(lambda: loop.applied is not None, "the first read")
            listed.add("NEWUSDT")  # listed after the start
            await asyncio.to_thread(redis_state.set_universe, ["AAAUSDT", "NEWUSDT"], source="dagster")
            await wait_for(lambda: target.universe == ["AAAUSDT", "NEWUSDT"], "the new listing followed")
            assert len(refetches) == 1
            await asyncio.sleep(0.5)  # periodic re-reads of the same command: no refetch
            assert len(refetches) == 1
            # within recheck_after of that fetch: applied with the known symbols at once, judged again after
            await asyncio.to_thread(
                redis_state.set_universe, ["BBBUSDT", "NOPEUSDT", "LATERUSDT"], source="dashboard"
            )
            await wait_for(lambda: target.universe == ["BBBUSDT"], "the known symbol at once")
            assert len(refetches) == 1
            listed.add("LATERUSDT")
            await wait_for(
                lambda: target.universe == ["BBBUSDT", "LATERUSDT"], "judged again after the refetch"
            )
            assert len(refetches) == 2 and refetches[1] - refetches[0] >= 0.99
            await asyncio.sleep(1.5)  # NOPEUSDT is still unknown: refused for good, no more fetches
            assert len(refetches) == 2 and loop.metrics()["control_tradable_refetched"] == 2
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await state.aclose()

    asyncio.run(scenario())
    ignored = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    # the provisional verdict named both; the one after the refetch NOPEUSDT alone; nothing for NEWUSDT
    assert ignored == [
        "control: ignoring 2 unknown or non-tradable symbols of the universe: NOPEUSDT, LATERUSDT",
        "control: ignoring 1 unknown or non-tradable symbols of the universe: NOPEUSDT",
    ]
    assert any("now tradable: NEWUSDT" in r.getMessage() for r in caplog.records)


@pytest.mark.e2e
@pytest.mark.slow
def test_a_symbol_listed_after_the_start_is_followed_and_its_tick_size_captured(
    tmp_path: Path, redis_url: str, redis_keys: Keyspace, redis_state: RedisState
) -> None:
    """The simulator lists one of its symbols only after the service started (its exchangeInfo without it at
    start); a rescan's universe naming it is followed, its book synced, and its tick size reaches the engine
    and the capture."""
    captured: dict[str, Any] = {}

    async def scenario() -> None:
        async with SimExchange(port=0, seed=11, symbols=6) as sim:
            served: list[dict[str, Any]] = sim.venue.exchange_info()["symbols"]  # the venue's kept list
            new = next(e for e in served if e["symbol"] == sim.venue.specs[-1].symbol)
            served.remove(new)  # not listed yet
            symbol = new["symbol"]
            settings = sim_settings(sim, tmp_path, redis_keys.prefix, universe_size=3)
            async with running_service(settings, redis_url) as run:
                service = run.service
                await wait_for(lambda: all_synced(service), "books synced")
                assert symbol not in await service.tradable_symbols()
                ticks = service.engine._tick_sizes
                assert ticks is not None and symbol not in ticks and set(service.universe) <= set(ticks)
                served.append(new)  # listed now
                wanted = [*service.universe[:2], symbol]
                await asyncio.to_thread(redis_state.set_universe, wanted, source="dagster")
                await wait_for(lambda: service.universe == wanted, "the new listing followed")
                await wait_for(lambda: all_synced(service), "its book synced")
                control = service.control
                assert control is not None and control.counters["tradable_refetched"] == 1
                assert control.counters["ignored_symbols"] == 0
                ticks = service.engine._tick_sizes
                assert ticks is not None and format(ticks[symbol], "f") == next(
                    f["tickSize"] for f in new["filters"] if f["filterType"] == "PRICE_FILTER"
                )
                captured["symbol"] = symbol

    asyncio.run(scenario())
    lines = [orjson.loads(x) for x in iter_capture(capture_files([tmp_path / "capture"]))]
    instruments = [x["data"]["tick_sizes"] for x in lines if x["stream"] == CONTROL_INSTRUMENTS]
    assert len(instruments) == 2  # the fetch at start, the refetch for the new listing
    assert captured["symbol"] not in instruments[0] and captured["symbol"] in instruments[1]
