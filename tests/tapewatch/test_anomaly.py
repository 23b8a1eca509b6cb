"""Data-quality anomalies: rolling statistics, the k-sigma rule per series, dirty checks, edge cases."""

from __future__ import annotations

import math
import random

import msgspec
import pytest

from tapewatch.anomaly import (
    OVERALL,
    FeedSample,
    QualityConfig,
    QualityState,
    Stat,
    TotalsSample,
    assess,
    symbols_needed,
)

# two of the three symbols make a dirty check (a calm rate this low asks no more: see symbols_needed)
CONFIG = QualityConfig(k=3.0, window=30, min_samples=10, min_symbols=2, calm_rate=0.005)
SYMBOLS = ("AAAUSDT", "BBBUSDT", "CCCUSDT")


def test_stat_tracks_the_mean_and_variance_of_a_steady_series() -> None:
    stat = Stat()
    rng = random.Random(1)
    for _ in range(2000):
        stat = stat.add(10.0 + rng.gauss(0, 2.0), CONFIG.alpha)
    assert stat.mean == pytest.approx(10.0, abs=0.6)
    assert math.sqrt(stat.var) == pytest.approx(2.0, rel=0.3)
    assert stat.deviation(stat.mean + 3 * math.sqrt(stat.var), "message_rate") == pytest.approx(3.0, rel=1e-6)


def test_std_floor_keeps_a_flat_series_from_making_infinite_sigmas() -> None:
    stat = Stat()
    for _ in range(20):
        stat = stat.add(0.0002, CONFIG.alpha)
    assert stat.var == pytest.approx(0.0, abs=1e-18)
    # a flat message rate of 10/s: 1/s above it is 2 floors (0.5/s) away
    rate = Stat()
    for _ in range(20):
        rate = rate.add(10.0, CONFIG.alpha)
    assert rate.deviation(11.0, "message_rate") == pytest.approx(2.0)
    # a spread's floor is half its mean: one tick more than a flat one-tick spread is 2 sd, not 20
    assert stat.deviation(0.0004, "spread") == pytest.approx(2.0)


def _one_tick_market(minutes: int, wide: float, p_two_ticks: float, seed: int = 1) -> list[tuple[int, bool]]:
    """30 symbols on a calm market whose spreads are one tick (1-2 bp), now and then two; from minute 40 on
    every symbol's spread is ``wide`` times its tick. Each minute: (symbols with an anomalous spread, dirty)."""
    rng = random.Random(seed)
    config = QualityConfig(k=3, window=30, min_samples=10, min_symbols=3)
    state, out = QualityState(), []
    for t in range(minutes):
        sample = {}
        for i in range(30):
            tick = 1e-4 * (1 + i / 30)
            ticks = wide if t >= 40 else (2 if rng.random() < p_two_ticks else 1)
            price = 100.0 * (1 + rng.gauss(0, 1e-5))  # price jumps well inside their 1 bp floor
            sample[f"S{i}"] = FeedSample(f"S{i}", 1_000_000 + t * 60_000, price, tick * ticks, 500 * t)
        state, found = assess(state, sample, None, config)
        out.append((sum(a.series == "spread" for a in found.anomalies), found.dirty))
    return out


def test_a_one_tick_spread_flip_is_not_an_anomaly() -> None:
    # the audit's case: 5 % of minutes show a two-tick spread; the old floor (5 % of the mean) made each
    # such reading 10-20 sd and paused signalling more than half the time
    calm = _one_tick_market(40, wide=1, p_two_ticks=0.05)
    assert sum(n for n, _ in calm[10:]) == 0
    assert not any(dirty for _, dirty in calm)


def test_a_real_spread_blow_out_is_still_an_anomaly() -> None:
    blown = _one_tick_market(41, wide=5, p_two_ticks=0.05)  # every spread five ticks at minute 40
    anomalous, dirty = blown[-1]
    assert anomalous == 30 and dirty
    # three ticks (just above the 2.5x line at k = 3) is one; two and a half is not
    assert _one_tick_market(41, wide=3, p_two_ticks=0.0)[-1] == (30, True)
    assert _one_tick_market(41, wide=2.4, p_two_ticks=0.0)[-1] == (0, False)


def feeds(
    minute: int, rng: random.Random, **override: tuple[float | None, float | None, int]
) -> dict[str, FeedSample]:
    out = {}
    for i, symbol in enumerate(SYMBOLS):
        price = 100.0 * (1 + i) * math.exp(rng.gauss(0, 0.0005))
        spread = 0.0002 + rng.gauss(0, 0.00001)
        messages = minute * 600 + int(rng.gauss(0, 10))
        if symbol in override:
            p, s, m = override[symbol]
            price = price if p is None else p
            spread = spread if s is None else s
            messages = messages if m < 0 else m
        out[symbol] = FeedSample(symbol, 1_000_000 + minute * 60_000, price, spread, messages)
    return out


def warm(minutes: int = 25, seed: int = 7) -> tuple[QualityState, random.Random]:
    rng = random.Random(seed)
    state = QualityState()
    for minute in range(1, minutes + 1):
        totals = TotalsSample(1_000_000 + minute * 60_000, minute)
        state, found = assess(state, feeds(minute, rng), totals, CONFIG)
        assert not found.dirty, found.anomalies
    return state, rng


def test_a_calm_market_is_clean_and_the_state_survives_the_cursor() -> None:
    state, _ = warm()
    assert set(state.series) == {*SYMBOLS, OVERALL}
    assert set(state.series["AAAUSDT"].stats) == {"price_jump", "spread", "message_rate"}
    assert set(state.series[OVERALL].stats) == {"relative_message_rate", "resync_rate"}
    cursor = msgspec.json.encode(state)
    assert msgspec.json.decode(cursor, type=QualityState) == state


def test_one_symbol_alone_is_reported_but_not_dirty() -> None:
    state, rng = warm()
    minute = 26
    sample = feeds(minute, rng, AAAUSDT=(None, 0.002, -1))  # spread ten times wider
    state, found = assess(state, sample, TotalsSample(1_000_000 + minute * 60_000, minute), CONFIG)
    assert [(a.symbol, a.series) for a in found.anomalies] == [("AAAUSDT", "spread")]
    assert found.anomalies[0].sigmas > 3
    assert not found.dirty  # min_symbols is 2


def test_anomalies_on_enough_symbols_make_a_dirty_check() -> None:
    state, rng = warm()
    minute = 26
    sample = feeds(minute, rng, AAAUSDT=(150.0, None, -1), BBBUSDT=(None, 0.003, -1))
    _, found = assess(state, sample, TotalsSample(1_000_000 + minute * 60_000, minute), CONFIG)
    assert {(a.symbol, a.series) for a in found.anomalies} == {
        ("AAAUSDT", "price_jump"),
        ("BBBUSDT", "spread"),
    }
    assert found.dirty
    assert "AAAUSDT price_jump" in found.anomalies[0].describe() or "BBBUSDT" in found.anomalies[0].describe()


def test_an_overall_resync_burst_or_a_silent_feed_is_dirty_on_its_own() -> None:
    state, rng = warm()
    minute = 26
    burst = TotalsSample(1_000_000 + minute * 60_000, 25 + 40)  # 40 resyncs in a minute
    _, found = assess(state, feeds(minute, rng), burst, CONFIG)
    assert [(a.symbol, a.series) for a in found.anomalies] == [(OVERALL, "resync_rate")]
    assert found.dirty
    # messages almost stopped on every symbol: the overall rate, relative to the symbols' usual rates, too
    silent = feeds(minute, rng, **{symbol: (None, None, 25 * 600 + 100) for symbol in SYMBOLS})
    _, found = assess(state, silent, TotalsSample(1_000_000 + minute * 60_000, 25), CONFIG)
    overall = [(a.series, a.sigmas < 0) for a in found.anomalies if a.symbol == OVERALL]
    assert overall == [("relative_message_rate", True)] and found.dirty


def test_narrower_spreads_and_quieter_prices_are_not_anomalies() -> None:
    state, rng = warm()
    minute = 26
    sample = feeds(minute, rng, AAAUSDT=(None, 0.00001, -1), BBBUSDT=(None, 0.00001, -1))
    _, found = assess(state, sample, None, CONFIG)
    assert found.anomalies == []


def test_unknown_values_are_counted_and_stale_symbols_are_not_judged_twice() -> None:
    state, rng = warm()
    minute = 26
    sample = feeds(minute, rng)
    sample["AAAUSDT"] = FeedSample(
        "AAAUSDT", sample["AAAUSDT"].updated_ms, None, None, sample["AAAUSDT"].messages
    )
    state2, found = assess(state, sample, None, CONFIG)
    assert found.unknown == 2
    # the same samples again: nothing was republished, nothing is judged, the state is unchanged
    state3, again = assess(state2, sample, None, CONFIG)
    assert again.judged == 0
    assert state3.series["BBBUSDT"] == state2.series["BBBUSDT"]


def test_counter_reset_after_a_restart_is_not_a_rate_and_left_symbols_are_forgotten() -> None:
    state, rng = warm()
    minute = 26
    sample = {k: v for k, v in feeds(minute, rng, AAAUSDT=(None, None, 5)).items() if k != "CCCUSDT"}
    new, found = assess(state, sample, None, CONFIG)
    assert found.resets == 1
    assert "CCCUSDT" not in new.series
    assert not any(a.series == "message_rate" for a in found.anomalies)


def test_warm_up_judges_nothing() -> None:
    rng = random.Random(3)
    state = QualityState()
    state, found = assess(state, feeds(1, rng), None, CONFIG)
    state, found = assess(state, feeds(2, rng, AAAUSDT=(500.0, 0.5, -1)), None, CONFIG)
    assert found.judged == 0 and found.anomalies == []


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="data-quality config"):
        QualityConfig(k=0)


def _calm_market(
    symbols: int, checks: int, seed: int = 7, fat_tails: bool = False, config: QualityConfig | None = None
) -> list[bool]:
    """``symbols`` independent random walks with steady message rates and one-tick spreads (nothing abnormal),
    judged once a minute as the sensor does; whether each check was dirty. ``fat_tails``: Student-t (4 df)
    returns instead of Gaussian ones, as real markets have."""
    rng = random.Random(seed)
    config = config or QualityConfig(k=3, window=30, min_samples=10, min_symbols=3)
    prices = [100.0 * (1 + i) for i in range(symbols)]
    messages = [0] * symbols
    state, dirty = QualityState(), []
    for t in range(checks):
        sample = {}
        for i in range(symbols):
            if fat_tails:
                z = rng.gauss(0, 1) / math.sqrt(sum(rng.gauss(0, 1) ** 2 for _ in range(4)) / 4)
            else:
                z = rng.gauss(0, 1)
            prices[i] *= math.exp(0.002 * z)  # 20 bp a minute
            messages[i] += max(0, int(rng.gauss(600, 25)))  # ~10 messages a second
            sample[f"S{i}"] = FeedSample(f"S{i}", 1_000_000 + t * 60_000, prices[i], 1e-4, messages[i])
        totals = TotalsSample(1_000_000 + t * 60_000, 0)
        state, found = assess(state, sample, totals, config)
        dirty.append(found.dirty)
    return dirty


@pytest.mark.parametrize("fat_tails", [False, True])
def test_a_calm_market_of_thirty_symbols_is_not_dirty_for_a_day(fat_tails: bool) -> None:
    """The audit's case: each symbol shows a 3-sd value ~2 % of the minutes (more with fat tails), so with a
    fixed "3 symbols at once" rule a calm 30-symbol universe paused signalling 35-80 times a day. The number of
    symbols needed grows with the universe so that a calm market makes a dirty check about once a week."""
    dirty = _calm_market(30, 1_440, fat_tails=fat_tails)
    assert sum(dirty) <= 2


def test_the_symbols_needed_grow_with_the_universe_and_never_exceed_it() -> None:
    config = QualityConfig(k=3, window=30, min_samples=10, min_symbols=3)
    needed = {n: symbols_needed(n, config) for n in (1, 2, 3, 10, 30, 100, 800)}
    assert needed[1] == 1 and needed[2] == 2 and needed[3] == 3  # all of them when fewer than min_symbols
    assert 3 <= needed[10] <= 10
    assert needed[10] <= needed[30] <= needed[100] <= needed[800]
    assert needed[30] > 3 and needed[800] < 800 // 4  # a broad feed problem still trips it


def test_a_universe_cut_in_half_is_not_a_message_rate_anomaly() -> None:
    """Halving the universe (the load sensor's shrink) halves the service's total message rate: judged per
    symbol followed, it is no anomaly; nor is restoring it."""
    config = QualityConfig(k=3, window=30, min_samples=10, min_symbols=3)
    state = QualityState()
    messages = [0] * 30
    for t in range(60):
        follow = 30 if t < 30 or t >= 45 else 15  # cut at minute 30, restored at 45
        for i in range(follow):
            messages[i] += 600
        sample = {
            f"S{i}": FeedSample(f"S{i}", 1_000_000 + t * 60_000, 100.0, 1e-4, messages[i])
            for i in range(follow)
        }
        state, found = assess(state, sample, TotalsSample(1_000_000 + t * 60_000, 0), config)
        assert not found.dirty, (t, found.anomalies)


#: Message rates (msg/s) of 15 symbols, the busiest first: activity falls off with rank, as on the exchange
#: (each symbol 0.85 of the one before), so the symbols a cut keeps are the busiest.
UNEVEN = [37.1 * 0.85**i for i in range(15)]


def _cut(
    seed: int, *, keep: int = 7, linger: float | None = None, drop_at: int | None = None
) -> list[tuple[int, list[str], str]]:
    """The data-quality checks (one a minute) of 15 symbols with :data:`UNEVEN` rates (Poisson-like counts,
    +-3 % bursts); at minute 40 the universe keeps the ``keep`` busiest. ``linger``: the symbols cut stay in
    Redis until their feed stats expire — republished for that share of the minute before the cut, then
    left as they were for one check more (the service never removed them); else they are gone at the cut.
    ``drop_at``: from that minute on every symbol kept delivers 40 % of its usual rate (a real feed
    problem). Each dirty check: (minute, the anomalies, the check's note)."""
    rng = random.Random(seed)
    config = QualityConfig(k=3, window=30, min_samples=10, min_symbols=3)
    state, messages, updated, out = QualityState(), [0] * 15, [0] * 15, []
    for t in range(60):
        now = 1_000_000 + t * 60_000
        for i, rate in enumerate(UNEVEN):
            share = 1.0 if t < 40 or i < keep else (linger or 0.0) if t == 40 else 0.0
            share *= 0.4 if drop_at is not None and t >= drop_at else 1.0
            if share:
                mean = rate * 60 * share * rng.uniform(0.97, 1.03)
                messages[i] += max(0, int(rng.gauss(mean, math.sqrt(mean))))
                updated[i] = now if t < 40 or i < keep else now - 60_000 + int(share * 60_000)
        shown = [
            i
            for i in range(15)
            if t < 40 or i < keep or (linger is not None and now - updated[i] < 60_000 * 2)
        ]
        sample = {f"S{i}": FeedSample(f"S{i}", updated[i], 100.0, 1e-4, messages[i]) for i in shown}
        state, found = assess(state, sample, TotalsSample(now, 0), config)
        if found.dirty:
            out.append((t, [a.describe() for a in found.anomalies], found.note))
    return out


@pytest.mark.parametrize("seed", range(12))
def test_a_cut_that_keeps_the_busiest_symbols_is_no_anomaly(seed: int) -> None:
    """The audit's case: 15 -> 7 kept the busiest symbols, whose rate per symbol is well above the 15's, so a
    total divided by the symbols followed read as +4 to +12 sd and paused signalling at every cut. Each
    symbol kept is compared with its own usual rate: the cut is no anomaly."""
    assert _cut(seed) == []


@pytest.mark.parametrize("linger", [0.1, 0.5, 0.9])
def test_feed_stats_lingering_after_a_cut_are_no_anomaly(linger: float) -> None:
    """The symbols cut keep their feed stats in Redis until they expire: the total over all 15 stats read as
    a rate per symbol halved (-4 to -8 sd). Only symbols republished count, each against its own rate."""
    assert _cut(3, linger=linger) == []


def test_a_feed_problem_right_after_a_cut_is_still_an_anomaly() -> None:
    """The check across the cut is skipped (its symbols changed), not the ones after it: a feed delivering
    40 % of its usual rate two minutes after the cut pauses signalling."""
    dirty = _cut(5, drop_at=42)
    assert dirty and dirty[0][0] == 42
    assert any("overall relative_message_rate" in a and "-" in a.split(" is ")[1][:2] for a in dirty[0][1])


def test_the_check_across_a_change_of_the_symbols_is_skipped_and_says_so() -> None:
    config = QualityConfig(k=3, window=30, min_samples=3, min_symbols=3)
    state, notes = QualityState(), []
    for t in range(12):
        follow = 20 if t < 8 else 10
        sample = {
            f"S{i}": FeedSample(f"S{i}", 1_000_000 + t * 60_000, 100.0, 1e-4, (20 - i) * 60 * t)
            for i in range(follow)
        }
        state, found = assess(state, sample, None, config)
        assert not found.dirty
        notes.append(found.note)
    assert (
        notes[8] == "overall message rate not judged: the symbols measured changed (20 -> 10, 10 in or out)"
    )
    assert [t for t, note in enumerate(notes) if note] == [8]
    assert state.series[OVERALL].prev.members == tuple(sorted(f"S{i}" for i in range(10)))


@pytest.mark.parametrize(
    "overall",
    [
        b'{"prev":{"ts_ms":1000000,"messages":0,"resyncs":0},'  # the total message rate
        b'"stats":{"message_rate":[20,300.0,4.0],"resync_rate":[20,0.0,0.0]}}',
        b'{"prev":{"ts_ms":1000000,"messages":0,"resyncs":0,"symbols":30},'  # the rate per symbol followed
        b'"stats":{"message_rate":[20,10.0,0.01],"resync_rate":[20,0.0,0.0]}}',
    ],
)
def test_a_cursor_from_before_relative_rates_does_not_pause_signalling(overall: bytes) -> None:
    """The sensor's cursors of the versions before held the overall message rate as a total, then per symbol
    followed: read back, those statistics are dropped rather than compared with a relative rate."""
    config = QualityConfig(k=3, window=30, min_samples=10, min_symbols=3)
    cursor = msgspec.json.decode(b'{"series":{"*":' + overall + b"}}", type=QualityState)
    feeds = {f"S{i}": FeedSample(f"S{i}", 1_060_000, 100.0, 1e-4, 600) for i in range(30)}
    state, found = assess(cursor, feeds, TotalsSample(1_060_000, 0), config)
    assert not found.dirty, found.anomalies
    assert set(state.series[OVERALL].stats) == {"resync_rate"}


def test_totals_without_any_feed_stats_are_not_judged_as_a_total() -> None:
    config = QualityConfig(k=3, window=30, min_samples=3, min_symbols=3)
    state = QualityState()
    for t in range(10):  # 30 symbols at 10 msg/s each, judged per symbol
        feeds = {
            f"S{i}": FeedSample(f"S{i}", 1_000_000 + t * 60_000, 100.0, 1e-4, 600 * t) for i in range(30)
        }
        state, found = assess(state, feeds, TotalsSample(1_000_000 + t * 60_000, 0), config)
        assert not found.dirty
    # a check whose feed hashes are all gone (expired) while the metrics hash is there
    state, found = assess(state, {}, TotalsSample(1_000_000 + 10 * 60_000, 0), config)
    assert not found.dirty, found.anomalies


def test_the_symbols_needed_are_computed_for_any_universe_size() -> None:
    config = QualityConfig()
    assert symbols_needed(1_000, config) == 78
    assert 250 < symbols_needed(5_000, config) < 400  # ~6 % of them: no overflow on a large count


def test_the_backup_feed_s_polled_rates_are_not_judged_nor_learnt() -> None:
    """While the backup feed polls REST a symbol gets ~1/50 of its streamed messages: no data fault. Judged, it
    paused signalling for the switch itself; learnt, it left the statistics blind to a real fault after the
    switch back (a quarter of the rate went unseen for 30+ checks)."""
    state, rng = warm()
    before = {symbol: state.series[symbol].stats["message_rate"] for symbol in SYMBOLS}
    messages = 25 * 600
    for minute in range(26, 31):  # five checks on the backup feed
        messages += 12
        sample = feeds(minute, rng, **{symbol: (None, None, messages) for symbol in SYMBOLS})
        totals = TotalsSample(1_000_000 + minute * 60_000, minute)
        state, found = assess(state, sample, totals, CONFIG, rates_apart=True)
        assert not found.dirty and "message rates not judged" in found.note
    assert {symbol: state.series[symbol].stats["message_rate"] for symbol in SYMBOLS} == before
    messages += 300  # the check that straddles the switch back: apart too
    sample = feeds(31, rng, **{symbol: (None, None, messages) for symbol in SYMBOLS})
    state, found = assess(state, sample, TotalsSample(1_000_000 + 31 * 60_000, 31), CONFIG, rates_apart=True)
    assert not found.dirty
    messages += 150  # back on the streams, every symbol at a quarter of its rate: a fault, seen at once
    sample = feeds(32, rng, **{symbol: (None, None, messages) for symbol in SYMBOLS})
    _, found = assess(state, sample, TotalsSample(1_000_000 + 32 * 60_000, 32), CONFIG)
    assert found.dirty and any(a.series == "message_rate" and a.sigmas < 0 for a in found.anomalies)
