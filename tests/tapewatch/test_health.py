"""The pure decisions of the health sensors: streaks, connectivity, overload, shrinking, cursors."""

from __future__ import annotations

import msgspec
import pytest

from tapewatch.health import (
    PendingIncident,
    Streak,
    Transition,
    connectivity_problems,
    decode_state,
    encode_state,
    overload,
    queued,
    shrunk_universe,
)


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


def test_connectivity_problems_name_each_cause() -> None:
    assert connectivity_problems(rest_error=None, heartbeat_age_s=2.0, heartbeat_max_age_s=30) == []
    problems = connectivity_problems(
        rest_error="ConnectError: refused", heartbeat_age_s=None, heartbeat_max_age_s=30
    )
    assert problems == [
        "Binance REST ping failed: ConnectError: refused",
        "no realtime heartbeat (the service is down or Redis is unreadable)",
    ]
    assert connectivity_problems(rest_error=None, heartbeat_age_s=45.0, heartbeat_max_age_s=30) == [
        "realtime heartbeat is 45 s old (> 30 s)"
    ]


def test_overload_is_strictly_above_the_threshold() -> None:
    assert overload(cpu_percent=80, memory_percent=85, cpu_threshold=80, memory_threshold=85) == []
    assert overload(cpu_percent=80.5, memory_percent=90, cpu_threshold=80, memory_threshold=85) == [
        "CPU 80 % > 80 %",
        "memory 90 % > 85 %",
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
