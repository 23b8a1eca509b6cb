"""The risk gate re-run of monthly tuning (tapewatch.tuning_gate): a parameter set scores only the candidates
its own signals would have let through, walked in event time order through the live gate's rules."""

from __future__ import annotations

from tapewatch.quality import Breakpoints
from tapewatch.risk import RiskParams
from tapewatch.settings import load_settings
from tapewatch.tuning import tune
from tapewatch.tuning_gate import admitted, risk_gate
from tapewatch.tuning_params import current_parameters
from tapewatch.tuning_score import Sample, _breakpoints, score, score_views

M = 60_000
DAY = 86_400_000
T0 = 1_800_000_000_000 - 1_800_000_000_000 % DAY  # a UTC midnight
PARAMS = current_parameters(load_settings())
RISK = RiskParams()


def cand(n: int, t: int, *, symbol: str | None = None, short: bool = False, pnl_r: float = 1.0,
         hold: int = 30 * M, stopped: bool = False, paused: bool = False, quality: int = 85) -> Sample:  # fmt: skip
    """A candidate every set of the tests keeps (strong features), HIGH by its score, ending ``hold`` after it."""
    return Sample(
        event_time=t,
        direction="SHORT" if short else "LONG",
        imbalance=-0.9 if short else 0.9,
        large_buys=1 if short else 6,
        large_sells=6 if short else 1,
        volume_intensity=3.0,
        tier="HIGH",
        pnl_r=pnl_r,
        triggered=True,
        quality_score=quality,
        key=f"c{n}",
        symbol=symbol or f"S{n}USDT",
        end_time=t + hold,
        stopped_out=stopped,
        paused=paused,
    )


def keys(samples: list[Sample]) -> list[str]:
    views = [s.view(PARAMS["large_trade_size"], _bp()) for s in samples]
    return [v.sample.key for v in admitted(views, RISK)]


def _bp() -> Breakpoints:
    return _breakpoints(PARAMS)


def test_at_most_max_concurrent_are_open_and_a_finished_one_frees_its_place() -> None:
    """Seven candidates on seven symbols within a minute: the first five open, the next two are turned away
    (concurrency 5); one arriving after the first ended gets its place."""
    burst = [cand(n, T0 + n * 1000) for n in range(7)]
    later = cand(7, T0 + 31 * M)  # the first ends at T0 + 30 min
    assert keys([*burst, later]) == ["c0", "c1", "c2", "c3", "c4", "c7"]


def test_a_setup_held_back_and_signalled_later_counts_once() -> None:
    """The same symbol and direction while its signal is open: the live gate's r = 1 (correlation), so the
    re-check of a setup is not scored beside the signal it became; the other direction is not held back, and
    once the first has ended the symbol takes a new one."""
    first = cand(0, T0, symbol="BTCUSDT")
    again = cand(1, T0 + 5 * M, symbol="BTCUSDT")
    other_side = cand(2, T0 + 6 * M, symbol="BTCUSDT", short=True)
    after = cand(3, T0 + 40 * M, symbol="BTCUSDT")
    assert keys([first, again, other_side, after]) == ["c0", "c2", "c3"]


def test_a_stop_out_suppresses_the_symbols_next_three_candidates() -> None:
    """cooldown_after_loss (3): after a stop-out ends, the next three candidates on the symbol are turned away
    (whenever they come), the fourth passes; a win starts none."""
    lost = cand(0, T0, symbol="ETHUSDT", pnl_r=-1.0, stopped=True, hold=10 * M)
    nexts = [cand(n, T0 + (10 + 20 * n) * M, symbol="ETHUSDT", hold=5 * M) for n in range(1, 5)]
    assert keys([lost, *nexts]) == ["c0", "c4"]
    won = cand(0, T0, symbol="ETHUSDT", hold=10 * M)
    assert keys([won, *nexts]) == ["c0", "c1", "c2", "c3", "c4"]


def test_the_tier_daily_cap_counts_by_utc_day() -> None:
    """HIGH's max_daily (20): a 21st HIGH signal on the same UTC day is turned away, the next day's passes."""
    day = [cand(n, T0 + n * 40 * M, hold=30 * M) for n in range(21)]
    tomorrow = cand(21, T0 + DAY + M)
    assert keys([*day, tomorrow]) == [f"c{n}" for n in range(20)] + ["c21"]


def test_a_candidate_of_a_paused_moment_is_never_admitted() -> None:
    assert keys([cand(0, T0, paused=True), cand(1, T0 + M)]) == ["c1"]


def test_the_order_is_event_time_whatever_the_order_given() -> None:
    burst = [cand(n, T0 + n * 1000) for n in range(7)]
    assert keys(list(reversed(burst))) == ["c0", "c1", "c2", "c3", "c4"]


def test_score_counts_what_the_gate_turned_away_and_leaves_it_out() -> None:
    """With the gate, a set's result counts only the admitted candidates (R, wins) and says how many it turned
    away; without it, all of them, as before."""
    samples = [cand(n, T0 + n * 1000, pnl_r=float(n)) for n in range(7)]
    gated = score(samples, PARAMS, risk_gate(RISK))
    assert (gated.signals, gated.total_r, gated.gated) == (5, 0 + 1 + 2 + 3 + 4, 2)
    assert gated.to_json()["gated"] == 2
    whole = score(samples, PARAMS)
    assert (whole.signals, whole.total_r, whole.gated) == (7, 21, 0)
    views = [s.view(PARAMS["large_trade_size"], _bp()) for s in samples]
    assert score_views(views, PARAMS, risk_gate(RISK)) == gated


def test_tune_scores_every_set_and_the_current_one_through_the_gate() -> None:
    """A bursty fitting week (seven at once, twice) and judged week: the current set's in-sample result counts
    the ten the gate admits, and says it turned four away; without ``risk`` all fourteen count."""
    week = 7 * DAY
    now = T0 + 2 * week
    fit = [cand(20 * h + n, T0 + h * 3600_000 + n * 1000) for h in (1, 5) for n in range(7)]
    judge = [cand(10 + n, T0 + week + n * 1000) for n in range(7)]
    result = tune([*fit, *judge], PARAMS, now_ms=now, weeks=2, min_samples=1, risk=RISK)
    assert (result.current_in_sample.signals, result.current_in_sample.gated) == (10, 4)
    assert (result.current_out_of_sample.signals, result.current_out_of_sample.gated) == (5, 2)
    plain = tune([*fit, *judge], PARAMS, now_ms=now, weeks=2, min_samples=1)
    assert (plain.current_in_sample.signals, plain.current_in_sample.gated) == (14, 0)
