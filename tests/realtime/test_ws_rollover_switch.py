"""The rollover hand-over between two connections carrying the same streams (pure, no sockets)."""

from __future__ import annotations

import random

import pytest

from realtime.ws_rollover import Item, RolloverSwitch


def frame(n: int, stream: str = "btcusdt@depth@100ms") -> Item:
    return (1000 + n, b'{"s":"%s","u":%d}' % (stream.encode(), n))


def seqs(items: list[Item]) -> list[int]:
    return [int(raw.rsplit(b":", 1)[1].rstrip(b"}")) for _, raw in items]


S = "btcusdt@depth@100ms"


def test_new_connection_ahead_switches_when_old_delivers_the_first_held_frame() -> None:
    switch = RolloverSwitch([S])
    out: list[Item] = []
    out += switch.from_old(S, frame(1))
    out += switch.from_new(S, frame(3))  # new is ahead: held back
    out += switch.from_new(S, frame(4))
    out += switch.from_old(S, frame(2))
    assert not switch.complete
    out += switch.from_old(S, frame(3))  # switch point: old's copy, then new's held 4
    assert switch.complete
    out += switch.from_old(S, frame(4))  # old's copies are dropped from now on
    out += switch.from_old(S, frame(5))
    out += switch.from_new(S, frame(5))
    assert seqs(out) == [1, 2, 3, 4, 5]
    assert switch.duplicates_dropped == 3  # new's 3, old's 4 and 5
    assert switch.finish() == {}


def test_new_connection_behind_drops_what_old_already_delivered() -> None:
    switch = RolloverSwitch([S])
    out: list[Item] = []
    for n in (1, 2, 3, 4):
        out += switch.from_old(S, frame(n))
    out += switch.from_new(S, frame(2))  # switch point; new still owes 3 and 4
    assert not switch.complete
    out += switch.from_old(S, frame(5))  # dropped: new will bring it
    out += switch.from_new(S, frame(3))
    out += switch.from_new(S, frame(4))
    assert switch.complete
    out += switch.from_new(S, frame(5))
    out += switch.from_new(S, frame(6))
    assert seqs(out) == [1, 2, 3, 4, 5, 6]
    assert switch.finish() == {}


def test_streams_switch_independently() -> None:
    other = "ethusdt@aggTrade"
    switch = RolloverSwitch([S, other])
    switch.from_old(S, frame(1))
    assert switch.from_new(S, frame(1)) == []
    assert switch.pending() == {other}
    assert switch.from_old(other, frame(7, other)) == [frame(7, other)]
    assert not switch.complete


def test_a_stream_silent_on_both_sides_is_handed_over_silently() -> None:
    switch = RolloverSwitch([S, "ethusdt@kline_15m"])
    switch.from_old(S, frame(1))
    switch.from_new(S, frame(1))
    assert switch.finish() == {}  # no restart marker needed


def test_no_switch_point_means_a_restart_with_the_held_frames() -> None:
    switch = RolloverSwitch([S, "a@aggTrade", "b@aggTrade"])
    switch.from_old(S, frame(1))
    assert switch.from_new(S, (5, b'{"other":1}')) == []  # copies differ
    switch.from_old("a@aggTrade", frame(1, "a@aggTrade"))  # new never delivered this one
    restart = switch.finish()
    assert restart == {S: [(5, b'{"other":1}')], "a@aggTrade": []}
    # After the overlap every stream comes from the new connection only.
    assert switch.from_old(S, frame(2)) == []
    assert switch.from_new("b@aggTrade", frame(3, "b@aggTrade")) == [frame(3, "b@aggTrade")]


def test_disagreeing_copies_are_not_spliced() -> None:
    switch = RolloverSwitch([S])
    switch.from_new(S, frame(8))
    switch.from_new(S, frame(9))
    assert switch.from_old(S, frame(9)) == [frame(9)]  # 9 found but not first: no clean point
    assert switch.mismatches == 1
    assert switch.from_old(S, frame(8)) == [frame(8)]
    assert not switch.complete
    assert switch.finish() == {S: [frame(8), frame(9)]}


def test_owed_frame_that_never_comes_is_not_waited_for_forever() -> None:
    switch = RolloverSwitch([S])
    for n in (1, 2, 3):
        switch.from_old(S, frame(n))
    switch.from_new(S, frame(1))  # owes 2 and 3
    assert switch.from_new(S, frame(4)) == [frame(4)]  # 2 skipped: deliver rather than lose
    assert switch.mismatches == 1
    assert switch.complete


def test_streams_not_in_the_rollover_pass_through() -> None:
    switch = RolloverSwitch([S])
    assert switch.from_old("x@trade", frame(1, "x@trade")) == [frame(1, "x@trade")]
    assert switch.from_new("y@trade", frame(1, "y@trade")) == [frame(1, "y@trade")]


@pytest.mark.parametrize("seed", range(40))
def test_any_interleaving_of_two_ordered_copies_gives_every_frame_once(seed: int) -> None:
    """Events 0..N-1 published one per time unit; old sees all, new subscribes at event ``start``; each
    connection has its own drifting, order-keeping latency (even seeds: new ahead, odd: new behind).
    Delivered must be exactly 0..N-1, in order, and the switch must find its point."""
    rng = random.Random(seed)
    n = 200
    start = rng.randrange(0, 40)
    lag = {"old": rng.uniform(0, 5), "new": 0.0} if seed % 2 == 0 else {"old": 0.0, "new": rng.uniform(0, 5)}
    timeline: list[tuple[float, bool, int]] = []  # (arrival time, from old?, seq)
    for conn, first in (("old", 0), ("new", start)):
        arrival = 0.0
        drift = 0.0
        for seq in range(first, n):
            drift = min(1.0, max(0.0, drift + rng.uniform(-0.3, 0.3)))
            arrival = max(arrival, seq + lag[conn] + drift)  # a connection delivers in order
            timeline.append((arrival, conn == "old", seq))
    timeline.sort(key=lambda a: (a[0], rng.random()))
    switch = RolloverSwitch([S])
    out: list[Item] = []
    for _, from_old, seq in timeline:
        out += (switch.from_old if from_old else switch.from_new)(S, frame(seq))
    assert switch.complete
    assert switch.finish() == {}
    assert seqs(out) == list(range(n))
    assert switch.mismatches == 0
