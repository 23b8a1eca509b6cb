"""Binance USD-M wire payloads, encoded exactly as Binance writes them.

Websocket payloads are built as text directly (they are the hot path of both the server and record
mode); key order and number formats follow the real recordings in ``/work/shared/data``: prices and
quantities are decimal strings with the symbol's tick/step decimals, ids and times are integers.
REST bodies are plain dicts for :func:`dumps`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from realtime.sim.candles import Row


def fixed(n: int, decimals: int) -> str:
    """The decimal text of ``n * 10**-decimals`` (``fixed(60001, 1) == "6000.1"``)."""
    if decimals == 0:
        return str(n)
    sign = ""
    if n < 0:
        sign, n = "-", -n
    s = str(n)
    if len(s) <= decimals:
        s = "0" * (decimals - len(s) + 1) + s
    return f"{sign}{s[:-decimals]}.{s[-decimals:]}"


def decimal(x: float, decimals: int) -> str:
    """A float (a quote volume, a rate) as fixed-point text."""
    return f"{x:.{decimals}f}"


def levels(pairs: Iterable[tuple[int, int]], pd: int, qd: int) -> str:
    """``["price","qty"],...`` for (tick, steps) pairs."""
    return ",".join(f'["{fixed(t, pd)}","{fixed(q, qd)}"]' for t, q in pairs)


def depth_update(symbol: str, e: int, t: int, first: int, last: int, prev: int, bids: str, asks: str) -> str:
    """A ``depthUpdate`` payload; ``bids``/``asks`` are pre-encoded :func:`levels`."""
    return (
        f'{{"e":"depthUpdate","E":{e},"T":{t},"s":"{symbol}","U":{first},"u":{last},"pu":{prev},'
        f'"b":[{bids}],"a":[{asks}]}}'
    )


def book_ticker(symbol: str, u: int, bid: str, bid_qty: str, ask: str, ask_qty: str, t: int, e: int) -> str:
    return (
        f'{{"e":"bookTicker","u":{u},"s":"{symbol}","b":"{bid}","B":"{bid_qty}","a":"{ask}","A":"{ask_qty}",'
        f'"T":{t},"E":{e}}}'
    )


def agg_trade(
    symbol: str, e: int, agg_id: int, price: str, qty: str, first: int, last: int, t: int, m: bool
) -> str:
    mm = "true" if m else "false"
    return (
        f'{{"e":"aggTrade","E":{e},"a":{agg_id},"s":"{symbol}","p":"{price}","q":"{qty}","f":{first},'
        f'"l":{last},"T":{t},"m":{mm}}}'
    )


def trade(symbol: str, e: int, trade_id: int, price: str, qty: str, t: int, m: bool) -> str:
    mm = "true" if m else "false"
    return (
        f'{{"e":"trade","E":{e},"T":{t},"s":"{symbol}","t":{trade_id},"p":"{price}","q":"{qty}",'
        f'"X":"MARKET","m":{mm}}}'
    )


def kline(
    symbol: str, e: int, interval: str, interval_ms: int, row: Row, closed: bool, pd: int, qd: int
) -> str:
    t, o, h, low, c, v, q, n, tv, tq, f, last = row
    x = "true" if closed else "false"
    return (
        f'{{"e":"kline","E":{e},"s":"{symbol}","k":{{"t":{t},"T":{t + interval_ms - 1},"s":"{symbol}",'
        f'"i":"{interval}","f":{f},"L":{last},"o":"{fixed(o, pd)}","c":"{fixed(c, pd)}","h":"{fixed(h, pd)}",'
        f'"l":"{fixed(low, pd)}","v":"{fixed(v, qd)}","n":{n},"x":{x},"q":"{decimal(q, pd)}",'
        f'"V":"{fixed(tv, qd)}","Q":"{decimal(tq, pd)}","B":"0"}}}}'
    )


def mark_price(symbol: str, e: int, mark: str, index: str, settle: str, rate: str, next_funding: int) -> str:
    return (
        f'{{"e":"markPriceUpdate","E":{e},"s":"{symbol}","p":"{mark}","i":"{index}","P":"{settle}",'
        f'"r":"{rate}","T":{next_funding}}}'
    )


def kline_row(row: Row, interval_ms: int, pd: int, qd: int) -> list[Any]:
    """One REST ``klines`` row, Binance's column order."""
    t, o, h, low, c, v, q, n, tv, tq, _, _ = row
    return [
        t, fixed(o, pd), fixed(h, pd), fixed(low, pd), fixed(c, pd), fixed(v, qd), t + interval_ms - 1,
        decimal(q, pd), n, fixed(tv, qd), decimal(tq, pd), "0",
    ]  # fmt: skip


def error_body(code: int, msg: str) -> bytes:
    """Binance's REST error body ``{"code":-1121,"msg":"Invalid symbol."}``."""
    return dumps({"code": code, "msg": msg})


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)
