"""The simulated exchange's listings: names, price scales, tick/step sizes and liquidity tiers.

The universe depends only on how many symbols are asked for (never on the seed), so ``BTCUSDT`` is
always the first symbol and always liquid. Real names come first, then synthetic ones. Tiers decide
whether a symbol passes tapewatch's universe minimums (24 h quote volume >= $50M, open interest
>= $10M, spread <= 0.02 %): ``liquid`` passes all three; ``thin`` fails on volume, ``wide`` on spread,
``low_oi`` on open interest. The numbers are chosen far from the thresholds so noise never flips them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from tapewatch.streams import WHOLE_MARKET_SYMBOLS

Tier = Literal["liquid", "thin", "wide", "low_oi"]

MAX_SYMBOLS = WHOLE_MARKET_SYMBOLS

# name, start price, price decimals (tick = 10**-d), quantity decimals (step = 10**-q), tier, 24h quote volume
_REAL: tuple[tuple[str, float, int, int, Tier, float], ...] = (
    ("BTC", 60000.0, 1, 3, "liquid", 12e9),
    ("ETH", 3000.0, 2, 3, "liquid", 6e9),
    ("SOL", 150.0, 3, 2, "liquid", 2e9),
    ("BNB", 600.0, 2, 2, "liquid", 5e8),
    ("XRP", 0.6, 5, 1, "liquid", 8e8),
    ("DOGE", 0.15, 6, 0, "liquid", 6e8),
    ("ADA", 0.45, 5, 0, "liquid", 3e8),
    ("AVAX", 35.0, 3, 1, "liquid", 2.5e8),
    ("LINK", 15.0, 4, 1, "liquid", 2e8),
    ("ATOM", 7.0, 3, 2, "wide", 6e7),
    ("DOT", 7.0, 4, 1, "liquid", 1.2e8),
    ("FIL", 4.5, 4, 1, "thin", 2.5e7),
    ("TRX", 0.12, 6, 0, "liquid", 9e7),
    ("LTC", 80.0, 3, 3, "liquid", 1.5e8),
    ("MKR", 2000.0, 1, 3, "low_oi", 7e7),
    ("BCH", 400.0, 2, 3, "liquid", 1.1e8),
    ("UNI", 8.0, 3, 0, "wide", 5e7),
    ("NEAR", 5.0, 4, 0, "liquid", 1e8),
    ("ETC", 22.0, 3, 2, "thin", 3e7),
    ("SUI", 1.5, 5, 1, "liquid", 4e8),
    ("1000PEPE", 0.01, 7, 0, "liquid", 5e8),
    ("LDO", 1.8, 4, 1, "thin", 2e7),
    ("WIF", 2.5, 5, 1, "liquid", 3e8),
    ("TON", 5.5, 4, 1, "low_oi", 8e7),
    ("APT", 9.0, 4, 1, "liquid", 9e7),
    ("RUNE", 5.0, 3, 0, "wide", 4e7),
    ("ARB", 0.8, 5, 1, "liquid", 1.2e8),
    ("STX", 2.0, 4, 0, "thin", 1.5e7),
    ("OP", 1.8, 5, 1, "liquid", 8e7),
    ("INJ", 25.0, 4, 1, "liquid", 7e7),
    ("IMX", 1.6, 4, 0, "thin", 1.2e7),
    ("TIA", 6.0, 4, 0, "liquid", 6.5e7),
    ("GALA", 0.03, 5, 0, "wide", 4.5e7),
    ("AAVE", 150.0, 3, 1, "liquid", 7e7),
    ("SEI", 0.45, 5, 0, "thin", 2e7),
    ("FET", 1.3, 5, 0, "liquid", 1e8),
    ("JUP", 0.9, 4, 0, "low_oi", 6e7),
    ("1000SHIB", 0.02, 7, 0, "liquid", 1.5e8),
    ("ORDI", 35.0, 3, 1, "thin", 2.8e7),
    ("SAND", 0.4, 4, 0, "wide", 3.5e7),
    ("RENDER", 7.0, 4, 1, "liquid", 6e7),
    ("WLD", 2.2, 3, 0, "wide", 5.5e7),
    ("1000BONK", 0.025, 7, 0, "thin", 2.5e7),
    ("ENA", 0.5, 5, 0, "liquid", 1.8e8),
    ("PENDLE", 4.0, 4, 0, "thin", 1.8e7),
    ("CRV", 0.35, 4, 1, "wide", 3e7),
    ("ONDO", 1.1, 5, 1, "liquid", 6e7),
    ("HBAR", 0.08, 5, 0, "low_oi", 6e7),
    ("ALGO", 0.18, 4, 1, "wide", 2.5e7),
    ("EGLD", 30.0, 2, 2, "thin", 1e7),
)

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "x", "qu")
_VOWELS = ("a", "e", "i", "o", "u", "y")
_CODAS = ("", "n", "r", "x", "l", "k")
_SYNTH_TIERS: tuple[Tier, ...] = ("liquid", "thin", "liquid", "wide", "thin", "low_oi", "liquid", "thin")


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """One listed USDT perpetual and the parameters of its simulated market."""

    index: int
    symbol: str
    base: str
    price: float  # starting price
    price_decimals: int  # tick size = 10**-price_decimals
    qty_decimals: int  # step size = 10**-qty_decimals
    tier: Tier
    quote_volume_24h: float
    open_interest_usd: float
    trade_rate: float  # taker orders per second (Poisson)
    book_rate: float  # maker events per second (Poisson)
    spread_ticks: int  # the spread makers quote, in ticks
    daily_vol: float  # daily volatility of the fair price (fraction)
    levels: int  # resting price levels kept per side
    dense_levels: int  # levels one tick apart next to the touch
    level_gap: int  # ticks between levels further out
    episodes_per_hour: float

    @property
    def tick(self) -> float:
        return 10.0**-self.price_decimals

    @property
    def step(self) -> float:
        return 10.0**-self.qty_decimals

    @property
    def stream_prefix(self) -> str:
        return self.symbol.lower()

    @property
    def mean_trade_quote(self) -> float:
        """Average quote size of one taker order so that the trades add up to the 24 h volume."""
        return self.quote_volume_24h / 86_400 / self.trade_rate

    @property
    def passes_universe(self) -> bool:
        return self.tier == "liquid"


def _synthetic_base(n: int, taken: set[str]) -> str:
    """A pronounceable, deterministic base asset name for synthetic symbol number ``n``."""
    k = n
    while True:
        a, rest = k % len(_ONSETS), k // len(_ONSETS)
        b, rest = rest % len(_VOWELS), rest // len(_VOWELS)
        c, rest = rest % len(_ONSETS), rest // len(_ONSETS)
        d, rest = rest % len(_VOWELS), rest // len(_VOWELS)
        e = rest % len(_CODAS)
        name = (_ONSETS[a] + _VOWELS[b] + _ONSETS[c] + _VOWELS[d] + _CODAS[e]).upper()
        if name not in taken:
            return name
        k += 7919


def _mix(n: int) -> float:
    """A fixed pseudo-random number in [0, 1) for ``n`` (so the universe never depends on the seed)."""
    x = (n * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E5) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 31
    x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 29
    return (x & 0xFFFFFFFFFFFF) / float(1 << 48)


def _make(
    index: int, base: str, price: float, pdec: int, qdec: int, tier: Tier, volume: float, quiet: bool = False
) -> SymbolSpec:
    r = _mix(index * 3 + 1)
    liquid = tier == "liquid"
    oi = volume * (0.25 + 0.2 * r) if tier != "low_oi" else 2e6 + 4e6 * r
    if liquid:
        oi = max(oi, 2.5e7 + 2e7 * r)
    # Activity grows with volume; capped so that 800 symbols stay cheap to simulate.
    scale = math.log10(max(volume, 1e6) / 5e7)
    trade_rate = min(8.0, max(0.4, 2.2 + 1.6 * scale))
    book_rate = min(24.0, max(3.0, 9.0 + 5.0 * scale))
    if quiet:  # the synthetic tail: hundreds of symbols must stay cheap to simulate and to record
        trade_rate = min(trade_rate, 0.25 + 0.35 * r)
        book_rate = min(book_rate, 1.5 + 1.0 * r)
    ticks_per_price = price * 10.0**pdec
    spread = 1 if tier != "wide" else 2 + int(r * 3)
    # Big-number symbols (BTC: 600 000 ticks) keep few one-tick levels and wider gaps further out.
    dense = 12 if ticks_per_price < 200_000 else 6
    gap = max(1, round(ticks_per_price * 0.00005))
    return SymbolSpec(
        index=index,
        symbol=f"{base}USDT",
        base=base,
        price=price,
        price_decimals=pdec,
        qty_decimals=qdec,
        tier=tier,
        quote_volume_24h=volume,
        open_interest_usd=oi,
        trade_rate=trade_rate,
        book_rate=book_rate,
        spread_ticks=spread,
        daily_vol=0.02 + 0.03 * _mix(index * 3 + 2),
        levels=220 + int(120 * r),
        dense_levels=dense,
        level_gap=gap,
        episodes_per_hour=0.45 if liquid else 0.08,
    )


def build_universe(count: int) -> list[SymbolSpec]:
    """The first ``count`` (1..800) listed perpetuals, most liquid names first."""
    if not 1 <= count <= MAX_SYMBOLS:
        raise ValueError(f"symbols must be between 1 and {MAX_SYMBOLS}, got {count}")
    specs: list[SymbolSpec] = []
    taken = {row[0] for row in _REAL}
    for i, (base, price, pdec, qdec, tier, volume) in enumerate(_REAL[:count]):
        specs.append(_make(i, base, price, pdec, qdec, tier, volume))
    for i in range(len(specs), count):
        base = _synthetic_base(i, taken)
        taken.add(base)
        tier = _SYNTH_TIERS[int(_mix(i) * len(_SYNTH_TIERS))]
        price = math.exp(math.log(0.001) + _mix(i * 7 + 3) * (math.log(120.0) - math.log(0.001)))
        digits = math.floor(math.log10(price))
        price = round(price, 3 - digits)  # four significant digits
        ticks_wanted = 3_000 if tier == "wide" else 60_000  # price / tick
        pdec = max(0, math.ceil(math.log10(ticks_wanted / price)))
        qdec = max(0, min(3, math.ceil(math.log10(price / 5))))  # one step is worth about $0.5-5
        if tier == "liquid":
            volume = 6e7 * 10.0 ** (1.2 * _mix(i * 5 + 1))
        elif tier == "thin":
            volume = 2e6 + 2.6e7 * _mix(i * 5 + 1)
        else:
            volume = 5.5e7 + 4e7 * _mix(i * 5 + 1)
        specs.append(_make(i, base, price, pdec, qdec, tier, volume, quiet=True))
    return specs


@dataclass(frozen=True, slots=True)
class Listing:
    """A contract that exchangeInfo lists but the simulator does not trade (to exercise filtering)."""

    symbol: str
    pair: str
    contract_type: str
    status: str
    base: str
    quote: str
    delivery_date: int


def extra_listings() -> list[Listing]:
    """Non-perpetual, non-USDT and not-trading contracts that only appear in exchangeInfo."""
    never = 4133404800000
    return [
        Listing("BTCUSDT_260327", "BTCUSDT", "CURRENT_QUARTER", "TRADING", "BTC", "USDT", 1774598400000),
        Listing("ETHUSDT_260626", "ETHUSDT", "NEXT_QUARTER", "TRADING", "ETH", "USDT", 1782460800000),
        Listing("BTCUSDC", "BTCUSDC", "PERPETUAL", "TRADING", "BTC", "USDC", never),
        Listing("ETHBUSD", "ETHBUSD", "PERPETUAL", "TRADING", "ETH", "BUSD", never),
        Listing("OLDCOINUSDT", "OLDCOINUSDT", "PERPETUAL", "SETTLING", "OLDCOIN", "USDT", never),
        Listing("NEWCOINUSDT", "NEWCOINUSDT", "PERPETUAL", "PENDING_TRADING", "NEWCOIN", "USDT", never),
    ]
