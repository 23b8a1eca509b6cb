"""The two sides of :class:`tapewatch.book.OrderBook`: quantity by price plus the prices kept sorted, and
:func:`update_side`, the per-level loop every applied diff runs.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort

from tapewatch.events import Level


def update_side(qty_map: dict[float, float], keys: list[float], levels: list[Level]) -> None:
    """Apply one side of a diff: set each level's quantity, quantity 0 removes the level; ``keys`` (the
    prices of ``qty_map``) stays sorted ascending. The hot loop of replay: one dict probe per level, and a
    bisect only when a price appears or disappears."""
    for price, qty in levels:
        if qty:
            if price not in qty_map:
                insort(keys, price)
            qty_map[price] = qty
        elif qty_map.pop(price, None) is not None:
            del keys[bisect_left(keys, price)]


class Side:
    """One side of the book: quantity by price, plus the prices kept sorted ascending (``keys``).

    Prices are the exact doubles the decoder made from Binance's text, used as they are: no sign flip or
    tick conversion on the hot path. Bids are best last, asks best first (see :class:`Bids`, :class:`Asks`).
    """

    __slots__ = ("keys", "qty")

    def __init__(self) -> None:
        self.qty: dict[float, float] = {}
        self.keys: list[float] = []

    def __len__(self) -> int:
        return len(self.keys)

    def clear(self) -> None:
        self.qty.clear()
        self.keys.clear()

    def load(self, levels: list[Level]) -> None:
        """Replace the side with a snapshot's levels (quantity 0 is no level)."""
        qty_map: dict[float, float] = {}
        for price, qty in levels:
            if qty > 0:
                qty_map[price] = qty
        self.qty = qty_map
        self.keys = sorted(qty_map)

    def best(self) -> tuple[float, float] | None:
        raise NotImplementedError

    def top(self, n: int) -> list[tuple[float, float]]:
        """The best ``n`` levels, best first."""
        raise NotImplementedError

    def volume(self, n: int) -> float:
        """Σ qty of the best ``n`` levels (summed best first)."""
        qty = self.qty
        return sum([qty[p] for p in self._best_prices(n)])

    def _best_prices(self, n: int) -> list[float]:
        raise NotImplementedError

    def notional_within(self, limit_price: float) -> float:
        """Σ price·qty of levels at or better than ``limit_price`` (summed best first)."""
        raise NotImplementedError


class Bids(Side):
    __slots__ = ()

    def best(self) -> tuple[float, float] | None:
        keys = self.keys
        if not keys:
            return None
        price = keys[-1]
        return price, self.qty[price]

    def top(self, n: int) -> list[tuple[float, float]]:
        qty = self.qty
        return [(p, qty[p]) for p in self._best_prices(n)]

    def _best_prices(self, n: int) -> list[float]:
        return self.keys[-n:][::-1] if n > 0 else []

    def notional_within(self, limit_price: float) -> float:
        keys, qty = self.keys, self.qty
        total = 0.0
        for i in range(len(keys) - 1, bisect_left(keys, limit_price) - 1, -1):
            price = keys[i]
            total += price * qty[price]
        return total


class Asks(Side):
    __slots__ = ()

    def best(self) -> tuple[float, float] | None:
        keys = self.keys
        if not keys:
            return None
        price = keys[0]
        return price, self.qty[price]

    def top(self, n: int) -> list[tuple[float, float]]:
        qty = self.qty
        return [(p, qty[p]) for p in self._best_prices(n)]

    def _best_prices(self, n: int) -> list[float]:
        return self.keys[:n] if n > 0 else []

    def notional_within(self, limit_price: float) -> float:
        keys, qty = self.keys, self.qty
        total = 0.0
        for i in range(bisect_right(keys, limit_price)):
            price = keys[i]
            total += price * qty[price]
        return total
