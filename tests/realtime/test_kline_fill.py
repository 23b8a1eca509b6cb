"""A kline bar whose closing frame was lost (a reconnect across the bar boundary): the market closes it
provisionally and asks for a refill, the service serves it with a REST klines request captured under its
``rest:`` name, and a replay of the capture takes the same decisions from the captured answer. Here the exact
request and the replayed bars, from hand-made frames; test_kline_fill_sim.py has the same against the simulated
exchange, with a real outage across the boundary."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

from realtime.replay import run_replay
from realtime.service import FeedService
from realtime.ws_delivery import Received
from tapewatch.adapters.rest_session import RestResponse
from tapewatch.events import Candle
from tapewatch.market_klines import KlineFillNeeded
from tapewatch.settings import Settings

T0 = 1_700_000_040_000  # a minute boundary
MIN = 60_000
STREAM = "btcusdt@kline_1m"


class _Pool:
    def set_streams(self, streams: Sequence[str]) -> None:
        self.streams = list(streams)


class _Rest:
    """Answers ``/fapi/v1/klines`` from a fixed list of 1m rows; records each request."""

    def __init__(self, closes: dict[int, float]) -> None:
        self.closes = closes
        self.calls: list[dict[str, Any]] = []

    async def klines(
        self,
        symbol: str,
        interval: str,
        limit: int = 500,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> tuple[list[Candle], RestResponse]:
        self.calls.append(
            {"symbol": symbol, "interval": interval, "limit": limit, "start": start_ms, "end": end_ms}
        )
        if start_ms is None:  # the history at start: none in this test
            return [], RestResponse(
                f"/fapi/v1/klines?symbol={symbol}&interval={interval}&limit={limit}", 200, b"[]", None
            )
        assert end_ms is not None
        rows = [
            [t, str(c), str(c), str(c), str(c), "10", t + MIN - 1, "100", 5, "4", "40", "0"]
            for t, c in sorted(self.closes.items())
            if start_ms <= t <= end_ms
        ][:limit]
        query = urlencode(
            {"symbol": symbol, "interval": interval, "limit": limit, "startTime": start_ms, "endTime": end_ms}
        )
        return [], RestResponse(f"/fapi/v1/klines?{query}", 200, json.dumps(rows).encode(), None)


class _Capture:
    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def write(self, recv: int, stream: str, body: bytes) -> None:
        self.lines.append(b'{"recv":%d,"stream":%s,"data":%s}' % (recv, json.dumps(stream).encode(), body))


def kline(open_time: int, close: float, closed: bool, event_time: int) -> bytes:
    k = {
        "t": open_time, "T": open_time + MIN - 1, "s": "BTCUSDT", "i": "1m", "f": 1, "L": 2, "o": str(close),
        "c": str(close), "h": str(close), "l": str(close), "v": "10", "n": 5, "x": closed, "q": "100",
        "V": "4", "Q": "40", "B": "0",
    }  # fmt: skip
    return json.dumps({"e": "kline", "E": event_time, "s": "BTCUSDT", "k": k}).encode()


def closes(service_or_series: Any) -> list[tuple[int, float, bool]]:
    return [(c.open_time - T0, c.close, c.closed) for c in service_or_series.bars()]


def test_a_lost_closing_kline_is_refilled_over_rest_and_replayed_alike(tmp_path: Path) -> None:
    rest = _Rest({T0: 1.25, T0 + MIN: 2.5})
    capture = _Capture()
    service = FeedService(
        Settings(), rest=cast(Any, rest), pool=cast(Any, _Pool()), capture=cast(Any, capture)
    )

    async def run() -> None:
        service.set_universe(["BTCUSDT"])
        await asyncio.sleep(0)  # the (empty) history at start
        frames = [
            kline(T0, 1.0, False, T0 + 59_000),  # bar t0 forming ...
            kline(T0 + MIN, 2.0, False, T0 + MIN + 500),  # ... its closing kline lost in a reconnect
            kline(T0 + MIN, 2.5, True, T0 + 2 * MIN),
            kline(T0 + 2 * MIN, 3.0, False, T0 + 2 * MIN + 250),
        ]
        for i, raw in enumerate(frames):
            service.handle(Received(T0 + 59_000 + i, STREAM, raw))  # captured by the service
        series = service.market.symbols["BTCUSDT"].candles["1m"]
        assert closes(series) == [(0, 1.0, True), (MIN, 2.5, True), (2 * MIN, 3.0, False)]  # t0 provisional
        assert list(service._kline_fills.values()) == [KlineFillNeeded("BTCUSDT", "1m", T0, T0 + MIN - 1, 1)]
        task = asyncio.get_running_loop().create_task(service.serve_kline_fills())
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not series.provisional:
                break
        task.cancel()

    asyncio.run(run())
    assert rest.calls[-1] == {
        "symbol": "BTCUSDT",
        "interval": "1m",
        "limit": 1,
        "start": T0,
        "end": T0 + MIN - 1,
    }
    series = service.market.symbols["BTCUSDT"].candles["1m"]
    assert closes(series) == [
        (0, 1.25, True),
        (MIN, 2.5, True),
        (2 * MIN, 3.0, False),
    ]  # REST's bar, no duplicate
    totals = service.market.totals()
    assert (totals["kline_gaps"], totals["kline_bars_filled"], totals["kline_fill_failed"]) == (1, 1, 0)
    # the answer is in the capture under its rest: name, and the replay takes the same decisions from it
    assert any(
        b"rest:/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=1&startTime=" in x for x in capture.lines
    )
    path = tmp_path / "capture.jsonl.gz"
    path.write_bytes(gzip.compress(b"".join(x + b"\n" for x in capture.lines)))
    result = run_replay([path], Settings())
    summary = result.summary
    assert (summary["kline_gaps"], summary["kline_fill_requests"], summary["kline_bars_filled"]) == (1, 1, 1)
    assert (summary["kline_fill_failed"], summary["trade_fill_requests"]) == (0, 0)
    assert result.engine is not None
    assert closes(result.engine.market.symbols["BTCUSDT"].candles["1m"]) == closes(series)
