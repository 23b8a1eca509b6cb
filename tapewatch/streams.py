"""Binance stream names: what a name means, which routed websocket path carries it, what to subscribe.

Binance routes USD-M market streams by path: high-frequency book data (``@depth*``, ``@bookTicker``,
``@trade``) on ``/public``, regular market data (``@aggTrade``, ``@kline_*``, ``@markPrice``,
``@forceOrder``) on ``/market``. A stream on the wrong path is silently never delivered, so every
subscription goes through :func:`route`.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Literal, NamedTuple

Path = Literal["public", "market"]


class Kind(StrEnum):
    DEPTH = "depth"
    BOOK_TICKER = "bookTicker"
    AGG_TRADE = "aggTrade"
    TRADE = "trade"
    KLINE = "kline"
    MARK_PRICE = "markPrice"
    FORCE_ORDER = "forceOrder"
    SNAPSHOT = "snapshot"
    KLINES = "klines"  # REST kline history
    CONTROL = "control"  # a captured platform command (pause/resume), not market data


_ROUTES: dict[Kind, Path] = {
    Kind.DEPTH: "public",
    Kind.BOOK_TICKER: "public",
    Kind.TRADE: "public",
    Kind.AGG_TRADE: "market",
    Kind.KLINE: "market",
    Kind.MARK_PRICE: "market",
    Kind.FORCE_ORDER: "market",
}

DEPTH_SPEEDS = ("", "@100ms", "@0ms", "@500ms", "@250ms")
#: About how many perpetuals Binance USD-M lists: the whole market the connection pool is sized for, and the
#: simulated exchange's largest universe (``tapewatch sim --symbols``).
WHOLE_MARKET_SYMBOLS = 800


class StreamName(NamedTuple):
    """A parsed stream name: ``btcusdt@kline_15m`` -> (``BTCUSDT``, KLINE, ``15m``)."""

    symbol: str
    kind: Kind
    detail: str


class UnknownStream(ValueError):
    """The name is not a Binance market stream tapewatch understands."""


def parse_stream(name: str) -> StreamName:
    """Parse a single-symbol stream name; raise UnknownStream for anything else."""
    sym, sep, rest = name.partition("@")
    if not sep or not sym or not sym.replace("_", "").isalnum():
        raise UnknownStream(f"not a <symbol>@<stream> name: {name!r}")
    symbol = sym.upper()
    if rest.startswith("depth"):
        speed = rest[5:]
        if speed not in DEPTH_SPEEDS:
            raise UnknownStream(f"unknown depth speed in {name!r}")
        return StreamName(symbol, Kind.DEPTH, speed.lstrip("@"))
    if rest.startswith("kline_"):
        return StreamName(symbol, Kind.KLINE, rest[6:])
    for kind in (Kind.BOOK_TICKER, Kind.AGG_TRADE, Kind.TRADE, Kind.FORCE_ORDER):
        if rest == kind.value:
            return StreamName(symbol, kind, "")
    if rest.startswith("markPrice"):
        return StreamName(symbol, Kind.MARK_PRICE, rest[9:].lstrip("@"))
    raise UnknownStream(f"unknown stream type in {name!r}")


def route(name: str) -> Path:
    """The routed websocket path (``public`` or ``market``) that carries stream ``name``."""
    return _ROUTES[parse_stream(name).kind]


def symbol_streams(symbol: str, update_frequency: int, timeframes: tuple[str, ...]) -> list[str]:
    """The streams tapewatch subscribes to for one symbol (book, top of book, trades, candles)."""
    s = symbol.lower()
    depth = f"{s}@depth" if update_frequency == 250 else f"{s}@depth@{update_frequency}ms"
    return [depth, f"{s}@bookTicker", f"{s}@aggTrade", *(f"{s}@kline_{tf}" for tf in timeframes)]


def combined_url(base: str, streams: Sequence[str]) -> str:
    """``<base>/stream?streams=a/b/c`` (a combined-stream connection on a routed ``base``); stream names are
    ``[a-z0-9_@]`` and need no escaping."""
    return f"{base.rstrip('/')}/stream?streams={'/'.join(streams)}"
