"""Universe selection (spec 4): score formula, minimums, ranking, ties, bad statistics, quick and emergency
checks, and the statistics measured from REST bodies."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from tapewatch.events import Candle, DepthSnapshot
from tapewatch.settings import load_settings
from tapewatch.universe import (
    Minimums,
    Reason,
    ScoreComponents,
    ScoreReferences,
    ScoreWeights,
    SymbolStats,
    minimums_from,
    references_from,
    rescan_cron,
    score,
    score_components,
    select_universe,
    weights_from,
)
from tapewatch.universe_checks import (
    EmergencyRules,
    LiveLiquidity,
    emergency_check,
    emergency_rules_from,
    quick_check,
)
from tapewatch.universe_stats import TickerStats, atr_ratio, book_spread_and_depth, measure

MINS = Minimums(min_24h_volume=50e6, min_open_interest=10e6, max_spread=0.0002)
SPEC_REFS = ScoreReferences()  # the spec's $100M, $2M, 0.1, 10/s


def stats(symbol: str, **overrides: float | None) -> SymbolStats:
    """A symbol that passes every minimum, with a mid-range score unless overridden."""
    values: dict[str, float | None] = {
        "quote_volume_24h": 80e6,
        "open_interest_usd": 20e6,
        "spread": 0.0001,
        "depth_1pct_usd": 1e6,
        "atr_ratio": 0.05,
        "trades_per_second": 5.0,
        "last_price": 10.0,
    }
    values.update(overrides)
    return SymbolStats(symbol, **values)  # type: ignore[arg-type]


def test_score_is_the_spec_formula_by_hand() -> None:
    # volume 80M/100M = 0.8, depth 1M/2M = 0.5, ATR 0.05/0.1 = 0.5, 5 trades/s / 10 = 0.5
    c = score_components(stats("AUSDT"), SPEC_REFS)
    assert c == ScoreComponents(volume=0.8, liquidity=0.5, volatility=0.5, activity=0.5)
    expected = 100 * (0.35 * 0.8 + 0.25 * 0.5 + 0.20 * 0.5 + 0.20 * 0.5)
    assert score(c, ScoreWeights()) == pytest.approx(expected)  # 60.5


def test_each_component_is_capped_at_one_and_the_top_score_is_100() -> None:
    huge = stats("BTCUSDT", quote_volume_24h=12e9, depth_1pct_usd=3e7, atr_ratio=0.4, trades_per_second=12)
    c = score_components(huge, SPEC_REFS)
    assert c == ScoreComponents(1.0, 1.0, 1.0, 1.0)
    assert score(c, ScoreWeights()) == pytest.approx(100.0)


def test_weights_are_relative_and_all_zero_is_refused() -> None:
    c = ScoreComponents(1.0, 0.0, 0.0, 0.0)
    assert score(c, ScoreWeights(volume=2, liquidity=2, volatility=0, activity=0)) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="must not all be zero"):
        score(c, ScoreWeights(0, 0, 0, 0))


def test_minimums_then_top_size_with_a_reason_for_everybody() -> None:
    candidates = [
        stats("BIGUSDT", quote_volume_24h=500e6),
        stats("MIDUSDT"),
        stats("SMALLUSDT", quote_volume_24h=60e6, depth_1pct_usd=2e5),
        stats("THINUSDT", quote_volume_24h=20e6),
        stats("LOWOIUSDT", open_interest_usd=5e6),
        stats("WIDEUSDT", spread=0.0005),
    ]
    sel = select_universe(candidates, 2, MINS, refs=SPEC_REFS)
    assert sel.symbols == ["BIGUSDT", "MIDUSDT"]
    by = {d.symbol: d for d in sel.decisions}
    assert by["BIGUSDT"].rank == 1 and by["BIGUSDT"].reason is Reason.SELECTED
    assert by["SMALLUSDT"].rank == 3 and by["SMALLUSDT"].reason is Reason.RANK_BEYOND_SIZE
    assert "rank 3 > size 2" in by["SMALLUSDT"].detail
    assert by["THINUSDT"].reason is Reason.BELOW_MIN_VOLUME and by["THINUSDT"].rank is None
    assert by["LOWOIUSDT"].reason is Reason.BELOW_MIN_OPEN_INTEREST
    assert by["WIDEUSDT"].reason is Reason.SPREAD_TOO_WIDE and "0.0500%" in by["WIDEUSDT"].detail
    # a symbol that fails a minimum still shows its score (the dashboard explains "good but too wide")
    assert by["WIDEUSDT"].score == pytest.approx(by["MIDUSDT"].score or 0)
    assert sel.reasons() == {
        "selected": 2,
        "rank_beyond_size": 1,
        "below_min_volume": 1,
        "below_min_open_interest": 1,
        "spread_too_wide": 1,
    }
    # decisions: selected in rank order first, then the rest
    assert [d.symbol for d in sel.decisions][:3] == ["BIGUSDT", "MIDUSDT", "SMALLUSDT"]


def test_ties_go_to_volume_then_name_whatever_the_input_order() -> None:
    # every component capped: equal scores of 100
    capped = {"quote_volume_24h": 1e9, "depth_1pct_usd": 5e6, "atr_ratio": 0.2, "trades_per_second": 20}
    a = stats("AAAUSDT", **capped)
    b = stats("BBBUSDT", **capped)
    c = stats("CCCUSDT", **{**capped, "quote_volume_24h": 2e9})
    for order in ([a, b, c], [c, b, a], [b, a, c]):
        sel = select_universe(order, 3, MINS, refs=SPEC_REFS)
        assert sel.symbols == ["CCCUSDT", "AAAUSDT", "BBBUSDT"]
        assert [d.score for d in sel.decisions] == [pytest.approx(100.0)] * 3


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("open_interest_usd", None),
        ("spread", math.nan),
        ("spread", 0.0),  # a locked book is not a measurement
        ("depth_1pct_usd", math.inf),
        ("atr_ratio", None),
        ("trades_per_second", -1.0),
        ("quote_volume_24h", math.nan),
    ],
)
def test_a_missing_or_invalid_statistic_puts_the_symbol_out_with_that_reason(
    field: str, value: float | None
) -> None:
    bad = replace(stats("BADUSDT"), **{field: value}, errors=("klines: HTTP 503",))
    sel = select_universe([bad, stats("GOODUSDT")], 5, MINS, refs=SPEC_REFS)
    assert sel.symbols == ["GOODUSDT"]
    d = next(d for d in sel.decisions if d.symbol == "BADUSDT")
    assert d.reason is Reason.MISSING_STATISTIC and not d.selected and d.rank is None
    assert field in d.detail and "HTTP 503" in d.detail


def test_zero_statistics_are_valid_values() -> None:
    zero = stats("ZEROUSDT", depth_1pct_usd=0.0, atr_ratio=0.0, trades_per_second=0.0)
    sel = select_universe([zero], 1, MINS, refs=SPEC_REFS)
    assert sel.symbols == ["ZEROUSDT"]
    assert sel.decisions[0].score == pytest.approx(100 * 0.35 * 0.8)
    # and zero volume is simply below the minimum
    assert select_universe([stats("NOVOLUSDT", quote_volume_24h=0.0)], 1, MINS).decisions[0].reason is (
        Reason.BELOW_MIN_VOLUME
    )


def test_below_min_volume_wins_over_stats_never_fetched() -> None:
    # the rescan prefilters on volume: such symbols have only the ticker's numbers
    pre = SymbolStats("TAILUSDT", quote_volume_24h=1e6, trades_per_second=0.5, last_price=1.0)
    d = select_universe([pre], 1, MINS).decisions[0]
    assert d.reason is Reason.BELOW_MIN_VOLUME and "< $50,000,000" in d.detail


def test_min_depth_is_off_by_default_and_enforced_when_set() -> None:
    shallow = stats("SHALLOWUSDT", depth_1pct_usd=10_000.0)
    assert select_universe([shallow], 1, MINS).symbols == ["SHALLOWUSDT"]
    strict = Minimums(50e6, 10e6, 0.0002, min_depth_1pct_usd=100_000)
    assert select_universe([shallow], 1, strict).decisions[0].reason is Reason.BELOW_MIN_DEPTH


def test_no_candidates_and_duplicates_and_bad_size() -> None:
    assert select_universe([], 3, MINS).symbols == []
    dup = select_universe([stats("XUSDT"), stats("XUSDT", spread=0.01)], 3, MINS)
    assert [d.symbol for d in dup.decisions] == ["XUSDT"] and dup.symbols == ["XUSDT"]
    with pytest.raises(ValueError, match="at least 1"):
        select_universe([stats("XUSDT")], 0, MINS)


def test_quick_check_applies_minimums_only_and_keeps_unknowns() -> None:
    universe = ["AUSDT", "BUSDT", "CUSDT", "DUSDT"]
    measured = {
        "AUSDT": stats("AUSDT", atr_ratio=None),  # a score input missing does not matter here...
        "BUSDT": stats("BUSDT", quote_volume_24h=10e6),
        "CUSDT": stats("CUSDT", spread=0.001),
        # DUSDT could not be measured at all
    }
    result = quick_check(universe, measured, MINS, live_spread={"CUSDT": 0.001})
    assert [e.symbol for e in result.excluded] == ["BUSDT", "CUSDT"]
    assert [e.reason for e in result.excluded] == [Reason.BELOW_MIN_VOLUME, Reason.SPREAD_TOO_WIDE]
    assert result.excluded[0].values["quote_volume_24h"] == 10e6
    # ... but a statistic the minimums need that is missing is "unknown": a failed request between rescans
    # never empties the universe
    assert result.kept == ("AUSDT", "DUSDT") and result.unknown == ("DUSDT",)


def test_quick_check_excludes_on_spread_and_open_interest_measured_without_klines() -> None:
    # the quick check fetches no klines (measure(..., candles=None)): ATR/price is unknown, and that must not
    # turn every symbol above the volume minimum into "unknown, kept"
    ticker = TickerStats("WIDEUSDT", quote_volume=80e6, last_price=2.0, count=864_000)
    wide_book = DepthSnapshot(1, [(1.98, 1e6)], [(2.02, 1e6)])  # a 2 % spread
    tight_book = DepthSnapshot(1, [(1.9999, 1e6)], [(2.0001, 1e6)])
    wide = measure(ticker, depth=wide_book, candles=None, open_interest=1e7)
    low_oi = measure(replace(ticker, symbol="LOWOIUSDT"), depth=tight_book, candles=None, open_interest=5.0)
    fine = measure(replace(ticker, symbol="FINEUSDT"), depth=tight_book, candles=None, open_interest=1e7)
    no_oi = measure(replace(ticker, symbol="NOOIUSDT"), depth=tight_book, open_interest="HTTP 503")
    assert wide.atr_ratio is None and low_oi.open_interest_usd == 10.0
    measured = {s.symbol: s for s in (wide, low_oi, fine, no_oi)}
    result = quick_check(list(measured), measured, MINS, live_spread={"WIDEUSDT": 0.02})
    assert [(e.symbol, e.reason) for e in result.excluded] == [
        ("WIDEUSDT", Reason.SPREAD_TOO_WIDE),
        ("LOWOIUSDT", Reason.BELOW_MIN_OPEN_INTEREST),
    ]
    assert "2.0000% > 0.0200%" in result.excluded[0].detail
    assert result.kept == ("FINEUSDT", "NOOIUSDT") and result.unknown == ("NOOIUSDT",)
    # depth is required only when its minimum is on
    no_depth = replace(fine, symbol="NODEPTHUSDT", depth_1pct_usd=None)
    assert quick_check(["NODEPTHUSDT"], {"NODEPTHUSDT": no_depth}, MINS, live_spread={}).unknown == ()
    strict = replace(MINS, min_depth_1pct_usd=100_000)
    assert quick_check(["NODEPTHUSDT"], {"NODEPTHUSDT": no_depth}, strict, live_spread={}).unknown == (
        "NODEPTHUSDT",
    )


def test_a_measured_minimum_breach_wins_over_another_missing_statistic() -> None:
    # an open-interest call failed, but the spread measured is far too wide: out for the spread
    broken = stats("XUSDT", open_interest_usd=None, spread=0.01)
    (excl,) = quick_check(
        ["XUSDT"], {"XUSDT": broken}, MINS, live_spread={"XUSDT": 0.01}, max_share=1.0
    ).excluded
    assert excl.reason is Reason.SPREAD_TOO_WIDE
    d = select_universe([broken], 1, MINS).decisions[0]
    assert d.reason is Reason.SPREAD_TOO_WIDE and d.rank is None
    # a full rescan still needs every score input: a missing one is named in the reason
    no_atr = stats("YUSDT", atr_ratio=None)
    d = select_universe([no_atr], 1, MINS).decisions[0]
    assert d.reason is Reason.MISSING_STATISTIC and d.detail == "no valid atr_ratio"


NOW = 1_700_000_000_000
RULES = EmergencyRules(
    max_spread=0.0002,
    min_depth_1pct_usd=50_000,
    min_24h_volume=50e6,
    volume_fraction=0.25,
    window_seconds=300,
    strikes=3,
    max_share=1.0,  # these tests are about one symbol's rules; the market-wide guard: test_universe_checks.py
)
# 12.5M/24h needed: over 300 s that is 43,403 USD
HEALTHY = LiveLiquidity("AUSDT", spread=0.0001, depth_1pct_usd=1e6, quote_volume_window=1e6)


def test_emergency_needs_consecutive_strikes_and_resets_on_a_good_read() -> None:
    wide = LiveLiquidity("AUSDT", spread=0.001, depth_1pct_usd=1e6, quote_volume_window=1e6)
    strikes: dict[str, int] = {}
    for expected in (1, 2):
        result = emergency_check(["AUSDT"], {"AUSDT": wide}, RULES, strikes, now_ms=NOW)
        assert result.exclusions == () and result.strikes == {"AUSDT": expected}
        strikes = result.strikes
    result = emergency_check(["AUSDT"], {"AUSDT": HEALTHY}, RULES, strikes, now_ms=NOW)
    assert result.strikes == {}  # a good read forgives
    strikes = result.strikes
    for _ in range(2):
        strikes = emergency_check(["AUSDT"], {"AUSDT": wide}, RULES, strikes, now_ms=NOW).strikes
    result = emergency_check(["AUSDT"], {"AUSDT": wide}, RULES, strikes, now_ms=NOW)
    (excl,) = result.exclusions
    assert excl.reason is Reason.SPREAD_TOO_WIDE and excl.values["spread"] == 0.001
    assert excl.values["strikes"] == 3 and "live spread" in excl.detail
    assert result.strikes == {}


def test_emergency_on_depth_and_on_volume_scaled_to_a_day() -> None:
    rules = replace(RULES, strikes=1)
    shallow = LiveLiquidity("AUSDT", spread=0.0001, depth_1pct_usd=10_000, quote_volume_window=1e6)
    quiet = LiveLiquidity("BUSDT", spread=0.0001, depth_1pct_usd=1e6, quote_volume_window=40_000)
    enough = LiveLiquidity("CUSDT", spread=0.0001, depth_1pct_usd=1e6, quote_volume_window=45_000)
    quiet, enough = (replace(v, window_covered_s=300.0) for v in (quiet, enough))
    live = {"AUSDT": shallow, "BUSDT": quiet, "CUSDT": enough}
    result = emergency_check(["AUSDT", "BUSDT", "CUSDT"], live, rules, {}, now_ms=NOW)
    assert [(e.symbol, e.reason) for e in result.exclusions] == [
        ("AUSDT", Reason.BELOW_MIN_DEPTH),
        ("BUSDT", Reason.BELOW_MIN_VOLUME),
    ]
    assert "$11,520,000/24h" in result.exclusions[1].detail


def test_emergency_treats_none_and_nan_as_unknown_never_excluding() -> None:
    rules = replace(RULES, strikes=1)
    live = {
        "AUSDT": LiveLiquidity("AUSDT"),
        "BUSDT": LiveLiquidity("BUSDT", spread=math.nan, depth_1pct_usd=None, quote_volume_window=None),
        "OTHERUSDT": LiveLiquidity("OTHERUSDT", spread=0.5),  # not in the universe: not ours to exclude
    }
    result = emergency_check(["AUSDT", "BUSDT", "CUSDT"], live, rules, {"AUSDT": 2}, now_ms=NOW)
    assert result.exclusions == () and result.strikes == {}
    assert result.unknown == ("AUSDT", "BUSDT", "CUSDT")


def test_emergency_a_symbol_silent_longer_than_the_trade_window_has_no_volume() -> None:
    # the trade window drops old trades only when a new one arrives: a symbol that stopped trading keeps
    # publishing its last healthy 300 s volume; its last event, older than the window, says the truth
    rules = replace(RULES, strikes=2)
    stopped = LiveLiquidity(
        "AUSDT", quote_volume_window=1e6, last_event_ms=NOW - 301_000, updated_ms=NOW, quiet_s=None
    )
    flowing = replace(HEALTHY, symbol="BUSDT", last_event_ms=NOW - 100, updated_ms=NOW)
    live = {"AUSDT": stopped, "BUSDT": flowing}
    first = emergency_check(["AUSDT", "BUSDT"], live, rules, {}, now_ms=NOW)
    assert first.exclusions == () and first.strikes == {"AUSDT": 1}
    second = emergency_check(["AUSDT", "BUSDT"], live, rules, first.strikes, now_ms=NOW)
    (excl,) = second.exclusions
    assert excl.symbol == "AUSDT" and excl.reason is Reason.BELOW_MIN_VOLUME
    assert "no event for 301 s" in excl.detail and "$0" in excl.detail
    assert excl.values["silent_s"] == 301 and excl.values["quote_volume_window"] == 1e6
    # within the window the published volume stands
    recent = replace(stopped, last_event_ms=NOW - 299_000)
    assert emergency_check(["AUSDT", "BUSDT"], {**live, "AUSDT": recent}, rules, {}, now_ms=NOW).strikes == {}


def test_emergency_silence_is_read_from_quiet_s_too_and_counts_as_known() -> None:
    rules = replace(RULES, strikes=1)
    # no book, no trades since the service subscribed: only the service's quiet time says anything
    never = LiveLiquidity("AUSDT", updated_ms=NOW, quiet_s=400.0)
    flowing = replace(HEALTHY, symbol="BUSDT", last_event_ms=NOW - 100, updated_ms=NOW)
    result = emergency_check(["AUSDT", "BUSDT"], {"AUSDT": never, "BUSDT": flowing}, rules, {}, now_ms=NOW)
    assert [(e.symbol, e.reason) for e in result.exclusions] == [("AUSDT", Reason.BELOW_MIN_VOLUME)]
    assert result.unknown == ()


def test_emergency_never_excludes_for_silence_when_the_whole_feed_is_silent() -> None:
    # every symbol silent is the feed (or the host's clock) failing, the connectivity sensor's business;
    # emptying the universe for it would be wrong
    rules = replace(RULES, strikes=1)
    live = {
        s: LiveLiquidity(
            s, spread=0.0001, quote_volume_window=1e6, last_event_ms=NOW - 900_000, updated_ms=NOW
        )
        for s in ("AUSDT", "BUSDT")
    }
    result = emergency_check(["AUSDT", "BUSDT"], live, rules, {}, now_ms=NOW)
    assert result.exclusions == () and result.strikes == {}
    # ... but a spread breach is still one
    live["BUSDT"] = replace(live["BUSDT"], spread=0.01)
    (excl,) = emergency_check(["AUSDT", "BUSDT"], live, rules, {}, now_ms=NOW).exclusions
    assert excl.symbol == "BUSDT" and excl.reason is Reason.SPREAD_TOO_WIDE


def test_settings_build_the_rules() -> None:
    s = load_settings(min_depth_1pct_usd=5, emergency_strikes=2, universe_weight_volume=0.5)
    assert minimums_from(s) == Minimums(50e6, 10e6, 0.0002, 5.0)
    assert weights_from(s).volume == 0.5
    assert references_from(s).atr_ratio == 0.02
    rules = emergency_rules_from(s)
    assert rules.strikes == 2 and rules.window_seconds == 300


# --- statistics from REST bodies ------------------------------------------------------------------------


def candle(i: int, high: float, low: float, close: float, closed: bool = True) -> Candle:
    return Candle(
        i * 3_600_000, i * 3_600_000 + 3_599_999, "1h", close, close, high, low, 1.0, 1, closed, 1.0
    )


def test_spread_and_depth_within_one_percent_of_mid() -> None:
    snap = DepthSnapshot(
        last_update_id=1,
        bids=[(99.9, 10.0), (99.0, 5.0), (98.8, 100.0)],  # 98.8 is beyond 1 % of mid 100.0
        asks=[(100.1, 10.0), (101.0, 5.0), (101.2, 100.0)],
    )
    spread, depth = book_spread_and_depth(snap)
    assert spread == pytest.approx(0.2 / 100.0)
    assert depth == pytest.approx(99.9 * 10 + 99.0 * 5 + 100.1 * 10 + 101.0 * 5)
    with pytest.raises(ValueError, match="crossed"):
        book_spread_and_depth(DepthSnapshot(1, [(100.0, 1.0)], [(100.0, 1.0)]))
    with pytest.raises(ValueError, match="empty side"):
        book_spread_and_depth(DepthSnapshot(1, [], [(100.0, 1.0)]))


def test_atr_ratio_uses_closed_candles_only() -> None:
    candles = [candle(i, 101.0, 99.0, 100.0) for i in range(4)] + [
        candle(4, 150.0, 50.0, 100.0, closed=False)
    ]
    assert atr_ratio(candles, 3) == pytest.approx(2.0 / 100.0)
    with pytest.raises(ValueError, match="needs 5"):
        atr_ratio(candles, 4)


def test_measure_records_failures_and_never_raises() -> None:
    ticker = TickerStats("XUSDT", quote_volume=80e6, last_price=2.0, count=864_000)
    snap = DepthSnapshot(1, [(1.999, 1000.0)], [(2.001, 1000.0)])
    ok = measure(
        ticker, depth=snap, candles=[candle(i, 2.02, 1.98, 2.0) for i in range(20)], open_interest=1e7
    )
    assert ok.open_interest_usd == 2e7 and ok.trades_per_second == 10.0
    assert ok.atr_ratio == pytest.approx(0.02) and ok.spread == pytest.approx(0.001)
    assert ok.errors == ()
    bad = measure(
        ticker, depth="HTTP 503", candles=[candle(0, 2, 2, 2)], open_interest="code -1121 Invalid symbol"
    )
    assert bad.spread is None and bad.atr_ratio is None and bad.open_interest_usd is None
    assert bad.errors == (
        "depth: HTTP 503",
        "klines: 1 closed candles, ATR(14) needs 15",
        "open interest: code -1121 Invalid symbol",
    )
    d = select_universe([bad], 1, MINS).decisions[0]
    assert d.reason is Reason.MISSING_STATISTIC and "Invalid symbol" in d.detail
    # a zero price leaves open interest in USD unknown
    assert measure(TickerStats("X", 80e6, 0.0, 1), open_interest=5.0).open_interest_usd is None


@pytest.mark.parametrize(
    ("hours", "cron"),
    [
        (6, "0 */6 * * *"),
        (1, "0 * * * *"),
        (0.5, "*/30 * * * *"),
        (0.001, "*/1 * * * *"),
        (5.4, "0 */5 * * *"),
        (24, "0 0 * * *"),
        (168, "0 0 */7 * *"),
    ],
)
def test_rescan_cron_from_the_interval(hours: float, cron: str) -> None:
    assert rescan_cron(hours) == cron


def test_rescan_cron_refuses_a_non_positive_interval() -> None:
    with pytest.raises(ValueError, match="> 0 hours"):
        rescan_cron(0)
