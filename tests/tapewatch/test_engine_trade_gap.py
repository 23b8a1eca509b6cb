"""An open signal is followed through an aggTrade gap: every trade the fill applies at once counts, in order."""

from __future__ import annotations

import msgspec

from tapewatch.engine import SignalEngine
from tapewatch.events import AggTrade
from tapewatch.market import Market
from tapewatch.outcome import OutcomeState
from tapewatch.parse import Frame, FrameDecoder
from tapewatch.settings import load_settings
from tapewatch.streams import Kind
from tests.adapters.signal_builders import entry, triggered

SYMBOL = "BTCUSDT"


def _trade(agg_id: int, time: int, price: float) -> AggTrade:
    return AggTrade(SYMBOL, time, agg_id, price, 1.0, agg_id, agg_id, time, False)


def _ws(engine: SignalEngine, agg_id: int, time: int, price: float) -> None:
    frame = Frame(1, f"{SYMBOL.lower()}@aggTrade", SYMBOL, Kind.AGG_TRADE, _trade(agg_id, time, price))
    engine.market.on_frame(frame)
    engine.on_frame(frame)


def _fill(engine: SignalEngine, rows: list[tuple[int, int, float]]) -> None:
    body = msgspec.json.encode(
        [{"a": a, "p": repr(p), "q": "1", "f": a, "l": a, "T": t, "m": False} for a, t, p in rows]
    )
    stream = f"rest:/fapi/v1/aggTrades?symbol={SYMBOL}&fromId={rows[0][0]}&limit=1000"
    for frame in FrameDecoder().decode_frames(2, stream, body):
        engine.market.on_frame(frame)
        engine.on_frame(frame)


def _engine_following() -> tuple[SignalEngine, str, float, float]:
    signal = entry(SYMBOL)
    engine = SignalEngine(load_settings(), Market())
    engine.resume([(signal, triggered(signal))])
    assert engine.open[signal.signal_id].tracker.state is OutcomeState.TRIGGERED
    return engine, signal.signal_id, signal.entry_price, signal.stop_loss


def test_a_stop_touched_inside_a_filled_gap_closes_the_signal() -> None:
    engine, sid, entry_price, stop = _engine_following()
    t = entry(SYMBOL).event_time + 10_000
    _ws(engine, 100, t, entry_price)
    # ids 101..102 missed (a reconnect); 103 arrives back at the entry and is held until the fill
    _ws(engine, 103, t + 3000, entry_price)
    assert engine.market.fill_pending(SYMBOL, 101)
    # the fill: the price went through the stop and came back before the last trade
    _fill(engine, [(101, t + 1000, stop * 0.999), (102, t + 2000, entry_price)])
    assert not engine.market.fill_pending(SYMBOL, 101)
    assert engine.market.symbols[SYMBOL].flow.last_price == entry_price  # the last price alone shows nothing
    assert sid not in engine.open or engine.open[sid].tracker.state is OutcomeState.STOPPED


def test_without_a_touch_the_signal_stays_open_and_nothing_is_kept() -> None:
    engine, sid, entry_price, stop = _engine_following()
    t = entry(SYMBOL).event_time + 10_000
    _ws(engine, 100, t, entry_price)
    _ws(engine, 103, t + 3000, entry_price)
    _fill(engine, [(101, t + 1000, (entry_price + stop) / 2), (102, t + 2000, entry_price)])
    assert engine.open[sid].tracker.state is OutcomeState.TRIGGERED
    assert engine.market.symbols[SYMBOL].caught_up == []  # drained after the frame
