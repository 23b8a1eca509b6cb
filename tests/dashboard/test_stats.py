"""The dashboard's statistics: the pure definitions (tapewatch.signal_stats, tapewatch.metrics' tally and
Sharpe from sums) and their aggregation in real PostgreSQL (tapewatch.adapters.dashboard_stats), checked
against hand-computed values and against the metrics the reports use."""

from __future__ import annotations

import math
import random
import uuid
from datetime import timedelta
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa

from tapewatch import metrics
from tapewatch import signal_stats as st
from tapewatch.adapters import dashboard_stats as ds
from tapewatch.adapters.db import Database
from tapewatch.errors import StorageUnavailable
from tapewatch.metrics import DAY_MS, Tally
from tapewatch.outcome import Outcome
from tapewatch.signal import Signal
from tests.dashboard.support import closed_url, finished, store_finished

D0 = 19_723 * DAY_MS  # 2024-01-01 00:00 UTC
HOUR = 3_600_000
MINUTE = 60_000


# --- pure -----------------------------------------------------------------------------------------------


def test_sharpe_from_sums_is_the_sharpe_of_the_series() -> None:
    rng = random.Random(7)
    for _ in range(50):
        series = [rng.choice([0.0, 0.0, rng.uniform(-3, 3)]) for _ in range(rng.randint(2, 60))]
        expected = metrics.sharpe_ratio(series)
        active = sum(1 for x in series if x)
        got = metrics.sharpe_from_sums(
            len(series), math.fsum(series), math.fsum(x * x for x in series), active
        )
        if active < metrics.MIN_SHARPE_SIGNAL_DAYS:
            assert got is None  # too few days with signals: no ratio, as in the reports
            continue
        assert (got is None) == (expected is None)
        if expected is not None:
            assert got == pytest.approx(expected, rel=1e-9)
    assert metrics.sharpe_from_sums(1, 2.0, 4.0, 1) is None  # one day
    # no variation (rounding aside)
    assert metrics.sharpe_from_sums(30, 30 * 1.45, 30 * 1.45**2, 30) is None
    assert metrics.sharpe_from_sums(5, 0.0, 0.0, 5) is None


def test_a_chosen_period_counts_every_day_it_touches() -> None:
    week = st.sharpe_day_count(D0, D0 + 7 * DAY_MS, open_ended=False, first_ms=0, last_ms=0)
    assert week == 7
    # a rolling 7 × 24 h window (now - 7 d .. now) touches 8 UTC days
    now = D0 + 7 * DAY_MS - 1
    assert st.sharpe_day_count(now - 7 * DAY_MS, now + 1, open_ended=False, first_ms=0, last_ms=0) == 8
    # only "all time" is narrowed to the days with signals
    days = st.sharpe_day_count(
        0, D0 + 99 * DAY_MS, open_ended=True, first_ms=D0 + DAY_MS + 5, last_ms=D0 + 4 * DAY_MS + 7
    )
    assert days == 4
    with pytest.raises(ValueError, match="empty period"):
        st.sharpe_day_count(5, 5, open_ended=False, first_ms=0, last_ms=0)


def test_equity_curve_thins_but_keeps_the_end() -> None:
    curve = st.equity_curve(((i, 1.0) for i in range(5000)), max_points=100)
    assert len(curve) == 100  # the first, the last, the lowest and highest of 49 runs between them
    assert curve[-1] == (4999, pytest.approx(5000.0))
    assert [r for _, r in curve] == sorted(r for _, r in curve)
    assert st.equity_curve([(1, 2.0), (2, -1.0)]) == [(1, 2.0), (2, 1.0)]
    with pytest.raises(ValueError, match="max_points"):
        st.equity_curve([], max_points=1)


def test_the_thinned_equity_curve_keeps_its_peaks_and_troughs() -> None:
    # a slow climb, a one-signal spike up between the points an even sampling keeps, then a long fall
    rs = [0.01] * 10_000
    rs[3_333], rs[3_334] = 50.0, -50.0
    rs[5_000:5_300] = [-0.5] * 300
    full = st.equity_curve(enumerate(rs), max_points=len(rs))
    curve = st.equity_curve(enumerate(rs), max_points=300)
    assert len(curve) <= 300 and curve[0] == full[0] and curve[-1] == full[-1]
    assert max(r for _, r in curve) == max(r for _, r in full) == full[3_333][1]  # the spike
    assert min(r for _, r in curve) == min(r for _, r in full) == full[5_299][1]  # the trough
    # the max drawdown read off the thinned curve is the whole one (the spike's top to the trough)
    steps = [b - a for (_, a), (_, b) in zip([(0, 0.0), *curve], curve, strict=False)]
    assert metrics.max_drawdown(steps) == pytest.approx(metrics.max_drawdown(rs)) == pytest.approx(183.35)
    # too few points for a run: the first and the last only
    assert st.equity_curve(enumerate(rs), max_points=3) == [full[0], full[-1]]


def test_drawdowns_per_group_follow_the_order_signals_ended() -> None:
    dd = st.drawdowns([("A", "HIGH", 2.0), ("B", "LOW", -1.0), ("A", "HIGH", -1.5), ("A", "LOW", 0.5)])
    assert dd.overall == pytest.approx(2.5)  # peak 2.0, low -0.5
    assert dd.by_symbol == {"A": pytest.approx(1.5), "B": pytest.approx(1.0)}
    assert dd.by_tier == {"HIGH": pytest.approx(1.5), "LOW": pytest.approx(1.0)}


def test_bands_merge_scores_and_calibration_refuses_untriggered_groups() -> None:
    one = Tally(signals=1, triggered=1, wins=1, total_r=1.0)
    lost = Tally(signals=1, triggered=1, total_r=-1.0)
    bands = {
        b.label: b for b in st.quality_bands([(91, one, 1, 0.8), (97, lost, 0, 0.7), (55, lost, 0, 0.4)])
    }
    assert list(bands) == ["50–59", "60–69", "70–79", "80–89", "90–100"]
    assert bands["90–100"].tally.signals == 2 and bands["90–100"].tally.win_rate == 0.5
    assert bands["90–100"].tp1_rate == 0.5 and bands["90–100"].mean_confidence == pytest.approx(0.75)
    assert bands["60–69"].tally.signals == 0 and bands["60–69"].tally.win_rate is None
    cal = st.calibration([(7, one, 1, 0.72), (10, lost, 0, 1.0)])  # a confidence of 1.0 is in the top decile
    assert [(b.label, b.tally.triggered) for b in cal] == [("0.7–0.8", 1), ("0.9–1.0", 1)]
    with pytest.raises(ValueError, match="triggered signals only"):
        st.calibration([(7, Tally(signals=2, triggered=1), 0, 0.7)])


def test_a_score_below_50_has_its_own_band_as_in_the_reports() -> None:
    lost = Tally(signals=1, triggered=1, total_r=-1.0)
    bands = st.quality_bands([(45, lost, 0, 0.4), (55, lost, 0, 0.4)])
    assert [(b.label, b.tally.signals) for b in bands][:2] == [("<50", 1), ("50–59", 1)]
    assert (bands[0].low, bands[0].high) == (0, 50)


# --- aggregated in PostgreSQL ----------------------------------------------------------------------------


def _three_days(db: Database) -> list[Outcome]:
    """+2 R on day 1, -1 R on day 3, +1.5 R on day 4 of the week from D0 (three days with signals)."""
    return store_finished(
        db,
        [
            finished("BTCUSDT", D0 + DAY_MS + 10 * HOUR, 2.0),
            finished("ETHUSDT", D0 + 3 * DAY_MS + 10 * HOUR, -1.0, tier="MEDIUM", quality=65),
            finished("BTCUSDT", D0 + 4 * DAY_MS + 10 * HOUR, 1.5),
        ],
    )


def test_sharpe_of_a_chosen_period_counts_its_days_without_signals(db: Database) -> None:
    _three_days(db)
    # three days with signals: too few for a ratio (one value among empty days is an artefact), as in reports
    assert ds.performance(db, D0, D0 + 7 * DAY_MS).overall.sharpe_ratio is None
    store_finished(
        db,
        [
            finished("SOLUSDT", D0 + 5 * DAY_MS + 10 * HOUR, 0.5),
            finished("SOLUSDT", D0 + 9 * DAY_MS + 10 * HOUR, -0.5),
        ],
    )
    # daily R over 10 days: 0, 2, 0, -1, 1.5, 0.5, 0, 0, 0, -0.5 (five days with signals)
    period = ds.performance(db, D0, D0 + 10 * DAY_MS)
    assert period.sharpe_days == 10
    daily = [0.0, 2.0, 0.0, -1.0, 1.5, 0.5, 0.0, 0.0, 0.0, -0.5]
    assert period.overall.sharpe_ratio == pytest.approx(metrics.sharpe_ratio(daily), rel=1e-9)
    # "all time" runs from the first to the last day with a signal: the leading empty day drops out
    everything = ds.performance(db, 0, D0 + 30 * DAY_MS, open_ended=True)
    assert everything.sharpe_days == 9
    assert everything.overall.sharpe_ratio == pytest.approx(metrics.sharpe_ratio(daily[1:]), rel=1e-9)


def test_an_all_time_tier_filter_gives_the_tier_grid_s_sharpe_ratio(db: Database) -> None:
    """ "All time" runs from the first to the last day with a signal of any tier: filtering on a tier must not
    shorten the window to that tier's own days (the filtered HIGH ratio read 5.22 beside 3.30 in the grid)."""
    high = [-1.05, 1.45, 0.4, 1.45, -0.2, 0.4]
    store_finished(
        db,
        [
            finished("ETHUSDT", D0 + 10 * HOUR, 0.4, tier="MEDIUM"),
            *(finished("BTCUSDT", D0 + (10 + d) * DAY_MS + 10 * HOUR, r) for d, r in enumerate(high)),
        ],
    )
    everything = ds.performance(db, 0, D0 + 30 * DAY_MS, open_ended=True)
    (grid_high,) = [g.summary for g in everything.by_tier if g.key == "HIGH"]
    assert everything.sharpe_days == 16 and grid_high.sharpe_ratio is not None
    assert grid_high.sharpe_ratio == pytest.approx(metrics.sharpe_ratio([0.0] * 10 + high), rel=1e-9)
    filtered = ds.performance(db, 0, D0 + 30 * DAY_MS, open_ended=True, tier="HIGH")
    assert filtered.sharpe_days == 16
    assert filtered.overall.sharpe_ratio == pytest.approx(grid_high.sharpe_ratio, rel=1e-9)


def test_days_whose_signals_never_triggered_do_not_make_a_sharpe_ratio(db: Database) -> None:
    """Four days of untriggered signals (0 R each, as an empty day) and one losing day: the daily R series is one
    value among zeros, whose ratio is an artefact of the window (−√(365/N)): no ratio, as the Dagster metrics."""
    made = [finished("BTCUSDT", D0 + d * DAY_MS + 10 * HOUR, 0.0, triggered=False) for d in range(4)]
    outcomes = store_finished(db, [*made, finished("ETHUSDT", D0 + 4 * DAY_MS + 10 * HOUR, -1.0)])
    got = ds.performance(db, D0, D0 + 7 * DAY_MS)
    assert got.overall.signals_generated == 5 and got.overall.sharpe_ratio is None
    overall, _ = metrics.period_metrics(outcomes, metrics.day_of(D0), metrics.day_of(D0) + timedelta(6))
    assert overall.sharpe_ratio is None


def test_sql_aggregates_equal_the_metrics_of_the_reports(db: Database) -> None:
    rng = random.Random(3)
    made = []
    for i in range(60):
        t = D0 + rng.randrange(7 * DAY_MS)
        r = rng.choice([-1.05, 1.45, 0.4, -0.2])
        made.append(
            finished(
                rng.choice(["BTCUSDT", "ETHUSDT", "SOLUSDT"]),
                t + i,  # distinct times: distinct signal ids
                r,
                tier=rng.choice(["HIGH", "MEDIUM", "LOW"]),
                quality=rng.randint(50, 100),
                confidence=rng.uniform(0, 1),
                triggered=rng.random() > 0.2,
                tp1=r > 0,
                hold_ms=rng.randrange(60_000, 3_600_000),
            )
        )
    outcomes = store_finished(db, made)
    got = ds.performance(db, D0, D0 + 7 * DAY_MS)
    overall, by_tier = metrics.period_metrics(outcomes, metrics.day_of(D0), metrics.day_of(D0) + timedelta(6))

    def same(a: metrics.Summary, b: metrics.Summary) -> None:
        assert (a.signals_generated, a.signals_triggered, a.wins) == (
            b.signals_generated,
            b.signals_triggered,
            b.wins,
        )
        for name in ("win_rate", "average_hold_minutes", "total_pnl_r", "total_pnl_pct", "sharpe_ratio"):
            assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-9), name
        assert a.max_drawdown_r == pytest.approx(b.max_drawdown_r, abs=1e-9)
        assert a.mean_quality == pytest.approx(b.mean_quality)

    same(got.overall, overall)
    for group in got.by_tier:
        same(group.summary, by_tier[group.key])  # type: ignore[index]
    for group in got.by_symbol:
        mine = [o for o in outcomes if o.signal.symbol == group.key]
        same(group.summary, metrics.summarize(mine, metrics.day_of(D0), metrics.day_of(D0) + timedelta(6)))
    totals = [g.summary.total_pnl_r for g in got.by_symbol]
    assert totals == sorted(totals, reverse=True)
    assert got.curve[-1][1] == pytest.approx(overall.total_pnl_r)
    # a tier filter narrows everything to that tier
    high = ds.performance(db, D0, D0 + 7 * DAY_MS, tier="HIGH")
    same(high.overall, by_tier["HIGH"])
    assert [g.key for g in high.by_tier] == ["HIGH"]


def _ended_mix(db: Database, n: int = 300) -> list[tuple[Signal, Outcome]]:
    """``n`` finished signals of random R on four symbols and three tiers, stored: exit times shared by many
    (ties broken by creation time, then by signal id), a few without an exit time, runs of 0 R (ties in the
    equity), several signals created in the same millisecond."""
    rng = random.Random(11)
    made = []
    for i in range(n):
        signal, outcome = finished(
            ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT")[i % 4],
            D0 + (i // 4) * 1000,  # four symbols per millisecond: distinct signal ids
            rng.choice([round(rng.uniform(-1.5, 2.5), 6), 0.0, -1.05]),
            tier=rng.choice(["HIGH", "MEDIUM", "LOW"]),
        )
        exit_time = None if rng.random() < 0.05 else D0 + HOUR + rng.randrange(40) * MINUTE
        made.append((signal, msgspec.structs.replace(outcome, exit_time=exit_time)))
    store_finished(db, made)
    return made


def _in_end_order(made: list[tuple[Signal, Outcome]]) -> list[tuple[Signal, Outcome]]:
    """In the order the signals ended: exit time (none first), creation time, signal id (as PostgreSQL
    orders a uuid)."""
    return sorted(
        made,
        key=lambda so: (
            so[1].exit_time is not None,
            so[1].exit_time or 0,
            so[0].event_time,
            uuid.UUID(so[0].signal_id),
        ),
    )


def test_drawdowns_and_curve_from_sql_equal_the_pure_definitions(db: Database) -> None:
    made = _ended_mix(db)
    for tier in (None, "MEDIUM"):
        ended = [(sig, o) for sig, o in _in_end_order(made) if tier is None or sig.priority == tier]
        want = st.drawdowns((sig.symbol, sig.priority, o.pnl_r) for sig, o in ended)
        points = [(o.exit_time if o.exit_time is not None else sig.event_time, o.pnl_r) for sig, o in ended]
        assert want.overall > 0 and all(want.by_symbol.values())
        for max_points in (2, 3, 41, 1500):
            got = ds.performance(db, D0, D0 + DAY_MS, tier=tier, max_points=max_points)
            assert got.overall.max_drawdown_r == pytest.approx(want.overall, abs=1e-9)
            assert {g.key: g.summary.max_drawdown_r for g in got.by_symbol} == {
                k: pytest.approx(v, abs=1e-9) for k, v in want.by_symbol.items()
            }
            assert {g.key: g.summary.max_drawdown_r for g in got.by_tier} == {
                k: pytest.approx(v, abs=1e-9) for k, v in want.by_tier.items()
            }
            curve = st.equity_curve(points, max_points)
            assert [t for t, _ in got.curve] == [t for t, _ in curve], (tier, max_points)
            assert [r for _, r in got.curve] == pytest.approx([r for _, r in curve], abs=1e-9)
    assert len(ds.performance(db, D0, D0 + DAY_MS, max_points=1500).curve) == len(made)  # not thinned


def test_performance_reads_a_bounded_result_not_every_signal(db: Database) -> None:
    made = _ended_mix(db)
    fetched: list[int] = []

    def count_rows(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            fetched.append(cursor.rowcount)

    sa.event.listen(db.engine, "after_cursor_execute", count_rows)
    try:
        got = ds.performance(db, D0, D0 + DAY_MS, max_points=20)
    finally:
        sa.event.remove(db.engine, "after_cursor_execute", count_rows)
    assert got.overall.signals_generated == len(made) == 300
    assert len(got.curve) <= 20
    # the groups (4 symbols + 3 tiers + everything), their drawdowns, the thinned curve: never a row per signal
    assert fetched and max(fetched) <= 20, fetched


def test_calibration_is_measured_over_triggered_signals_only(db: Database) -> None:
    store_finished(
        db,
        [
            finished("BTCUSDT", D0, 1.45, confidence=0.72, tp1=True),
            finished("BTCUSDT", D0 + 1, -1.05, confidence=0.74),
            finished("ETHUSDT", D0 + 2, 0.0, confidence=0.78, triggered=False),
            finished("ETHUSDT", D0 + 3, 0.0, confidence=0.79, triggered=False),
            finished(
                "SOLUSDT", D0 + 4, 0.0, confidence=0.31, triggered=False
            ),  # a decile with none triggered
        ],
    )
    bands, cal = ds.quality(db, D0, D0 + DAY_MS)
    (decile,) = cal
    assert decile.label == "0.7–0.8"
    assert decile.tally.signals == decile.tally.triggered == 2
    assert decile.mean_confidence == pytest.approx(0.73)  # not 0.7575, the mean with the untriggered
    assert decile.tp1_rate == 0.5
    assert sum(b.tally.signals for b in bands) == 5  # quality bands count every finished signal
    # the scatter shows the last signals to end: the two triggered ones (they ended a second later)
    assert ds.quality_points(db, D0, D0 + DAY_MS, limit=2) == [("HIGH", 80, -1.05), ("HIGH", 80, 1.45)]


def test_bad_requests_and_an_unreachable_database(db: Database) -> None:
    with pytest.raises(ValueError, match="tier must be one of"):
        ds.performance(db, 0, 1, tier="URGENT")
    with pytest.raises(ValueError, match="empty period"):
        ds.quality(db, 5, 5)
    with pytest.raises(ValueError, match="limit"):
        ds.quality_points(db, 0, 1, limit=0)
    empty = ds.performance(db, 0, D0)
    assert empty.overall.signals_generated == 0 and empty.by_symbol == [] and empty.curve == []
    down = Database(closed_url("postgresql"), connect_timeout=2)
    try:
        with pytest.raises(StorageUnavailable, match="TAPEWATCH_DATABASE_URL"):
            ds.performance(down, 0, D0)
    finally:
        down.dispose()
