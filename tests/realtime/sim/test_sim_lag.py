"""The simulator falling behind its clock is reported once, then once a minute with what it skipped."""

from __future__ import annotations

from realtime.sim.lag import LagReport


def test_the_first_lag_is_reported_then_one_summary_a_minute() -> None:
    lag = LagReport(every_s=60.0)
    first = lag.behind(6_200, now_s=100.0)
    assert first is not None and first.startswith("simulation is 6.2 s behind its clock")
    assert "lower either" in first  # says what to do
    # every second for the next minute: counted, not logged
    assert [lag.behind(5_500, now_s=100.0 + k) for k in range(1, 60)] == [None] * 59
    summary = lag.behind(7_000, now_s=160.0)
    assert summary is not None
    assert summary.startswith(
        "simulation fell behind its clock 60 times in the last 60 s (331.5 s of simulated"
    )
    assert lag.times == 61
    # the next minute's count starts from the summary
    assert lag.behind(5_000, now_s=161.0) is None
    again = lag.behind(5_000, now_s=221.0)
    assert again is not None and "2 times in the last 61 s (10.0 s" in again
