"""The incremental trade window gives the same numbers as the spec's naive TradeFlowAnalyzer."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tapewatch.trade_flow import TradeWindow


class SpecTradeFlowAnalyzer:
    """Transcription of spec 6.2 (rebuilds its list on every trade)."""

    def __init__(self, window_minutes: int = 5) -> None:
        self.window_size = window_minutes * 60 * 1000
        self.trades: list[dict[str, Any]] = []

    def analyze_trade_flow(self, new_trade: dict[str, Any]) -> dict[str, float]:
        current_time = new_trade["T"]
        self.trades = [t for t in self.trades if current_time - t["T"] <= self.window_size]
        self.trades.append(new_trade)
        large_buys = large_sells = 0
        total_volume = 0.0
        for trade in self.trades:
            trade_size = float(trade["q"]) * float(trade["p"])
            if trade_size >= 50000:
                if trade["m"]:
                    large_sells += 1
                else:
                    large_buys += 1
            total_volume += trade_size
        return {"large_buys": large_buys, "large_sells": large_sells, "total_volume": total_volume}


def test_same_numbers_as_the_spec_reference_on_random_trades() -> None:
    rng = random.Random(7)
    window = TradeWindow(300_000, 50_000)
    spec = SpecTradeFlowAnalyzer()
    t = 0
    for _ in range(5_000):
        t += int(rng.expovariate(1 / 400))  # sometimes several trades on the same ms, sometimes long pauses
        price = round(rng.uniform(90, 110), 2)
        qty = round(rng.paretovariate(1.2) * 50, 3)
        maker = rng.random() < 0.5
        expected = spec.analyze_trade_flow({"T": t, "p": str(price), "q": str(qty), "m": maker})
        window.add(t, price, qty, maker)
        assert window.large_buys == expected["large_buys"]
        assert window.large_sells == expected["large_sells"]
        assert window.quote_volume == pytest.approx(expected["total_volume"], rel=1e-9, abs=1e-6)
        assert len(window) == len(spec.trades)


def test_window_boundary_is_inclusive() -> None:
    window = TradeWindow(1_000, 10)
    window.add(0, 10.0, 1.0, False)
    window.add(1_000, 10.0, 1.0, True)  # 1000 - 0 <= 1000: still inside
    assert len(window) == 2 and window.large_buys == 1 and window.large_sells == 1
    window.add(1_001, 1.0, 1.0, False)  # now the first trade is 1001 ms old: out
    assert len(window) == 2 and window.large_buys == 0
    assert window.vwap == pytest.approx((10 + 1) / 2)


def test_empty_window_has_no_vwap_and_no_drift() -> None:
    window = TradeWindow(10, 1e9)
    assert window.vwap is None
    window.add(0, 0.1, 0.3, False)
    window.add(100, 5.0, 2.0, False)
    assert window.quote_volume == pytest.approx(10.0)
    assert window.vwap == 5.0
