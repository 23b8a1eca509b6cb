"""Volume intensity (DESIGN §4): recent quote volume against the candle context, as a ratio.

``intensity = quote volume of the last trade_history_window seconds / average quote volume of such a window
over the context``, where the context is the last ``kline_history_bars`` *closed* candles and a candle of
length L seconds stands for ``quote_volume · w / L`` per window of w seconds (a 15m candle: ``q / 3`` per 300 s).
The spec prints it as $M/min; the thresholds (1.5, 2.0, ``volume_confirmation_multiplier``) are ratios.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tapewatch.events import Candle
from tapewatch.indicators import check_candles, check_period


def candle_seconds(candle: Candle) -> float:
    """Length of the candle in seconds, from its open and close times (Binance: close = next open - 1 ms)."""
    return (candle.close_time - candle.open_time + 1) / 1000.0


def average_window_volume(context: Sequence[Candle], window_s: float = 300, bars: int = 100) -> float | None:
    """Mean quote volume per ``window_s`` seconds over the last ``bars`` closed candles of ``context``.

    The forming candle (``closed`` false) is left out. None when no closed candle is there. Raises ValueError
    for bad candles (NaN, out of order, ``close_time <= open_time``) or a non-positive window/bars.
    """
    if not (math.isfinite(window_s) and window_s > 0):
        raise ValueError(f"window_s must be finite and > 0, got {window_s!r}")
    check_period(bars, "bars")
    check_candles(context)
    closed = [c for c in context if c.closed][-bars:]
    if not closed:
        return None
    total = 0.0
    for c in closed:
        if c.close_time <= c.open_time:
            raise ValueError(f"candle opening at {c.open_time} closes at {c.close_time}, not after it")
        total += c.quote_volume * window_s / candle_seconds(c)
    return total / len(closed)


def volume_intensity(
    window_quote_volume: float, context: Sequence[Candle], window_s: float = 300, bars: int = 100
) -> float | None:
    """``window_quote_volume`` (the quote volume of the last ``window_s`` seconds of trades) over
    :func:`average_window_volume` of the context.

    None when there is no context: no closed candle, or a context that traded nothing (no scale to compare
    against). Raises ValueError for a negative/NaN window volume and for what
    :func:`average_window_volume` rejects.
    """
    if not (math.isfinite(window_quote_volume) and window_quote_volume >= 0):
        raise ValueError(f"window_quote_volume must be finite and >= 0, got {window_quote_volume!r}")
    average = average_window_volume(context, window_s, bars)
    if average is None or average == 0.0:
        return None
    return window_quote_volume / average
