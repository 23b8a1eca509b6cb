"""A kline bar whose closing frame is lost in a websocket outage across its boundary, against the simulated
exchange: the service closes it provisionally when the next bar opens, refills it over REST (``/fapi/v1/klines``
with ``startTime``/``endTime``) and ends up with the exchange's own bar, once, and a replay of its capture counts
the same. The outage is made deterministic by the simulator's hold: the connections are dropped shortly before
the boundary and every reconnect is refused until the simulated clock has passed it."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from pathlib import Path

import orjson
import pytest

from realtime.capture import iter_capture
from realtime.replay import run_replay
from realtime.service import FeedService
from realtime.sim.server import SimExchange
from tapewatch.adapters.binance_rest import BinanceRest
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.candles import CandleSeries
from tapewatch.events import Candle
from tapewatch.settings import Settings
from tests.realtime.control_helpers import running_service, sim_settings, wait_for

pytestmark = [pytest.mark.db, pytest.mark.e2e, pytest.mark.slow]

MIN = 60_000
SPEED = 6.0  # a simulated minute is 10 s of wall time
#: Wall seconds the service may take from the simulator's start to its kline history (see sim_start_ms).
STARTUP_S = 3.0
#: Simulated ms before the boundary the connections are dropped at (2/3 s of wall time at SPEED) ...
DROP_BEFORE_MS = 4_000
#: ... and the latest they still may be (a loaded event loop wakes the test late): later, the next bar is taken.
DROP_LATEST_MS = 250
#: Simulated ms past the boundary the reconnects are refused for.
HOLD_PAST_MS = 1_000
KLINE_COUNTERS = ("kline_gaps", "kline_bars_filled", "kline_fill_failed")


def sim_start_ms() -> int:
    """Where the simulated clock starts: ten minutes behind the wall clock, so that at SPEED it stays behind it
    throughout (a REST klines row is taken as closed when its close time is past by the wall clock,
    ``candles_from_rows``: a simulated clock ahead of it would make the refill's bar look still forming), and
    STARTUP_S of wall time before a minute's end. The bar forming when the service fetches its history is taken
    as closed from it for the same reason (its later klines are stale updates), so the first bar the service
    holds forming opens at that minute's end: its own boundary comes ten wall seconds later."""
    start = int(time.time() * 1000) - 10 * MIN
    return start - start % MIN + MIN - int(STARTUP_S * SPEED * 1000)


def series_of(service: FeedService, symbol: str) -> CandleSeries | None:
    st = service.market.symbols.get(symbol)
    return None if st is None else st.candles.get("1m")


def forming_open(service: FeedService, symbol: str) -> int:
    """Open time of the 1m bar the service holds forming for ``symbol`` (-1 when none)."""
    series = series_of(service, symbol)
    return -1 if series is None or series.forming is None else series.forming.open_time


def forming_after(service: FeedService, symbol: str, after: int) -> bool:
    return forming_open(service, symbol) > after


async def drop_before_the_close(sim: SimExchange, service: FeedService, symbol: str) -> int:
    """Drop every connection, reconnects refused, while the service holds a 1m bar of ``symbol`` forming and
    shortly before the bar closes (the simulator sends its closing kline on the boundary step); return the
    bar's open time. A test woken too late for a bar takes the next one."""
    last = -1
    for _ in range(3):
        await wait_for(partial(forming_after, service, symbol, last), f"a forming 1m bar of {symbol}", 30)
        t0 = forming_open(service, symbol)
        await sim.wait_until(t0 + MIN - DROP_BEFORE_MS)
        # nothing awaited from this check to the drop: no simulator step runs in between
        if sim.now_ms <= t0 + MIN - DROP_LATEST_MS and forming_open(service, symbol) == t0:
            sim.faults.hold()
            assert sim.faults.drop_connections() >= 1
            return t0
        last = t0
    raise AssertionError("the connections were never dropped in time before a bar's close")


def settled(service: FeedService) -> bool:
    """No candle hole of any symbol and interval waits for a refill, nor is a refill in flight."""
    return all(
        series.missing is None and series.asked is None and not series.provisional
        for st in service.market.symbols.values()
        for series in st.candles.values()
    )


def captured_bar(capture: Path, symbol: str, t0: int) -> dict[str, int]:
    """What the capture holds of ``symbol``'s 1m bar ``t0``: its klines from the websocket (``forming`` and
    ``closing``) and the REST refills of exactly that bar (``refills``)."""
    stream = f"{symbol.lower()}@kline_1m"
    refill = f"rest:/fapi/v1/klines?symbol={symbol}&interval=1m&limit=1&startTime={t0}&endTime={t0 + MIN - 1}"
    seen = {"forming": 0, "closing": 0, "refills": 0}
    for line in iter_capture([capture]):
        row = orjson.loads(line)
        if row["stream"] == stream and row["data"]["k"]["t"] == t0:
            seen["closing" if row["data"]["k"]["x"] else "forming"] += 1
        seen["refills"] += row["stream"] == refill
    return seen


def test_a_closing_kline_lost_in_an_outage_is_refilled_from_the_exchange(
    tmp_path: Path, redis_url: str, redis_keys: Keyspace
) -> None:
    async def scenario() -> tuple[FeedService, Settings, str, int, list[Candle]]:
        async with SimExchange(port=0, seed=4, symbols=3, speed=SPEED, start_ms=sim_start_ms()) as sim:
            settings = sim_settings(
                sim, tmp_path, redis_keys.prefix, universe_size=2, ws_backoff_base=0.05, ws_backoff_max=0.25
            )
            async with running_service(settings, redis_url) as run:
                service = run.service
                symbol = service.universe[0]
                t0 = await drop_before_the_close(sim, service, symbol)
                await sim.wait_until(t0 + MIN + HOLD_PAST_MS)  # the boundary passed in the outage
                sim.faults.release()
                await wait_for(
                    lambda: forming_after(service, symbol, t0) and settled(service),
                    "the next bar streamed and every hole refilled",
                    30,
                )
            async with BinanceRest.from_settings(settings) as rest:
                exchange, _ = await rest.klines(symbol, "1m", 1, start_ms=t0, end_ms=t0 + MIN - 1)
            return service, settings, symbol, t0, exchange

    service, settings, symbol, t0, exchange = asyncio.run(scenario())
    totals = service.market.totals()
    assert totals["kline_gaps"] >= 1 and totals["kline_bars_filled"] >= 1
    assert totals["kline_fill_failed"] == 0
    assert service.counters["kline_fill_requests"] >= 1 and service.counters["kline_fill_errors"] == 0
    # the scenario is what it claims: the closing kline never reached the service, a refill of t0 was captured
    seen = captured_bar(tmp_path / "capture", symbol, t0)
    assert seen["forming"] >= 1 and (seen["closing"], seen["refills"]) == (0, 1), seen
    # the refilled bar is the exchange's own, once, in its place between its neighbours
    assert [c.open_time for c in exchange] == [t0] and exchange[0].closed
    series = series_of(service, symbol)
    assert series is not None
    bars = series.bars()
    opens = [c.open_time for c in bars]
    assert opens == sorted(set(opens)), "a duplicate or misplaced bar"
    assert {t0 - MIN, t0, t0 + MIN} <= set(opens)
    assert [c for c in bars if c.open_time == t0] == exchange
    # a replay of the capture takes the same decisions from the captured refill answers
    summary = run_replay([tmp_path / "capture"], settings).summary
    assert {k: summary[k] for k in KLINE_COUNTERS} == {k: totals[k] for k in KLINE_COUNTERS}
    assert summary["kline_fill_requests"] == service.counters["kline_fill_requests"]
