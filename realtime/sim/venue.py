"""The simulated venue: listings, history, market, candles and publisher behind one object.

Both the network server and record mode drive a :class:`Venue`: ``step()`` advances the market one
step and returns the stream messages due. The read-only queries below are what the REST endpoints
answer; they never touch the market's random numbers, so clients cannot change what the market does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from realtime.sim import protocol as p
from realtime.sim.candles import (
    HISTORY_MINUTES,
    INTERVAL_MS,
    MINUTE,
    CandleBook,
    generate_history,
    history_trades,
)
from realtime.sim.model import STEP_MS, Fill, Market, SymbolState
from realtime.sim.publisher import Msg, Publisher, Want
from realtime.sim.resume import MarketResume
from realtime.sim.symbols import SymbolSpec, build_universe, extra_listings

log = logging.getLogger(__name__)

_OLD_LISTING = 1569398400000  # 2019-09-25, when Binance listed BTCUSDT


class Venue:
    """A deterministic simulated exchange (no I/O): same arguments, same market."""

    def __init__(
        self,
        seed: int,
        symbols: int,
        start_ms: int,
        depth_speeds: Sequence[int] = (100, 250, 500),
        kline_intervals: Sequence[str] = tuple(INTERVAL_MS),
        history_minutes: int = HISTORY_MINUTES,
        episode_rate_scale: float = 1.0,
        resume: MarketResume | None = None,
    ) -> None:
        """``resume``: the market where a previous run stopped (:mod:`realtime.sim.resume`); each symbol it
        names starts its fair price, book and history at the saved price and goes on with the saved ids, the
        others start as a fresh venue's. It never changes the random draws: pass a new ``seed`` for those."""
        self.seed = seed
        saved = resume.symbols if resume is not None else {}
        self.specs: list[SymbolSpec] = [
            replace(spec, price=saved[spec.symbol].price) if spec.symbol in saved else spec
            for spec in build_universe(symbols)
        ]
        start = start_ms - start_ms % STEP_MS
        rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence([seed & 0xFFFFFFFF, seed >> 32, 0x4157]))
        )
        minute = start - start % MINUTE
        histories = [generate_history(spec, rng, minute, history_minutes) for spec in self.specs]
        for k, spec in enumerate(self.specs):
            if (s := saved.get(spec.symbol)) is not None:  # history trade ids run up to the saved next one
                h = histories[k]
                histories[k] = replace(
                    h, first_trade_id=s.next_trade_id - int(h.trades.sum()), live_agg_id=s.next_agg_id
                )
        self.market = Market(
            self.specs,
            seed,
            start,
            [h.next_trade_id for h in histories],
            episode_rate_scale=episode_rate_scale,
            first_agg_ids=[h.live_agg_id for h in histories] if saved else None,
            first_update_id=resume.next_update_id if resume is not None else None,
        )
        self.candles = [
            CandleBook(spec, h, start, kline_intervals) for spec, h in zip(self.specs, histories, strict=True)
        ]
        self.publisher = Publisher(self.market, self.candles, depth_speeds, kline_intervals)
        self.index = {spec.symbol: spec.index for spec in self.specs}
        self._exchange_info: dict[str, Any] | None = None
        self.agg_trades_from_id_too_old = 0  # fromId requests older than the trades kept (Binance has them)

    @property
    def now_ms(self) -> int:
        return self.market.now_ms

    def step(self, want: Want) -> list[Msg]:
        """Advance one step; the messages due now (payloads only for streams ``want`` accepts)."""
        self.market.step()
        return self.publisher.publish(want)

    def symbol(self, name: str) -> SymbolState | None:
        i = self.index.get(name.upper())
        return None if i is None else self.market.symbols[i]

    # --- REST bodies -----------------------------------------------------------------------------------
    def snapshot(self, sym: SymbolState, limit: int) -> str:
        """``/fapi/v1/depth`` body: the book right now; ``lastUpdateId`` is the symbol's last change id."""
        spec = sym.spec
        pd, qd = spec.price_decimals, spec.qty_decimals
        bids = p.levels(sym.bids.top(limit), pd, qd)
        asks = p.levels(sym.asks.top(limit), pd, qd)
        return (
            f'{{"lastUpdateId":{sym.last_id},"E":{self.now_ms},"T":{sym.last_change_ms},'
            f'"bids":[{bids}],"asks":[{asks}]}}'
        )

    def ticker_24h(self, sym: SymbolState) -> dict[str, Any]:
        spec = sym.spec
        pd, qd = spec.price_decimals, spec.qty_decimals
        s = self.candles[spec.index].day_stats(self.now_ms)
        last = self.candles[spec.index].forming[MINUTE].c
        change = last - s.open
        avg = s.quote / (s.volume * spec.step) if s.volume else 0.0
        return {
            "symbol": spec.symbol,
            "priceChange": p.fixed(change, pd),
            "priceChangePercent": f"{100 * change / s.open:.3f}" if s.open else "0.000",
            "weightedAvgPrice": p.decimal(avg, pd),
            "lastPrice": p.fixed(last, pd),
            "lastQty": p.fixed(sym.last_qty, qd),
            "openPrice": p.fixed(s.open, pd),
            "highPrice": p.fixed(s.high, pd),
            "lowPrice": p.fixed(s.low, pd),
            "volume": p.fixed(s.volume, qd),
            "quoteVolume": p.decimal(s.quote, 2),
            "openTime": s.open_time,
            "closeTime": self.now_ms,
            "firstId": s.first_id,
            "lastId": sym.trade_id - 1,
            "count": s.count,
        }

    def book_ticker(self, sym: SymbolState) -> dict[str, Any]:
        spec = sym.spec
        b, bq, a, aq = sym.top
        pd, qd = spec.price_decimals, spec.qty_decimals
        return {
            "lastUpdateId": sym.last_id,
            "symbol": spec.symbol,
            "bidPrice": p.fixed(b, pd),
            "bidQty": p.fixed(bq, qd),
            "askPrice": p.fixed(a, pd),
            "askQty": p.fixed(aq, qd),
            "time": sym.last_change_ms,
        }

    def open_interest(self, sym: SymbolState) -> dict[str, Any]:
        """Open interest in base units: the symbol's level, drifting a few percent over the day."""
        spec = sym.spec
        wave = 1 + 0.03 * math.sin(2 * math.pi * self.now_ms / 21_600_000 + spec.index)
        steps = round(spec.open_interest_usd / spec.price * wave / spec.step)
        return {"openInterest": p.fixed(steps, spec.qty_decimals), "symbol": spec.symbol, "time": self.now_ms}

    def agg_trades(
        self, sym: SymbolState, from_id: int | None, start: int | None, end: int | None, limit: int
    ) -> list[dict[str, Any]]:
        """Recent aggTrades (at least the last :data:`~realtime.sim.tape.KEEP`), Binance's fromId / startTime /
        endTime selection (both bounds inclusive). A time range reaching into the history before the start is
        answered with trades synthesized from its 1-minute candles (:func:`~realtime.sim.candles.history_trades`),
        so a client can ask for any minute the klines show; ``fromId`` pages the live trades only.

        Binance keeps every trade; a ``fromId`` older than the oldest kept is answered from the oldest kept (the
        answer starts later than asked), counted in ``agg_trades_from_id_too_old`` (``/sim/status``) and logged."""
        spec = sym.spec
        tape = self.publisher.recent[spec.index]
        rows: list[Fill]
        if from_id is not None:
            oldest = tape.first_id
            if oldest is not None and from_id < oldest:
                self.agg_trades_from_id_too_old += 1
                log.warning(
                    "sim aggTrades fromId older than the trades kept; answering from the oldest kept",
                    extra={"symbol": spec.symbol, "from_id": from_id, "oldest_kept": oldest,
                           "missing": oldest - from_id, "count": self.agg_trades_from_id_too_old},
                )  # fmt: skip
            rows = tape.since(from_id, limit)
        elif start is not None or end is not None:
            lo = start if start is not None else (end or 0) - 3_600_000
            hi = end if end is not None else lo + 3_600_000
            past = history_trades(self.candles[spec.index].history, lo, hi)
            rows = (past + tape.between(lo, hi, limit))[:limit]
        else:
            rows = tape.latest(limit)
        pd, qd = spec.price_decimals, spec.qty_decimals
        return [
            {"a": a, "p": p.fixed(t, pd), "q": p.fixed(q, qd), "f": f, "l": last, "T": ts, "m": m}
            for a, t, q, f, last, ts, m in rows
        ]

    def klines(
        self, sym: SymbolState, interval: str, start: int | None, end: int | None, limit: int
    ) -> list[Any]:
        spec = sym.spec
        ms = INTERVAL_MS[interval]
        rows = self.candles[spec.index].klines(ms, start, end, limit)
        return [p.kline_row(r, ms, spec.price_decimals, spec.qty_decimals) for r in rows]

    def exchange_info(self) -> dict[str, Any]:
        if self._exchange_info is None:
            self._exchange_info = _exchange_info(self.specs, self.market.start_ms)
        return {**self._exchange_info, "serverTime": self.now_ms}


def _filters(spec_tick: str, spec_step: str, min_price: str, max_qty: str) -> list[dict[str, Any]]:
    return [
        {"minPrice": min_price, "maxPrice": "1000000", "filterType": "PRICE_FILTER", "tickSize": spec_tick},
        {"stepSize": spec_step, "filterType": "LOT_SIZE", "maxQty": max_qty, "minQty": spec_step},
        {"stepSize": spec_step, "filterType": "MARKET_LOT_SIZE", "maxQty": max_qty, "minQty": spec_step},
        {"limit": 200, "filterType": "MAX_NUM_ORDERS"},
        {"limit": 10, "filterType": "MAX_NUM_ALGO_ORDERS"},
        {"notional": "5", "filterType": "MIN_NOTIONAL"},
        {
            "multiplierDown": "0.8500",
            "multiplierUp": "1.1500",
            "multiplierDecimal": "4",
            "filterType": "PERCENT_PRICE",
        },
    ]


def _symbol_entry(
    symbol: str, pair: str, contract: str, status: str, base: str, quote: str, delivery: int, onboard: int,
    pd: int, qd: int,
) -> dict[str, Any]:  # fmt: skip
    return {
        "symbol": symbol,
        "pair": pair,
        "contractType": contract,
        "deliveryDate": delivery,
        "onboardDate": onboard,
        "status": status,
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": base,
        "quoteAsset": quote,
        "marginAsset": quote,
        "pricePrecision": pd,
        "quantityPrecision": qd,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "settlePlan": 0,
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "filters": _filters(p.fixed(1, pd), p.fixed(1, qd), p.fixed(1, pd), "1000000"),
        "orderTypes": [
            "LIMIT",
            "MARKET",
            "STOP",
            "STOP_MARKET",
            "TAKE_PROFIT",
            "TAKE_PROFIT_MARKET",
            "TRAILING_STOP_MARKET",
        ],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
    }


def _exchange_info(specs: Sequence[SymbolSpec], start_ms: int) -> dict[str, Any]:
    never = 4133404800000
    symbols = [
        _symbol_entry(
            s.symbol,
            s.symbol,
            "PERPETUAL",
            "TRADING",
            s.base,
            "USDT",
            never,
            _OLD_LISTING if s.index < 50 else start_ms - (200 + s.index) * 86_400_000,
            s.price_decimals,
            s.qty_decimals,
        )
        for s in specs
    ]
    for x in extra_listings():
        symbols.append(
            _symbol_entry(
                x.symbol,
                x.pair,
                x.contract_type,
                x.status,
                x.base,
                x.quote,
                x.delivery_date,
                _OLD_LISTING,
                2,
                3,
            )
        )
    return {
        "timezone": "UTC",
        "serverTime": start_ms,
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
        ],
        "exchangeFilters": [],
        "assets": [
            {"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"},
            {"asset": "USDC", "marginAvailable": True, "autoAssetExchange": "-10000"},
            {"asset": "BTC", "marginAvailable": True, "autoAssetExchange": "-0.10000000"},
        ],
        "symbols": symbols,
    }
