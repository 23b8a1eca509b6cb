"""A joining symbol's kline history is fetched until it is had (:mod:`realtime.history`): a failed request is
counted and retried with exponential backoff and full jitter until it succeeds or the symbol is no longer
followed; an unexpected exception is logged and counted, never left to "Task exception was never retrieved".
Against the simulated exchange, history requests answered 500 are retried, the series get their bars, and a
replay of the capture (which holds only the answer that succeeded) rebuilds the same candles."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from realtime.capture import iter_capture
from realtime.history import HistoryRetry
from realtime.main import run_service
from realtime.replay import run_replay
from realtime.service import FeedService
from realtime.service_publish import service_metrics
from realtime.sim.server import SimExchange
from realtime.timebase import Timebase
from tapewatch.adapters.rest_session import RestStats
from tapewatch.candles import CandleSeries
from tapewatch.errors import BinanceRequestError, FeedError, IpBanned
from tapewatch.events import Candle
from tapewatch.market import Market
from tapewatch.settings import load_settings
from tests.adapters.signal_builders import entry
from tests.realtime.control_helpers import sim_settings, wait_for
from tests.tapewatch.engine_rig import candles15

X, Y = "BTCUSDT", "ETHUSDT"


@dataclass(frozen=True)
class _Answer:
    stream: str
    body: bytes


def _kline_row(c: Candle) -> list[Any]:
    """One row of ``/fapi/v1/klines`` as Binance sends it (numbers as strings)."""
    prices = [str(v) for v in (c.open, c.high, c.low, c.close, c.volume)]
    return [c.open_time, *prices, c.close_time, str(c.quote_volume), c.trades, "0", "0", "0"]


class _Budget:
    def __init__(self) -> None:
        self.ban = 0.0

    def banned_for(self) -> float:
        return self.ban


class _Rest:
    """Kline history whose requests fail as scripted (an exception per request, in order) and then answer:
    the 15m context of ``engine_rig.candles15`` (also for 1m: only the request counts here)."""

    def __init__(self, *failures: BaseException) -> None:
        self.stats = RestStats()
        self.budget = _Budget()
        self.failures = list(failures)
        self.asked: list[tuple[str, str]] = []

    async def klines(self, symbol: str, interval: str, limit: int, **kwargs: Any) -> tuple[None, _Answer]:
        self.asked.append((symbol, interval))
        if self.failures:
            raise self.failures.pop(0)
        rows = [_kline_row(c) for c in candles15()]
        stream = f"rest:/fapi/v1/klines?symbol={symbol}&interval=15m&limit={limit}"
        return None, _Answer(stream, json.dumps(rows).encode())


class _Pool:
    def set_streams(self, streams: Any) -> None:
        pass


class _Clock:
    """Sleeps that take no time and are recorded; full jitter drawn at half its ceiling."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)

    def timebase(self) -> Timebase:
        return Timebase(monotonic=lambda: self.now, sleep=self.sleep, random=lambda: 0.5)


def _service(tmp_path: Path, rest: _Rest, clock: _Clock) -> FeedService:
    service = FeedService(load_settings(var_dir=tmp_path), rest=cast(Any, rest), pool=cast(Any, _Pool()))
    service.history._tb = clock.timebase()
    return service


def closed_15m(service: FeedService, symbol: str) -> int:
    st = service.market.symbols.get(symbol)
    series = None if st is None else st.candles.get("15m")
    return 0 if series is None else len(series.closed)


def test_failed_history_requests_are_retried_with_backoff_until_the_history_is_had(tmp_path: Path) -> None:
    failures = [FeedError("HTTP 500")] * 8  # 8 failed attempts of the 15m request, then its answer
    rest, clock = _Rest(*failures), _Clock()
    service = _service(tmp_path, rest, clock)

    async def run() -> None:
        service.set_universe([X])
        await asyncio.gather(*service._history_tasks)

    asyncio.run(run())
    assert rest.asked == [(X, "15m")] * 9 + [(X, "1m")]
    # full jitter (drawn at half here) of 5 s doubling up to 5 minutes
    assert clock.slept == [2.5, 5, 10, 20, 40, 80, 150, 150]
    assert closed_15m(service, X) == len([c for c in candles15() if c.closed])
    assert (service.counters["history_failed"], service.counters["history_retries"]) == (8, 8)
    assert service.counters["history_errors"] == 0 and service.history.pending == 0


def test_a_ban_is_waited_out_and_a_refused_request_is_not_repeated(tmp_path: Path) -> None:
    rest, clock = _Rest(IpBanned("418", 0), BinanceRequestError("HTTP 400", 400, -1121)), _Clock()
    rest.budget.ban = 120.0
    service = _service(tmp_path, rest, clock)

    async def run() -> None:
        service.set_universe([X])
        await asyncio.gather(*service._history_tasks)

    asyncio.run(run())
    # the 15m request waits the ban out and succeeds; the 1m request Binance refuses (a bad request) stays so
    assert rest.asked == [(X, "15m"), (X, "15m"), (X, "1m")]
    assert clock.slept == [120.0]
    assert (service.counters["history_failed"], service.counters["history_retries"]) == (2, 1)


def test_the_retries_stop_when_the_symbol_leaves_the_universe_and_a_retained_one_keeps_its_1m(
    tmp_path: Path,
) -> None:
    rest, clock = _Rest(*[FeedError("timeout")] * 1000), _Clock()
    service = _service(tmp_path, rest, clock)
    service.engine.resume([(entry(Y), None)])  # Y has an open signal: it is retained when it leaves

    def asked(symbol: str) -> list[str]:
        return [interval for s, interval in rest.asked if s == symbol]

    async def run() -> None:
        service.set_universe([X, Y])
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(asked(X)) > 5 and set(asked(X)) == {"15m"} and service.history.pending == 2
        service.set_universe(
            []
        )  # X goes: its retries end at once; Y is retained, its 15m is no longer needed
        assert service.retained == [Y] and service.history.pending == 1
        rest.failures.clear()  # from here on every request is answered
        tried = len(asked(X))
        await asyncio.gather(*service._history_tasks, return_exceptions=True)  # X's: cancelled
        assert len(asked(X)) == tried

    asyncio.run(run())
    assert asked(Y)[-1] == "1m" and asked(Y).count("1m") == 1 and set(asked(Y)[:-1]) == {"15m"}
    assert service.history.pending == 0 and service.counters["history_errors"] == 0


def test_an_unexpected_exception_is_logged_and_counted_not_left_unretrieved(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rest, clock = _Rest(ValueError("a bug")), _Clock()
    service = _service(tmp_path, rest, clock)
    unretrieved: list[dict[str, Any]] = []

    async def run() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: unretrieved.append(context))
        service.set_universe([X])
        await asyncio.wait(set(service._history_tasks))
        await asyncio.sleep(0)
        gc.collect()  # an exception nobody retrieved is reported when its task is collected

    caplog.set_level(logging.ERROR, logger="realtime.history")
    asyncio.run(run())
    gc.collect()
    assert unretrieved == []
    assert service.counters["history_errors"] == 1 and service.history.pending == 0
    [record] = [r for r in caplog.records if r.name == "realtime.history"]
    assert record.levelno == logging.ERROR and record.exc_info is not None and "a bug" in record.getMessage()
    # the failed 15m request does not end the symbol's history: its 1m candles are still fetched
    assert rest.asked == [(X, "15m"), (X, "1m")]


# --- against the simulated exchange ---------------------------------------------------------------------------


def series_of(market: Market, symbol: str, interval: str) -> CandleSeries | None:
    st = market.symbols.get(symbol)
    return None if st is None else st.candles.get(interval)


def has_history(service: FeedService) -> bool:
    """The one symbol of the universe holds its 100 closed 15m bars and 240 closed 1m bars."""
    if not service.universe:
        return False
    m15 = series_of(service.market, service.universe[0], "15m")
    m1 = series_of(service.market, service.universe[0], "1m")
    return m15 is not None and len(m15.closed) >= 100 and m1 is not None and len(m1.closed) >= 240


def history_lines(capture: Path, symbol: str) -> Iterator[str]:
    """The captured kline history answers of ``symbol`` (stream names)."""
    for line in iter_capture([capture]):
        stream = orjson.loads(line)["stream"]
        if stream.startswith(f"rest:/fapi/v1/klines?symbol={symbol}&") and "startTime" not in stream:
            yield stream


@pytest.mark.db
@pytest.mark.e2e
@pytest.mark.slow
def test_history_requests_answered_500_are_retried_and_replay_rebuilds_the_same_candles(
    tmp_path: Path,
) -> None:
    async def scenario() -> tuple[FeedService, Any]:
        async with SimExchange(port=0, seed=7, symbols=3) as sim:
            # one symbol, the REST client's own retries off: each 500 fails one history attempt
            settings = sim_settings(sim, tmp_path, "h15:", universe_size=1, rest_max_retries=0)
            sim.faults.rest_error(500, count=2, path="/fapi/v1/klines")
            built: list[FeedService] = []

            def started(service: FeedService) -> None:
                service.history.retry = HistoryRetry(base=0.2, cap=1.0)
                built.append(service)

            stop = asyncio.Event()
            task = asyncio.create_task(run_service(settings, redis_url=None, stop=stop, started=started))
            try:
                await wait_for(
                    lambda: (bool(built) and has_history(built[0])) or task.done(), "the history", 15
                )
                assert not task.done()
                assert sim.faults.state()["rest_errors"] == []  # both injected errors were answered
            finally:
                stop.set()
                await task
            return built[0], settings

    service, settings = asyncio.run(scenario())
    symbol = service.universe[0]
    assert service.rest.stats.requests[("klines", "500")] == 2
    assert service.counters["history_failed"] == 2 and service.counters["history_retries"] == 2
    assert service.counters["history_errors"] == 0
    published = service_metrics(service)  # what the metrics hash (System page, tapewatch status) carries
    assert (published["history_failed"], published["history_retries"], published["history_errors"]) == (
        2,
        2,
        0,
    )
    # only the answers are captured: one per interval, the failed attempts left nothing
    streams = list(history_lines(tmp_path / "capture", symbol))
    assert sorted(s.split("interval=")[1].split("&")[0] for s in streams) == ["15m", "1m"], streams
    replay = run_replay([tmp_path / "capture"], settings)
    assert replay.engine is not None
    for interval in ("15m", "1m"):
        live, replayed = (
            series_of(service.market, symbol, interval),
            series_of(replay.engine.market, symbol, interval),
        )
        assert live is not None and replayed is not None
        assert list(replayed.closed) == list(live.closed) and replayed.forming == live.forming, interval
