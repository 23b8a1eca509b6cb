"""An open signal's best and worst move (MFE/MAE) survive a restart: its outcome is handed out for storage every
minute of event time when they moved without a state change, and at the service's stop; the restored engine
resumes them from the store."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, cast

import pytest

from realtime.service import FeedService
from realtime.signal_desk import open_dispatch, restore_engine
from tapewatch.adapters.db import Database
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import AsyncRedisState
from tapewatch.engine import EngineOutput, SignalEngine
from tapewatch.market import Market, MarketConfig
from tapewatch.outcome import OutcomeParams, OutcomeState
from tapewatch.settings import load_settings
from tapewatch.signal import Signal
from tapewatch.signal_follow import SAVE_MOVES_EVERY_MS, OpenSignals
from tests.adapters.signal_builders import entry, triggered
from tests.realtime.test_service_retained import _Pool, _Rest


def halfway_to_tp1(signal: Signal) -> float:
    return (signal.entry_price + signal.take_profit_1) / 2


def test_moves_without_a_state_change_are_handed_out_every_minute_of_event_time() -> None:
    signal = entry("ETHUSDT")
    following = OpenSignals(OutcomeParams.from_settings(load_settings()), lambda _: None)
    following.add(signal, triggered(signal))
    held = following.held[signal.signal_id]
    t = signal.event_time
    first = EngineOutput()
    following.expire(t + 5_000, {}, first)  # the first tick: the minute starts here
    held.tracker.on_trade(t + 10_000, halfway_to_tp1(signal))  # no state change: no update of its own
    assert held.tracker.state is OutcomeState.TRIGGERED
    before = EngineOutput()
    following.expire(t + 5_000 + SAVE_MOVES_EVERY_MS - 1000, {}, before)
    assert before.updated == []  # not a minute yet
    out = EngineOutput()
    following.expire(t + 5_000 + SAVE_MOVES_EVERY_MS, {}, out)
    (moved,) = out.updated
    assert moved.signal.signal_id == signal.signal_id and moved.mfe_r > 0.4
    still = EngineOutput()
    following.expire(t + 5_000 + 2 * SAVE_MOVES_EVERY_MS, {}, still)
    assert still.updated == []  # nothing moved since: nothing to store


def test_a_restart_resumes_an_open_signal_with_its_mfe_and_mae(
    tmp_path: Path, db: Database, redis_url: str, redis_keys: Keyspace
) -> None:
    """The signal's outcome was stored when it triggered (MFE 0); then the price went halfway to TP1 and back
    below the entry, no state change. The service stops; the restarted engine has the same MFE/MAE."""
    settings = load_settings(var_dir=tmp_path)
    signal = entry("ETHUSDT")
    risk = abs(signal.entry_price - signal.stop_loss)
    low = signal.entry_price - 0.3 * risk if signal.direction == "LONG" else signal.entry_price + 0.3 * risk

    async def scenario() -> tuple[tuple[float, float], tuple[float, float]]:
        redis = AsyncRedisState.from_url(redis_url, keys=redis_keys)
        try:
            dispatch = open_dispatch(settings, db, redis)
            dispatch.store.save_signals([signal])
            dispatch.store.save_outcome(triggered(signal))
            service = FeedService(settings, rest=cast(Any, _Rest()), pool=cast(Any, _Pool()), sink=dispatch)
            restore_engine(service.engine, dispatch)
            tracker = service.engine.open[signal.signal_id].tracker
            tracker.on_trade(signal.event_time + 20_000, halfway_to_tp1(signal))
            tracker.on_trade(signal.event_time + 30_000, low)
            reached = tracker.outcome()
            assert reached.state is OutcomeState.TRIGGERED and reached.mfe_r > 0.4 and reached.mae_r > 0.2
            task = asyncio.create_task(service.run(["ETHUSDT"]))
            await asyncio.sleep(0.2)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert await dispatch.aclose(grace=10)  # what realtime.main's shut_down does next
            restarted = SignalEngine(settings, Market(MarketConfig.from_settings(settings)))
            restore_engine(restarted, open_dispatch(settings, db, redis))
            resumed = restarted.open[signal.signal_id].tracker.outcome()
            return (reached.mfe_r, reached.mae_r), (resumed.mfe_r, resumed.mae_r)
        finally:
            await redis.aclose()

    reached, resumed = asyncio.run(scenario())
    assert resumed == pytest.approx(reached)
