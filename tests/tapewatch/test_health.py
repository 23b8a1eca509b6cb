"""The pure decisions of the health sensors: streaks, connectivity, overload, shrinking, cursors."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tapewatch.errors import ConfigError
from tapewatch.health import (
    Connectivity,
    CpuAverage,
    FeedDwell,
    HostLoad,
    PendingIncident,
    RestoreWait,
    Streak,
    Transition,
    cpu_busy_total,
    decode_state,
    encode_state,
    heartbeat_load,
    judge_connectivity,
    overload,
    queued,
    shrunk_universe,
)
from tapewatch.settings import load_settings


def run(checks: list[bool], trip_after: int = 3, clear_after: int = 2) -> list[Transition]:
    streak = Streak()
    moves = []
    for failing in checks:
        streak, move = streak.step(failing, trip_after=trip_after, clear_after=clear_after)
        moves.append(move)
    return moves


def test_trips_after_n_consecutive_failures_only() -> None:
    n, t = Transition.NONE, Transition.TRIP
    assert run([True, True, False, True, True, True]) == [n, n, n, n, n, t]


def test_recovers_after_consecutive_passes_and_a_failure_resets_the_count() -> None:
    n, t, r = Transition.NONE, Transition.TRIP, Transition.RECOVER
    assert run([True] * 3 + [False, True, False, False]) == [n, n, t, n, n, n, r]


def test_escalates_every_trip_after_failures_while_tripped() -> None:
    moves = run([True] * 7, trip_after=2)
    assert moves == [
        Transition.NONE,
        Transition.TRIP,
        Transition.NONE,
        Transition.ESCALATE,
        Transition.NONE,
        Transition.ESCALATE,
        Transition.NONE,
    ]


def test_one_check_trips_at_once_and_bad_parameters_are_refused() -> None:
    assert Streak().step(True, trip_after=1, clear_after=1)[1] is Transition.TRIP
    with pytest.raises(ValueError, match=">= 1"):
        Streak().step(True, trip_after=0, clear_after=1)


def _judge(
    rest: str | None = None,
    age: float | None = 1.0,
    silent: float | None = 0.5,
    probe: str | None = None,
    backup_on: bool = False,
    ours: bool = False,
) -> Connectivity:
    return judge_connectivity(
        rest_error=rest,
        heartbeat_age_s=age,
        ws_silent_s=silent,
        probe_error=probe,
        backup_on=backup_on,
        backup_ours=ours,
        max_age_s=30,
    )


def test_connectivity_problems_name_each_cause() -> None:
    assert _judge() == Connectivity(problems=[], backup_failing=False, report="reported only")
    assert _judge(rest="ConnectError: refused", age=None).problems == [
        "Binance REST ping failed: ConnectError: refused",
        "no realtime heartbeat: its key expired, not renewed for longer than its TTL (the service is down or "
        "stalled), or Redis is unreadable",
    ]
    assert _judge(age=45.0).problems == ["realtime heartbeat is 45 s old (> 30 s)"]
    assert _judge(silent=31.0).problems == ["websockets delivered nothing for 31 s (> 30 s)"]
    assert _judge(backup_on=True, probe="no frame within 5 s").problems == [
        "websocket probe got no frame: no frame within 5 s"
    ]


def test_silent_websockets_with_rest_answering_call_for_the_backup_feed() -> None:
    assert _judge(silent=30.0).backup_failing is False  # boundary: silent for exactly the limit
    assert _judge(silent=30.5).backup_failing is True
    # a silence figure of a dead service is stale: that is the heartbeat's problem, and no backup can run
    dead = _judge(silent=300.0, age=None)
    assert dead.backup_failing is False and "not running" in dead.report
    assert _judge(silent=None).problems == []  # not published (an older service): not judged


def test_rest_down_never_calls_for_the_backup_feed() -> None:
    # (b) of the audit: REST down while the websockets deliver -> reported, the websockets stay on
    rest_down = _judge(rest="ConnectError: timed out", silent=0.2)
    assert rest_down.problems and rest_down.backup_failing is False
    assert "websockets deliver" in rest_down.report and "snapshots" in rest_down.report
    # both down: the backup feed would poll the dead REST API
    both = _judge(rest="ConnectError: timed out", silent=60.0)
    assert len(both.problems) == 2 and both.backup_failing is False
    assert "REST is down too" in both.report


def test_on_the_backup_feed_the_probe_decides_the_way_back() -> None:
    # the service's websockets are off by design: their silence is not judged, the probe is
    assert _judge(backup_on=True, ours=True, silent=600.0).backup_failing is False  # probe got a frame
    assert _judge(backup_on=True, ours=True, probe="refused").backup_failing is True  # stay on backup
    # the websockets are back while REST is down: this sensor's backup feed must go (it polls a dead API)
    assert _judge(backup_on=True, ours=True, rest="timed out").backup_failing is False
    # both down on our backup feed: stay as is (failing keeps it, no switch to websockets that are dead)
    assert _judge(backup_on=True, ours=True, rest="timed out", probe="refused").backup_failing is True
    # someone else's backup feed with the websockets dead and REST down: nothing to switch
    assert _judge(backup_on=True, rest="timed out", probe="refused").backup_failing is False


def test_overload_is_strictly_above_the_threshold() -> None:
    assert overload(cpu_percent=80, memory_percent=85, cpu_threshold=80, memory_threshold=85) == []
    assert overload(cpu_percent=80.5, memory_percent=90, cpu_threshold=80, memory_threshold=85) == [
        "CPU 80.5 % > 80 %",  # never "CPU 80 % > 80 %": the decimals it takes to read as above
        "memory 90 % > 85 %",
    ]
    assert overload(cpu_percent=80.04, memory_percent=85.6, cpu_threshold=80, memory_threshold=85) == [
        "CPU 80.04 % > 80 %",
        "memory 86 % > 85 %",
    ]
    with pytest.raises(ValueError, match="cpu_percent"):
        overload(cpu_percent=-1, memory_percent=0, cpu_threshold=80, memory_threshold=85)


def test_shrunk_universe_halves_down_to_the_floor() -> None:
    assert shrunk_universe(30, 5) == 15
    assert shrunk_universe(8, 5) == 5
    assert shrunk_universe(5, 5) is None
    assert shrunk_universe(3, 5) is None


class Memory(msgspec.Struct, frozen=True, kw_only=True):
    streak: Streak = msgspec.field(default_factory=Streak)
    cap: int | None = None


def test_state_round_trips_through_the_cursor_and_a_bad_cursor_starts_afresh() -> None:
    state = Memory(streak=Streak(failures=2, tripped=True), cap=12)
    assert decode_state(encode_state(state), Memory) == (state, None)
    assert decode_state(None, Memory) == (Memory(), None)
    fresh, warning = decode_state('{"streak": "nonsense"}', Memory)
    assert fresh == Memory()
    assert warning is not None and "afresh" in warning


def _change(n: int) -> PendingIncident:
    return PendingIncident(kind="data_quality", op="open" if n % 2 else "close", text=f"c{n}", at_ms=n)


def test_pending_incident_changes_keep_their_order_and_stay_bounded() -> None:
    pending: tuple[PendingIncident, ...] = ()
    for n in range(1, 6):
        pending = queued(pending, _change(n), limit=3)
    assert [c.text for c in pending] == ["c3", "c4", "c5"]  # the oldest went first
    # they survive the cursor, in order
    back = msgspec.json.decode(msgspec.json.encode(pending), type=tuple[PendingIncident, ...])
    assert back == pending
    with pytest.raises(ValueError, match="limit"):
        queued((), _change(1), limit=0)


def test_the_backup_feeds_dwell_doubles_with_each_failed_switch_back_up_to_its_maximum() -> None:
    dwell = FeedDwell.of(min_s=300, max_s=1000, max_age_s=30, trip_after=5, interval_s=30)
    assert [dwell.required_s(n) for n in range(4)] == [300, 600, 1000, 1000]
    assert dwell.wait_s(switched_ms=0, relapses=0, now_ms=100_000) == 200
    assert dwell.wait_s(switched_ms=0, relapses=1, now_ms=700_000) == 0
    # a switch on 299 s after a switch back: that switch back failed; at 300 s it had held
    assert dwell.relapsed(switched_back_ms=0, now_ms=299_000)
    assert not dwell.relapsed(switched_back_ms=0, now_ms=300_000)
    assert not dwell.relapsed(switched_back_ms=None, now_ms=1)


def test_the_probation_is_never_shorter_than_a_silence_takes_to_trip() -> None:
    # no dwell asked for: none, but a failed switch back is still recognised (30 s + 6 checks of 30 s)
    none = FeedDwell.of(min_s=0, max_s=3600, max_age_s=30, trip_after=5, interval_s=30)
    assert none.required_s(3) == 0 and none.probation_s == 210
    assert FeedDwell.of(min_s=600, max_s=60, max_age_s=30, trip_after=1, interval_s=30).required_s(2) == 600
    with pytest.raises(ValueError, match="trip_after=0"):
        FeedDwell.of(min_s=1, max_s=1, max_age_s=30, trip_after=0, interval_s=30)


def _host(seconds: list[float], *, start: float = 0.0, cpus: int = 2) -> list[float | None]:
    """What a :class:`CpuAverage` fed once a second says of a host busy ``seconds[i]`` % in second ``i``
    (its cumulative CPU times, as ``psutil.cpu_times`` counts them on ``cpus`` CPUs)."""
    average, busy, total, out = CpuAverage(), 0.0, 0.0, []
    out.append(average.add(start, busy, total))
    for i, percent in enumerate(seconds, 1):
        busy += cpus * percent / 100
        total += cpus
        out.append(average.add(start + i, busy, total))
    return out


def test_the_host_cpu_is_averaged_over_the_last_minute_not_read_over_one_second() -> None:
    """The audit's case: the heartbeat carried one second's CPU, so a demo host at 56-79 % with a 2-s burst
    (a Dagster run starting) read 100 % and the performance sensor cut the universe on it. Over the last
    60 s the burst is a point or so."""
    calm = [56.0, 79.0, 70.0, 65.0, 75.0, 61.0] * 20  # 2 minutes, 67.7 % on average
    readings = _host([*calm, 100.0, 100.0])
    assert readings[0] is None  # nothing to compare with yet
    assert readings[1] == pytest.approx(56.0)  # the first minute: since the first sample
    assert readings[-3] == pytest.approx(406 / 6)
    assert readings[-1] == pytest.approx(406 / 6 + 2 * 32 / 60, abs=0.5)  # ~69 %, not 100 %
    # an overload that lasts does show: a full minute at 95 % reads 95 %
    assert _host([*calm, *[95.0] * 60])[-1] == pytest.approx(95.0)


def test_the_cpu_average_covers_the_last_span_and_starts_afresh_when_counters_go_back() -> None:
    average = CpuAverage(span_s=10)
    for t in range(0, 31):  # 50 % for 20 s, then 100 %
        value = average.add(float(t), (min(t, 20) * 0.5 + max(0, t - 20)) * 2, t * 2.0)
    assert value == pytest.approx(100.0)  # the last 10 s only
    assert average.add(31.0, 0.0, 1.0) is None  # the host's counters restarted: a new history
    assert average.add(32.0, 0.5, 2.0) == pytest.approx(50.0)
    idle = CpuAverage()
    assert idle.add(0.0, 0.0, 5.0) is None and idle.add(1.0, 0.0, 5.0) is None  # no CPU time elapsed
    with pytest.raises(ValueError, match="span_s"):
        CpuAverage(span_s=0)


def test_busy_cpu_time_is_counted_as_psutil_counts_it() -> None:
    times = {"user": 10.0, "nice": 1.0, "system": 4.0, "idle": 80.0, "iowait": 3.0, "irq": 1.0,
             "softirq": 1.0, "steal": 0.0, "guest": 2.0, "guest_nice": 0.0}  # fmt: skip
    # guest time is already in user: not counted twice; idle and iowait are not busy
    busy, total = cpu_busy_total(times)
    assert busy == pytest.approx(17.0) and total == pytest.approx(100.0)


def test_a_check_between_the_restore_and_the_trip_thresholds_breaks_both_runs() -> None:
    assert Streak(failures=2).between() == (Streak(), Transition.NONE)  # an overload must be in a row
    tripped = Streak(passes=1, tripped=True)
    assert tripped.between() == (Streak(tripped=True), Transition.NONE)  # so must the calm
    assert tripped.step(False, trip_after=3, clear_after=2)[1] is Transition.RECOVER


def test_the_restore_waits_twice_as_long_after_each_failed_restore_up_to_its_maximum() -> None:
    wait = RestoreWait(clear_after=10, max_clear=60, probation_s=1800)
    assert [wait.required(n) for n in range(5)] == [10, 20, 40, 60, 60]
    assert wait.required(10_000) == 60 and wait.required(-1) == 10
    # a cut 29 min after a restore: the restore failed; 30 min after, it had held
    assert wait.relapsed(restored_ms=0, now_ms=1_799_000)
    assert not wait.relapsed(restored_ms=0, now_ms=1_800_000)
    assert not wait.relapsed(restored_ms=None, now_ms=1)
    with pytest.raises(ValueError, match="max_clear"):
        RestoreWait(clear_after=10, max_clear=5, probation_s=0)


def test_the_restore_thresholds_must_be_below_the_cut_thresholds() -> None:
    settings = load_settings()
    assert (settings.cpu_restore_threshold, settings.memory_restore_threshold) == (70, 75)
    assert settings.performance_trip_checks == 6  # 3 min of checks 30 s apart, not two readings
    cases: list[tuple[dict[str, Any], str]] = [
        ({"cpu_restore_threshold": 80}, "cpu_restore_threshold.*must be below cpu_threshold \\(80\\)"),
        (
            {"memory_threshold": 70, "memory_restore_threshold": 75},
            "memory_restore_threshold.*must be below memory_threshold \\(70\\)",
        ),
        ({"performance_max_clear_checks": 5}, "must be at least performance_clear_checks \\(10\\)"),
    ]
    for bad, message in cases:
        with pytest.raises(ConfigError, match=message):
            load_settings(**bad)


def test_settings_valid_before_the_restore_thresholds_still_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """TAPEWATCH_CPU_THRESHOLD=65, a memory threshold of 75 or less, or more than 120 clear checks were valid
    before the restore thresholds and the longest wait came, with fixed defaults that made them a ConfigError
    at the start of every process. Unset, those follow the settings they are bounded by."""
    monkeypatch.setenv("TAPEWATCH_CPU_THRESHOLD", "65")
    monkeypatch.setenv("TAPEWATCH_MEMORY_THRESHOLD", "70")
    monkeypatch.setenv("TAPEWATCH_PERFORMANCE_CLEAR_CHECKS", "200")
    settings = load_settings()
    assert (settings.cpu_restore_threshold, settings.memory_restore_threshold) == (55, 60)
    assert settings.performance_max_clear_checks == 200
    monkeypatch.setenv("TAPEWATCH_CPU_RESTORE_THRESHOLD", "50")  # set: kept as set
    monkeypatch.setenv("TAPEWATCH_PERFORMANCE_CLEAR_CHECKS", "20")
    settings = load_settings()
    assert (settings.cpu_restore_threshold, settings.performance_max_clear_checks) == (50, 120)


class _Beat(msgspec.Struct, frozen=True):
    host: str
    info: dict[str, float]


def test_the_load_of_the_heartbeats_is_the_worst_live_realtime_hosts() -> None:
    beats = {
        "realtime-0of2": _Beat("a", {"host_cpu": 85.0, "host_memory": 30.0}),
        "realtime-1of2": _Beat("b", {"host_cpu": 20.0, "host_memory": 90.0}),
        "dashboard": _Beat("c", {"host_cpu": 99.0, "host_memory": 99.0}),  # not a realtime instance
    }
    load = heartbeat_load(beats, "realtime", ["realtime-0of2", "realtime-1of2"])
    assert load == HostLoad(
        source="CPU: realtime-0of2 on a; memory: realtime-1of2 on b", cpu_percent=85.0, memory_percent=90.0
    )
    assert heartbeat_load({"realtime": None}, "realtime", []) is None
