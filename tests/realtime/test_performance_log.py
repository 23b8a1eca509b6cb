"""Spec 13.1: the realtime service's performance figures reach the log once a minute, not only the Redis hash that
each publish overwrites."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

import pytest

from realtime.performance_log import PerformanceLine, performance_log_loop
from realtime.service import FeedService
from realtime.ws_pool import StreamPool
from tapewatch.adapters.binance_rest import BinanceRest
from tapewatch.logs import extra_fields
from tapewatch.settings import load_settings


def test_the_line_carries_the_figures_and_the_rates_over_its_interval() -> None:
    line = PerformanceLine()
    first = line.fields({"messages": 1000, "signals": 2, "symbols": 15, "synced": 14, "other": 7}, 100.0)
    assert first == {
        "symbols": 15,
        "synced": 14,
    }  # no rate before a second snapshot; unlisted figures left out
    second = line.fields({"messages": 13_000, "signals": 5, "symbols": 15, "synced": 15}, 160.0)
    assert second["messages_per_s"] == 200.0 and second["signals_new"] == 3 and second["synced"] == 15
    # counters that went back (a new service object) count from zero, never negative
    third = line.fields({"messages": 600, "signals": 0}, 220.0)
    assert third == {"messages_per_s": 0.0, "signals_new": 0}


def test_the_loop_logs_each_interval_and_survives_a_snapshot_that_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    snapshots: list[Mapping[str, int | float] | None] = [
        {"messages": 0, "signals": 0},
        {"messages": 500, "signals": 1, "symbols": 3, "synced": 3, "open_signals": 1},
        None,  # raises
        {"messages": 900, "signals": 1, "symbols": 3, "synced": 2, "open_signals": 1},
    ]
    now = [0.0]
    done = asyncio.Event()

    def metrics() -> Mapping[str, int | float]:
        now[0] += 10.0
        snapshot = snapshots.pop(0)
        if not snapshots:
            done.set()
        if snapshot is None:
            raise RuntimeError("metrics broke")
        return snapshot

    async def scenario() -> None:
        task = asyncio.create_task(performance_log_loop(metrics, interval=0, clock=lambda: now[0]))
        await asyncio.wait_for(done.wait(), 30)  # a bound, not a timing
        await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.INFO, logger="realtime.performance_log"):
        asyncio.run(scenario())
    lines = [r for r in caplog.records if r.getMessage().startswith("performance:")]
    assert [r.getMessage() for r in lines] == [
        "performance: 3/3 books synced, 1 open signals, 50.0 msg/s, latency p99 ? ms",
        "performance: 2/3 books synced, 1 open signals, 20.0 msg/s, latency p99 ? ms",
    ]
    assert extra_fields(lines[0]) == {
        "symbols": 3, "synced": 3, "open_signals": 1, "messages_per_s": 50.0, "signals_new": 1
    }  # fmt: skip
    assert "performance log line failed" in caplog.text and "metrics broke" in caplog.text


def test_the_services_own_metrics_make_a_line() -> None:
    settings = load_settings()
    service = FeedService(settings, rest=BinanceRest.from_settings(settings), pool=StreamPool(settings))
    line = PerformanceLine()
    line.fields(service.metrics(), 0.0)
    fields = line.fields(service.metrics(), 60.0)
    for key in (
        "symbols",
        "synced",
        "open_signals",
        "msgs_per_s_depth",
        "signal_latency_ms_p99",
        "loop_lag_ms_max",
        "processing_lag_ms_p99",
    ):
        assert key in fields, key
    assert fields["messages_per_s"] == 0.0 and fields["signals_new"] == 0
