"""When the engine judges a symbol: never on a tape that stopped (stale trades) or has a hole (an aggTrade gap
being filled), and with the book's gaps and resyncs counted over the trade window, not the book's lifetime."""

from __future__ import annotations

import pytest

from tapewatch.book_incidents import MAX_KEPT, BookIncidents
from tapewatch.engine import CONTEXT_MAX_AGE_BARS
from tapewatch.events import KlineHistory
from tapewatch.live_view import live_features
from tapewatch.market_klines import KlineFillNeeded
from tapewatch.streams import Kind

from .engine_rig import T0, Rig, candles15

T = 1_700_000_100_000
LAST_TRADE = T + 22


def ask_heavy_tape(rig: Rig) -> None:
    """3 large buys above the VWAP while the book leans to the asks: no LONG setup yet (last trade T + 22)."""
    rig.context()
    rig.snapshot([(99.9, 10.0)], [(100.1, 100.0)], T)
    rig.depth(T)
    rig.trade(T + 10, 99.0, 10.0)
    for i in range(3):
        rig.trade(T + 20 + i, 100.0, 7000.0)
    assert not rig.candidates()


@pytest.mark.parametrize(("after_ms", "evaluated"), [(60_000, True), (60_001, False)])
def test_a_symbol_whose_last_trade_is_older_than_trade_stale_after_is_not_evaluated(
    after_ms: int, evaluated: bool
) -> None:
    rig = Rig()  # trade_stale_after: 60 s
    ask_heavy_tape(rig)
    rig.clock(LAST_TRADE + after_ms - 100)
    rig.depth(LAST_TRADE + after_ms, bids=[(99.9, 500.0)])  # the book turns: a LONG setup, on the old tape
    counts = rig.engine.per_symbol["BTCUSDT"].not_evaluated
    if evaluated:
        assert [c.fate for c in rig.candidates()] == ["signal"]
        assert counts["trades_stale"] == 0
    else:
        assert rig.candidates() == []
        assert counts["trades_stale"] == 1 and rig.engine.counters["not_evaluated_trades_stale"] == 1


def test_twenty_minutes_of_depth_after_the_last_trade_make_no_candidate() -> None:
    rig = Rig()
    ask_heavy_tape(rig)
    rig.bar(T - 900_000)  # the kline stream goes on (the context stays current): bars close at T, T + 15 min
    for k in range(1, 1201):
        if k == 900:
            rig.bar(T)
        rig.depth(T + k * 1000, bids=[(99.9, 500.0)] if k == 1200 else [])
    assert rig.candidates() == []
    assert rig.engine.counters["not_evaluated_trades_stale"] == 1200 - 60  # each depth event after 60 s
    # the tape resumes: its window now ends at the new trades, and the setup on them is judged at once
    for i in range(3):
        rig.trade(T + 1_200_500 + i, 100.0, 7000.0)
    [candidate] = rig.candidates()
    assert candidate.fate == "signal" and candidate.event_time == T + 1_200_502


def test_a_symbol_is_not_evaluated_while_a_gap_fill_holds_its_trades() -> None:
    rig = Rig()
    ask_heavy_tape(rig)
    rig.trade(T + 500, 100.0, 1.0, skip=2)  # ids 5 and 6 missing: held until the fill
    assert rig.market.symbols["BTCUSDT"].fill is not None
    rig.depth(T + 1000, bids=[(99.9, 500.0)])
    assert rig.candidates() == []
    assert rig.engine.per_symbol["BTCUSDT"].not_evaluated["trades_filling"] == 2  # the held trade, the depth
    rig.fill([(5, T + 100, 100.0, 1.0), (6, T + 200, 100.0, 1.0)])
    assert rig.market.symbols["BTCUSDT"].fill is None
    assert [c.fate for c in rig.candidates()] == ["signal"]


def with_a_gap_at(rig: Rig, t: int) -> None:
    """A book synced at ``t - 1000`` that has a sequence gap (and so a resync) at ``t``, then resyncs."""
    rig.context(end=(t + 3_600_000) // 900_000 * 900_000)
    rig.snapshot([(99.9, 10.0)], [(100.1, 100.0)], t - 1000)
    rig.depth(t - 1000)
    rig.depth(t, skip=5)
    rig.snapshot([(99.9, 10.0)], [(100.1, 100.0)], t + 500)
    rig.depth(t + 1000)
    book = rig.market.symbols["BTCUSDT"].book
    assert (book.gaps, book.resyncs, book.synced) == (1, 1, True)


@pytest.mark.parametrize(("after_ms", "in_window"), [(300_000, 1), (300_001, 0), (2_400_000, 0)])
def test_gaps_and_resyncs_in_window_count_those_within_the_trade_window(
    after_ms: int, in_window: int
) -> None:
    rig = Rig()  # trade window: 300 s
    gap = T + 10_000
    with_a_gap_at(rig, gap)
    at = gap + after_ms  # the third large buy, the evaluation that makes the candidate
    rig.clock(at - 1100)
    rig.depth(at - 1000, bids=[(99.9, 500.0)])
    rig.trade(at - 30, 99.0, 10.0)
    for i in (2, 1, 0):
        rig.trade(at - i, 100.0, 7000.0)
    [signal] = rig.signals()
    assert signal.event_time == at
    assert signal.data_quality.gaps_in_window == in_window
    assert signal.data_quality.resyncs_in_window == in_window


def test_book_incidents_count_by_event_time_within_the_window() -> None:
    incidents = BookIncidents(300_000)
    incidents.observe(0, 0, 1_000)
    assert incidents.counts(1_000) == (0, 0)
    incidents.observe(1, 1, 2_000)
    incidents.observe(3, 1, 5_000)  # two more gaps seen at once
    assert incidents.counts(5_000) == (3, 1)
    assert incidents.counts(302_000) == (3, 1)  # the window is inclusive, as the trade window
    assert incidents.counts(302_001) == (2, 0)
    assert incidents.counts(305_001) == (0, 0)
    incidents.observe(3, 2, 400_000)
    assert incidents.counts(400_000) == (0, 1)


def test_book_incidents_keep_bounded_memory() -> None:
    incidents = BookIncidents(10**12)
    incidents.observe(10 * MAX_KEPT, 0, 1)
    for k in range(2, 3 * MAX_KEPT):
        incidents.observe(10 * MAX_KEPT + k, 0, k)
    gaps, _ = incidents.counts(3 * MAX_KEPT)
    assert gaps == MAX_KEPT  # saturated, never more memory


def test_the_live_view_shows_no_required_conditions_met_on_a_stale_tape() -> None:
    rig = Rig()
    ask_heavy_tape(rig)
    rig.depth(LAST_TRADE + 30_000, bids=[(99.9, 500.0)])  # a LONG setup on a fresh tape: judged
    view = live_features(rig.engine, "BTCUSDT")
    assert view is not None and view[1]["trades"] == "fresh" and view[1]["long_required"] is True
    assert view[1]["vwap_window"] == rig.engine.settings.context_tf  # the dashboard labels the VWAP with it
    rig.depth(LAST_TRADE + 60_001)  # the tape stopped: the engine skips the symbol, and the view says so
    view = live_features(rig.engine, "BTCUSDT")
    assert view is not None and view[1]["trades"] == "stale"
    assert view[1]["long_required"] is False and view[1]["short_required"] is False


# --- the 15m context must be current -----------------------------------------------------------------------

BAR = 900_000


@pytest.mark.parametrize(
    ("age_ms", "evaluated"), [(0, True), (2 * BAR, True), (2 * BAR + 1, False), (48 * 3_600_000, False)]
)
def test_a_symbol_whose_newest_closed_15m_bar_ended_over_two_bars_before_is_not_evaluated(
    age_ms: int, evaluated: bool
) -> None:
    """The kline stream silent while the others flow: RSI, levels, intensity and the ATR would be those of old
    bars. Judged while the newest closed bar ended at most CONTEXT_MAX_AGE_BARS (2) bars before the event."""
    assert CONTEXT_MAX_AGE_BARS == 2
    rig = Rig()
    rig.context()  # the newest closed bar ends at T0
    event = T0 + age_ms  # the third large buy: the one event that evaluates the setup
    rig.clock(event - 22)
    rig.long_setup(event - 22)
    counts = rig.engine.per_symbol["BTCUSDT"].not_evaluated
    if evaluated:
        [candidate] = rig.candidates()
        assert candidate.fate == "signal" and candidate.event_time == event
        assert counts["context_stale"] == 0
        view = live_features(rig.engine, "BTCUSDT")
        assert view is not None and view[1]["context"] == "fresh" and view[1]["long_required"] is True
    else:
        assert rig.candidates() == []
        assert counts["context_stale"] == 1 and rig.engine.counters["not_evaluated_context_stale"] == 1
        assert live_features(rig.engine, "BTCUSDT") is not None  # the reason reaches the live view
        assert live_features(rig.engine, "BTCUSDT")[1]["not_evaluated"] == {"context_stale": 1}  # type: ignore[index]
        # the live view (judged at the exchange's now, here moved to the event) does not show the setup as met
        # on old bars: the engine does not judge it
        rig.clock(event)
        view = live_features(rig.engine, "BTCUSDT")
        assert view is not None and view[1]["context"] == "stale"
        assert view[1]["long_required"] is False and view[1]["short_required"] is False


def test_a_silent_kline_stream_that_resumes_brings_the_symbol_back_once_its_hole_is_refilled() -> None:
    """Six hours without 15m klines: the stream's next kline opens a hole (a refill asked for); the symbol stays
    unjudged (``context_stale``) until the refill's bars arrive, then its setup is judged on current bars."""
    rig = Rig()
    rig.context()
    resumed = T0 + 6 * 3_600_000
    rig.clock(resumed)
    rig.bar(resumed, closed=False)  # the forming bar: the six hours before it are a hole
    [fill] = [r for r in rig.requests if isinstance(r, KlineFillNeeded)]
    assert (fill.symbol, fill.start, fill.end) == ("BTCUSDT", T0, resumed - 1)
    rig.long_setup(resumed + 1_000)
    assert rig.candidates() == [] and rig.engine.counters["not_evaluated_context_stale"] == 1
    rig.feed(
        Kind.KLINES,
        "rest:/fapi/v1/klines?symbol=BTCUSDT&interval=15m",
        KlineHistory("15m", candles15(24, resumed)),
    )
    assert rig.market.symbols["BTCUSDT"].candles["15m"].closed[-1].close_time == resumed - 1
    rig.trade(resumed + 2_000, 100.0, 7000.0)  # a fourth large buy: the setup is judged again
    [candidate] = rig.candidates()
    assert candidate.fate == "signal" and candidate.event_time == resumed + 2_000
