"""Volume intensity against the closed-candle context (DESIGN §4)."""

from __future__ import annotations

import math

import pytest

from tapewatch.events import Candle
from tapewatch.volume import average_window_volume, candle_seconds, volume_intensity

from .candle_helpers import M1, M15, make_candle


def context(quote_volumes: list[float], length_ms: int = M15, forming: float | None = None) -> list[Candle]:
    bars = [
        make_candle(i * length_ms, 101.0, 99.0, 100.0, quote_volume=q, length_ms=length_ms)
        for i, q in enumerate(quote_volumes)
    ]
    if forming is not None:
        bars.append(
            make_candle(
                len(bars) * length_ms,
                101.0,
                99.0,
                100.0,
                quote_volume=forming,
                closed=False,
                length_ms=length_ms,
            )
        )
    return bars


def test_a_15m_candle_stands_for_a_third_of_its_volume_per_300_seconds() -> None:
    bars = context([900.0, 1800.0, 2700.0], forming=1e12)  # the forming candle is left out
    assert candle_seconds(bars[0]) == 900.0
    assert average_window_volume(bars) == 600.0  # (300 + 600 + 900) / 3
    assert volume_intensity(1200.0, bars) == 2.0
    assert volume_intensity(600.0, bars) == 1.0
    assert volume_intensity(0.0, bars) == 0.0


def test_threshold_values_come_out_exactly() -> None:
    bars = context([900.0, 1800.0, 2700.0])
    assert volume_intensity(1080.0, bars) == 1.8  # volume_confirmation_multiplier
    assert volume_intensity(900.0, bars) == 1.5
    assert volume_intensity(1200.0, bars) == 2.0


def test_only_the_last_bars_closed_candles_count() -> None:
    bars = context([900.0, 1800.0, 2700.0])
    assert average_window_volume(bars, bars=2) == 750.0
    assert volume_intensity(1500.0, bars, bars=2) == 2.0
    assert average_window_volume(bars, bars=100) == 600.0  # fewer than asked: all of them


def test_other_window_lengths_and_candle_lengths_scale_by_time() -> None:
    bars = context([900.0, 1800.0, 2700.0])
    assert average_window_volume(bars, window_s=60) == pytest.approx(120.0)  # q * 60 / 900
    one_minute = context([100.0, 200.0, 300.0], length_ms=M1)
    assert candle_seconds(one_minute[0]) == 60.0
    assert average_window_volume(one_minute) == pytest.approx(1000.0)  # q * 300 / 60


def test_no_context_gives_none() -> None:
    assert volume_intensity(1000.0, []) is None
    assert volume_intensity(1000.0, context([], forming=500.0)) is None  # only the forming candle
    assert volume_intensity(1000.0, context([0.0, 0.0])) is None  # nothing traded: no scale
    assert average_window_volume([]) is None


@pytest.mark.parametrize(
    ("window_volume", "message"),
    [(math.nan, "window_quote_volume must be finite"), (-1.0, "window_quote_volume must be finite and >= 0")],
)
def test_bad_window_volume_is_rejected(window_volume: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        volume_intensity(window_volume, context([900.0]))


def test_bad_arguments_and_candles_are_rejected() -> None:
    bars = context([900.0, 1800.0])
    with pytest.raises(ValueError, match="window_s must be finite and > 0"):
        average_window_volume(bars, window_s=0)
    with pytest.raises(ValueError, match="bars must be an integer >= 1"):
        average_window_volume(bars, bars=0)
    nan_volume = [bars[0], make_candle(M15, 101.0, 99.0, 100.0, quote_volume=math.nan)]
    with pytest.raises(ValueError, match=r"candle\[1\]\.quote_volume must be finite"):
        volume_intensity(100.0, nan_volume)
    with pytest.raises(ValueError, match="oldest first"):
        volume_intensity(100.0, list(reversed(bars)))
    zero_length = make_candle(0, 101.0, 99.0, 100.0, length_ms=0)  # closes before it opens
    with pytest.raises(ValueError, match="closes at -1, not after it"):
        volume_intensity(100.0, [zero_length])
