"""The per-stream stale rule on its own, on a given clock: which silent stream reconnects its connection,
how a stream that keeps going silent backs off, and what unsubscribing forgets."""

from __future__ import annotations

from collections import Counter

import pytest

from realtime.ws_watchdog import DECAY_AFTER, MAX_DOUBLINGS, StaleVerdict, StreamWatch, is_continuous

DEPTH, TICKER, TRADES = "btcusdt@depth@100ms", "btcusdt@bookTicker", "btcusdt@aggTrade"
SPARSE = "xyzusdt@bookTicker"
STALE = 15.0


class Connection:
    """One slot's connection as the watch sees it: a clock, each stream's last frame, frame counts."""

    def __init__(self, watch: StreamWatch, streams: list[str]) -> None:
        self.watch = watch
        self.now = 1000.0
        self.frames: Counter[str] = Counter()
        self.last: dict[str, float] = dict.fromkeys(streams, self.now)
        self.reconnects: list[tuple[str, ...]] = []

    def deliver(self, stream: str) -> None:
        self.frames[stream] += 1
        self.last[stream] = self.now

    def check(self, *, may_reconnect: bool = True) -> StaleVerdict:
        silences = {s: self.now - at for s, at in self.last.items()}
        verdict = self.watch.check(silences, self.frames, now=self.now, may_reconnect=may_reconnect)
        if verdict.reconnect_for:
            self.reconnects.append(verdict.reconnect_for)
            self.watch.connection_ended()
            self.last = dict.fromkeys(self.last, self.now)  # the new connection subscribes them anew
        return verdict

    def wait(self, seconds: float, *, step: float = 1.0) -> list[StaleVerdict]:
        """Let ``seconds`` pass with a look every ``step`` (the slot's tick); every verdict that said something."""
        said = []
        end = self.now + seconds
        while self.now + step <= end + 1e-9:
            self.now += step
            verdict = self.check()
            if verdict != StaleVerdict():
                said.append(verdict)
        return said


@pytest.mark.parametrize(
    ("stream", "continuous"),
    [
        (DEPTH, True),
        ("btcusdt@depth", True),
        (TICKER, True),
        ("btcusdt@markPrice@1s", True),
        (TRADES, False),
        ("btcusdt@trade", False),
        ("btcusdt@kline_1m", False),
        ("not a stream", False),
    ],
)
def test_only_streams_binance_pushes_at_a_fixed_pace_are_continuous(stream: str, continuous: bool) -> None:
    assert is_continuous(stream) is continuous


def test_a_silent_trade_stream_is_reported_never_a_reconnect() -> None:
    watch = StreamWatch(STALE)
    assert watch.check({TRADES: 15}, Counter(), now=0, may_reconnect=True) == StaleVerdict(reported=(TRADES,))
    assert watch.check({TRADES: 900}, Counter(), now=1, may_reconnect=True) == StaleVerdict()  # once
    assert watch.reported == {TRADES}
    verdict = watch.check({TRADES: 0}, Counter({TRADES: 1}), now=2, may_reconnect=True)
    assert verdict == StaleVerdict(resumed=(TRADES,))
    assert watch.reported == set()


def test_a_stream_silent_for_less_than_stale_after_is_not_silent() -> None:
    watch = StreamWatch(STALE)
    assert watch.check({DEPTH: 14.9, TRADES: 14.9}, Counter(), now=0, may_reconnect=True) == StaleVerdict()


def test_a_silent_continuous_stream_reconnects_once_until_it_delivers_again() -> None:
    conn = Connection(StreamWatch(STALE), [DEPTH, TRADES])
    conn.frames[DEPTH] = 7
    conn.now += STALE
    assert conn.check() == StaleVerdict(reconnect_for=(DEPTH,))
    assert conn.watch.suspects == {DEPTH}
    # silent again on the new connection: a quiet market, reported (and counted as quiet), no reconnect,
    # however long it stays silent
    said = conn.wait(10 * 60)
    assert said[0] == StaleVerdict(reported=(TRADES, DEPTH), quiet=(DEPTH,))
    assert said[1:] == [] and len(conn.reconnects) == 1
    # it delivered: trusted again, so a long enough silence reconnects again
    conn.deliver(DEPTH)
    assert conn.check() == StaleVerdict(resumed=(DEPTH,))
    assert conn.watch.suspects == set()
    said = conn.wait(2 * STALE)
    assert said[-1] == StaleVerdict(reconnect_for=(DEPTH,)) and len(conn.reconnects) == 2


def test_each_repeat_reconnect_for_the_same_stream_needs_twice_the_silence_up_to_a_cap() -> None:
    conn = Connection(StreamWatch(STALE), [SPARSE, DEPTH])
    for strikes in range(MAX_DOUBLINGS + 3):
        limit = STALE * 2 ** min(strikes, MAX_DOUBLINGS)
        assert conn.watch.limit(SPARSE) == limit
        conn.deliver(SPARSE)
        conn.deliver(DEPTH)
        conn.check()
        reconnects = len(conn.reconnects)
        # silent just short of its limit (the depth stream flowing): reported at stale_after, no reconnect
        for _ in range(int(limit) - 1):
            conn.now += 1
            conn.deliver(DEPTH)
            conn.check()
        assert len(conn.reconnects) == reconnects
        assert conn.watch.reported == ({SPARSE} if limit > STALE else set())
        conn.now += 1
        assert conn.check() == StaleVerdict(reconnect_for=(SPARSE,))
        assert conn.watch.strikes(SPARSE) == min(strikes + 1, MAX_DOUBLINGS)
    assert conn.watch.limit(SPARSE) == STALE * 2**MAX_DOUBLINGS


def test_a_sparse_book_stream_does_not_reconnect_its_connection_every_silence() -> None:
    """An illiquid symbol's bookTicker: Binance pushes it when the top changes, here once every 20 s."""
    conn = Connection(StreamWatch(STALE), [SPARSE, DEPTH])
    reports = 0
    for _ in range(30):  # ten minutes
        for _ in range(20):
            conn.now += 1
            conn.deliver(DEPTH)
            reports += len(conn.check().reported)
        conn.deliver(SPARSE)
    assert conn.reconnects == [(SPARSE,)]  # the first silence only; then 20 s stays under its 30 s limit
    assert reports == 29  # each later silence is reported once
    assert conn.watch.strikes(SPARSE) == 1  # never flowed an hour without a 15 s silence: not forgiven


def test_a_strike_is_forgiven_after_an_hour_of_flow_without_a_stale_silence() -> None:
    conn = Connection(StreamWatch(STALE), [DEPTH, TICKER])

    def flow(seconds: int, streams: tuple[str, ...], *, step: int = 1) -> None:
        for _ in range(seconds // step):
            conn.now += step
            for stream in streams:
                conn.deliver(stream)
            conn.check()

    flow(int(STALE), (TICKER,))
    assert conn.reconnects == [(DEPTH,)]
    flow(10, (DEPTH, TICKER), step=10)
    assert conn.watch.strikes(DEPTH) == 1 and conn.watch.limit(DEPTH) == 2 * STALE
    flow(int(DECAY_AFTER) - 20, (DEPTH, TICKER), step=10)  # a frame every 10 s, for just under an hour
    assert conn.watch.strikes(DEPTH) == 1
    flow(10, (DEPTH, TICKER), step=10)
    assert conn.watch.strikes(DEPTH) == 0 and conn.watch.limit(DEPTH) == STALE
    # a broken stream is again caught after stale_after
    flow(int(STALE) - 1, (TICKER,))
    assert len(conn.reconnects) == 1
    flow(1, (TICKER,))
    assert conn.reconnects == [(DEPTH,), (DEPTH,)]


def test_one_reconnect_serves_every_continuous_stream_silent_at_that_moment() -> None:
    watch = StreamWatch(STALE)
    verdict = watch.check({TICKER: 20, DEPTH: 15}, Counter(), now=0, may_reconnect=True)
    assert verdict == StaleVerdict(reconnect_for=(TICKER, DEPTH))
    assert watch.suspects == {DEPTH, TICKER}
    assert watch.strikes(DEPTH) == watch.strikes(TICKER) == 1


def test_during_a_rollover_a_silent_continuous_stream_is_only_reported() -> None:
    watch = StreamWatch(STALE)
    assert watch.check({DEPTH: 15}, Counter(), now=0, may_reconnect=False) == StaleVerdict(reported=(DEPTH,))
    assert watch.suspects == set() and watch.strikes(DEPTH) == 0  # it has not had its reconnect yet
    assert watch.check({DEPTH: 16}, Counter(), now=1, may_reconnect=True) == StaleVerdict(
        reconnect_for=(DEPTH,)
    )


def test_an_unsubscribed_stream_is_forgotten_not_reported_resumed() -> None:
    watch = StreamWatch(STALE)
    quiet = "abcusdt@aggTrade"
    assert watch.check({quiet: 15}, Counter(), now=0, may_reconnect=True) == StaleVerdict(reported=(quiet,))
    watch.keep_only([])  # its symbol leaves the universe
    assert watch.reported == set()
    # still on the connection until the paced UNSUBSCRIBE goes out: not judged, so not reported again
    assert watch.check({quiet: 16}, Counter(), now=1, may_reconnect=True) == StaleVerdict()
    # gone from the connection: nothing to say either (it did not resume)
    assert watch.check({}, Counter(), now=2, may_reconnect=True) == StaleVerdict()
    assert watch.reported == set()


def test_a_stream_that_left_the_wanted_set_comes_back_trusted() -> None:
    watch = StreamWatch(STALE)
    watch.check({DEPTH: 15, TICKER: 15}, Counter(), now=0, may_reconnect=True)
    watch.check({DEPTH: 15, TICKER: 15}, Counter(), now=15, may_reconnect=True)
    watch.keep_only([TICKER])
    assert watch.suspects == {TICKER} and watch.strikes(TICKER) == 1
    assert watch.strikes(DEPTH) == 0 and watch.limit(DEPTH) == STALE
    watch.keep_only([DEPTH, TICKER])
    verdict = watch.check({DEPTH: 15, TICKER: 900}, Counter(), now=30, may_reconnect=True)
    assert verdict == StaleVerdict(reconnect_for=(DEPTH,))  # TICKER is still suspect


def test_the_rule_needs_sane_parameters() -> None:
    with pytest.raises(ValueError, match="stale_after"):
        StreamWatch(0)
