"""The checks between rescans against what made them remove healthy symbols or empty the universe: a trade window
that only started filling, a market-wide widening, one momentary REST spread, values of a dead service."""

from __future__ import annotations

from dataclasses import replace

from tapewatch.settings import load_settings
from tapewatch.universe import Minimums, Reason, SymbolStats
from tapewatch.universe_checks import (
    EmergencyRules,
    LiveLiquidity,
    confirm_spreads,
    emergency_check,
    emergency_rules_from,
    fresh_spreads,
    quick_check,
)

NOW = 1_700_000_000_000
RULES = EmergencyRules(
    max_spread=0.0002,
    min_depth_1pct_usd=0,
    min_24h_volume=50e6,
    volume_fraction=0.25,
    window_seconds=300,
    strikes=3,
)
MINS = Minimums(min_24h_volume=50e6, min_open_interest=10e6, max_spread=0.0002)


def healthy(symbol: str, now: int = NOW, **changes: float | str | None) -> LiveLiquidity:
    """A symbol trading $200M a day, one-tick spread, full window, published just now."""
    base = LiveLiquidity(
        symbol,
        spread=0.0001,
        depth_1pct_usd=5e6,
        quote_volume_window=200e6 / 86_400 * 300,
        last_event_ms=now - 50,
        updated_ms=now,
        window_covered_s=300.0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# --- 1. a trade window that has only started filling ---------------------------------------------------------


def test_a_window_filling_after_a_restart_is_not_read_as_a_dead_market() -> None:
    # a steady $60M/day symbol (above the $50M minimum); the service restarted 2 s before the first tick: its
    # window holds 2, 32, 62 s of trades, which, scaled to a day as if 300 s, look like $0.4M-12.4M/day
    per_s = 60e6 / 86_400
    strikes: dict[str, int] = {}
    for covered in (2, 32, 62):
        now = NOW + covered * 1000
        live = {
            "AAAUSDT": healthy("AAAUSDT", now, quote_volume_window=per_s * covered, window_covered_s=covered),
            "BTCUSDT": healthy(
                "BTCUSDT", now, quote_volume_window=1e9 / 86_400 * covered, window_covered_s=covered
            ),
        }
        result = emergency_check(["BTCUSDT", "AAAUSDT"], live, RULES, strikes, now_ms=now)
        assert result.exclusions == () and result.strikes == {}, covered
        strikes = result.strikes
    # a filling window with nothing else known is unknown, not healthy and not broken
    filling = LiveLiquidity("AAAUSDT", quote_volume_window=10.0, updated_ms=NOW, window_covered_s=100.0)
    assert emergency_check(["AAAUSDT"], {"AAAUSDT": filling}, RULES, {"AAAUSDT": 2}, now_ms=NOW).unknown == (
        "AAAUSDT",
    )


def test_once_the_window_is_full_a_collapsed_volume_is_struck() -> None:
    # $10M/day over a full window: below 0.25 × $50M
    dying = healthy("AAAUSDT", quote_volume_window=10e6 / 86_400 * 300)
    live = {"AAAUSDT": dying, "BTCUSDT": healthy("BTCUSDT"), "ETHUSDT": healthy("ETHUSDT")}
    result = emergency_check(list(live), live, RULES, {"AAAUSDT": 2}, now_ms=NOW)
    (excl,) = result.exclusions
    assert excl.symbol == "AAAUSDT" and excl.reason is Reason.BELOW_MIN_VOLUME
    assert excl.values["window_covered_s"] == 300.0
    # the same volume over a window not yet full (or of unknown length: an older publisher) is no strike
    for covered in (299.0, None):
        partial = {**live, "AAAUSDT": replace(dying, window_covered_s=covered)}
        assert emergency_check(list(live), partial, RULES, {}, now_ms=NOW).strikes == {}


def test_a_shard_that_lost_the_exchange_excludes_none_of_its_symbols() -> None:
    """``tapewatch run --shard I/N``: one instance loses Binance for 6 min while the others flow. Its symbols'
    silence is its feed's outage, not their $0 volume (the universe-wide test let 6 of 30 go)."""
    universe = [f"S{i}USDT" for i in range(30)]
    shard = {s: f"{i % 3}/3" for i, s in enumerate(universe)}
    dead = {s for s in universe if shard[s] == "2/3"}
    strikes: dict[str, int] = {}
    for tick in range(4):
        now = NOW + tick * 30_000
        live = {
            s: healthy(s, now, shard=shard[s], spread=None, last_event_ms=NOW - 360_000)
            if s in dead
            else healthy(s, now, shard=shard[s])
            for s in universe
        }
        result = emergency_check(universe, live, RULES, strikes, now_ms=now)
        assert result.exclusions == () and result.strikes == {}, tick
        assert result.silent_shards == ("2/3",) and result.market_wide is None
        strikes = result.strikes
    # one silent symbol among a flowing shard's symbols is still struck, and excluded on the third strike
    live = {s: healthy(s, shard=shard[s]) for s in universe}
    live["S1USDT"] = healthy("S1USDT", shard=shard["S1USDT"], last_event_ms=NOW - 360_000)
    result = emergency_check(universe, live, RULES, {"S1USDT": 2}, now_ms=NOW)
    (excl,) = result.exclusions
    assert (
        excl.symbol == "S1USDT"
        and excl.reason is Reason.BELOW_MIN_VOLUME
        and "no event for 360 s" in excl.detail
    )
    assert result.silent_shards == ()
    # a shard of one symbol is its own feed: alone silent, it is the feed's silence (nothing to compare with)
    live = {
        "AUSDT": healthy("AUSDT", shard="0/2"),
        "BUSDT": healthy("BUSDT", shard="1/2", last_event_ms=NOW - 360_000),
    }
    result = emergency_check(list(live), live, RULES, {"BUSDT": 2}, now_ms=NOW)
    assert result.exclusions == () and result.silent_shards == ("1/2",)


def test_without_the_shard_the_silence_rule_spans_the_universe() -> None:
    # values from a service that predates the shard field: one silent symbol while the others flow is struck,
    # all silent is the feed
    live = {s: healthy(s) for s in ("AUSDT", "BUSDT", "CUSDT")}
    live["CUSDT"] = healthy("CUSDT", last_event_ms=NOW - 360_000)
    (excl,) = emergency_check(list(live), live, RULES, {"CUSDT": 2}, now_ms=NOW).exclusions
    assert excl.symbol == "CUSDT"
    silent = {s: healthy(s, last_event_ms=NOW - 360_000) for s in live}
    result = emergency_check(list(silent), silent, RULES, {"CUSDT": 2}, now_ms=NOW)
    assert result.exclusions == () and result.silent_shards == ()


# --- 2. a market-wide condition is nobody's exclusion --------------------------------------------------------


def test_a_market_wide_spread_widening_excludes_nobody() -> None:
    universe = [f"S{i}USDT" for i in range(30)]
    strikes: dict[str, int] = {
        "S0USDT": 2
    }  # struck before the flash move: carried, neither added to nor forgiven
    for tick in range(3):
        now = NOW + tick * 30_000
        live = {s: healthy(s, now, spread=0.0005) for s in universe}
        result = emergency_check(universe, live, RULES, strikes, now_ms=now)
        assert result.exclusions == ()
        assert result.market_wide is not None and "30 of 30" in result.market_wide
        assert "spread_too_wide ×30" in result.market_wide
        assert result.strikes == {"S0USDT": 2}
        strikes = result.strikes
    # back to normal, the per-symbol rules apply again
    live = {s: healthy(s) for s in universe}
    live["S0USDT"] = healthy("S0USDT", spread=0.0005)
    (excl,) = emergency_check(universe, live, RULES, strikes, now_ms=NOW).exclusions
    assert excl.symbol == "S0USDT"


def test_the_market_wide_share_is_more_than_max_share_of_the_universe() -> None:
    universe = [f"S{i}USDT" for i in range(10)]
    rules = replace(RULES, strikes=1)
    for wide, held in ((5, False), (6, True)):
        live = {s: healthy(s, spread=0.0005 if i < wide else 0.0001) for i, s in enumerate(universe)}
        result = emergency_check(universe, live, rules, {}, now_ms=NOW)
        assert (result.market_wide is not None) is held
        assert len(result.exclusions) == (0 if held else wide)
    # max_share 1 turns the guard off
    live = {s: healthy(s, spread=0.0005) for s in universe}
    assert (
        len(emergency_check(universe, live, replace(rules, max_share=1.0), {}, now_ms=NOW).exclusions) == 10
    )


def test_a_quick_check_failing_most_of_the_universe_excludes_nobody() -> None:
    universe = [f"S{i}USDT" for i in range(30)]
    measured = {s: SymbolStats(s, 2e8, 5e7, 0.0005, 3e6) for s in universe}
    live = dict.fromkeys(universe, 0.0005)  # the live spreads agree: it really is wide everywhere
    result = quick_check(universe, measured, MINS, live_spread=live)
    assert result.excluded == () and result.kept == tuple(universe)
    assert result.market_wide is not None and "30 of 30" in result.market_wide
    assert len(result.held) == 30 and result.held[0].reason is Reason.SPREAD_TOO_WIDE
    # at most half: the symbols leave
    few = {
        s: (measured[s] if i < 15 else replace(measured[s], spread=0.0001)) for i, s in enumerate(universe)
    }
    result = quick_check(universe, few, MINS, live_spread=live)
    assert len(result.excluded) == 15 and result.market_wide is None and len(result.kept) == 15


def test_the_share_comes_from_the_settings() -> None:
    assert load_settings().max_exclusion_share == 0.5
    assert emergency_rules_from(load_settings(max_exclusion_share=0.8)).max_share == 0.8


# --- 3. one REST spread is one moment -------------------------------------------------------------------------


def test_a_rest_spread_failure_needs_the_live_spread_to_confirm_it() -> None:
    universe = ["AUSDT", "BUSDT", "CUSDT", "DUSDT", "EUSDT", "FUSDT"]
    fine = SymbolStats("X", 2e8, 5e7, 0.0001, 3e6)
    two_ticks = replace(fine, spread=0.0004)  # a momentary two-tick spread in the snapshot
    measured = {s: replace(two_ticks if s != "FUSDT" else fine, symbol=s) for s in universe}
    measured["DUSDT"] = replace(measured["DUSDT"], depth_1pct_usd=1_000.0)
    live = {"AUSDT": 0.0001, "BUSDT": 0.0004, "DUSDT": 0.0001}  # CUSDT: no fresh live value
    mins = replace(MINS, min_depth_1pct_usd=10_000)
    result = quick_check(universe, measured, mins, live_spread=live)
    assert [(e.symbol, e.reason) for e in result.excluded] == [
        ("BUSDT", Reason.SPREAD_TOO_WIDE),  # the live book agrees
        ("DUSDT", Reason.BELOW_MIN_DEPTH),  # spread not confirmed, but its depth breaks the minimum
    ]
    assert "confirmed by the live spread 0.0400%" in result.excluded[0].detail
    assert result.kept == ("AUSDT", "CUSDT", "EUSDT", "FUSDT")
    assert result.unconfirmed == ("AUSDT", "CUSDT", "DUSDT", "EUSDT")
    assert result.unknown == ("CUSDT", "EUSDT")  # their spread is not known: kept, like a failed request


def test_fresh_spreads_keep_only_recent_usable_values() -> None:
    live = {
        "AUSDT": healthy("AUSDT", spread=0.0003),
        "BUSDT": healthy("BUSDT", updated_ms=NOW - 6_000),
        "CUSDT": healthy("CUSDT", spread=None),
    }
    assert fresh_spreads(live, NOW, 5.0) == {"AUSDT": 0.0003}


# --- 4. values of a service that stopped publishing ----------------------------------------------------------


def test_stale_live_values_neither_strike_nor_forgive() -> None:
    universe = ["AUSDT", "BUSDT", "CUSDT"]
    live = {s: healthy(s) for s in universe}
    live["AUSDT"] = healthy("AUSDT", spread=0.001, updated_ms=NOW - 6_000)  # 6 s old: the service stopped
    live["BUSDT"] = healthy("BUSDT", spread=0.001, updated_ms=NOW - 4_000)  # 4 s: still fresh
    result = emergency_check(universe, live, RULES, {"AUSDT": 2, "BUSDT": 1}, now_ms=NOW)
    assert result.exclusions == () and result.stale == ("AUSDT",)
    assert result.strikes == {"AUSDT": 2, "BUSDT": 2}
    # every value stale (a dead service, values not expired yet): nothing struck, whatever they say
    dead = {s: healthy(s, spread=0.001, updated_ms=NOW - 40_000) for s in universe}
    result = emergency_check(universe, dead, replace(RULES, strikes=1), {}, now_ms=NOW)
    assert result.exclusions == () and result.strikes == {} and result.stale == tuple(universe)


# --- the full rescan's spread: one REST snapshot, overruled by a live spread where one is published --------------


def test_a_rescan_spread_above_the_maximum_is_overruled_only_by_a_known_live_spread_within_it() -> None:
    stats = [
        SymbolStats("WIDEUSDT", spread=0.0005),  # a momentary gap in the snapshot; live one tick
        SymbolStats("REALUSDT", spread=0.0005),  # wide live too
        SymbolStats("NOLIVEUSDT", spread=0.0005),  # nobody follows it: the snapshot stands
        SymbolStats("LOCKEDUSDT", spread=0.0005),  # a zero live spread is a bad read, not a tight market
        SymbolStats("FINEUSDT", spread=0.0001),  # within the maximum: never touched
    ]
    live = {"WIDEUSDT": 0.0001, "REALUSDT": 0.0009, "LOCKEDUSDT": 0.0, "FINEUSDT": 0.00015}
    out, overruled = confirm_spreads(stats, live, MINS.max_spread)
    assert overruled == ("WIDEUSDT",)
    assert [s.spread for s in out] == [0.0001, 0.0005, 0.0005, 0.0005, 0.0001]
    assert [s.symbol for s in out] == [s.symbol for s in stats]
