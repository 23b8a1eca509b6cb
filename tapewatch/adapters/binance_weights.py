"""Request weight of each Binance USD-M REST endpoint, known before the call is sent.

Binance charges every REST call a weight and allows ``rest_weight_limit`` (2400) per minute per IP; the
numbers below are Binance's published weights. The weight budget reserves them before sending, so a
wrong number here only makes the budget less exact: the ``X-MBX-USED-WEIGHT-1M`` header corrects it.
"""

from __future__ import annotations

from tapewatch.settings import SNAPSHOT_WEIGHTS

EXCHANGE_INFO_WEIGHT = 1
OPEN_INTEREST_WEIGHT = 1
AGG_TRADES_WEIGHT = 20
SERVER_TIME_WEIGHT = 1
PING_WEIGHT = 1
#: Largest ``limit`` Binance accepts for klines.
MAX_KLINES_LIMIT = 1500
#: Largest ``limit`` Binance accepts for aggTrades.
MAX_AGG_TRADES_LIMIT = 1000


def depth_weight(limit: int) -> int:
    """Weight of ``/fapi/v1/depth`` with ``limit`` levels; ValueError for a limit Binance rejects."""
    try:
        return SNAPSHOT_WEIGHTS[limit]
    except KeyError:
        allowed = ", ".join(str(n) for n in SNAPSHOT_WEIGHTS)
        raise ValueError(f"depth limit must be one of {allowed}; got {limit!r}") from None


def klines_weight(limit: int) -> int:
    """Weight of ``/fapi/v1/klines`` with ``limit`` candles; ValueError outside 1..1500."""
    if not 1 <= limit <= MAX_KLINES_LIMIT:
        raise ValueError(f"klines limit must be between 1 and {MAX_KLINES_LIMIT}; got {limit!r}")
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


def ticker_24hr_weight(one_symbol: bool) -> int:
    """Weight of ``/fapi/v1/ticker/24hr``: 1 for one symbol, 40 for the whole market."""
    return 1 if one_symbol else 40


def book_ticker_weight(one_symbol: bool) -> int:
    """Weight of ``/fapi/v1/ticker/bookTicker``: 2 for one symbol, 5 for the whole market."""
    return 2 if one_symbol else 5
