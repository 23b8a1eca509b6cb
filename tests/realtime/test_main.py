"""``tapewatch run``'s wiring (realtime/main.py): a signal dispatch that dies stops the service with an error,
and the capture's losses are said at close."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from realtime.capture import CaptureWriter
from realtime.main import close_capture, run_service
from realtime.sim.server import SimExchange
from tapewatch.adapters.dispatch import DispatchStopped
from tapewatch.adapters.outbox import OutboxRelay
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.errors import FatalError
from tests.realtime.test_service_sim import settings_for


@pytest.mark.e2e
@pytest.mark.slow
def test_a_dispatch_that_dies_stops_the_service_with_an_error(
    tmp_path: Path,
    migrated_database_url: str,
    redis_url: str,
    redis_keys: Keyspace,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It used to die unnoticed: the engine ran on, its signals stored but never published, until someone
    stopped the service (which then exited 0)."""

    async def relay_with_a_bug(self: OutboxRelay) -> None:
        await asyncio.sleep(1.0)
        raise RuntimeError("a bug in the relay")

    monkeypatch.setattr(OutboxRelay, "run", relay_with_a_bug)

    async def scenario() -> float:
        async with SimExchange(port=0, seed=7, symbols=6, speed=1.0) as sim:
            settings = settings_for(sim, tmp_path, redis_keys.prefix)
            stop = asyncio.Event()
            timer = asyncio.get_running_loop().call_later(30, stop.set)  # the test's own limit
            t0 = time.monotonic()
            try:
                with pytest.raises(DispatchStopped, match="a bug in the relay") as caught:
                    await run_service(
                        settings, redis_url=redis_url, database_url=migrated_database_url, stop=stop
                    )
            finally:
                timer.cancel()
            assert isinstance(caught.value, FatalError)  # `tapewatch run` exits with status 1
            return time.monotonic() - t0

    with caplog.at_level(logging.INFO):
        elapsed = asyncio.run(scenario())
    assert elapsed < 20, "stopped when the dispatch died, not at the test's limit"
    (said,) = [r for r in caplog.records if "signal dispatch stopped" in r.getMessage()]
    assert said.levelno == logging.CRITICAL and said.exc_info is not None
    assert any(r.getMessage().startswith("capture closed: ") for r in caplog.records)


def test_closing_the_capture_says_what_was_lost(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = CaptureWriter(tmp_path / "good")
    good.write(1_700_000_000_000, "btcusdt@aggTrade", b'{"e":"aggTrade"}')
    with caplog.at_level(logging.INFO, logger="realtime.main"):
        stats = close_capture(good, timeout=10)
    assert stats.lines == 1
    (closed,) = [r for r in caplog.records if r.name == "realtime.main"]  # other loggers may be at INFO
    assert closed.levelno == logging.INFO and "1 lines in 1 files; 0 frames dropped" in closed.getMessage()
    caplog.clear()
    target = tmp_path / "cap"
    target.write_text("a file where the capture directory should be")
    bad = CaptureWriter(target)
    bad.write(1_700_000_000_000, "btcusdt@aggTrade", b'{"e":"aggTrade"}')
    assert bad.flush(5)
    with caplog.at_level(logging.INFO, logger="realtime.main"):
        stats = close_capture(bad, timeout=10)
    bad.write(1_700_000_000_001, "btcusdt@aggTrade", b'{"e":"aggTrade"}')  # after close: dropped
    assert (stats.lost, stats.errors) == (1, 1)
    (closed,) = [r for r in caplog.records if r.name == "realtime.main"]
    assert (
        closed.levelno == logging.WARNING and "1 lines lost to disk errors (1 errors)" in closed.getMessage()
    )
