"""The exchange's now of the market state: one frame stamped far ahead cannot move it, a real jump can.

A frame more than the tolerance (60 s of event time) past the clock is rejected and counted unless another
symbol's frame (or, alone, the same symbol's next one) confirms the jump (:mod:`tapewatch.market_clock`).
"""

from __future__ import annotations

import pytest

from tapewatch.engine import SignalEngine
from tapewatch.events import (
    AggTrade,
    DepthRestart,
    DepthSnapshot,
    DepthUpdate,
    Kline,
    KlineHistory,
)
from tapewatch.market import Market, MarketConfig
from tapewatch.market_clock import CLOCK_TOLERANCE_MS, MarketClock
from tapewatch.parse import Frame
from tapewatch.polled import PolledSnapshot
from tapewatch.settings import load_settings
from tapewatch.signal import Signal
from tapewatch.streams import Kind
from tests.adapters.signal_builders import entry
from tests.tapewatch.candle_helpers import make_candle

T = 1_700_000_000_000
YEAR = 365 * 86_400_000
OUTAGE = 5 * 60_000


class Feed:
    """Hand-made frames of a few symbols, each symbol's diffs continuing its last one; ``recv`` is the frames'
    receive time (the clock must never read it)."""

    def __init__(self, market: Market | None = None, recv: int = 1) -> None:
        self.market = market or Market()
        self.recv = recv
        self.uid: dict[str, int] = {}
        self.agg: dict[str, int] = {}

    def send(self, symbol: str, kind: Kind, stream: str, event: object) -> Frame:
        frame = Frame(self.recv, stream, symbol, kind, event)  # type: ignore[arg-type]
        self.market.on_frame(frame)
        return frame

    def diff(self, symbol: str, t: int, bid: float = 100.0) -> Frame:
        u = self.uid.get(symbol, 10)
        self.uid[symbol] = u + 2
        ev = DepthUpdate(symbol, t, t, u + 1, u + 2, u, [(bid, 1.0)], [])
        return self.send(symbol, Kind.DEPTH, f"{symbol.lower()}@depth@100ms", ev)

    def synced(self, symbol: str, t: int) -> None:
        """Cold start: a diff, the snapshot it needs, the next diff; the book is synced as of ``t``."""
        u = self.uid.get(symbol, 10)
        ev = DepthUpdate(symbol, t, t, u - 5, u, u - 6, [(100.0, 1.0)], [(101.0, 1.0)])
        self.send(symbol, Kind.DEPTH, f"{symbol.lower()}@depth@100ms", ev)
        self.snapshot(symbol, t, u - 3)
        self.uid[symbol] = u
        self.diff(symbol, t)
        assert self.market.book_usable(symbol)

    def snapshot(self, symbol: str, t: int, last_update_id: int) -> None:
        snap = DepthSnapshot(last_update_id, [(100.0, 1.0)], [(101.0, 1.0)], t, t)
        self.send(symbol, Kind.SNAPSHOT, f"rest:/fapi/v1/depth?symbol={symbol}&limit=1000", snap)

    def restart(self, symbol: str) -> None:
        self.send(symbol, Kind.CONTROL, "control:depth_restart", DepthRestart(symbol, "reconnect"))

    def trade(self, symbol: str, t: int, qty: float = 1.0) -> Frame:
        a = self.agg.get(symbol, 0) + 1
        self.agg[symbol] = a
        ev = AggTrade(symbol, t, a, 100.0, qty, a, a, t, False)
        return self.send(symbol, Kind.AGG_TRADE, f"{symbol.lower()}@aggTrade", ev)

    def counts(self) -> tuple[int, int]:
        totals = self.market.totals()
        """(frames not applied: rejected or held, jumps)."""
        return totals["event_time_ahead"] + totals["event_time_held"], totals["event_time_jumps"]


def two_books(market: Market | None = None, recv: int = 1) -> Feed:
    feed = Feed(market, recv)
    feed.synced("BTCUSDT", T)
    feed.synced("ETHUSDT", T + 50)
    return feed


def test_one_diff_a_year_ahead_on_eth_leaves_btc_usable_and_is_counted() -> None:
    feed = two_books()
    market = feed.market
    eth = market.symbols["ETHUSDT"]
    applied = eth.book.applied
    feed.diff("ETHUSDT", T + YEAR)
    assert market.now_ms == T + 50 and feed.counts() == (1, 0)
    assert (
        eth.book.applied == applied and eth.last_event_time == T + 50
    )  # neither the book nor the clock took it
    feed.diff("BTCUSDT", T + 200)
    assert market.now_ms == T + 200
    assert market.book_usable("BTCUSDT") and market.book_usable("ETHUSDT")
    # ETH's next diff does not continue the book it never applied: a resync, not a book read past a hole
    feed.diff("ETHUSDT", T + 300)
    assert eth.book.gaps == 1 and eth.snapshot_pending and not market.book_usable("ETHUSDT")
    assert market.book_usable("BTCUSDT") and feed.counts() == (1, 0)


def test_the_same_symbol_stamped_ahead_again_stays_rejected_while_others_move_the_clock() -> None:
    feed = two_books()
    for k in range(1, 4):
        feed.diff("ETHUSDT", T + YEAR + k)
        feed.diff("BTCUSDT", T + 100 * k)  # the market runs on: the suspect is void
    assert feed.market.now_ms == T + 300 and feed.counts() == (3, 0)
    assert feed.market.book_usable("BTCUSDT")


@pytest.mark.parametrize(("ahead", "taken"), [(CLOCK_TOLERANCE_MS, True), (CLOCK_TOLERANCE_MS + 1, False)])
def test_the_clock_advances_freely_by_up_to_the_tolerance(ahead: int, taken: bool) -> None:
    feed = two_books()
    feed.diff("ETHUSDT", T + 50 + ahead)
    assert feed.market.now_ms == (T + 50 + ahead if taken else T + 50)
    assert feed.counts() == ((0, 0) if taken else (1, 0))


def test_a_market_wide_jump_after_an_outage_is_accepted() -> None:
    """Every symbol's stream comes back five minutes later: the second symbol's frame confirms the first's."""
    feed = two_books()
    market = feed.market
    back = T + OUTAGE
    for symbol in ("BTCUSDT", "ETHUSDT"):
        feed.restart(symbol)
    feed.diff("BTCUSDT", back)  # the suspect: held
    feed.diff("ETHUSDT", back + 20)  # another symbol also far ahead (two active symbols): the jump is real
    assert market.now_ms == back + 20 and feed.counts() == (0, 1)  # the held diff was applied: nothing lost
    for symbol in ("BTCUSDT", "ETHUSDT"):
        feed.diff(symbol, back + 100)
        feed.snapshot(symbol, back + 100, feed.uid[symbol] - 1)
        feed.diff(symbol, back + 200)
        assert market.book_usable(symbol)
    assert market.now_ms == back + 200 and feed.counts() == (0, 1)


def test_a_single_symbol_universe_after_an_outage_is_accepted() -> None:
    feed = Feed()
    feed.synced("BTCUSDT", T)
    market = feed.market
    back = T + OUTAGE
    feed.restart("BTCUSDT")
    feed.diff("BTCUSDT", back)
    assert market.now_ms == T and feed.counts() == (1, 0)
    feed.diff("BTCUSDT", back + 100)  # its own next frame, within the tolerance of the first: confirmed
    assert market.now_ms == back + 100 and feed.counts() == (0, 1)
    feed.snapshot("BTCUSDT", back + 100, feed.uid["BTCUSDT"] - 1)
    feed.diff("BTCUSDT", back + 200)
    assert market.book_usable("BTCUSDT")


def test_a_single_symbol_frame_far_from_its_suspect_does_not_confirm_it() -> None:
    feed = Feed()
    feed.synced("BTCUSDT", T)
    feed.diff("BTCUSDT", T + YEAR)
    feed.diff("BTCUSDT", T + 2 * YEAR)  # not within the tolerance of the suspect: a new suspect
    assert feed.market.now_ms == T and feed.counts() == (2, 0)


def test_frames_far_ahead_that_disagree_with_each_other_confirm_nothing() -> None:
    feed = two_books()
    feed.diff("BTCUSDT", T + OUTAGE)
    feed.diff(
        "ETHUSDT", T + YEAR
    )  # far ahead too, but a year past the first: a new candidate, BTC's rejected
    assert feed.market.now_ms == T + 50 and feed.counts() == (2, 0)
    assert feed.market.totals()["event_time_held"] == 1


def test_a_future_trade_stays_out_of_the_window_and_is_counted() -> None:
    feed = Feed()
    feed.synced("BTCUSDT", T)
    st = feed.market.symbols["BTCUSDT"]
    feed.trade("BTCUSDT", T + 1)
    feed.trade("BTCUSDT", T + 10**10, qty=1000.0)
    feed.trade("BTCUSDT", T + 2)
    assert len(st.flow) == 2 and st.flow.last_time == T + 2 and st.flow.large_buys == 0
    assert st.flow.quote_volume == 200.0 and len(st.vwap) == 2
    assert feed.counts() == (1, 0) and feed.market.counters["trade_time_regressed"] == 0
    assert st.last_agg_id == 3  # its id is taken: no gap opened for it
    # the window still slides: as the clock and the trades move on, the old trades leave it
    for k in range(1, 6):
        feed.diff("BTCUSDT", T + k * 60_000)
    feed.trade("BTCUSDT", T + 300_010)
    assert len(st.flow) == 1 and st.flow.last_time == T + 300_010 and feed.counts() == (1, 0)


def fill_page(feed: Feed, agg_id: int, t: int) -> None:
    """The REST page that fills the aggTrade gap of id ``agg_id``, one trade at ``t``."""
    page = AggTrade("BTCUSDT", t, agg_id, 100.0, 1.0, agg_id, agg_id, t, False)
    stream = f"rest:/fapi/v1/aggTrades?symbol=BTCUSDT&fromId={agg_id}&limit=1000"
    feed.send("BTCUSDT", Kind.AGG_TRADE, stream, page)


@pytest.mark.parametrize("ahead", ["filled", "held"])
def test_a_trade_of_a_resolved_gap_stamped_ahead_is_not_handed_to_the_followers(ahead: str) -> None:
    """An aggTrade gap resolves: the trades it applies at once reach the open signals' followers (caught_up),
    except one the clock rejected (a trade of the gap or one held after it; two minutes ahead, so that the gap
    is still worth filling)."""
    feed = Feed()
    feed.synced("BTCUSDT", T)
    st = feed.market.symbols["BTCUSDT"]
    late = T + 120_000
    feed.trade("BTCUSDT", T + 1)
    feed.agg["BTCUSDT"] = 2  # id 2 missing: the next trades are held
    feed.trade("BTCUSDT", late if ahead == "held" else T + 3)
    feed.trade("BTCUSDT", T + 4)
    assert st.fill is not None
    fill_page(feed, 2, late if ahead == "filled" else T + 2)
    assert st.fill is None and st.last_agg_id == 4 and feed.counts() == (1, 0)
    kept = [(T + 3, 100.0), (T + 4, 100.0)] if ahead == "filled" else [(T + 2, 100.0), (T + 4, 100.0)]
    assert st.caught_up == kept and len(st.flow) == 3


def test_a_polled_snapshot_far_ahead_is_not_loaded() -> None:
    feed = two_books()
    st = feed.market.symbols["BTCUSDT"]
    snap = PolledSnapshot(999, [(99.0, 1.0)], [(99.5, 1.0)], T + YEAR, T + YEAR, every_ms=5000)
    feed.send(
        "BTCUSDT", Kind.SNAPSHOT, "rest:/fapi/v1/depth?symbol=BTCUSDT&limit=50#poll&every_ms=5000", snap
    )
    assert feed.market.now_ms == T + 50 and feed.counts() == (1, 0)
    assert st.book.last_update_id != 999 and feed.market.book_usable("BTCUSDT")


def test_before_the_clock_starts_a_first_diff_far_past_the_trades_is_a_suspect() -> None:
    """Trades came first (they never start the clock): the first diff is judged against the latest of them."""
    feed = Feed()
    feed.trade("BTCUSDT", T)
    feed.diff("ETHUSDT", T + YEAR)
    assert feed.market.now_ms == 0 and feed.counts() == (1, 0)
    feed.diff("BTCUSDT", T + 500)
    assert feed.market.now_ms == T + 500 and feed.counts() == (1, 0)


def test_with_no_frame_before_it_the_first_diff_starts_the_clock() -> None:
    feed = Feed()
    feed.diff("ETHUSDT", T + YEAR)
    assert feed.market.now_ms == T + YEAR and feed.counts() == (0, 0)


def engine_following(symbol: str) -> tuple[SignalEngine, Signal, Feed]:
    """A signal engine following one open ENTRY signal of ``symbol`` (resumed, as after a restart) and a feed
    of frames into its market, with the settings' market config."""
    settings = load_settings()
    market = Market(MarketConfig.from_settings(settings))
    engine = SignalEngine(settings, market)
    signal = entry(symbol)
    engine.resume([(signal, None)])
    return engine, signal, Feed(market)


@pytest.mark.parametrize("first", ["depth", "trade"])
def test_an_open_signal_is_not_expired_by_another_symbols_diff_a_year_ahead(first: str) -> None:
    engine, signal, feed = engine_following("BTCUSDT")
    t = signal.event_time
    outputs = []

    def both(frame: Frame) -> None:
        if (out := engine.on_frame(frame)) is not None:
            outputs.append(out)

    both(feed.diff("BTCUSDT", t + 1000) if first == "depth" else feed.trade("BTCUSDT", t + 1000))
    both(feed.diff("ETHUSDT", t + YEAR))
    both(feed.trade("BTCUSDT", t + 2000))
    assert len(engine.open) == 1
    assert [s for out in outputs for s in out.signals] == [] and [
        f for out in outputs for f in out.finished
    ] == []


def test_the_rule_reads_event_times_only_never_recv() -> None:
    """Live and replay take the same decisions: the same frames received at any other time give the same clock."""

    def run(recv: int) -> tuple[int, tuple[int, int]]:
        feed = two_books(recv=recv)
        feed.diff("ETHUSDT", T + YEAR)  # held
        feed.diff("BTCUSDT", T + 100)  # the clock moves on: the suspect is void, rejected
        feed.diff("BTCUSDT", T + OUTAGE)  # held
        feed.diff("ETHUSDT", T + OUTAGE + 10)  # confirms (two active symbols): the held diff is applied
        return feed.market.now_ms, feed.counts()

    assert run(1) == run(T) == run(T + 10 * YEAR) == (T + OUTAGE + 10, (1, 1))


def test_the_tolerance_must_be_positive() -> None:
    with pytest.raises(ValueError, match="tolerance"):
        MarketClock(0)


def test_trades_flow_on_while_every_depth_stream_is_quiet() -> None:
    feed = Feed()
    feed.synced("BTCUSDT", T)
    st = feed.market.symbols["BTCUSDT"]
    for k in range(1, 301):  # five minutes of trades a second, no depth diff at all
        feed.trade("BTCUSDT", T + k * 1_000)
    assert feed.counts() == (0, 0)  # nothing rejected, no jump
    assert st.flow.last_time == T + 300_000 and len(st.vwap) == 300
    # a trade far ahead of its own tape is still rejected
    feed.trade("BTCUSDT", T + 10**10)
    assert feed.counts() == (1, 0) and st.flow.last_time == T + 300_000


# --- a real jump costs no frame (held, applied once confirmed) ---------------------------------------------
def test_a_synced_book_runs_on_without_a_resync_after_a_market_wide_pause() -> None:
    """The streams stay connected while the exchange pauses five minutes: BTC's first diff after it is held,
    not lost, so BTC's next diff continues its book (no gap, no snapshot request of weight 20)."""
    feed = two_books()
    market = feed.market
    btc = market.symbols["BTCUSDT"]
    back = T + OUTAGE
    assert market.on_frame(frame_of(feed, "BTCUSDT", back)) is None  # held
    assert btc.book.last_event_time == T and feed.counts() == (1, 0)
    feed.diff("ETHUSDT", back + 20)  # confirms (two active symbols): BTC's held diff is applied first
    assert btc.book.last_event_time == back and btc.last_event_time == back and feed.counts() == (0, 1)
    assert market.on_frame(frame_of(feed, "BTCUSDT", back + 100)) is None  # continues the book
    assert btc.book.gaps == 0 and btc.book.resyncs == 0 and not btc.snapshot_pending
    assert market.book_usable("BTCUSDT") and market.book_usable("ETHUSDT")


def frame_of(feed: Feed, symbol: str, t: int) -> Frame:
    """The next diff of ``symbol`` at ``t``, not sent (to read what :meth:`Market.on_frame` returns)."""
    u = feed.uid.get(symbol, 10)
    feed.uid[symbol] = u + 2
    ev = DepthUpdate(symbol, t, t, u + 1, u + 2, u, [(100.0, 1.0)], [])
    return Frame(feed.recv, f"{symbol.lower()}@depth@100ms", symbol, Kind.DEPTH, ev)


def test_a_polled_snapshot_and_a_trade_held_for_a_jump_are_applied_once_it_is_confirmed() -> None:
    feed = two_books()
    market = feed.market
    btc = market.symbols["BTCUSDT"]
    back = T + OUTAGE
    feed.trade("BTCUSDT", back - 10)  # held: far ahead of the clock and of BTC's (empty) tape
    snap = PolledSnapshot(999, [(99.0, 1.0)], [(99.5, 1.0)], back, back, every_ms=5000)
    feed.send(
        "BTCUSDT", Kind.SNAPSHOT, "rest:/fapi/v1/depth?symbol=BTCUSDT&limit=50#poll&every_ms=5000", snap
    )
    assert len(btc.flow) == 0 and btc.book.last_update_id != 999 and market.totals()["event_time_held"] == 2
    feed.diff("ETHUSDT", back + 20)
    assert market.now_ms == back + 20 and feed.counts() == (0, 1)
    assert (
        btc.flow.last_time == back - 10 and btc.book.last_update_id == 999 and market.book_usable("BTCUSDT")
    )


# --- a quorum of consistent symbols, not two frames ----------------------------------------------------------
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT")


def five_books() -> Feed:
    feed = Feed()
    for k, symbol in enumerate(SYMBOLS):
        feed.synced(symbol, T + 10 * k)
    return feed


def test_every_symbol_back_five_minutes_after_a_silence_is_a_jump_within_three_frames() -> None:
    feed = five_books()
    market = feed.market
    back = T + OUTAGE
    for k, symbol in enumerate(SYMBOLS[:3]):
        feed.diff(symbol, back + k)
    assert market.now_ms == back + 2 and feed.counts() == (0, 1)  # the third symbol confirms; none lost
    for k, symbol in enumerate(SYMBOLS):
        feed.diff(symbol, back + 100 + k)
        assert market.book_usable(symbol) and market.symbols[symbol].book.gaps == 0
    assert feed.counts() == (0, 1)


@pytest.mark.parametrize("bad", [(YEAR, YEAR + 20), (YEAR, 2 * YEAR)], ids=["consistent", "inconsistent"])
def test_two_bad_frames_of_two_symbols_do_not_move_the_clock(bad: tuple[int, int]) -> None:
    """A corrupted relay stamps two frames of two symbols far ahead: two symbols are not a quorum of five."""
    feed = five_books()
    market = feed.market
    feed.diff("BTCUSDT", T + bad[0])
    feed.diff("ETHUSDT", T + bad[1])
    assert market.now_ms == T + 40 and feed.counts() == (2, 0) and market.totals()["event_time_jumps"] == 0
    feed.diff("SOLUSDT", T + 500)  # the market runs on: both are rejected for good
    assert market.now_ms == T + 500 and market.totals()["event_time_ahead"] == 2
    assert market.totals()["event_time_held"] == 0
    for symbol in SYMBOLS[2:]:
        assert market.book_usable(symbol)


def test_three_bad_frames_that_disagree_with_each_other_do_not_move_the_clock() -> None:
    feed = five_books()
    for k, symbol in enumerate(SYMBOLS[:3]):
        feed.diff(symbol, T + (k + 1) * YEAR)
    assert feed.market.now_ms == T + 40 and feed.counts() == (3, 0)


def test_a_jump_of_two_symbols_is_enough_in_a_two_symbol_universe_that_was_five() -> None:
    """Symbols that left the universe (their books silent for longer than the tolerance) do not count."""
    feed = five_books()
    for k in range(1, 4):
        feed.diff("BTCUSDT", T + 50_000 * k)
        feed.diff("ETHUSDT", T + 50_000 * k + 10)
    back = T + 150_010 + OUTAGE
    feed.diff("BTCUSDT", back)
    feed.diff("ETHUSDT", back + 10)
    assert feed.market.now_ms == back + 10 and feed.counts() == (0, 1)


# --- klines, bookTickers, REST snapshots ---------------------------------------------------------------------
def kline(symbol: str, event_time: int, open_time: int, closed: bool = False) -> Kline:
    return Kline(
        symbol, event_time, make_candle(open_time, 101.0, 99.0, 100.0, closed=closed, length_ms=60_000)
    )


def test_a_kline_bar_opening_a_year_ahead_does_not_freeze_the_series() -> None:
    feed = two_books()
    market = feed.market
    stream = "btcusdt@kline_1m"
    feed.send("BTCUSDT", Kind.KLINE, stream, kline("BTCUSDT", T + YEAR, T + YEAR, closed=True))
    assert market.counters["kline_ahead"] == 1 and "1m" not in market.symbols["BTCUSDT"].candles
    feed.send("BTCUSDT", Kind.KLINE, stream, kline("BTCUSDT", T + 50, T - 60_000, closed=True))
    feed.send("BTCUSDT", Kind.KLINE, stream, kline("BTCUSDT", T + YEAR, T))  # E far ahead is never read
    series = market.symbols["BTCUSDT"].candles["1m"]
    assert [c.open_time for c in series.closed] == [T - 60_000] and series.forming is not None
    assert series.forming.open_time == T and series.stale_updates == 0 and market.counters["kline_ahead"] == 1
    rows = [make_candle(T - 120_000, 101.0, 99.0, 100.0, length_ms=60_000)]
    rows.append(make_candle(T + YEAR, 101.0, 99.0, 100.0, length_ms=60_000))
    feed.send(
        "ETHUSDT", Kind.KLINES, "rest:/fapi/v1/klines?symbol=ETHUSDT&interval=1m", KlineHistory("1m", rows)
    )
    assert [c.open_time for c in market.symbols["ETHUSDT"].candles["1m"].closed] == [T - 120_000]
    assert market.counters["kline_ahead"] == 2 and market.now_ms == T + 50


def test_the_clock_never_moves_back_when_the_confirming_frame_is_older_than_a_held_one() -> None:
    """The held frames are applied first (BTC's moves the clock to +30 s); the confirming SOL diff, stamped
    earlier, must not pull the clock back behind a book it already took."""
    feed = five_books()
    m = feed.market
    back = T + OUTAGE
    feed.diff("BTCUSDT", back + 30_000)
    feed.diff("ETHUSDT", back + 10_000)
    feed.diff("SOLUSDT", back)
    assert m.now_ms == back + 30_000 and m.counters["event_time_jumps"] == 1


def priced_trade(feed: Feed, symbol: str, t: int, price: float) -> Frame:
    """An aggTrade of ``symbol`` at ``price``, continuing its ids."""
    a = feed.agg[symbol] = feed.agg.get(symbol, 0) + 1
    ev = AggTrade(symbol, t, a, price, 1.0, a, a, t, False)
    return feed.send(symbol, Kind.AGG_TRADE, f"{symbol.lower()}@aggTrade", ev)


@pytest.mark.parametrize("universe", [1, 3])
def test_a_trade_released_by_a_clock_jump_reaches_the_open_signals_follower(universe: int) -> None:
    """After an outage, a trade held far ahead of the clock touches the stop; the jump is confirmed (by two other
    symbols' diffs, or alone by the symbol's next trade) and the tape is back above the stop by the symbol's
    next trade frame. The follower sees each frame's newest trade: without the released one in ``caught_up``
    the stop touch would be missed and the signal left open."""
    engine, signal, feed = engine_following("BTCUSDT")
    market, t = feed.market, signal.event_time
    others = ("ETHUSDT", "SOLUSDT")[: universe - 1]
    for symbol in ("BTCUSDT", *others):
        feed.synced(symbol, t)
    exits: list[str | None] = []

    def both(frame: Frame) -> None:
        if (out := engine.on_frame(frame)) is not None:
            exits.extend(s.exit_reason for s in out.signals)

    both(priced_trade(feed, "BTCUSDT", t + 1_000, signal.entry_price))  # triggers the LONG
    back = t + OUTAGE
    both(priced_trade(feed, "BTCUSDT", back, signal.stop_loss - 0.01))  # far ahead: held for a jump
    assert feed.counts() == (1, 0) and exits == []
    for k, symbol in enumerate(others, 1):
        both(feed.diff(symbol, back + 10 * k))
    both(priced_trade(feed, "BTCUSDT", back + 30, signal.entry_price))  # confirms alone, or the next trade
    assert feed.counts() == (0, 1) and market.now_ms >= back
    assert market.symbols["BTCUSDT"].flow.last_price == signal.entry_price
    assert exits == ["STOP"] and engine.open == {}


def test_a_released_trade_waiting_for_its_follower_survives_a_gap_resolved_meanwhile() -> None:
    """A trade held for a jump, released by other symbols' diffs, waits in ``caught_up`` for the symbol's next
    trade frame; when that frame resolves an aggTrade gap, the gap's batch comes after it instead of replacing
    it (a follower drains the list after every trade frame of the symbol, so nothing older is in it)."""
    feed = Feed()
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        feed.synced(symbol, T)
    st = feed.market.symbols["BTCUSDT"]
    back = T + OUTAGE
    priced_trade(feed, "BTCUSDT", T + 1, 100.0)
    st.caught_up = []  # drained, as the engine does after every trade frame
    priced_trade(feed, "BTCUSDT", back, 99.0)  # id 2, far ahead: held for a jump
    feed.agg["BTCUSDT"] = 3  # id 3 missing: id 4 opens a gap and waits in it
    priced_trade(feed, "BTCUSDT", back + 2, 101.0)
    assert st.fill is not None and feed.counts() == (1, 0)
    feed.diff("ETHUSDT", back + 10)
    feed.diff("SOLUSDT", back + 20)  # the jump is confirmed: id 2 is applied
    assert feed.counts() == (0, 1) and st.caught_up == [(back, 99.0)]
    fill_page(feed, 3, back + 1)  # the REST page fills the gap: ids 3 and 4 are applied at once
    assert st.fill is None and st.last_agg_id == 4
    assert st.caught_up == [(back, 99.0), (back + 1, 100.0), (back + 2, 101.0)]
    assert len(st.vwap) == 4  # every trade in the windows (the 5-minute one let the first go)


def test_a_join_history_arriving_while_a_refill_is_in_flight_is_not_taken_for_its_answer() -> None:
    """A symbol rejoins with an old forming bar: its first kline opens a hole and a refill is asked. The join's
    history (the last bars, not reaching the hole's end) comes first: it must not settle the refill as failed;
    the refill's own answer does."""
    feed = two_books()
    market = feed.market
    stream = "btcusdt@kline_1m"
    start = T - 10 * 60_000
    feed.send("BTCUSDT", Kind.KLINE, stream, kline("BTCUSDT", start + 1, start))
    feed.send("BTCUSDT", Kind.KLINE, stream, kline("BTCUSDT", T + 2, T))  # bar `start` never closed
    series = market.symbols["BTCUSDT"].candles["1m"]
    assert series.missing is not None and series.asked is not None
    rest = "rest:/fapi/v1/klines?symbol=BTCUSDT&interval=1m"
    older = [make_candle(start - 60_000 * k, 101.0, 99.0, 100.0, length_ms=60_000) for k in (3, 2, 1)]
    feed.send("BTCUSDT", Kind.KLINES, rest, KlineHistory("1m", older))
    assert market.counters["kline_fill_failed"] == 0 and series.asked is not None
    refill = [make_candle(start + 60_000 * k, 101.0, 99.0, 100.0, length_ms=60_000) for k in range(10)]
    feed.send("BTCUSDT", Kind.KLINES, rest + "&startTime=1", KlineHistory("1m", refill))
    assert market.counters["kline_fill_failed"] == 0 and series.asked is None and series.missing is None
    assert market.counters["kline_bars_filled"] == 10
