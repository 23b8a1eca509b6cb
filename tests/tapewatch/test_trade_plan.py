"""Trade plan: entry at the touch, stop rules at their boundaries, targets on the tick grid, size after fees,
confidence, hold time."""

from __future__ import annotations

import math
import random
from decimal import Decimal

import msgspec
import pytest

from tapewatch.outcome import OpenSignal, OutcomeParams, OutcomeState, OutcomeTracker
from tapewatch.quality import priority_levels
from tapewatch.rules import Direction
from tapewatch.settings import Settings, load_settings
from tapewatch.trade_plan import (
    confidence,
    expected_hold_time,
    format_minutes,
    on_tick,
    parse_tick_size,
    plan_trade,
    position_size,
    risk_reward_ratio,
    tick_sizes,
    tick_text,
)

S = load_settings()
LEVELS = priority_levels(S)
MIN = 60_000


def test_long_without_a_level_stops_at_one_and_a_half_atr() -> None:
    p = plan_trade("LONG", 99.0, 100.0, 2.0, None, S)
    assert (p.entry, p.stop, p.take_profit_1, p.take_profit_2) == (100.0, 97.0, 103.0, 106.0)
    assert (p.risk, p.stop_basis, p.risk_reward_ratio) == (3.0, "atr", 1.5)
    # the loss at the stop is 3 + the taker fee on both sides (0.05 % of 100 + 97) per 100 of entry
    assert p.suggested_position_size == pytest.approx(0.005 / ((3.0 + 0.0005 * 197.0) / 100.0))


def test_short_enters_at_the_bid_and_mirrors_the_long() -> None:
    p = plan_trade("SHORT", 100.0, 101.0, 2.0, None, S)
    assert (p.entry, p.stop, p.take_profit_1, p.take_profit_2) == (100.0, 103.0, 97.0, 94.0)
    assert p.direction == "SHORT" and p.stop_basis == "atr"


@pytest.mark.parametrize(
    ("level", "stop", "basis"),
    [
        (98.0, 98.0, "level"),  # 2 away: tighter than the 3 of 1.5 ATR
        (97.0, 97.0, "atr"),  # exactly 1.5 ATR: the same stop, the ATR rule names it
        (96.0, 97.0, "atr"),  # a level further than 1.5 ATR: the ATR stop is tighter
        (99.0, 99.0, "level"),  # exactly 0.5 ATR away: allowed
        (99.5, 99.0, "min_atr"),  # closer than 0.5 ATR: widened to 0.5 ATR
        (100.0, 97.0, "atr"),  # a "support" at the entry is no support below it
        (100.5, 97.0, "atr"),  # above the entry: ignored
    ],
)
def test_long_stop_rules_at_their_boundaries(level: float, stop: float, basis: str) -> None:
    p = plan_trade("LONG", 99.0, 100.0, 2.0, level, S, level_buffer_atr=0.0)
    assert (p.stop, p.stop_basis) == (stop, basis)
    assert p.take_profit_1 == 100.0 + (100.0 - stop)


@pytest.mark.parametrize(
    ("level", "stop", "basis"),
    [(102.0, 102.0, "level"), (103.0, 103.0, "atr"), (105.0, 103.0, "atr"), (100.5, 101.0, "min_atr")],
)
def test_short_stop_rules_at_their_boundaries(level: float, stop: float, basis: str) -> None:
    p = plan_trade("SHORT", 100.0, 100.5, 2.0, level, S, level_buffer_atr=0.0)
    assert (p.stop, p.stop_basis) == (stop, basis)


def test_the_stop_goes_a_buffer_beyond_the_level() -> None:
    p = plan_trade("LONG", 99.0, 100.0, 2.0, 98.0, S)  # default buffer 0.1 ATR = 0.2
    assert p.stop == pytest.approx(97.8) and p.stop_basis == "level"
    p = plan_trade("SHORT", 100.0, 100.5, 2.0, 101.5, S)
    assert p.stop == pytest.approx(101.7) and p.stop_basis == "level"


def test_targets_and_multiples_are_configurable() -> None:
    s = Settings(tp1_r=1.5, tp2_r=3.0, stop_atr_multiple=1.0, min_stop_atr_multiple=0.25)
    p = plan_trade("LONG", 99.0, 100.0, 2.0, None, s)
    assert (p.stop, p.take_profit_1, p.take_profit_2, p.risk_reward_ratio) == (98.0, 103.0, 106.0, 2.25)
    assert plan_trade("LONG", 99.0, 100.0, 2.0, 99.75, s, level_buffer_atr=0.0).stop_basis == "min_atr"


def test_position_size_risks_the_configured_share_and_is_capped() -> None:
    assert position_size(100.0, 98.0, 0.005, 1.0, taker_fee=0.0) == pytest.approx(
        0.25
    )  # 2 % stop: 0.5 % / 2 %
    assert position_size(100.0, 102.0, 0.005, 1.0, taker_fee=0.0) == pytest.approx(0.25)
    # with fees the loss at the stop is 2 + 0.05 % of (100 + 98) = 2.099 per 100: a smaller size
    assert position_size(100.0, 98.0, 0.005, 1.0, taker_fee=0.0005) == pytest.approx(0.005 / 0.02099)
    assert position_size(100.0, 102.0, 0.005, 1.0, taker_fee=0.0005) == pytest.approx(0.005 / 0.02101)
    assert (
        position_size(100.0, 99.9, 0.005, 1.0, taker_fee=0.0005) == 1.0
    )  # 0.2 % loss would need 2.5x: capped
    assert position_size(100.0, 98.0, 0.005, 0.1, taker_fee=0.0005) == 0.1
    capped = plan_trade("LONG", 99.99, 100.0, 0.01, None, Settings(max_position_size=0.1))
    assert capped.suggested_position_size == 0.1


def test_risk_reward_is_half_at_each_target() -> None:
    assert risk_reward_ratio(1.0, 2.0) == 1.5
    assert risk_reward_ratio(1.0, 3.0, tp1_share=0.25) == 2.5
    with pytest.raises(ValueError, match=r"tp1_share must be within \[0, 1\]"):
        risk_reward_ratio(1.0, 2.0, tp1_share=1.5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("LONG", math.nan, 100.0, 1.0, None), "best_bid must be a finite price > 0; got nan"),
        (("LONG", 99.0, 0.0, 1.0, None), "best_ask must be a finite price > 0; got 0.0"),
        (("SHORT", -1.0, 100.0, 1.0, None), "best_bid must be a finite price > 0; got -1.0"),
        (("LONG", 100.0, 100.0, 1.0, None), "best_bid 100.0 must be below best_ask 100.0 (crossed book)"),
        (("LONG", 99.0, 100.0, 0.0, None), "ATR must be a finite value > 0 to place a stop; got 0.0"),
        (("LONG", 99.0, 100.0, math.nan, None), "ATR must be a finite value > 0"),
        (("LONG", 99.0, 100.0, 1.0, math.nan), "level must be a finite price > 0; got nan"),
        (("LONG", 99.0, 100.0, 1.0, -98.0), "level must be a finite price > 0"),
        (
            ("LONG", 99.0, 100.0, 80.0, None),
            "LONG stop -20.0 at entry 100.0 with risk 120.0 is not a positive price",
        ),
        (("SHORT", 1.0, 1.01, 1.0, None), "SHORT take_profit_1 -0.5 at entry 1.0"),
    ],
)
def test_bad_plan_inputs_raise(args: tuple[str, float, float, float, float | None], message: str) -> None:
    with pytest.raises(ValueError) as err:
        plan_trade(*args, S)  # type: ignore[arg-type]
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((100.0, 100.0, 0.005, 1.0), "stop 100.0 equals the entry"),
        ((100.0, math.nan, 0.005, 1.0), "stop must be a finite price > 0; got nan"),
        ((0.0, 99.0, 0.005, 1.0), "entry must be a finite price > 0"),
        ((100.0, 99.0, 0.0, 1.0), "risk_per_signal must be finite and > 0"),
        ((100.0, 99.0, 0.005, math.inf), "max_position_size must be finite and > 0"),
    ],
)
def test_bad_position_inputs_raise(args: tuple[float, float, float, float], message: str) -> None:
    with pytest.raises(ValueError) as err:
        position_size(*args, taker_fee=0.0005)
    assert message in str(err.value)
    with pytest.raises(ValueError, match=r"taker_fee must be finite and >= 0; got -0.1"):
        position_size(100.0, 99.0, 0.005, 1.0, taker_fee=-0.1)


def test_confidence_shrinks_the_observed_rate_toward_the_quality() -> None:
    assert confidence(0, 0, 85) == pytest.approx(0.85)  # no history: the prior
    assert confidence(10, 20, 80) == pytest.approx((10 + 20 * 0.8) / 40)  # k = 20: halfway at 20 signals
    assert confidence(10, 20, 80) == pytest.approx(0.65)
    assert confidence(600, 1000, 90) == pytest.approx((600 + 18) / 1020)  # history dominates
    assert confidence(5, 5, 100) == 1.0 and confidence(0, 5, 0) == 0.0
    assert confidence(1, 2, 50, prior_weight=2) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((3, 2, 80), "need 0 <= hits <= total; got hits=3, total=2"),
        ((-1, 2, 80), "need 0 <= hits <= total"),
        ((1, 2, 101), "quality_score must be within [0, 100]; got 101"),
        ((1, 2, math.nan), "quality_score must be within [0, 100]; got nan"),
    ],
)
def test_bad_confidence_inputs_raise(args: tuple[int, int, float], message: str) -> None:
    with pytest.raises(ValueError) as err:
        confidence(*args)
    assert message in str(err.value)
    with pytest.raises(ValueError, match="prior_weight must be finite and > 0"):
        confidence(1, 2, 50, prior_weight=0)


def test_expected_hold_time_is_the_band_middle_without_history() -> None:
    assert [expected_hold_time(LEVELS[t]) for t in ("HIGH", "MEDIUM", "LOW")] == ["30min", "60min", "120min"]


def test_expected_hold_time_is_the_median_of_history() -> None:
    assert expected_hold_time(LEVELS["HIGH"], [10 * MIN, 40 * MIN, 20 * MIN]) == "20min"
    assert expected_hold_time(LEVELS["HIGH"], [20 * MIN, 30 * MIN]) == "25min"  # even count: the mean of two
    assert expected_hold_time(LEVELS["LOW"], [5_000]) == "1min"  # never "0min"
    with pytest.raises(ValueError, match="past hold times must be finite and >= 0 ms"):
        expected_hold_time(LEVELS["LOW"], [MIN, -1])


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "1min"),
        (29_999, "1min"),
        (90_000, "2min"),
        (149_999, "2min"),
        (25 * MIN, "25min"),
        (181 * MIN, "181min"),
    ],
)
def test_format_minutes(ms: float, text: str) -> None:
    assert format_minutes(ms) == text


# --- the tick grid (exchangeInfo PRICE_FILTER.tickSize) ----------------------------------------------------------


def _on_grid(price: float, tick: str) -> bool:
    """The price as published (its shortest repr, as JSON has it) is an exact multiple of the tick."""
    return Decimal(repr(price)) % Decimal(tick) == 0


def test_btc_stop_and_targets_are_on_the_tick_grid_and_print_without_float_noise() -> None:
    # the audit's case: 1.5 ATR from the ask 67000.0 put the stop at 66938.9995 (tick 0.1)
    p = plan_trade("LONG", 66999.9, 67000.0, 40.667, None, S, tick_size=parse_tick_size("0.1"))
    assert p.entry == 67000.0  # the touch, already on the grid
    assert (p.stop, p.take_profit_1, p.take_profit_2) == (66938.9, 67061.1, 67122.2)
    published = msgspec.json.decode(msgspec.json.encode(p))
    assert (published["stop"], published["take_profit_1"], published["take_profit_2"]) == (
        66938.9,
        67061.1,
        67122.2,
    )
    assert b'"stop":66938.9,' in msgspec.json.encode(p)  # not 66938.90000000001
    unrounded = plan_trade("LONG", 66999.9, 67000.0, 40.667, None, S)
    assert unrounded.stop == pytest.approx(66938.9995)  # what was published before


def test_a_short_rounds_its_stop_up_and_its_targets_up_toward_the_entry() -> None:
    # 1000PEPE-like: tick 1e-7; the bid 0.0123 with ATR 0.0000647 puts the raw stop at 0.01239705
    p = plan_trade("SHORT", 0.0123, 0.0123001, 0.0000647, None, S, tick_size=parse_tick_size("1e-07"))
    assert p.entry == 0.0123
    assert p.stop == 0.0123971  # 0.01239705 rounded away from the entry (up)
    assert p.risk == pytest.approx(0.0000971)
    assert (p.take_profit_1, p.take_profit_2) == (0.0122029, 0.0121058)  # 1 R and 2 R below, on the grid
    assert all(_on_grid(x, "1e-7") for x in (p.entry, p.stop, p.take_profit_1, p.take_profit_2))


@pytest.mark.parametrize("tick", ["0.1", "0.01", "0.001", "0.00001", "0.0000001", "0.5", "5", "0.25"])
def test_stops_go_away_from_the_entry_and_targets_toward_it_for_any_tick(tick: str) -> None:
    step = float(tick)
    rng = random.Random(tick)
    for _ in range(300):
        direction: Direction = rng.choice(["LONG", "SHORT"])
        ticks = rng.randint(2_000, 50_000)  # the touch is on the grid, as the book's prices are
        bid = float(Decimal(ticks) * Decimal(tick))
        ask = float(Decimal(ticks + rng.randint(1, 3)) * Decimal(tick))
        atr = step * rng.uniform(30, 400)
        level = rng.choice([None, bid - atr * rng.uniform(0, 2), ask + atr * rng.uniform(0, 2)])
        if level is not None and level <= 0:
            level = None
        raw = plan_trade(direction, bid, ask, atr, level, S)
        p = plan_trade(direction, bid, ask, atr, level, S, tick_size=parse_tick_size(tick))
        sign = 1.0 if direction == "LONG" else -1.0
        assert p.entry == raw.entry
        assert all(_on_grid(x, tick) for x in (p.stop, p.take_profit_1, p.take_profit_2)), p
        assert sign * (raw.stop - p.stop) >= -1e-9 * step  # never tighter than the rules ask
        assert sign * (raw.stop - p.stop) < step * (1 + 1e-9)  # by less than one tick
        assert p.risk == pytest.approx(abs(p.entry - p.stop))
        for target, r in ((p.take_profit_1, S.tp1_r), (p.take_profit_2, S.tp2_r)):
            nominal = p.entry + sign * r * p.risk
            off = sign * (nominal - target)  # toward the entry (float noise aside), by less than a tick
            assert -1e-9 * step <= off < step * (1 + 1e-9)


def test_a_risk_too_small_for_the_tick_is_no_plan() -> None:
    # 0.5 ATR = 0.05 below 100.0 rounds the stop to 99.0 (tick 1); TP1 at 1 R is 101: fine
    assert (
        plan_trade("LONG", 99.0, 100.0, 0.1, None, S, tick_size=parse_tick_size("1")).take_profit_1 == 101.0
    )
    # a tick of 5: the stop 95, TP1 105 and TP2 110 are fine; a tick of 7 puts the entry itself off the grid
    with pytest.raises(ValueError, match="too small for the price step"):
        plan_trade("LONG", 99.0, 100.0, 0.1, None, S, tick_size=parse_tick_size("7"))


def test_tick_sizes_read_and_print_as_plain_decimals() -> None:
    assert [tick_text(t) for t in (0.1, 1e-07, 10.0, 0.00001, 0.25)] == [
        "0.1",
        "0.0000001",
        "10",
        "0.00001",
        "0.25",
    ]
    assert tick_sizes([("BTCUSDT", 0.1), ("X", None), ("Y", 0.0), ("Z", math.nan)]) == {"BTCUSDT": "0.1"}
    assert parse_tick_size("0.10") == Decimal("0.1") and parse_tick_size("1e-07") == Decimal("1E-7")
    for bad in ("0", "-0.1", "nan", "inf", "x", ""):
        with pytest.raises(ValueError, match="tick size must be a decimal number > 0"):
            parse_tick_size(bad)
    assert on_tick(0.30000000000000004, Decimal("0.1"), up=False) == 0.3  # on the grid within float noise
    assert on_tick(0.35, Decimal("0.1"), up=False) == 0.3 and on_tick(0.35, Decimal("0.1"), up=True) == 0.4


# --- the size covers the fees: a stop-out loses risk_per_signal of capital ------------------------------------------


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
@pytest.mark.parametrize("atr", [0.5, 2.0, 1.0])
def test_a_stop_out_loses_risk_per_signal_of_capital_fees_included(direction: Direction, atr: float) -> None:
    """Through the real outcome code: the stop 0.75 % away (ATR 0.5) lost 0.566 % of capital at a 0.5 % risk."""
    p = plan_trade(direction, 99.99, 100.0, atr, None, S, tick_size=parse_tick_size("0.01"))
    assert p.suggested_position_size < S.max_position_size  # not capped: the size sets the loss
    signal = OpenSignal(
        signal_id="s", symbol="BTCUSDT", direction=direction, tier="HIGH", created=0, entry=p.entry,
        stop=p.stop, tp1=p.take_profit_1, tp2=p.take_profit_2, position_size=p.suggested_position_size,
    )  # fmt: skip
    tracker = OutcomeTracker(signal, OutcomeParams.from_settings(S))
    tracker.on_trade(1_000, p.entry)  # triggered
    tracker.on_trade(2_000, p.stop)  # stopped at the stop
    outcome = tracker.outcome()
    assert outcome.state is OutcomeState.STOPPED
    assert outcome.pnl_pct == pytest.approx(-S.risk_per_signal * 100, rel=1e-9)  # -0.5 % of capital
    # R stays the stop distance: a stop-out is -1 R less the fees of both sides in R
    fees_r = S.taker_fee * (p.entry + p.stop) / p.risk
    assert outcome.pnl_r == pytest.approx(-1.0 - fees_r, rel=1e-9)
