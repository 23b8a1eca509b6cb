"""Receive → processed lag of the frames the service applies (issue 4: "the event-loop lag (event time →
processed) is measured ... a loop that lags is reported"): the figures, the count and the rate-limited log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any, cast

import pytest

from realtime.loop_lag import PROCESSING_LAG_EVERY, LagRing, LoopLagMonitor, processing_lag
from realtime.service import FeedService
from realtime.service_publish import published_metrics
from realtime.ws_delivery import FrameQueue, Received
from tapewatch.settings import load_settings
from tests.realtime.test_service_retained import _Pool, _Rest


def test_lags_past_the_bound_are_counted_and_logged_at_most_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    ring = LagRing("x_lag", warn_after_ms=100, ring=4, message="late %.0f > %.0f (%d)", clock=lambda: now[0])
    assert ring.metrics() == {
        "x_lag_ms_p50": 0.0,
        "x_lag_ms_p99": 0.0,
        "x_lag_ms_max": 0.0,
        "x_lag_warnings": 0,
    }
    with caplog.at_level(logging.WARNING, logger="realtime.loop_lag"):
        for lag in (5, -3, 150, 400, 20):  # a negative lag (clock jitter) counts as 0
            ring.record_ms(lag)
        now[0] = 10.0
        ring.record_ms(101)
    metrics = ring.metrics()
    assert metrics["x_lag_warnings"] == 3
    assert metrics["x_lag_ms_max"] == 400.0  # the ring keeps the last 4: 150, 400, 20, 101
    assert list(ring.lags_ms) == [150, 400, 20, 101]
    assert [r.getMessage() for r in caplog.records] == ["late 150 > 100 (1)", "late 101 > 100 (3)"]


def test_the_loop_monitor_keeps_its_metric_names_and_seconds() -> None:
    monitor = LoopLagMonitor(warn_after=0.5)
    monitor.record(0.7)
    monitor.record(0.01)
    assert monitor.metrics()["loop_lag_ms_max"] == 700.0 and monitor.metrics()["loop_lag_warnings"] == 1
    with pytest.raises(ValueError, match="interval > 0"):
        LoopLagMonitor(interval=0)
    with pytest.raises(ValueError, match="processing_lag: needs warn_after > 0"):
        processing_lag(0)


def test_the_service_measures_how_long_after_receipt_each_frame_is_processed(tmp_path: Path) -> None:
    """Frames received 3 s before the consumer reaches them (a backlog) are 3 s behind the feed: counted,
    logged, in the published metrics; a frame taken at once is not. One delivery in PROCESSING_LAG_EVERY is
    timed."""

    async def scenario() -> tuple[dict[str, Any], int | None]:
        pool = _Pool()
        pool.frames = FrameQueue(100)
        service = FeedService(load_settings(var_dir=tmp_path), rest=cast(Any, _Rest()), pool=cast(Any, pool))
        service.set_universe(["ETHUSDT"])
        now_ms = int(time.time() * 1000)
        # one delivery in PROCESSING_LAG_EVERY is timed: three timed ones of a backlog 3 s old, then a fresh one
        frames = 4 * PROCESSING_LAG_EVERY
        for n in range(1, frames + 1):
            recv = now_ms - 3_000 if n <= 3 * PROCESSING_LAG_EVERY else now_ms
            # exchange -> receive: 250 ms (the symbol's lag_ms in the feed hash)
            trade = {"e": "aggTrade", "E": recv - 250, "s": "ETHUSDT", "a": n, "p": "100.5", "q": "2"}
            trade |= {"f": n, "l": n, "T": recv - 251, "m": False}
            pool.frames.put_frame(Received(recv, "ethusdt@aggTrade", json.dumps(trade).encode()))
        task = asyncio.create_task(service.consume())
        for _ in range(100):
            if len(service.processing_lag.lags_ms) == 4:  # 4 * PROCESSING_LAG_EVERY frames taken
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return published_metrics(service), service.feed("ETHUSDT").lag_ms

    metrics, feed_lag = asyncio.run(scenario())
    assert feed_lag == 250
    assert metrics["processing_lag_warnings"] == 3
    assert 3_000 <= metrics["processing_lag_ms_max"] < 10_000
    assert metrics["processing_lag_ms_p50"] >= 3_000  # three of the four
