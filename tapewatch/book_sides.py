"""The two sides of :class:`tapewatch.book.OrderBook`, in two implementations with one behaviour:

- the native sides (``tapewatch._sides``, C, built by ``pip install`` where a C compiler is present): each side
  two contiguous arrays of doubles, best level last, so the levels a diff touches sit together in memory;
- the pure-Python sides (:class:`PyBids`, :class:`PyAsks`): quantity by price plus the prices kept sorted,
  used where the extension was not built (``make`` prints which ones are in use after the install).

:func:`new_sides` gives the native pair when it exists. Both are read through the same methods (the
:class:`Side` protocol), and the book tests run against both, comparing them with a plain-dict reference.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Sequence
from typing import Protocol

from tapewatch.events import Level

try:
    from tapewatch._sides import NativeAsks, NativeBids
except ImportError:  # built without a C compiler: the pure-Python sides below
    NATIVE = False
else:
    NATIVE = True


class Side(Protocol):
    """One side of a book. Levels are ``(price, qty)``; reads give the best level first."""

    def __len__(self) -> int: ...

    def update(self, levels: Sequence[Level]) -> None:
        """Apply one side of a diff: set each level's quantity; quantity 0 removes the level."""

    def load(self, levels: Sequence[Level]) -> None:
        """Replace the side with a snapshot's levels (quantity 0 is no level; a price listed twice: the last)."""

    def clear(self) -> None: ...

    def best(self) -> tuple[float, float] | None:
        """``(price, qty)`` of the best level; None when the side is empty."""

    def best_price(self) -> float | None: ...

    def worst_price(self) -> float | None:
        """The price of the worst level held (how deep the side reaches); None when empty."""

    def top(self, n: int) -> list[tuple[float, float]]:
        """The best ``n`` levels, best first."""

    def volume(self, n: int) -> float:
        """Σ qty of the best ``n`` levels (summed best first, one addition at a time)."""

    def notional_within(self, limit_price: float) -> float:
        """Σ price·qty of the levels at or better than ``limit_price`` (summed best first)."""


class PySide:
    """The pure-Python side: quantity by price, plus the prices kept sorted ascending (``keys``).

    Prices are the exact doubles the decoder made from Binance's text, used as they are. Bids are best last,
    asks best first (see :class:`PyBids`, :class:`PyAsks`)."""

    __slots__ = ("keys", "qty")

    def __init__(self) -> None:
        self.qty: dict[float, float] = {}
        self.keys: list[float] = []

    def __len__(self) -> int:
        return len(self.keys)

    def update(self, levels: Sequence[Level]) -> None:
        # one dict probe per level, and a bisect only when a price appears or disappears
        qty_map, keys = self.qty, self.keys
        for price, qty in levels:
            if qty:
                if price not in qty_map:
                    insort(keys, price)
                qty_map[price] = qty
            elif qty_map.pop(price, None) is not None:
                del keys[bisect_left(keys, price)]

    def load(self, levels: Sequence[Level]) -> None:
        qty_map: dict[float, float] = {}
        for price, qty in levels:
            if qty > 0:
                qty_map[price] = qty
        self.qty = qty_map
        self.keys = sorted(qty_map)

    def clear(self) -> None:
        self.qty.clear()
        self.keys.clear()

    def best(self) -> tuple[float, float] | None:
        price = self.best_price()
        return None if price is None else (price, self.qty[price])

    def best_price(self) -> float | None:
        raise NotImplementedError

    def worst_price(self) -> float | None:
        raise NotImplementedError

    def top(self, n: int) -> list[tuple[float, float]]:
        qty = self.qty
        return [(p, qty[p]) for p in self._best_prices(n)]

    def volume(self, n: int) -> float:
        qty, total = self.qty, 0.0
        for p in self._best_prices(n):
            total += qty[p]
        return total

    def _best_prices(self, n: int) -> list[float]:
        raise NotImplementedError

    def notional_within(self, limit_price: float) -> float:
        raise NotImplementedError


class PyBids(PySide):
    __slots__ = ()

    def best_price(self) -> float | None:
        return self.keys[-1] if self.keys else None

    def worst_price(self) -> float | None:
        return self.keys[0] if self.keys else None

    def _best_prices(self, n: int) -> list[float]:
        return self.keys[-n:][::-1] if n > 0 else []

    def notional_within(self, limit_price: float) -> float:
        keys, qty = self.keys, self.qty
        total = 0.0
        for i in range(len(keys) - 1, bisect_left(keys, limit_price) - 1, -1):
            price = keys[i]
            total += price * qty[price]
        return total


class PyAsks(PySide):
    __slots__ = ()

    def best_price(self) -> float | None:
        return self.keys[0] if self.keys else None

    def worst_price(self) -> float | None:
        return self.keys[-1] if self.keys else None

    def _best_prices(self, n: int) -> list[float]:
        return self.keys[:n] if n > 0 else []

    def notional_within(self, limit_price: float) -> float:
        keys, qty = self.keys, self.qty
        total = 0.0
        for i in range(bisect_right(keys, limit_price)):
            price = keys[i]
            total += price * qty[price]
        return total


def py_sides() -> tuple[Side, Side]:
    """A new (bids, asks) pair of the pure-Python sides."""
    return PyBids(), PyAsks()


def native_sides() -> tuple[Side, Side]:
    """A new (bids, asks) pair of the native sides; ImportError when the extension was not built."""
    if not NATIVE:
        raise ImportError("tapewatch._sides was not built (no C compiler at install): use py_sides")
    return NativeBids(), NativeAsks()


#: The (bids, asks) factory books use unless told otherwise: native when built.
new_sides = native_sides if NATIVE else py_sides
