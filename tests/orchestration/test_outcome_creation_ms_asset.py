"""``signal_outcomes`` against the simulator: the trade of the creation millisecond that came after the
signal (its aggTrade id above the stored ``created_after_agg_id``) triggers it, as it did live.

The simulator's history trades four times a minute (the open at 0 s, the extremes at 15 and 30 s, the high
first when the candle closes down, the close at 59 s), one aggTrade a millisecond; a signal made on a depth
diff in the millisecond of the 15 s trade, before that trade was applied, records the id before it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from realtime.sim import SimExchange
from tapewatch.outcome import OutcomeParams, OutcomeState, OutcomeTracker
from tapewatch.outcome_batch import last_end
from tapewatch.signal_follow import open_signal
from tests.orchestration.test_performance_assets import (
    FEE,
    M,
    klines,
    make_signal,
    minute_counts,
    serve_sim,
    settle_yesterday,
)


def agg_trades_with_ids(sim: SimExchange, symbol: str, start: int, end: int) -> list[tuple[int, float, int]]:
    resp = httpx.get(
        f"{sim.rest_url}/fapi/v1/aggTrades",
        params={"symbol": symbol, "startTime": start, "endTime": end, "limit": 1000},
        timeout=10,
    )
    resp.raise_for_status()
    rows: list[dict[str, Any]] = resp.json()
    return [(int(r["T"]), float(r["p"]), int(r["a"])) for r in rows]


def test_a_trade_of_the_creation_millisecond_after_the_signal_triggers_it(
    migrated_database_url: str, tmp_path: Path
) -> None:
    """A LONG entering at the high of a minute that closes down, created in the millisecond of that high (15 s)
    before its trade: that trade triggers it, the low at 30 s (under the stop) stops it, gapped through. Nothing
    else in the 60 s window reaches the entry: before, the creation millisecond was left out and the signal
    expired untriggered."""
    today = int(time.time() * 1000) // 86_400_000 * 86_400_000
    day = today - 86_400_000
    with serve_sim(today) as exchange:
        rows = klines(exchange, "BTCUSDT", day, day + 1439 * M)
        ohlc = [tuple(float(x) for x in r[1:5]) for r in rows]
        for i in range(60, 1380):  # a down minute (its high at 15 s, its low at 30 s) above the next one
            o, high, low, c = ohlc[i]
            if c < o and ohlc[i + 1][1] < high and high - low > high * 0.001:
                break
        else:
            pytest.fail("no suitable minute in the simulated history")
        created = day + i * M + 15_000
        [(t, price, creating_id)] = agg_trades_with_ids(exchange, "BTCUSDT", created, created)
        assert (t, price) == (created, high)  # as described
        stop = (high + low) / 2
        sig = msgspec.structs.replace(
            make_signal("BTCUSDT", created, high, stop, high * 1.01, high * 1.02),
            created_after_agg_id=creating_id - 1,
        )
        # the live tracker, fed the trades applied after the signal (ids above the one it recorded)
        tracker = OutcomeTracker(open_signal(sig), OutcomeParams())
        for t, p, a in agg_trades_with_ids(exchange, "BTCUSDT", created - 15_000, created + 2 * M):
            if a > creating_id - 1:
                tracker.on_trade(t, p)
        tracker.on_time(last_end(open_signal(sig), OutcomeParams()) + 1)
        live = tracker.outcome()
        got, meta = settle_yesterday(exchange, sig, day, migrated_database_url, tmp_path)
    expected_r = ((low - high) - FEE * (high + low)) / (high - stop)
    assert live.state is OutcomeState.STOPPED and live.pnl_r == pytest.approx(expected_r)
    assert got.state is OutcomeState.STOPPED and got.trigger_time == created
    assert (got.exit_time, got.exit_price) == (created + 15_000, low)
    assert (got.state, got.trigger_time, got.exit_time, got.exit_price) == (
        live.state,
        live.trigger_time,
        live.exit_time,
        live.exit_price,
    )
    assert got.pnl_r == pytest.approx(live.pnl_r)
    assert minute_counts(meta) == {"creation_minute_exact": 1}
    assert meta["written"] == 1
