"""The rolling weight log: expiry, the snapshot pool and how the server's count corrects the total."""

from __future__ import annotations

import pytest

from tapewatch.adapters.weight_log import WeightLog


def test_entries_leave_the_window_after_exactly_its_length() -> None:
    log = WeightLog(60)
    log.reserve(0.0, 5, "general")
    log.reserve(10.0, 20, "snapshot")
    log.prune(59.999)
    assert (log.used, log.snapshot_used, log.in_flight) == (25, 20, 2)
    log.prune(60.0)
    assert (log.used, log.snapshot_used) == (20, 20)
    assert log.free_at(20) == 70.0 and log.free_at(21) == float("inf")
    log.prune(70.0)
    assert (log.used, log.snapshot_used) == (0, 0)


def test_requests_in_flight_are_not_counted_twice_when_the_server_already_has_them() -> None:
    log = WeightLog(60)
    entries = [log.reserve(0.0, 20, "snapshot") for _ in range(3)]
    # the last one sent is answered first, and the server has counted all three by then
    assert log.answer(entries[2], 60, 0.0) == (0, 0)
    assert log.used == 60
    # someone else on this IP: weight beyond ours answered and in flight is added
    assert log.answer(entries[0], 100, 0.0) == (40, 0)
    assert log.used == 100


def test_an_older_answer_never_lowers_the_count_but_the_freshest_does() -> None:
    log = WeightLog(60)
    first, second = log.reserve(0.0, 10, "general"), log.reserve(0.0, 10, "general")
    assert log.answer(second, 20, 1.0) == (0, 0)
    assert log.answer(first, 10, 1.0) == (0, 0)  # stale: carries the count from before "second"
    assert log.used == 20
    third = log.reserve(2.0, 5, "snapshot")
    assert log.answer(third, 5, 2.0) == (0, 20)  # fresh: the server's minute rolled over
    assert (log.used, log.snapshot_used) == (5, 5)  # the pool keeps its own reservations


def test_answering_twice_or_without_a_count_changes_nothing() -> None:
    log = WeightLog(60)
    entry = log.reserve(0.0, 7, "general")
    assert log.answer(entry, None, 0.0) == (0, 0)
    assert log.answer(entry, 1000, 0.0) == (0, 0)
    assert (log.used, log.in_flight) == (7, 0)


def test_forgetting_an_unsent_reservation_gives_its_weight_back_once() -> None:
    log = WeightLog(60)
    entry = log.reserve(0.0, 20, "snapshot")
    log.forget(entry, 1.0)
    assert (log.used, log.snapshot_used, log.in_flight) == (0, 0, 0)
    late = log.reserve(0.0, 5, "general")
    log.forget(late, 61.0)  # already out of the window: nothing to subtract twice
    assert log.used == 0


def test_a_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window must be > 0"):
        WeightLog(0)
