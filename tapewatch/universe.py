"""Which symbols to watch. Issue 5 adds the spec 4.1 scoring; until then the start-up universe is the
``universe_size`` USDT-margined perpetuals with the largest 24h quote volume (or ``Settings.symbols``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class SymbolLike(Protocol):
    @property
    def symbol(self) -> str: ...
    @property
    def contract_type(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def quote_asset(self) -> str: ...


class TickerLike(Protocol):
    @property
    def symbol(self) -> str: ...
    @property
    def quote_volume(self) -> float: ...


def tradable_perpetuals(symbols: Iterable[SymbolLike]) -> set[str]:
    """Perpetual, trading, USDT-margined contracts."""
    return {
        s.symbol
        for s in symbols
        if s.contract_type == "PERPETUAL" and s.status == "TRADING" and s.quote_asset == "USDT"
    }


def top_by_volume(tradable: set[str], tickers: Iterable[TickerLike], size: int) -> list[str]:
    """The ``size`` tradable symbols with the largest 24h quote volume (ties broken by name)."""
    ranked = sorted(
        ((t.quote_volume, t.symbol) for t in tickers if t.symbol in tradable), key=lambda x: (-x[0], x[1])
    )
    return [symbol for _, symbol in ranked[:size]]
