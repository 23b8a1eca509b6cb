"""The engine rebuilt after a restart: open signals keep being followed, daily caps and cooldowns hold."""

from __future__ import annotations

from tapewatch.engine import DAY_MS, SignalEngine
from tapewatch.market import Market
from tapewatch.outcome import OutcomeState
from tapewatch.risk import utc_day
from tapewatch.settings import load_settings
from tapewatch.signal_follow import open_signal
from tests.adapters.signal_builders import entry, triggered


def test_resume_follows_open_signals_and_restores_caps_and_cooldowns() -> None:
    settings = load_settings()
    engine = SignalEngine(settings, Market())
    waiting = entry("BTCUSDT")
    running = entry("ETHUSDT")
    day = utc_day(waiting.event_time)
    engine.resume(
        [(waiting, None), (running, triggered(running))],
        day_counts={day: {"HIGH": 20, "MEDIUM": 3, "LOW": 0}},
        cooldowns={"SOLUSDT": 2, "XRPUSDT": 0},
    )
    assert set(engine.open) == {waiting.signal_id, running.signal_id}
    assert engine.open[running.signal_id].tracker.state is OutcomeState.TRIGGERED
    assert engine.open[waiting.signal_id].tracker.state is OutcomeState.WAITING
    assert len(engine.risk.open_signals) == 2
    assert engine.risk.signals_on(day, "HIGH") == 20  # the HIGH cap of the day is already used up
    assert engine.risk.signals_on(day) == 23
    assert engine.risk.cooldown_left("SOLUSDT") == 2 and engine.risk.cooldown_left("XRPUSDT") == 0
    engine.resume([(waiting, None)])  # resuming twice adds nothing
    assert len(engine.open) == 2 and utc_day(waiting.event_time + DAY_MS) == day + 1


def test_open_signal_view_keeps_the_plan() -> None:
    signal = entry("BTCUSDT", short=True)
    view = open_signal(signal)
    assert (view.entry, view.stop, view.tp1, view.tp2) == (
        signal.entry_price,
        signal.stop_loss,
        signal.take_profit_1,
        signal.take_profit_2,
    )
    assert (view.direction, view.tier, view.created) == ("SHORT", signal.priority, signal.event_time)
