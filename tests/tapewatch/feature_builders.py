"""Feature vectors for the rule, quality, plan and signal tests: a clean LONG setup, changed per test."""

from __future__ import annotations

from typing import Any

from tapewatch.features import DataQuality, Features

#: 2024-01-01T00:00:00.123Z
T0 = 1_704_067_200_123


def long_setup(**changes: Any) -> Features:
    """A LONG setup passing every required and optional condition with the default settings."""
    values: dict[str, Any] = {
        "symbol": "BTCUSDT",
        "event_time": T0,
        "price": 100.0,
        "best_bid": 99.99,
        "best_ask": 100.01,
        "imbalance_top10": 0.41,
        "large_buys": 4,
        "large_sells": 1,
        "volume_intensity": 2.1,
        "vwap_1h": 99.5,
        "rsi9": 27.0,
        "bullish_divergence": True,
        "bearish_divergence": False,
        "support": 99.6,
        "resistance": 101.5,
        "atr_15m": 0.8,
        "data_quality": DataQuality(
            book_sync_age_ms=42_000,
            gaps_in_window=0,
            resyncs_in_window=1,
            depth_bid_usd=2.5e6,
            depth_ask_usd=1.9e6,
        ),
    }
    values.update(changes)
    return Features(**values)


def short_setup(**changes: Any) -> Features:
    """The mirror of :func:`long_setup`: a SHORT setup passing every condition."""
    values: dict[str, Any] = {
        "imbalance_top10": -0.41,
        "large_buys": 1,
        "large_sells": 4,
        "vwap_1h": 100.5,
        "rsi9": 73.0,
        "bullish_divergence": False,
        "bearish_divergence": True,
        "support": 98.5,
        "resistance": 100.4,
    }
    values.update(changes)
    return long_setup(**values)
