"""The feature vector a symbol is judged on: one plain typed record the engine fills at an event.

Features are direction-agnostic (imbalance is signed, large buys and sells are both kept); the rules of
:mod:`tapewatch.rules` read them for LONG and SHORT. A value that cannot be known yet (no RSI before enough
candles, no level near the price) is ``None`` and the conditions reading it are unmet with "no data". A value
that is present but impossible (NaN, a price <= 0, a crossed book) raises :class:`ValueError` at construction
and at JSON decoding, so a bad number never reaches a rule, a stored candidate or a signal.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterable
from typing import Literal

import msgspec

from tapewatch.trade_flow import TradeWindow

#: How many large-trade sizes a feature vector keeps per side (the largest): enough for monthly tuning to
#: re-count large trades at a larger ``large_trade_size`` while keeping a stored candidate small.
LARGE_SIZES_KEPT = 50


class DataQuality(msgspec.Struct, frozen=True, kw_only=True):
    """The evidence behind a feature vector: how fresh and how complete the data was.

    ``book_sync_age_ms``: event time since the book's last snapshot (re)sync; ``gaps_in_window`` and
    ``resyncs_in_window``: sequence gaps and resyncs of the symbol over the trade window;
    ``depth_bid_usd`` / ``depth_ask_usd``: quote value (USD) resting within 1 % of the mid on each side.
    Depth coverage: ``book_source`` is ``stream`` (snapshot + diffs) or ``poll`` (a REST snapshot of the backup
    feed); a polled book knows only ``depth_levels`` levels a side, and ``depth_truncated`` says the 1 % band
    reaches past them, so the depth figures are lower bounds.
    """

    book_sync_age_ms: int | None = None
    gaps_in_window: int = 0
    resyncs_in_window: int = 0
    depth_bid_usd: float | None = None
    depth_ask_usd: float | None = None
    book_source: Literal["stream", "poll"] = "stream"
    depth_levels: int | None = None
    depth_truncated: bool = False

    def __post_init__(self) -> None:
        for name in ("book_sync_age_ms", "gaps_in_window", "resyncs_in_window", "depth_levels"):
            count = getattr(self, name)
            if count is not None and count < 0:
                raise ValueError(f"{name} must be >= 0; got {count}")
        for name in ("depth_bid_usd", "depth_ask_usd"):
            _check_optional(name, getattr(self, name), minimum=0.0, strict=False)


class Features(msgspec.Struct, frozen=True, kw_only=True):
    """What the rules, the quality score and the trade plan need about one symbol at ``event_time`` (ms).

    ``imbalance_top10`` is ``(bid - ask) / (bid + ask)`` over the top 10 levels of the synced book;
    ``large_buys`` / ``large_sells`` count trades >= ``large_trade_size`` in the trade window;
    ``large_buy_sizes`` / ``large_sell_sizes`` are the quote sizes (p·q, rounded down to whole USD) of the
    largest :data:`LARGE_SIZES_KEPT` of those trades, largest first (None: not recorded, as in candidates
    stored before they existed) — what lets tuning re-count large trades at a larger size;
    ``volume_intensity`` is the window's quote volume over its 15m-context average (a ratio, DESIGN §4);
    ``price`` is the last trade; ``vwap_1h`` the rolling 1-hour VWAP; ``rsi9`` RSI(9) on 15m;
    ``support`` / ``resistance`` the nearest levels below / above the price; ``atr_15m`` ATR on 15m;
    ``bid_walls`` / ``ask_walls`` the walls of spec 6.1 ``detect_large_orders`` in the top ``orderbook_depth``
    levels a side (``(price, qty, size multiple)``, best first; :func:`tapewatch.book_analytics.book_walls`),
    recorded with a candidate (None: not recorded — every evaluation's features, and older candidates).
    """

    symbol: str
    event_time: int
    price: float
    best_bid: float
    best_ask: float
    imbalance_top10: float
    large_buys: int
    large_sells: int
    large_buy_sizes: tuple[int, ...] | None = None
    large_sell_sizes: tuple[int, ...] | None = None
    volume_intensity: float | None = None
    vwap_1h: float | None = None
    rsi9: float | None = None
    bullish_divergence: bool | None = None
    bearish_divergence: bool | None = None
    support: float | None = None
    resistance: float | None = None
    atr_15m: float | None = None
    data_quality: DataQuality = msgspec.field(default_factory=DataQuality)
    bid_walls: tuple[tuple[float, float, float], ...] | None = None
    ask_walls: tuple[tuple[float, float, float], ...] | None = None

    def __post_init__(self) -> None:
        if not (self.symbol and self.symbol.isascii() and self.symbol.isalnum() and self.symbol.isupper()):
            raise ValueError(
                f"symbol must be upper-case letters and digits, like BTCUSDT; got {self.symbol!r}"
            )
        if self.event_time < 0:
            raise ValueError(f"{self.symbol}: event_time must be epoch ms >= 0; got {self.event_time}")
        for name in ("price", "best_bid", "best_ask"):
            check_price(f"{self.symbol} {name}", getattr(self, name))
        if self.best_bid >= self.best_ask:
            # A crossed or locked book is never used (DESIGN §5): it means the book is out of sync.
            raise ValueError(
                f"{self.symbol}: best_bid {self.best_bid} must be below best_ask {self.best_ask} (crossed book)"
            )
        if not (math.isfinite(self.imbalance_top10) and -1.0 <= self.imbalance_top10 <= 1.0):
            raise ValueError(
                f"{self.symbol}: imbalance_top10 must be within [-1, 1]; got {self.imbalance_top10}"
            )
        for name in ("large_buys", "large_sells"):
            if getattr(self, name) < 0:
                raise ValueError(f"{self.symbol}: {name} must be >= 0; got {getattr(self, name)}")
        for name, count in (("large_buy_sizes", self.large_buys), ("large_sell_sizes", self.large_sells)):
            _check_sizes(self.symbol, name, getattr(self, name), count)
        _check_optional(f"{self.symbol} volume_intensity", self.volume_intensity, minimum=0.0, strict=False)
        for name in ("vwap_1h", "support", "resistance"):
            _check_optional(f"{self.symbol} {name}", getattr(self, name), minimum=0.0, strict=True)
        _check_optional(f"{self.symbol} atr_15m", self.atr_15m, minimum=0.0, strict=False)
        if self.rsi9 is not None and not (math.isfinite(self.rsi9) and 0.0 <= self.rsi9 <= 100.0):
            raise ValueError(f"{self.symbol}: rsi9 must be within [0, 100]; got {self.rsi9}")

    @property
    def large_trades(self) -> int:
        """The larger of the large-buy and large-sell counts (spec 7.2 ``max(large_buys, large_sells)``)."""
        return max(self.large_buys, self.large_sells)


def check_price(name: str, value: float) -> float:
    """Return ``value`` if it is a finite price > 0, else raise ValueError naming it."""
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be a finite price > 0; got {value}")
    return value


def largest_sizes(quotes: Iterable[float], limit: int = LARGE_SIZES_KEPT) -> tuple[int, ...]:
    """The ``limit`` largest quote sizes, rounded down to whole USD, largest first. Rounding down keeps
    ``size >= S`` exact for any whole-dollar ``S``."""
    return tuple(math.floor(q) for q in heapq.nlargest(limit, quotes))


def large_trade_sizes(window: TradeWindow) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The sizes of the large buys and of the large sells in ``window`` (see :func:`largest_sizes`): the very
    trades ``window.large_buys`` / ``large_sells`` count. Reads the window's trades only when a candidate is
    built (rare), so the per-trade path stays untouched."""
    trades = window._trades  # same package, read-only: TradeWindow exposes no iterator of its own
    buys = largest_sizes(t.quote for t in trades if t.large and not t.is_sell)
    sells = largest_sizes(t.quote for t in trades if t.large and t.is_sell)
    return buys, sells


def _check_sizes(symbol: str, name: str, sizes: tuple[int, ...] | None, count: int) -> None:
    if sizes is None:
        return
    if len(sizes) > min(count, LARGE_SIZES_KEPT):
        raise ValueError(
            f"{symbol}: {name} holds {len(sizes)} sizes; at most min(count {count}, {LARGE_SIZES_KEPT}) allowed"
        )
    if any(s < 0 for s in sizes) or any(a < b for a, b in itertools.pairwise(sizes)):
        raise ValueError(f"{symbol}: {name} must be sizes >= 0, largest first; got {list(sizes)}")


def _check_optional(name: str, value: float | None, *, minimum: float, strict: bool) -> None:
    if value is None:
        return
    ok = math.isfinite(value) and (value > minimum if strict else value >= minimum)
    if not ok:
        sign = ">" if strict else ">="
        raise ValueError(f"{name} must be finite and {sign} {minimum:g}; got {value}")
