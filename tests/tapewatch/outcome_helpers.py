"""Signals, trade paths and candles for the outcome, risk and metrics tests.

Every signal has entry 100 and R = 1 (LONG: stop 99, TP1 101, TP2 102; SHORT mirrored), so with the default
taker fee of 0.05 % a side the P&L of a part closed at ``x`` is ``sign·(x - 100) - 0.0005·(100 + x)`` R:
TP1 +0.8995, TP2 +1.899, stop -1.0995, entry -0.1.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from tapewatch.events import Candle
from tapewatch.outcome import OpenSignal, Outcome, OutcomeParams, OutcomeTracker, evaluate_candles
from tapewatch.quality import Tier
from tapewatch.rules import Direction

M1 = 60_000
#: Monday 2024-03-04 00:00:00 UTC, ms.
MONDAY = int(datetime(2024, 3, 4, tzinfo=UTC).timestamp() * 1000)

# Trade paths of a HIGH LONG signal created at t=0: (ms after creation, price). Chosen so the 1-minute candles
# built from them give the same outcome as the trades, except in "same_candle" (the candles' worst order).
SCENARIOS: dict[str, list[tuple[int, float]]] = {
    # TP1 at 5 min, TP2 at 15 min: 0.5·0.8995 + 0.5·1.899 = 1.39925 R
    "win": [(0, 100.0), (2 * M1, 100.5), (5 * M1, 101.0), (10 * M1, 101.5), (15 * M1, 102.0)],
    # stop at 3 min: -1.0995 R
    "loss": [(0, 100.0), (M1, 99.5), (3 * M1, 99.0)],
    # TP1 at 2 min, back to the entry (the moved stop) at 9 min: 0.5·0.8995 - 0.5·0.1 = 0.39975 R
    "break_even": [(0, 100.0), (2 * M1, 101.0), (6 * M1, 100.5), (9 * M1, 100.0)],
    # open until the 45-min hold bound; last price at the bound 100.4: 0.4 - 0.1002 = 0.2998 R
    "expiry": [(0, 100.0), (10 * M1, 100.6), (30 * M1, 100.4), (45 * M1, 100.4), (46 * M1, 100.8)],
    # never trades through 100 within the 60 s response window; 100.5 comes at 2 min, too late
    "untriggered": [(0, 99.8), (30_000, 99.9), (M1, 99.95), (2 * M1, 100.5)],
    # in minute 3: TP1 (101.2), back to the entry, then below the stop. Trades: TP1 then the moved stop at the
    # entry (0.39975 R); the minute's candle holds the stop and a target: the stop counts (-1.0995 R).
    "same_candle": [(0, 100.0), (3 * M1 + 5_000, 101.2), (3 * M1 + 20_000, 100.0), (3 * M1 + 40_000, 98.9)],
}


def make_signal(
    created: int = MONDAY,
    *,
    symbol: str = "BTCUSDT",
    direction: Direction = "LONG",
    tier: Tier = "HIGH",
    quality: float = 85,
    size: float = 0.5,
    signal_id: str | None = None,
) -> OpenSignal:
    s = 1.0 if direction == "LONG" else -1.0
    return OpenSignal(
        signal_id=signal_id or f"{symbol}-{direction}-{created}",
        symbol=symbol,
        direction=direction,
        tier=tier,
        created=created,
        entry=100.0,
        stop=100.0 - s,
        tp1=100.0 + s,
        tp2=100.0 + 2 * s,
        position_size=size,
        quality_score=quality,
    )


def mirror(trades: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    """The same path for a SHORT signal (prices reflected about the entry 100)."""
    return [(t, 200.0 - p) for t, p in trades]


def candles_from_trades(trades: Sequence[tuple[int, float]]) -> list[Candle]:
    """1-minute candles of absolute-time trades (one per minute that has trades)."""
    minutes: dict[int, list[float]] = {}
    for t, p in trades:
        minutes.setdefault(t - t % M1, []).append(p)
    return [
        Candle(
            open_time=start,
            close_time=start + M1 - 1,
            interval="1m",
            open=prices[0],
            close=prices[-1],
            high=max(prices),
            low=min(prices),
            volume=float(len(prices)),
            trades=len(prices),
            closed=True,
            quote_volume=sum(prices),
        )
        for start, prices in sorted(minutes.items())
    ]


def binance_candles(trades: Sequence[tuple[int, float]]) -> list[Candle]:
    """1-minute candles of absolute-time trades as Binance serves them: one for every minute from the first
    trade's to the last one's, a minute without trades being a zero-volume candle at the last price."""
    candles: list[Candle] = []
    for candle in candles_from_trades(trades):
        while candles and candles[-1].open_time + M1 < candle.open_time:
            last = candles[-1]
            start = last.open_time + M1
            candles.append(
                Candle(
                    open_time=start,
                    close_time=start + M1 - 1,
                    interval="1m",
                    open=last.close,
                    close=last.close,
                    high=last.close,
                    low=last.close,
                    volume=0.0,
                    trades=0,
                    closed=True,
                    quote_volume=0.0,
                )
            )
        candles.append(candle)
    return candles


def absolute(signal: OpenSignal, path: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    return [(signal.created + t, p) for t, p in path]


def track(
    signal: OpenSignal, trades: Sequence[tuple[int, float]], params: OutcomeParams | None = None
) -> Outcome:
    """Feed absolute-time trades to a tracker; returns its outcome."""
    tracker = OutcomeTracker(signal, params)
    for t, p in trades:
        tracker.on_trade(t, p)
    return tracker.outcome()


def scenario_outcome(
    name: str,
    created: int = MONDAY,
    *,
    by: str = "candles",
    params: OutcomeParams | None = None,
    **kw: object,
) -> Outcome:
    """The outcome of a named scenario for a signal made by :func:`make_signal` (``kw`` passed on)."""
    signal = make_signal(created, **kw)  # type: ignore[arg-type]
    path = SCENARIOS[name] if signal.direction == "LONG" else mirror(SCENARIOS[name])
    trades = absolute(signal, path)
    if by == "trades":
        return track(signal, trades, params)
    return evaluate_candles(signal, candles_from_trades(trades), params)


def same(batch: Outcome | None, want: Outcome, *, excursions: bool = False) -> None:
    """The batch outcome equals the live one: state, trigger, exit and P&L (and MFE/MAE with ``excursions``)."""
    assert batch is not None
    got = (batch.state, batch.trigger_time, batch.exit_time, batch.exit_price)
    assert got == (want.state, want.trigger_time, want.exit_time, want.exit_price)
    if excursions:
        assert (batch.pnl_r, batch.mfe_r, batch.mae_r) == pytest.approx((want.pnl_r, want.mfe_r, want.mae_r))
    else:
        assert batch.pnl_r == pytest.approx(want.pnl_r)
