"""The signal engine across a confirmed clock jump: trades the jump releases are followed before the new clock
expires anything (:mod:`tapewatch.market_clock`, ``SymbolState.caught_up``)."""

from __future__ import annotations

from tapewatch.market_clock import CLOCK_TOLERANCE_MS
from tapewatch.parse import Frame
from tests.tapewatch.test_market_clock import engine_following, priced_trade


def test_a_stop_touched_by_a_released_trade_wins_over_the_hold_expiring_on_the_same_frame() -> None:
    """BTC's trade far ahead touches the stop 10 s before the hold ends and is held for a jump; ETH's and SOL's
    diffs 20 and 30 s after the hold's end confirm it, on SOL's frame, whose new clock is past the hold. The
    released trade must reach the follower before that clock expires the signal: STOPPED, not EXPIRED (BTC's
    next trade frame, which would have delivered it, comes too late)."""
    engine, signal, feed = engine_following("BTCUSDT")
    market, t = feed.market, signal.event_time
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        feed.synced(symbol, t)
    exits: list[str | None] = []
    finished: list[str] = []

    def both(frame: Frame) -> None:
        if (out := engine.on_frame(frame)) is not None:
            exits.extend(s.exit_reason for s in out.signals)
            finished.extend(o.state for o in out.finished)

    both(priced_trade(feed, "BTCUSDT", t + 1_000, signal.entry_price))  # triggers the LONG
    hold_end = t + 1_000 + engine.outcome_params.hold_ms[signal.priority]
    touch = hold_end - 10_000
    assert touch > t + CLOCK_TOLERANCE_MS  # far ahead of the clock: held, not applied
    both(priced_trade(feed, "BTCUSDT", touch, signal.stop_loss - 0.01))
    both(feed.diff("ETHUSDT", hold_end + 20_000))
    assert market.totals()["event_time_jumps"] == 0 and exits == []
    both(feed.diff("SOLUSDT", hold_end + 30_000))  # confirms: the clock is past the hold now
    assert market.totals()["event_time_jumps"] == 1 and market.now_ms > hold_end
    assert exits == ["STOP"] and finished == ["STOPPED"] and engine.open == {}
    assert market.symbols["BTCUSDT"].caught_up == []  # followed once: BTC's next frame brings nothing twice
    both(priced_trade(feed, "BTCUSDT", hold_end + 31_000, signal.entry_price))
    assert exits == ["STOP"]
