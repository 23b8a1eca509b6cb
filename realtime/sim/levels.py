"""One side of the simulated exchange's own order book, in integer ticks and integer steps.

Prices are tick counts and quantities step counts, so the book never meets a rounding question and the
wire text is exact. Keys are kept sorted best-first (bids negated), as in :mod:`tapewatch.book`.
"""

from __future__ import annotations

from bisect import bisect_left, insort


class Side:
    """Resting quantity per price level; ``keys[0]`` is the best level."""

    __slots__ = ("keys", "qty", "sign")

    def __init__(self, is_bid: bool) -> None:
        self.sign = -1 if is_bid else 1
        self.keys: list[int] = []  # sign * tick, ascending = best first
        self.qty: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def best(self) -> int:
        """The best price (ticks); the side must not be empty."""
        return self.sign * self.keys[0]

    def best_qty(self) -> int:
        return self.qty[self.sign * self.keys[0]]

    def worst(self) -> int:
        return self.sign * self.keys[-1]

    def nth(self, i: int) -> int:
        """The price of the ``i``-th best level (0 = best)."""
        return self.sign * self.keys[i]

    def get(self, tick: int) -> int:
        return self.qty.get(tick, 0)

    def set(self, tick: int, qty: int) -> None:
        """Set the quantity at ``tick``; 0 removes the level."""
        if qty > 0:
            if tick not in self.qty:
                insort(self.keys, self.sign * tick)
            self.qty[tick] = qty
        elif self.qty.pop(tick, None) is not None:
            keys = self.keys
            del keys[bisect_left(keys, self.sign * tick)]

    def top(self, n: int) -> list[tuple[int, int]]:
        """The ``n`` best levels as (tick, qty), best first."""
        sign, qty = self.sign, self.qty
        return [(sign * k, qty[sign * k]) for k in self.keys[:n]]

    def volume(self, n: int) -> int:
        sign, qty = self.sign, self.qty
        return sum(qty[sign * k] for k in self.keys[:n])
