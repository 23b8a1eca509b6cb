"""What a restarted simulator needs to continue the market where the last run stopped.

``tapewatch demo`` restarts the simulator while PostgreSQL and Redis keep the signals it caused. Started from
the listing prices again, every symbol would jump back (an open LONG stopped out by a price the market never
traded on) and the same seed would plant the same episodes again under new signal ids. So the demo saves,
with its clock, each symbol's mid price and its next trade and aggTrade ids and the next book update id
(:func:`capture`); the next run starts each saved symbol's fair price, book and history at that mid, keeps
every id going up as Binance's do, and takes its random numbers from a seed derived from the demo's seed
and the resume time (:func:`resume_seed`), so the episodes after a resume are new ones.

A fresh start (no saved state) is untouched: the same seed gives the same market as before.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from realtime.sim.venue import Venue


@dataclass(frozen=True, slots=True)
class SymbolResume:
    """One symbol where the last run stopped: its mid price, the next trade id and the next aggTrade id."""

    price: float
    next_trade_id: int
    next_agg_id: int


@dataclass(frozen=True, slots=True)
class MarketResume:
    """The saved market: per-symbol prices and ids, and the next book update id (shared by all symbols)."""

    symbols: Mapping[str, SymbolResume] = field(default_factory=dict)
    next_update_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "next_update_id": self.next_update_id,
            "symbols": {
                name: {"price": s.price, "next_trade_id": s.next_trade_id, "next_agg_id": s.next_agg_id}
                for name, s in self.symbols.items()
            },
        }

    @classmethod
    def from_json(cls, data: Any) -> MarketResume:
        """Parse :meth:`to_json`'s form; raises ``ValueError``/``TypeError``/``KeyError`` on a malformed one.
        A symbol with a non-finite or non-positive price is refused (it could not seed a book)."""
        if not isinstance(data, dict) or not isinstance(data.get("symbols"), dict):
            raise ValueError("the saved market is not an object with 'symbols'")
        update = data.get("next_update_id")
        symbols: dict[str, SymbolResume] = {}
        for name, row in data["symbols"].items():
            price = float(row["price"])
            if not math.isfinite(price) or price <= 0:
                raise ValueError(f"{name}: saved price {price!r} is not a positive number")
            trade_id, agg_id = int(row["next_trade_id"]), int(row["next_agg_id"])
            if trade_id < 0 or agg_id < 0:
                raise ValueError(f"{name}: saved trade ids must not be negative")
            symbols[str(name)] = SymbolResume(price, trade_id, agg_id)
        return cls(symbols, None if update is None else int(update))


def capture(venue: Venue) -> MarketResume:
    """The market of ``venue`` as it is now (between two steps)."""
    symbols: dict[str, SymbolResume] = {}
    for sym in venue.market.symbols:
        spec = sym.spec
        mid = (sym.bids.best() + sym.asks.best()) / 2 * spec.tick
        symbols[spec.symbol] = SymbolResume(round(mid, spec.price_decimals + 1), sym.trade_id, sym.agg_id)
    return MarketResume(symbols, venue.market.next_update_id)


def resume_seed(seed: int, resume_ms: int) -> int:
    """The random seed of a run resumed at ``resume_ms``: new draws (episodes, trades) for every resume,
    still reproducible from the demo's seed and the resume time. A 64-bit non-negative integer."""
    digest = hashlib.sha256(f"tapewatch-sim-resume:{seed}:{resume_ms}".encode()).digest()
    return int.from_bytes(digest[:8], "big")
