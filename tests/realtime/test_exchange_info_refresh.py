"""The realtime service fetches exchangeInfo again every ``exchange_info_refresh`` seconds: a tick size Binance
changed while it ran reaches the engine (stops and targets are put on it) and the capture, and a fetch that fails
leaves the kept tick sizes as they were."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from realtime.capture import capture_files, iter_capture
from realtime.sim.server import SimExchange
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.events import CONTROL_INSTRUMENTS
from tests.realtime.control_helpers import all_synced, running_service, sim_settings, wait_for


@pytest.mark.e2e
@pytest.mark.slow
def test_a_changed_tick_size_reaches_the_engine_and_a_failed_fetch_keeps_the_old_one(
    tmp_path: Path, redis_url: str, redis_keys: Keyspace
) -> None:
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with SimExchange(port=0, seed=11, symbols=6) as sim:
            settings = sim_settings(
                sim,
                tmp_path,
                redis_keys.prefix,
                universe_size=3,
                exchange_info_refresh=1,
                rest_max_retries=0,  # one refused answer fails the fetch
            )
            async with running_service(settings, redis_url) as run:
                service = run.service
                await wait_for(lambda: all_synced(service), "books synced")
                await wait_for(lambda: service.counters["instruments_refreshed"] >= 1, "a periodic fetch")
                symbol = service.universe[0]
                served = next(e for e in sim.venue.exchange_info()["symbols"] if e["symbol"] == symbol)
                price_filter = next(f for f in served["filters"] if f["filterType"] == "PRICE_FILTER")
                old = price_filter["tickSize"]

                def tick() -> str:
                    ticks = service.engine._tick_sizes
                    assert ticks is not None
                    return format(ticks[symbol], "f")

                assert tick() == old
                new = old.replace("1", "01", 1) if "." in old else f"0.{old}"  # ten times finer
                sim.faults.rest_error(503, count=1, path="/fapi/v1/exchangeInfo")
                price_filter["tickSize"] = new  # the answer refused first; the next fetch brings it
                await wait_for(lambda: service.counters["instruments_refresh_failed"] == 1, "a failed fetch")
                await wait_for(lambda: tick() == new, "the new tick size in the engine")
                metrics = service.metrics()
                assert metrics["instruments_refresh_failed"] == 1 and metrics["instruments_refreshed"] >= 2
                seen.update(symbol=symbol, old=old, new=new)

    asyncio.run(scenario())
    lines = [orjson.loads(x) for x in iter_capture(capture_files([tmp_path / "capture"]))]
    ticks = [x["data"]["tick_sizes"][seen["symbol"]] for x in lines if x["stream"] == CONTROL_INSTRUMENTS]
    assert ticks[0] == seen["old"] and ticks[-1] == seen["new"] and len(ticks) >= 3
