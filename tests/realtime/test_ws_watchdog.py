"""The per-stream stale rule on its own: which silent stream reconnects its connection, and only once."""

from __future__ import annotations

from collections import Counter

import pytest

from realtime.ws_watchdog import StaleVerdict, StreamWatch, is_continuous

DEPTH, TICKER, TRADES = "btcusdt@depth@100ms", "btcusdt@bookTicker", "btcusdt@aggTrade"


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
    watch = StreamWatch()
    assert watch.check([TRADES], Counter(), may_reconnect=True) == StaleVerdict(reported=(TRADES,))
    assert watch.check([TRADES], Counter(), may_reconnect=True) == StaleVerdict()  # reported once
    assert watch.reported == {TRADES}
    assert watch.check([], Counter({TRADES: 1}), may_reconnect=True) == StaleVerdict(resumed=(TRADES,))
    assert watch.reported == set()


def test_a_silent_continuous_stream_reconnects_once_until_it_delivers_again() -> None:
    watch, frames = StreamWatch(), Counter({DEPTH: 7})
    assert watch.check([DEPTH, TRADES], frames, may_reconnect=True) == StaleVerdict(reconnect_for=(DEPTH,))
    assert watch.suspects == {DEPTH}
    watch.connection_ended()
    # silent again on the new connection: a quiet market, reported (and counted as quiet), no reconnect
    verdict = watch.check([DEPTH], frames, may_reconnect=True)
    assert verdict == StaleVerdict(reported=(DEPTH,), quiet=(DEPTH,))
    assert watch.check([DEPTH], frames, may_reconnect=True) == StaleVerdict()
    # it delivered: trusted again, so its next silence reconnects again
    frames[DEPTH] += 1
    assert watch.check([], frames, may_reconnect=True) == StaleVerdict(resumed=(DEPTH,))
    assert watch.suspects == set()
    assert watch.check([DEPTH], frames, may_reconnect=True) == StaleVerdict(reconnect_for=(DEPTH,))


def test_one_reconnect_serves_every_continuous_stream_silent_at_that_moment() -> None:
    watch = StreamWatch()
    verdict = watch.check([TICKER, DEPTH], Counter(), may_reconnect=True)
    assert verdict == StaleVerdict(reconnect_for=(TICKER, DEPTH))
    assert watch.suspects == {DEPTH, TICKER}


def test_during_a_rollover_a_silent_continuous_stream_is_only_reported() -> None:
    watch = StreamWatch()
    assert watch.check([DEPTH], Counter(), may_reconnect=False) == StaleVerdict(reported=(DEPTH,))
    assert watch.suspects == set()  # it has not had its reconnect yet
    assert watch.check([DEPTH], Counter(), may_reconnect=True) == StaleVerdict(reconnect_for=(DEPTH,))


def test_a_stream_that_left_the_wanted_set_comes_back_trusted() -> None:
    watch = StreamWatch()
    watch.check([DEPTH, TICKER], Counter(), may_reconnect=True)
    watch.keep_only([TICKER])
    assert watch.suspects == {TICKER}
