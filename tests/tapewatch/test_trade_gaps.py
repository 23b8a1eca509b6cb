"""aggTrade id gaps in the market state: detected, held, filled in id order, or given up by trade time."""

from __future__ import annotations

import logging

import msgspec
import pytest

from tapewatch.events import AggTrade, DepthUpdate
from tapewatch.market import TRADE_GAP_COUNTERS, Market, MarketConfig
from tapewatch.market_depth import SnapshotNeeded
from tapewatch.market_trades import AGG_ID_LEAD_MAX_IDS
from tapewatch.parse import Frame, FrameDecoder
from tapewatch.streams import Kind
from tapewatch.trade_gaps import PendingFill, TradeFillNeeded, TradeGapConfig, missing_ranges

SYMBOL = "BTCUSDT"
STREAM = "btcusdt@aggTrade"


def trade(agg_id: int, time: int | None = None) -> AggTrade:
    """Trade ``agg_id``: time 1000·id unless given, price 100 + id (so the last price names the last id)."""
    t = agg_id * 1000 if time is None else time
    return AggTrade(SYMBOL, t, agg_id, 100.0 + agg_id, 1.0, agg_id, agg_id, t, agg_id % 2 == 0)


def ws(market: Market, agg_id: int, time: int | None = None) -> SnapshotNeeded | TradeFillNeeded | None:
    return market.on_frame(Frame(1, STREAM, SYMBOL, Kind.AGG_TRADE, trade(agg_id, time)))


def rest_page(
    market: Market, ids: list[int], from_id: int | None
) -> list[SnapshotNeeded | TradeFillNeeded | None]:
    """A REST aggTrades page of ``ids`` (``from_id`` None: the newest trades), decoded as the service and a
    replay decode it (one frame a row)."""
    rows = [
        {
            "a": t.agg_id,
            "p": str(t.price),
            "q": "1",
            "f": t.agg_id,
            "l": t.agg_id,
            "T": t.trade_time,
            "m": False,
        }
        for t in map(trade, ids)
    ]
    start = "" if from_id is None else f"&fromId={from_id}"
    stream = f"rest:/fapi/v1/aggTrades?symbol={SYMBOL}{start}&limit=1000"
    frames = FrameDecoder().decode_frames(2, stream, msgspec.json.encode(rows))
    assert len(frames) == len(ids) and all(f.kind is Kind.AGG_TRADE for f in frames)
    return [market.on_frame(f) for f in frames]


def market_with(timeout_ms: int = 10_000, max_held: int = 1000) -> Market:
    return Market(MarketConfig(trade_fill_timeout_ms=timeout_ms, trade_fill_max_held=max_held))


def gap_counters(market: Market) -> dict[str, int]:
    totals = market.totals()
    return {k: totals[k] for k in ("trade_gaps", "trades_missing", "trades_filled", "trades_lost")}


def test_consecutive_ids_ask_for_nothing() -> None:
    market = market_with()
    assert [ws(market, i) for i in range(10, 20)] == [None] * 10
    st = market.state(SYMBOL)
    assert len(st.vwap) == 10 and st.last_agg_id == 19 and st.fill is None
    assert gap_counters(market) == {
        "trade_gaps": 0,
        "trades_missing": 0,
        "trades_filled": 0,
        "trades_lost": 0,
    }


def test_a_gap_asks_for_the_missing_ids_and_holds_later_trades() -> None:
    market = market_with()
    ws(market, 1)
    ws(market, 2)
    request = ws(market, 6)
    assert request == TradeFillNeeded(SYMBOL, 3, 5)
    assert request.missing == 3 and "3..5" in request.reason
    assert ws(market, 7) is None  # held too, no second request
    st = market.state(SYMBOL)
    assert len(st.vwap) == 2 and st.vwap.last_price == 102.0  # 6 and 7 wait for 3..5
    assert st.last_agg_id == 2
    assert market.fill_pending(SYMBOL, 3) and market.fill_pending(SYMBOL, 5)
    assert not market.fill_pending(SYMBOL, 6) and not market.fill_pending("ETHUSDT", 3)
    assert gap_counters(market)["trade_gaps"] == 1 and gap_counters(market)["trades_missing"] == 3


def test_the_fill_enters_the_windows_before_the_held_trades_in_id_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tapewatch.market_trades")
    market = market_with()
    for i in (1, 2, 6, 7):
        ws(market, i)
    # the REST page from fromId=3 repeats 6 and 7, which are held already: dropped (out_of_order)
    assert rest_page(market, [3, 4, 5, 6, 7], from_id=3) == [None] * 5
    st = market.state(SYMBOL)
    assert st.fill is None and st.last_agg_id == 7
    assert len(st.vwap) == 7 and st.vwap.last_price == 107.0
    assert market.counters["trade_time_regressed"] == 0  # 3, 4, 5 entered before 6 and 7
    assert market.counters["out_of_order_trade"] == 2
    assert gap_counters(market) == {
        "trade_gaps": 1,
        "trades_missing": 3,
        "trades_filled": 3,
        "trades_lost": 0,
    }
    assert ws(market, 8) is None and len(st.vwap) == 8  # back to normal
    assert not market.fill_pending(SYMBOL, 3)
    # the recovery is logged with its symbol and stream, as the gap was
    (line,) = [r for r in caplog.records if "aggTrade gap filled" in r.getMessage()]
    assert line.getMessage() == "aggTrade gap filled: 3 trades fetched, 2 held trades applied after them"
    assert (line.__dict__["symbol"], line.__dict__["stream"]) == (SYMBOL, "aggTrade")


def test_duplicates_while_waiting_are_dropped_and_counted() -> None:
    market = market_with()
    for i in (1, 2, 5):
        ws(market, i)
    ws(market, 5)  # the websocket repeats the held trade
    rest_page(market, [1, 2, 3, 3], from_id=1)  # older than the gap, and a row twice
    st = market.state(SYMBOL)
    assert st.fill is not None and st.fill.filled == 1 and st.fill.held == 1
    assert market.counters["out_of_order_trade"] == 4
    rest_page(market, [4], from_id=4)
    assert st.fill is None and len(st.vwap) == 5 and st.vwap.last_price == 105.0


def test_give_up_by_trade_time_applies_the_held_trades_and_counts_the_lost_ids() -> None:
    market = market_with(timeout_ms=10_000)
    ws(market, 1, time=1_000)
    ws(market, 2, time=2_000)
    ws(market, 10, time=20_000)  # 3..9 missing
    rest_page(market, [5], from_id=3)  # a partial fill: 5 arrived, the rest never does
    assert ws(market, 11, time=30_000) is None  # exactly the timeout: still waiting
    st = market.state(SYMBOL)
    assert st.fill is not None and len(st.vwap) == 2
    assert ws(market, 12, time=30_001) is None  # past it: given up, by trade time alone
    assert st.fill is None and st.last_agg_id == 12
    assert len(st.vwap) == 2 + 1 + 3 and st.vwap.last_price == 112.0
    assert list(st.lost) == [(3, 4), (6, 9)]
    assert gap_counters(market) == {
        "trade_gaps": 1,
        "trades_missing": 7,
        "trades_filled": 1,
        "trades_lost": 6,
    }
    # a fill answer that comes after the give-up changes nothing
    rest_page(market, [3, 4, 6], from_id=3)
    assert len(st.vwap) == 6 and market.totals()["trades_lost"] == 6


def test_give_up_when_the_held_trades_exceed_the_bound() -> None:
    market = market_with(timeout_ms=10**9, max_held=3)
    ws(market, 1)
    ws(market, 3)  # 2 missing; 3 held
    for i in (4, 5):
        ws(market, i)
    st = market.state(SYMBOL)
    assert st.fill is not None and st.fill.held == 3
    ws(market, 6)  # a fourth: over the bound
    assert st.fill is None and len(st.vwap) == 5 and list(st.lost) == [(2, 2)]


def test_a_hole_among_the_held_trades_opens_the_next_gap_when_the_first_is_filled() -> None:
    market = market_with()
    for i in (1, 4, 7):  # 2..3 missing; 7 held, which skips 5..6 too
        ws(market, i)
    results = rest_page(market, [2, 3], from_id=2)
    assert results == [None, TradeFillNeeded(SYMBOL, 5, 6)]
    st = market.state(SYMBOL)
    assert len(st.vwap) == 4 and st.last_agg_id == 4 and st.fill is not None
    rest_page(market, [5, 6], from_id=5)
    assert len(st.vwap) == 7 and market.counters["trade_time_regressed"] == 0
    assert gap_counters(market) == {
        "trade_gaps": 2,
        "trades_missing": 4,
        "trades_filled": 4,
        "trades_lost": 0,
    }


def test_the_first_trade_of_a_symbol_is_never_a_gap() -> None:
    market = market_with()
    assert ws(market, 1_000_000) is None
    assert rest_page(market, [1_000_001, 1_000_002], from_id=1_000_001) == [None, None]
    assert market.totals()["trade_gaps"] == 0


def test_the_same_frames_give_the_same_decisions() -> None:
    """Live and replay see the same frames: every decision and counter must repeat exactly."""

    def run() -> tuple[list[object], dict[str, int], list[tuple[int, int]]]:
        market = market_with(timeout_ms=3_000)
        out: list[object] = [ws(market, i) for i in (1, 2, 9, 10, 11)]
        out += rest_page(market, [3, 4], from_id=3)
        out += [ws(market, i) for i in (12, 13, 14, 15, 20, 21)]
        return out, gap_counters(market), list(market.state(SYMBOL).lost)

    first = run()
    assert first == run()
    # 3..8 missing, 3 and 4 filled, 5..8 given up at 13 (T 13000 > 9000 + 3000); 16..19 still awaited
    assert first[1] == {"trade_gaps": 2, "trades_missing": 10, "trades_filled": 2, "trades_lost": 4}
    assert first[2] == [(5, 8)] and first[0][-2] == TradeFillNeeded(SYMBOL, 16, 19)


def test_missing_ranges_and_config_bounds() -> None:
    have = {i: trade(i) for i in (3, 4, 7)}
    assert missing_ranges(1, 9, have) == [(1, 2), (5, 6), (8, 9)]
    assert missing_ranges(3, 4, {i: trade(i) for i in (3, 4)}) == []
    with pytest.raises(ValueError):
        TradeGapConfig(max_held=0)
    fill = PendingFill(3, trade(6), TradeGapConfig())
    assert fill.request == (3, 5)


def test_next_trade_id_is_the_first_id_still_missing_so_polls_inside_a_wide_gap_move_on() -> None:
    """The backup feed polls from ``next_trade_id``: inside a gap wider than a page it must move past the ids
    already received (``last_agg_id`` stands still until the gap closes), or every poll repeats one page."""
    market = Market(MarketConfig(vwap_window_ms=10_000_000))  # trade i at i s: the ids span 5000 s
    assert market.next_trade_id(SYMBOL) is None  # no trade yet: poll the newest
    ws(market, 1)
    assert market.next_trade_id(SYMBOL) == 2
    assert ws(market, 5000) == TradeFillNeeded(SYMBOL, 2, 4999)
    assert market.next_trade_id(SYMBOL) == 2
    rest_page(market, [2, 3, 5], from_id=2)
    assert market.next_trade_id(SYMBOL) == 4  # 5 came, 4 did not: 4 is still needed
    rest_page(market, [4], from_id=4)
    assert market.next_trade_id(SYMBOL) == 6
    st = market.state(SYMBOL)
    polls = 0
    while (frm := market.next_trade_id(SYMBOL)) is not None and frm <= 5000 and polls < 20:
        rest_page(market, list(range(frm, frm + 1000)), from_id=frm)  # what the backup feed's poll returns
        polls += 1
    assert st.fill is None and st.last_agg_id == 5005 and polls == 5
    assert len(st.vwap) == 5005 and market.counters["trade_time_regressed"] == 0
    assert market.counters["out_of_order_trade"] == 1  # only 5000, the held trade, came twice
    assert market.next_trade_id(SYMBOL) == 5006
    assert gap_counters(market) == {
        "trade_gaps": 1,
        "trades_missing": 4998,
        "trades_filled": 4998,
        "trades_lost": 0,
    }


def test_a_gap_wider_than_a_fill_fetches_is_skipped_not_filled() -> None:
    """A symbol back in the universe days later: millions of ids behind. Nothing is fetched nor held."""
    day = 86_400_000
    market = market_with(max_held=20_000)
    for i in range(90, 101):
        ws(market, i, time=i)
    assert ws(market, 10_000_100, time=3 * day) is None  # no fill request
    st = market.state(SYMBOL)
    assert st.fill is None and st.last_agg_id == 10_000_100 and st.vwap.last_price == 100.0 + 10_000_100
    assert ws(market, 10_000_101, time=3 * day + 1000) is None and st.last_agg_id == 10_000_101
    assert not st.lost and st.caught_up == []
    totals = market.totals()
    assert {k: totals[k] for k in TRADE_GAP_COUNTERS} == {
        "trade_gaps": 1,
        "trade_gaps_skipped": 1,
        "trades_missing": 9_999_999,
        "trades_filled": 0,
        "trades_lost": 0,
        "trades_skipped": 9_999_999,
        "trades_pending": 0,
    }


def test_a_gap_exactly_as_wide_as_a_fill_fetches_is_filled_one_wider_skipped() -> None:
    market = Market(MarketConfig(trade_fill_max_ids=50))
    ws(market, 1, time=0)
    assert ws(market, 52, time=1) == TradeFillNeeded(SYMBOL, 2, 51)  # 50 missing: fetched
    rest_page(market, list(range(2, 52)), from_id=2)
    assert market.state(SYMBOL).fill is None
    assert ws(market, 104, time=2) is None  # 53..103: 51 missing, skipped
    totals = market.totals()
    assert totals["trade_gaps"] == 2 and totals["trade_gaps_skipped"] == 1
    assert totals["trades_skipped"] == 51 and totals["trades_filled"] == 50
    assert market.state(SYMBOL).last_agg_id == 104


def test_a_gap_opened_longer_ago_than_the_longest_window_is_skipped() -> None:
    hour = 3_600_000
    market = market_with()
    ws(market, 1, time=1_000)
    assert ws(market, 5, time=1_000 + hour) == TradeFillNeeded(SYMBOL, 2, 4)  # exactly the 1 h window: filled
    rest_page(market, [2, 3, 4], from_id=2)
    assert market.state(SYMBOL).fill is None
    assert ws(market, 9, time=2_001 + 2 * hour) is None  # 6..8 missing, 1 h + 1 ms after trade 5: skipped
    st = market.state(SYMBOL)
    assert st.fill is None and st.last_agg_id == 9
    totals = market.totals()
    assert totals["trade_gaps_skipped"] == 1 and totals["trades_skipped"] == 3 and totals["trades_lost"] == 0


def test_pending_ids_are_counted_so_the_gap_figures_add_up() -> None:
    market = market_with(timeout_ms=10_000)
    ws(market, 1, time=1_000)
    ws(market, 2, time=2_000)
    ws(market, 6, time=3_000)  # 3..5 missing
    ws(market, 7, time=4_000)

    def figures() -> dict[str, int]:
        totals = market.totals()
        assert totals["trades_missing"] == (
            totals["trades_filled"]
            + totals["trades_lost"]
            + totals["trades_skipped"]
            + totals["trades_pending"]
        )
        return {k: totals[k] for k in ("trades_filled", "trades_lost", "trades_pending")}

    assert figures() == {"trades_filled": 0, "trades_lost": 0, "trades_pending": 3}
    rest_page(market, [4], from_id=3)  # received, counted filled when the gap resolves
    assert figures() == {"trades_filled": 0, "trades_lost": 0, "trades_pending": 3}
    ws(market, 8, time=14_000)  # past the timeout: given up
    assert figures() == {"trades_filled": 1, "trades_lost": 2, "trades_pending": 0}


def exchange_now(market: Market, time: int) -> None:
    """Depth diffs of two other symbols at event time ``time``: the market's clock (the exchange's now) moves on
    (a jump past the clock's tolerance is taken once a second symbol confirms it)."""
    for sym in ("ETHUSDT", "SOLUSDT"):
        diff = DepthUpdate(sym, time, time, 1, 1, 0, [], [])
        market.on_frame(Frame(1, f"{sym.lower()}@depth@100ms", sym, Kind.DEPTH, diff))


def test_a_symbol_back_hours_later_is_polled_from_the_newest_trades_and_its_gap_skipped() -> None:
    """Left the universe and back while the backup feed is on: polling from the old last id would page through
    hours of stale trades (weight 20 a page). Past the skip rule's age the poll asks for the newest page, whose
    first trade opens the gap the skip rule skips and counts, as a websocket trade would."""
    hour = 3_600_000
    market = market_with()
    for i in range(1, 11):
        ws(market, i)  # trade i at i s
    exchange_now(market, 10_000 + hour)  # exactly the window after the last trade: still worth continuing
    assert market.next_trade_id(SYMBOL) == 11
    exchange_now(market, 3_700_000)
    assert market.next_trade_id(SYMBOL) is None  # the backup feed polls the newest page
    assert rest_page(market, list(range(3700, 3705)), from_id=None) == [None] * 5  # nothing fetched or held
    st = market.state(SYMBOL)
    assert st.fill is None and st.last_agg_id == 3704 and market.next_trade_id(SYMBOL) == 3705
    totals = market.totals()
    assert {k: totals[k] for k in TRADE_GAP_COUNTERS} == {
        "trade_gaps": 1,
        "trade_gaps_skipped": 1,
        "trades_missing": 3689,  # 11..3699
        "trades_filled": 0,
        "trades_lost": 0,
        "trades_skipped": 3689,
        "trades_pending": 0,
    }
    assert market.counters["out_of_order_trade"] == 0


def test_a_quiet_symbol_asks_for_the_newest_trades_once_an_hour_not_every_poll() -> None:
    """No trade for over an hour (a halted symbol): the newest page brings only applied trades, which shows
    the state is current, so the polls go on from the last id (empty pages) instead of repeating them."""
    hour = 3_600_000
    market = market_with()
    for i in range(1, 11):
        ws(market, i)
    exchange_now(market, 10_001 + hour)
    assert market.next_trade_id(SYMBOL) is None
    rest_page(market, list(range(1, 11)), from_id=None)  # nothing new
    assert market.counters["out_of_order_trade"] == 10 and market.state(SYMBOL).last_agg_id == 10
    assert market.next_trade_id(SYMBOL) == 11
    exchange_now(market, 10_001 + 2 * hour)
    assert market.next_trade_id(SYMBOL) == 11  # checked an hour ago, to the millisecond
    exchange_now(market, 10_002 + 2 * hour)
    assert market.next_trade_id(SYMBOL) is None
    rest_page(market, [10, 11], from_id=None)  # trading again: 11 continues the ids
    assert market.next_trade_id(SYMBOL) == 12 and market.totals()["trade_gaps"] == 0


@pytest.mark.parametrize("bogus", [2**70, 100 + 10**6], ids=["2**70", "last+10**6"])
def test_one_runaway_trade_id_does_not_stop_the_symbols_trades(
    bogus: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A corrupted ``a`` far ahead: the gap it skips is no gap, and the real trades after it, far below its id yet
    within the clock tolerance of the symbol's last trade, show it bogus. They are applied (not dropped as out of
    order until a restart), the bogus gap's counts are taken back, and the id counted ``agg_id_ahead`` and logged."""
    market = market_with()
    for i in range(90, 101):
        ws(market, i, time=i * 1000)
    assert ws(market, bogus, time=100_500) is None  # skipped at once: wider than a fill fetches
    st = market.state(SYMBOL)
    assert st.last_agg_id == bogus
    for i in range(101, 111):
        assert ws(market, i, time=i * 1000) is None
    assert st.last_agg_id == 110 and st.vwap.last_price == 210.0 and len(st.vwap) == 11 + 1 + 10
    totals = market.totals()
    assert totals["out_of_order"] == 0 and totals["agg_id_ahead"] == 1
    assert {k: totals[k] for k in TRADE_GAP_COUNTERS} == dict.fromkeys(TRADE_GAP_COUNTERS, 0)
    assert f"aggTrade id {bogus} lay" in caplog.text


def test_a_runaway_id_counts_no_more_missing_trades_than_its_trade_time_explains() -> None:
    """Until the next trade shows it bogus (or for good, when none comes), a skipped gap adds at most the ids a
    minute of trade time can hold to ``trades_missing``, not 10^21; the figures still add up."""
    market = market_with()
    ws(market, 1, time=1_000)
    ws(market, 2**70, time=2_000)
    totals = market.totals()
    assert totals["trades_missing"] == totals["trades_skipped"] == AGG_ID_LEAD_MAX_IDS
    assert totals["trade_gaps_skipped"] == 1


def test_trades_far_below_the_last_id_but_far_older_stay_out_of_order() -> None:
    """Only a trade within the clock tolerance of the last one may prove the last id bogus: an old replayed page
    far behind is out of order, as before."""
    market = market_with()
    ws(market, 2_000_000, time=600_000)
    assert ws(market, 5, time=5_000) is None  # 595 s older: a stale trade, not a bogus last id
    st = market.state(SYMBOL)
    assert st.last_agg_id == 2_000_000 and market.totals()["out_of_order"] == 1
    assert market.totals()["agg_id_ahead"] == 0


def test_a_trade_older_than_the_last_one_is_counted_in_the_totals_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    market = market_with()
    ws(market, 1, time=5_000)
    for i in range(2, 5):
        ws(market, i, time=4_000)  # ids in order, times not
    assert market.totals()["trade_time_regressed"] == 3
    logged = [r for r in caplog.records if "older than the symbol's last trade" in r.getMessage()]
    assert len(logged) == 2  # at counts 1 and 2, not 3
