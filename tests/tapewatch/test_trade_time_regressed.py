"""A trade stamped before its symbol's last one (ids in order, times not): within a window's horizon it still
counts in that window, older it is left out of it (``trade_too_old``); either way the last price stays the
newest trade's, and the followers of open signals see a late trade with its own time."""

from __future__ import annotations

import pytest

from tapewatch.engine import SignalEngine
from tapewatch.events import AggTrade
from tapewatch.market import Market
from tapewatch.outcome import OutcomeState
from tapewatch.parse import Frame
from tapewatch.settings import load_settings
from tapewatch.streams import Kind
from tapewatch.trade_flow import TradeWindow
from tests.adapters.signal_builders import entry, triggered

SYMBOL = "BTCUSDT"
HOUR = 3_600_000


def _frame(agg_id: int, time: int, price: float, qty: float) -> Frame:
    ev = AggTrade(SYMBOL, time, agg_id, price, qty, agg_id, agg_id, time, False)  # an aggressive buy
    return Frame(1, f"{SYMBOL.lower()}@aggTrade", SYMBOL, Kind.AGG_TRADE, ev)


def test_a_window_leaves_out_a_trade_older_than_its_horizon_and_keeps_the_newest_price() -> None:
    window = TradeWindow(1_000, 10)
    assert window.add(5_000, 10.0, 1.0, False)
    assert not window.add(3_999, 99.0, 1.0, False)  # 1001 ms older: could never be inside
    assert (len(window), window.large_buys, window.quote_volume) == (1, 1, 10.0)
    assert window.add(4_000, 1.0, 20.0, False)  # on the horizon: inside, counted
    assert (len(window), window.large_buys) == (2, 2) and window.vwap == pytest.approx(30.0 / 21.0)
    assert (window.last_time, window.last_price) == (5_000, 10.0)  # the newest, not the last to arrive
    assert window.add(5_000, 11.0, 1.0, False)  # a tie: the later arrival is the last price
    assert window.last_price == 11.0


def test_a_trade_stamped_two_hours_back_changes_no_window_and_not_the_last_price(
    caplog: pytest.LogCaptureFixture,
) -> None:
    market = Market()
    t = 10 * HOUR
    market.on_frame(_frame(1, t, 100.0, 2.0))
    st = market.state(SYMBOL)
    before = (st.flow.large_buys, st.flow.quote_volume, st.vwap.vwap, len(st.flow), len(st.vwap))
    assert before == (0, 200.0, 100.0, 1, 1)
    market.on_frame(_frame(2, t - 2 * HOUR, 50.0, 10_000.0))  # 500,000 USD, two hours before trade 1
    assert (st.flow.large_buys, st.flow.quote_volume, st.vwap.vwap, len(st.flow), len(st.vwap)) == before
    assert (st.flow.last_price, st.flow.last_time, st.vwap.last_price) == (100.0, t, 100.0)
    assert st.last_agg_id == 2  # applied by id all the same: the next trade is no gap
    assert (market.counters["trade_too_old"], market.totals()["trade_time_regressed"]) == (1, 1)
    assert any("left out of its 300000, 3600000 ms windows" in r.getMessage() for r in caplog.records)
    market.on_frame(_frame(3, t - 10 * 60_000, 50.0, 10_000.0))  # 10 min back: in the hour, not in 300 s
    assert (st.flow.large_buys, len(st.flow), st.flow.last_price) == (0, 1, 100.0)
    assert (st.vwap.large_buys, len(st.vwap), st.vwap.last_price) == (1, 2, 100.0)
    assert market.counters["trade_too_old"] == 2


def test_a_trade_a_few_ms_late_still_counts_but_does_not_move_the_last_price() -> None:
    market = Market()
    t = 10 * HOUR
    market.on_frame(_frame(1, t, 100.0, 2.0))
    market.on_frame(_frame(2, t - 5, 90.0, 1_000.0))  # 90,000 USD stamped 5 ms before trade 1
    st = market.state(SYMBOL)
    assert (st.flow.large_buys, st.flow.quote_volume, len(st.flow)) == (1, 90_200.0, 2)
    assert st.vwap.vwap == pytest.approx(90_200.0 / 1_002.0)
    assert (st.flow.last_price, st.flow.last_time) == (100.0, t)
    assert (market.counters["trade_too_old"], market.counters["trade_time_regressed"]) == (0, 1)


def _engine_following() -> tuple[SignalEngine, str, float, float]:
    signal = entry(SYMBOL)
    engine = SignalEngine(load_settings(), Market())
    engine.resume([(signal, triggered(signal))])
    assert engine.open[signal.signal_id].tracker.state is OutcomeState.TRIGGERED
    return engine, signal.signal_id, signal.entry_price, signal.stop_loss


def _ws(engine: SignalEngine, agg_id: int, time: int, price: float) -> None:
    frame = _frame(agg_id, time, price, 1.0)
    engine.market.on_frame(frame)
    engine.on_frame(frame)


def test_a_trade_older_than_the_trade_window_is_not_followed() -> None:
    engine, sid, entry_price, stop = _engine_following()
    t = entry(SYMBOL).event_time + 400_000
    _ws(engine, 100, t, entry_price)
    _ws(engine, 101, t - 350_000, stop * 0.9)  # through the stop, but 350 s before the newest trade
    assert engine.open[sid].tracker.state is OutcomeState.TRIGGERED
    assert engine.market.symbols[SYMBOL].flow.last_price == entry_price


def test_a_trade_a_few_ms_late_is_followed_with_its_own_time_then_the_newest() -> None:
    engine, sid, entry_price, stop = _engine_following()
    t = entry(SYMBOL).event_time + 10_000
    _ws(engine, 100, t, entry_price)
    _ws(engine, 101, t - 5, (entry_price + stop) / 2)  # halfway to the stop, 5 ms before the newest trade
    tracker = engine.open[sid].tracker
    outcome = tracker.outcome()
    assert outcome.state is OutcomeState.TRIGGERED and outcome.mae_r == pytest.approx(0.5)
    assert (outcome.last_price, outcome.as_of) == (entry_price, t)  # the newest trade's price, its time
    _ws(engine, 102, t - 3, stop * 0.999)  # through the stop: it did trade there, and closes the signal
    assert sid not in engine.open and tracker.state is OutcomeState.STOPPED
    assert tracker.outcome().exit_time == t
