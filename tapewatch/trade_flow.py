"""Rolling trade-flow windows keyed on event time, O(1) amortised per trade.

A window of length ``w`` ms ending at ``now`` (the symbol's latest trade time) holds the trades with
``T >= now - w`` — the same set as the spec's ``TradeFlowAnalyzer`` (``current - T <= window``).
Running sums are kept as trades enter and leave, never rebuilt. A trade stamped before the latest one still
enters (trades leave from the front only, so it stays until those before it have left), unless it is older
than the window's horizon: it could never be inside it, and appended it would stay counted for a whole window.
"""

from __future__ import annotations

from collections import deque

import msgspec


class FlowTrade(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One trade in a window (a C-level struct: one is made per trade)."""

    time: int
    price: float
    qty: float
    quote: float
    is_sell: bool  # buyer is maker -> the aggressor sold
    large: bool


class TradeWindow:
    """Counts and sums of the trades within ``window_ms`` of the latest trade."""

    __slots__ = (
        "_expired",
        "_trades",
        "large_buys",
        "large_sells",
        "large_trade_size",
        "last_price",
        "last_time",
        "pq",
        "q",
        "quote_volume",
        "window_ms",
    )

    def __init__(self, window_ms: int, large_trade_size: float) -> None:
        self.window_ms = window_ms
        self.large_trade_size = large_trade_size
        self._trades: deque[FlowTrade] = deque()
        self.large_buys = 0
        self.large_sells = 0
        self.quote_volume = 0.0
        self.pq = 0.0  # Σ p·q, for VWAP
        self.q = 0.0  # Σ q
        self.last_time = 0  # time of the newest trade: the window ends there
        self.last_price: float | None = None  # its price (of the later arrival on a tie)
        self._expired = 0

    def add(self, time: int, price: float, qty: float, buyer_is_maker: bool) -> bool:
        """Add a trade; False when it is older than the window's horizon (``time < last_time - window_ms``) and
        so left out. A trade older than the latest one but within it is still counted (windows end at the
        latest) and leaves :attr:`last_time` and :attr:`last_price` as they were; one stamped far ahead would
        hold the window at its time, so the market never adds one (:mod:`tapewatch.market_clock`)."""
        if time < self.last_time - self.window_ms:
            return False
        quote = price * qty
        trade = FlowTrade(time, price, qty, quote, buyer_is_maker, quote >= self.large_trade_size)
        self._trades.append(trade)
        self.quote_volume += quote
        self.pq += quote
        self.q += qty
        if trade.large:
            if buyer_is_maker:
                self.large_sells += 1
            else:
                self.large_buys += 1
        if time >= self.last_time:
            self.last_time = time
            self.last_price = price
        cutoff = self.last_time - self.window_ms
        if self._trades[0].time < cutoff:  # checked here: most trades expire nothing, and a call costs
            self._expire(cutoff)
        return True

    def _expire(self, cutoff: int) -> None:
        trades = self._trades
        expired = 0
        while trades and trades[0].time < cutoff:
            old = trades.popleft()
            expired += 1
            self.quote_volume -= old.quote
            self.pq -= old.quote
            self.q -= old.qty
            if old.large:
                if old.is_sell:
                    self.large_sells -= 1
                else:
                    self.large_buys -= 1
        if expired:
            self._expired += expired
            # Subtraction leaves rounding error behind; recomputing once as many trades have left as remain
            # bounds it and stays O(1) amortised.
            if self._expired >= len(trades):
                self._resum()

    def _resum(self) -> None:
        self._expired = 0
        self.quote_volume = self.pq = sum(t.quote for t in self._trades)
        self.q = sum(t.qty for t in self._trades)

    def __len__(self) -> int:
        return len(self._trades)

    @property
    def last_added(self) -> FlowTrade | None:
        """The trade added last (arrival order): the newest (:attr:`last_time`, :attr:`last_price`), or one
        stamped a little before it. Never expired while the newest trade, which lies before it, is not."""
        return self._trades[-1] if self._trades else None

    @property
    def vwap(self) -> float | None:
        return self.pq / self.q if self.q > 0 else None
