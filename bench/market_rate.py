"""A busy-hour message rate of Binance's whole USD-M market, derived (not guessed) for the replay target.

No recording of the whole market exists here, so the rate is built as streams x symbols x rate per stream,
each rate either a hard limit of Binance's protocol or measured on the busiest symbols of the real recordings
in ``../shared/data/binance-futures`` and scaled by a stated busy-hour factor. The assumptions are the module
constants below; :func:`estimate` returns every input next to the result so the bench prints its derivation.

It leans high on purpose (the target is "replay at least 10x faster than this"): the 780 tail symbols are
all given the activity of the busiest mid-cap in the recordings, and aggTrade is bounded by the @trade count.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import msgspec

from realtime.capture import iter_capture
from tapewatch.streams import Kind, UnknownStream, parse_stream

#: USD-M perpetual contracts trading at once: issue 3's "~800 symbols" (exchangeInfo gives the live count).
PERPETUALS = 800
#: Majors given the activity of BTCUSDT (the busiest symbol recorded); the rest are the tail.
TOP_TIER = 20
#: A busy hour's trade and top-of-book activity over the recordings' ordinary hours (a volatile US session
#: against the late-evening / night-time UTC hours recorded): an assumption, not a measurement.
BUSY_FACTOR = 3.0
#: depth@100ms: Binance pushes at most one diff per 100 ms per symbol.
DEPTH_CAP = 10.0
#: kline_<interval>: at most one push per 250 ms per symbol and interval.
KLINE_CAP = 4.0
#: Kline intervals subscribed per symbol (kline_1m and kline_15m, DESIGN.md section 1).
KLINE_INTERVALS = 2

#: The USD-M recordings whose busiest symbols set the rates (the COIN-M file is another market).
TOP_RECORDING = "hftbacktest-usdm-20240808-btcusdt.jsonl.gz"
TAIL_RECORDING = "cryptofeed-usdm-20210722-sushi-ctk.jsonl.gz"


class _Head(msgspec.Struct):
    recv: int
    stream: str


@dataclass(frozen=True)
class SymbolRates:
    """Messages per second of one symbol's streams over a recording's receive-time span."""

    symbol: str
    book_ticker: float
    trades: float  # aggTrade, or @trade where only that was recorded (an upper bound for aggTrade)
    depth: float
    kline: float  # per kline interval


def recording_rates(path: Path) -> list[SymbolRates]:
    """Per-symbol stream rates of one capture file, over the span of its receive times."""
    decode = msgspec.json.Decoder(_Head).decode
    counts: Counter[tuple[str, Kind]] = Counter()
    first = last = 0
    for line in iter_capture([path]):
        head = decode(line)
        first = first or head.recv
        last = head.recv
        if head.stream.startswith("rest:"):
            continue
        try:
            name = parse_stream(head.stream)
        except UnknownStream:
            continue
        kind = Kind.AGG_TRADE if name.kind is Kind.TRADE else name.kind
        counts[(name.symbol, kind)] += 1
    span = max((last - first) / 1000, 1e-9)
    symbols = sorted({symbol for symbol, _ in counts})
    return [
        SymbolRates(
            s,
            counts[(s, Kind.BOOK_TICKER)] / span,
            counts[(s, Kind.AGG_TRADE)] / span,
            counts[(s, Kind.DEPTH)] / span,
            counts[(s, Kind.KLINE)] / span,
        )
        for s in symbols
    ]


def _busiest(rates: list[SymbolRates]) -> SymbolRates:
    """Per stream, the highest rate any of the symbols reached (named after the busiest by bookTicker)."""
    top = max(rates, key=lambda r: r.book_ticker)
    return SymbolRates(
        top.symbol,
        max(r.book_ticker for r in rates),
        max(r.trades for r in rates),
        max(r.depth for r in rates),
        max(r.kline for r in rates),
    )


def _per_symbol(r: SymbolRates) -> dict[str, float]:
    """Busy-hour messages per second of one symbol shaped like ``r``: measured rates x BUSY_FACTOR, capped by
    the protocol's limits. A stream the recording lacks (no klines in the BTCUSDT file) is taken at its cap."""
    return {
        "bookTicker": r.book_ticker * BUSY_FACTOR,
        "aggTrade": r.trades * BUSY_FACTOR,
        "depth@100ms": min(DEPTH_CAP, r.depth * BUSY_FACTOR) if r.depth else DEPTH_CAP,
        "kline x2": KLINE_INTERVALS * (min(KLINE_CAP, r.kline * BUSY_FACTOR) if r.kline else KLINE_CAP),
    }


@dataclass(frozen=True)
class BusyHour:
    """The estimate and what it is made of (per-symbol rates are busy-hour messages per second)."""

    msg_s: int
    top: SymbolRates  # measured on the busiest major recorded
    tail: SymbolRates  # measured on the busiest mid-cap recorded (max per stream)
    top_per_symbol: dict[str, float]
    tail_per_symbol: dict[str, float]
    top_msg_s: int
    tail_msg_s: int
    #: depth and klines of every symbol at their protocol caps: the part of the rate that cannot grow
    depth_and_kline_ceiling_msg_s: int
    perpetuals: int = PERPETUALS
    top_tier: int = TOP_TIER
    busy_factor: float = BUSY_FACTOR


def estimate(recordings: Path) -> BusyHour:
    """The whole market's busy-hour rate with its derivation, from the recordings under ``recordings``."""
    top = _busiest(recording_rates(recordings / TOP_RECORDING))
    tail = _busiest(recording_rates(recordings / TAIL_RECORDING))
    top_rates, tail_rates = _per_symbol(top), _per_symbol(tail)
    top_msg_s = TOP_TIER * sum(top_rates.values())
    tail_msg_s = (PERPETUALS - TOP_TIER) * sum(tail_rates.values())
    return BusyHour(
        msg_s=round(top_msg_s + tail_msg_s),
        top=top,
        tail=tail,
        top_per_symbol={k: round(v, 1) for k, v in top_rates.items()},
        tail_per_symbol={k: round(v, 1) for k, v in tail_rates.items()},
        top_msg_s=round(top_msg_s),
        tail_msg_s=round(tail_msg_s),
        depth_and_kline_ceiling_msg_s=round(PERPETUALS * (DEPTH_CAP + KLINE_INTERVALS * KLINE_CAP)),
    )


def describe(est: BusyHour) -> str:
    """The derivation as the lines the bench prints."""
    top, tail = est.top, est.tail
    return "\n".join(
        [
            f"== busy-hour rate of Binance's whole USD-M market (estimate): {est.msg_s:,} msg/s",
            f"  {est.perpetuals} perpetuals = {est.top_tier} majors shaped like {top.symbol}"
            f" + {est.perpetuals - est.top_tier} others shaped like {tail.symbol} (the busiest mid-cap"
            f" recorded), trade and top-of-book activity x{est.busy_factor:g} for a busy hour",
            f"  measured {top.symbol} (2024-08-08): bookTicker {top.book_ticker:.1f}/s, trade {top.trades:.1f}/s"
            f" (bounds aggTrade), depth {top.depth:.1f}/s (@0ms; @100ms is capped at {DEPTH_CAP:g}/s), no klines",
            f"  measured {tail.symbol} & CTKUSDT (2021-07-22, busiest per stream): bookTicker {tail.book_ticker:.1f}/s,"
            f" aggTrade {tail.trades:.1f}/s, depth@100ms {tail.depth:.1f}/s, kline_1m {tail.kline:.2f}/s",
            "  per major : "
            + ", ".join(f"{k} {v:g}" for k, v in est.top_per_symbol.items())
            + f" -> x{est.top_tier} = {est.top_msg_s:,} msg/s",
            "  per other : "
            + ", ".join(f"{k} {v:g}" for k, v in est.tail_per_symbol.items())
            + f" -> x{est.perpetuals - est.top_tier} = {est.tail_msg_s:,} msg/s",
            f"  (caps: depth@100ms <= {DEPTH_CAP:g}/s, each kline interval <= {KLINE_CAP:g}/s; those streams"
            f" alone top out at {est.depth_and_kline_ceiling_msg_s:,} msg/s for the whole market)",
        ]
    )
