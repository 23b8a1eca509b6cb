"""The simulated market: pure, deterministic dynamics of every symbol's book and trades.

The market advances in fixed steps of :data:`STEP_MS` simulated milliseconds. Each symbol has a
latent fair price (a random walk with volatility regimes and, during and after planted episodes, a drift) and a
limit book of a few hundred levels per side that makers keep around it: they requote toward the fair
price, change and cancel levels away from the touch and refill what takers consumed. Takers arrive as
a Poisson process with heavy-tailed sizes and lean toward the fair price. Every book change takes the
next id of one counter shared by all symbols, as Binance's update ids do.

Nothing here knows about time outside the model, sockets or clients: the same seed gives the same
events whoever watches. What changed during a step is left in each :class:`SymbolState`'s
``changes``/``tops``/``trades`` lists for :mod:`realtime.sim.publisher` to turn into messages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from realtime.sim.candles import first_agg_id as default_agg_id
from realtime.sim.draws import Draws
from realtime.sim.episodes import (
    FAVOURED_QTY,
    GIVE_BACK,
    LARGE_TRADE_QUOTE,
    OPPOSITE_QTY,
    RATE_BOOST,
    SIZE_BOOST,
    Episode,
    plan_episode,
)
from realtime.sim.levels import Side
from realtime.sim.symbols import SymbolSpec

STEP_MS = 50
NEVER = 2**62
FIRST_UPDATE_ID = 7_000_000_000_000
MAX_WALK = 5  # a taker order sweeps at most this many levels (the rest is cancelled, IOC)
LEAN_PER_STEP = 0.5  # during an episode, chance per step that a maker re-sizes a top-10 level its way
MAX_EXTRA_LEVELS = 12  # a side holds at most this many levels more than its spec's ``levels``
GAP_SCAN = 64  # makers look for holes to refill among this many levels nearest the touch

# (update id, time ms, is_ask, tick, qty)
Change = tuple[int, int, bool, int, int]
# (update id, time ms, (bid, bid qty, ask, ask qty))
Top = tuple[int, int, int, int]
TopChange = tuple[int, int, Top]
# (agg id, tick, qty, first trade id, last trade id, time ms, buyer is maker)
Fill = tuple[int, int, int, int, int, int, bool]


class SymbolState:
    """The mutable state of one symbol plus what changed since the publisher last drained it."""

    __slots__ = (
        "agg_id",
        "ask_mult",
        "asks",
        "base_qty",
        "bid_mult",
        "bids",
        "buy_bias",
        "calm_until",
        "changes",
        "episode",
        "index",
        "last_change_ms",
        "last_id",
        "last_qty",
        "next_episode_ms",
        "pending_large",
        "size_mult",
        "spec",
        "top",
        "tops",
        "trade_id",
        "trades",
        "unit",
    )

    def __init__(self, spec: SymbolSpec, first_trade_id: int, first_agg_id: int | None = None) -> None:
        self.spec = spec
        self.index = spec.index
        self.bids = Side(is_bid=True)
        self.asks = Side(is_bid=False)
        self.last_id = 0
        self.last_change_ms = 0
        self.trade_id = first_trade_id
        self.agg_id = default_agg_id(first_trade_id) if first_agg_id is None else first_agg_id
        self.last_qty = 1
        self.unit = spec.tick * spec.step  # quote value of one step at a price of one tick
        level_quote = max(300.0, 2.0 * spec.mean_trade_quote)
        self.base_qty = max(1.0, level_quote / (spec.price * spec.step))
        self.changes: list[Change] = []
        self.tops: list[TopChange] = []
        self.trades: list[Fill] = []
        self.top: Top = (0, 0, 0, 0)
        self.episode: Episode | None = None
        self.pending_large: list[int] = []
        self.next_episode_ms = NEVER
        self.calm_until = 0
        self.bid_mult = 1.0
        self.ask_mult = 1.0
        self.size_mult = 1.0
        self.buy_bias = 0.0


class Market:
    """Every symbol's market, advanced one :data:`STEP_MS` step at a time by :meth:`step`."""

    def __init__(
        self,
        specs: Sequence[SymbolSpec],
        seed: int,
        start_ms: int,
        first_trade_ids: Sequence[int] | None = None,
        episode_rate_scale: float = 1.0,
        *,
        first_agg_ids: Sequence[int | None] | None = None,
        first_update_id: int | None = None,
    ) -> None:
        """``first_agg_ids`` (default: half the first trade id) and ``first_update_id`` (default: from the seed)
        let a resumed market go on with the ids the last run stopped at (:mod:`realtime.sim.resume`)."""
        seq = np.random.SeedSequence([seed & 0xFFFFFFFF, seed >> 32, 0x5151])
        # The first three children are what ``spawn(3)`` gave before episodes pushed the price: the pushes take
        # a fourth stream, so the tape's other draws and the episodes' schedule stay those of the seed.
        vec_seed, event_seed, episode_seed, push_seed = seq.spawn(4)
        self._vec = np.random.Generator(np.random.PCG64(vec_seed))
        self._draws = Draws(np.random.Generator(np.random.PCG64(event_seed)))
        self._episode_draws = Draws(np.random.Generator(np.random.PCG64(episode_seed)))
        self._push_draws = Draws(np.random.Generator(np.random.PCG64(push_seed)))
        self.specs = list(specs)
        self.now_ms = start_ms - start_ms % STEP_MS
        self.start_ms = self.now_ms
        self._next_id = (
            FIRST_UPDATE_ID + (seed % 997) * 1_000_000_000 if first_update_id is None else first_update_id
        )
        self.episodes: list[Episode] = []
        self.touched: list[int] = []
        self._episode_rate_scale = episode_rate_scale
        n = len(self.specs)
        step_s = STEP_MS / 1000
        self.log_fair = np.log(np.array([s.price for s in self.specs]))
        self._sigma = np.array([s.daily_vol for s in self.specs]) * math.sqrt(step_s / 86_400)
        self._lam = np.array([s.trade_rate for s in self.specs]) * step_s
        self._mu = np.array([s.book_rate for s in self.specs]) * step_s
        self._regime = np.zeros(n, dtype=bool)
        self.rate_mult = np.ones(n)
        self.vol_mult = np.ones(n)
        self.drift = np.zeros(n)
        self.next_event = np.full(n, NEVER, dtype=np.int64)
        ids = first_trade_ids or [1_000_000 * (i + 1) for i in range(n)]
        aggs = first_agg_ids or [None] * n
        self.symbols = [SymbolState(spec, ids[i], aggs[i]) for i, spec in enumerate(self.specs)]
        for sym in self.symbols:
            self._seed_book(sym)
            rate = sym.spec.episodes_per_hour * episode_rate_scale
            if rate > 0:
                first = self.now_ms + 300_000 + int(self._episode_draws.exp(3_600_000 / rate))
                sym.next_episode_ms = first
                self.next_event[sym.index] = first

    # --- set-up ----------------------------------------------------------------------------------------
    def _seed_book(self, sym: SymbolState) -> None:
        spec, d = sym.spec, self._draws
        fair = spec.price / spec.tick
        bid = math.floor(fair - (spec.spread_ticks - 1) / 2)
        for side, start, direction in ((sym.bids, bid, -1), (sym.asks, bid + spec.spread_ticks, 1)):
            tick = start
            for k in range(spec.levels):
                side.set(tick, max(1, int(sym.base_qty * (1 + k / 30) * d.lognormal(0.6))))
                tick += direction * (1 if k < spec.dense_levels else spec.level_gap + d.below(spec.level_gap))
        sym.last_id = self._next_id
        self._next_id += 1
        sym.last_change_ms = self.now_ms
        sym.top = (sym.bids.best(), sym.bids.best_qty(), sym.asks.best(), sym.asks.best_qty())

    # --- stepping --------------------------------------------------------------------------------------
    def step(self) -> int:
        """Advance one step; return the new simulated time. ``touched`` lists the symbols whose book changed
        during the step (every trade changes the book), in index order."""
        t0 = self.now_ms
        t1 = t0 + STEP_MS
        vec = self._vec
        n = len(self.symbols)
        flip = vec.random(n) < np.where(self._regime, 1 / 24_000, 1 / 96_000)  # ~20 min high, ~80 min low
        self._regime ^= flip
        hot = self._regime
        self.log_fair += self._sigma * self.vol_mult * np.where(hot, 2.5, 1.0) * vec.standard_normal(n)
        self.log_fair += self.drift
        trades = vec.poisson(self._lam * self.rate_mult * np.where(hot, 1.6, 1.0))
        books = vec.poisson(self._mu * np.where(hot, 1.5, 1.0))
        active = np.flatnonzero((trades + books > 0) | (self.next_event < t1) | (self.rate_mult > 1.0))
        touched: list[int] = []
        if len(active):
            n_trades = trades.tolist()
            n_books = books.tolist()
            fair = (np.exp(self.log_fair)).tolist()
            for i in active.tolist():
                sym = self.symbols[i]
                before = sym.last_id
                if self.next_event[i] < t1:
                    self._scheduled(sym, t0)
                events = [(t0 + int(self._draws.u() * STEP_MS), 1) for _ in range(n_trades[i])]
                events += [(t0 + int(self._draws.u() * STEP_MS), 0) for _ in range(n_books[i])]
                while sym.pending_large and sym.pending_large[0] < t1:
                    events.append((max(t0, sym.pending_large.pop(0)), 2))
                if sym.episode is not None and self._draws.u() < LEAN_PER_STEP:
                    events.append((t0 + int(self._draws.u() * STEP_MS), 3))
                events.sort()
                f = fair[i] / sym.spec.tick
                for t, kind in events:
                    if kind == 0:
                        self._maker(sym, t, f)
                    elif kind == 1:
                        self._taker(sym, t, f, None)
                    elif kind == 2:
                        self._taker(sym, t, f, sym.episode.sign if sym.episode else 1)
                    else:
                        self._lean(sym, t)
                if sym.last_id != before:
                    touched.append(i)
        self.touched = touched
        self.now_ms = t1
        return t1

    # --- episodes --------------------------------------------------------------------------------------
    def _scheduled(self, sym: SymbolState, t0: int) -> None:
        i = sym.index
        ep = sym.episode
        if ep is not None and t0 >= ep.end_ms:
            sym.episode = None
            sym.bid_mult = sym.ask_mult = sym.size_mult = 1.0
            sym.buy_bias = 0.0
            sym.pending_large.clear()
            self.rate_mult[i] = 1.0
            # Moved: the planted move follows. Not moved: the push fails and part of it is given back.
            span = max(STEP_MS, ep.move_end_ms - ep.end_ms)
            after = math.log1p(ep.move_fraction) if ep.moved else -GIVE_BACK * math.log1p(ep.push_fraction)
            self.drift[i] = after * STEP_MS / span
            self.vol_mult[i] = 0.6 if ep.moved else 0.4  # a planted move, not noise, decides the outcome
            sym.calm_until = ep.move_end_ms
            rate = max(1e-9, sym.spec.episodes_per_hour * self._episode_rate_scale)
            gap = int(self._episode_draws.exp(3_600_000 / rate))
            sym.next_episode_ms = min(NEVER, ep.move_end_ms + 600_000 + gap)
        elif sym.calm_until and t0 >= sym.calm_until:
            sym.calm_until = 0
            self.drift[i] = 0.0
            self.vol_mult[i] = 1.0
        elif ep is None and not sym.calm_until and t0 >= sym.next_episode_ms:
            ep = plan_episode(self._episode_draws, sym.spec.symbol, t0, sym.spec.daily_vol, self._push_draws)
            self.episodes.append(ep)
            # Takers trading one way push the fair price that way while the episode lasts.
            self.drift[i] = math.log1p(ep.push_fraction) * STEP_MS / max(STEP_MS, ep.end_ms - ep.start_ms)
            sym.episode = ep
            sym.next_episode_ms = NEVER
            sym.pending_large = list(ep.large_trade_times)
            sym.bid_mult, sym.ask_mult = (
                (FAVOURED_QTY, OPPOSITE_QTY) if ep.sign > 0 else (OPPOSITE_QTY, FAVOURED_QTY)
            )
            sym.size_mult = SIZE_BOOST
            sym.buy_bias = 0.12 * ep.sign
            self.rate_mult[i] = RATE_BOOST
            self._reshape(sym, t0)
        ep = sym.episode
        nxt = [sym.next_episode_ms]
        if ep is not None:
            nxt.append(ep.end_ms)
        if sym.calm_until:
            nxt.append(sym.calm_until)
        self.next_event[i] = min(nxt)

    def _reshape(self, sym: SymbolState, t: int) -> None:
        """Lean the top 10 levels of both sides the episode's way, at once."""
        for is_ask, side, mult in ((False, sym.bids, sym.bid_mult), (True, sym.asks, sym.ask_mult)):
            for tick, qty in side.top(10):
                self._set(sym, is_ask, tick, max(1, int(qty * mult * (1 + 0.3 * self._draws.u()))), t)

    def _lean(self, sym: SymbolState, t: int) -> None:
        """During an episode makers keep the top 10 levels leaning: the smallest level on the favoured side
        grows, the largest on the other side shrinks."""
        d = self._draws
        is_ask = d.u() < 0.5
        side = sym.asks if is_ask else sym.bids
        favoured = (sym.ask_mult if is_ask else sym.bid_mult) > 1.0
        top = side.top(10)
        k = (
            min(range(len(top)), key=lambda j: top[j][1])
            if favoured
            else max(range(len(top)), key=lambda j: top[j][1])
        )
        self._set(sym, is_ask, top[k][0], self._qty(sym, is_ask, k), t)

    # --- book changes ----------------------------------------------------------------------------------
    def _set(self, sym: SymbolState, is_ask: bool, tick: int, qty: int, t: int) -> None:
        (sym.asks if is_ask else sym.bids).set(tick, qty)
        uid = self._next_id
        self._next_id = uid + 1
        sym.changes.append((uid, t, is_ask, tick, qty))
        sym.last_id = uid
        sym.last_change_ms = t
        bids, asks = sym.bids, sym.asks
        bid = -bids.keys[0]
        ask = asks.keys[0]
        top = (bid, bids.qty[bid], ask, asks.qty[ask])
        if top != sym.top:
            sym.top = top
            sym.tops.append((uid, t, top))

    def _qty(self, sym: SymbolState, is_ask: bool, depth: int) -> int:
        mult = (sym.ask_mult if is_ask else sym.bid_mult) if depth < 10 else 1.0
        return max(1, int(sym.base_qty * (1 + depth / 30) * mult * self._draws.lognormal(0.6)))

    def _requote(self, sym: SymbolState, t: int, fair: float) -> None:
        """Makers pull stale quotes and quote again around the fair price."""
        spread = sym.spec.spread_ticks
        target_bid = math.floor(fair - (spread - 1) / 2)
        target_ask = target_bid + spread
        bids, asks = sym.bids, sym.asks
        pulled = 0
        while len(bids) > 2 and bids.best() > target_bid and pulled < 12:
            self._set(sym, False, bids.best(), 0, t)
            pulled += 1
        while len(asks) > 2 and asks.best() < target_ask and pulled < 24:
            self._set(sym, True, asks.best(), 0, t)
            pulled += 1
        tick = min(target_bid, asks.best() - 1)
        if tick > bids.best():
            self._set(sym, False, tick, self._qty(sym, False, 0), t)
        tick = max(target_ask, bids.best() + 1)
        if tick < asks.best():
            self._set(sym, True, tick, self._qty(sym, True, 0), t)
        self._refill_dense(sym, False, t)
        self._refill_dense(sym, True, t)

    def _refill_dense(self, sym: SymbolState, is_ask: bool, t: int) -> None:
        """Quote every empty tick of the one-tick-apart block behind the touch.

        A requote or a sweep removes levels near the touch; without this makers would put back only the
        new best level, the block behind it would thin out and the next sweep would open a hole of
        hundreds of ticks (spreads of several percent on liquid symbols)."""
        side = sym.asks if is_ask else sym.bids
        best, outward = side.best(), side.sign
        for k in range(1, sym.spec.dense_levels):
            tick = best + outward * k
            if side.get(tick) == 0:
                self._set(sym, is_ask, tick, self._qty(sym, is_ask, k), t)
        self._thin(sym, is_ask, side, t)
        cap = sym.spec.levels + MAX_EXTRA_LEVELS
        while len(side) > cap:  # makers far out cancel as many as were added, so the side stays bounded
            self._set(sym, is_ask, side.worst(), 0, t)

    def _thin(self, sym: SymbolState, is_ask: bool, side: Side, t: int) -> None:
        """Cancel the levels behind the dense block that sit closer than ``level_gap`` to the level before them.

        They are what is left of an earlier dense block once the touch moved away: makers quote one tick apart
        next to the touch only. Kept, every requote would leave such a block behind, the side would fill up
        with one-tick levels wherever the price had been, and the level budget would push the far levels out:
        the narrower side's top 100 levels of a tail book shrank from 0.63 % to 0.13 % of the price within five
        minutes, less than the price moves, so clients with a 100-level snapshot kept going out of sync. Only
        the first :data:`GAP_SCAN` levels are looked at, as for holes."""
        gap = sym.spec.level_gap
        keys = side.keys
        start = min(len(keys), sym.spec.dense_levels) - 1
        if gap <= 1 or start < 0:
            return
        kept = keys[start]
        stale: list[int] = []
        for key in keys[start + 1 : GAP_SCAN]:
            if key - kept < gap:
                stale.append(key)
            else:
                kept = key
        for key in stale:
            self._set(sym, is_ask, side.sign * key, 0, t)

    def _first_gap(self, sym: SymbolState, side: Side) -> tuple[int, int] | None:
        """The first unusually wide gap from the touch, as (depth, tick of the level before it), or None.

        Within the dense block levels are one tick apart; further out makers space them ``level_gap`` to
        ``2 * level_gap - 1`` ticks apart, so a wider step means takers or cancels left a hole there. Only the
        first :data:`GAP_SCAN` levels are looked at: holes further out never reach the spread."""
        spec = sym.spec
        keys = side.keys
        dense, wide = spec.dense_levels, 2 * spec.level_gap
        for k in range(min(len(keys), GAP_SCAN) - 1):
            if keys[k + 1] - keys[k] > (1 if k + 1 < dense else wide):
                return k, side.sign * keys[k]
        return None

    def _maker(self, sym: SymbolState, t: int, fair: float) -> None:
        d = self._draws
        r = d.u()
        if r < 0.3:
            self._requote(sym, t, fair)
            return
        is_ask = d.u() < 0.5
        side = sym.asks if is_ask else sym.bids
        n = len(side)
        spec = sym.spec
        if r < 0.82:
            # Mostly near the touch; sometimes anywhere (deep orders get amended too, so every level of the
            # book shows up in a diff now and then).
            depth = min(n - 1, int(d.exp(6.0))) if d.u() < 0.85 else d.below(n)
            tick = side.nth(depth)
            if depth > 0 and d.u() < 0.15:
                self._set(sym, is_ask, tick, 0, t)  # cancelled
            else:
                self._set(sym, is_ask, tick, self._qty(sym, is_ask, depth), t)
            return
        outward = side.sign  # bids grow downward, asks upward
        if n < spec.levels:
            # Refill the hole nearest the touch first; extend the far end only when there is none.
            gap = self._first_gap(sym, side)
            if gap is None:
                tick = side.worst() + outward * (spec.level_gap + d.below(spec.level_gap))
                self._set(sym, is_ask, tick, self._qty(sym, is_ask, n), t)
            else:
                depth, inner = gap
                step = 1 if depth + 1 < spec.dense_levels else spec.level_gap + d.below(spec.level_gap)
                self._set(sym, is_ask, inner + outward * step, self._qty(sym, is_ask, depth + 1), t)
        elif n > spec.levels + MAX_EXTRA_LEVELS:
            self._set(sym, is_ask, side.worst(), 0, t)
        else:
            # A level added between two others keeps the book's spacing there: one tick in the dense block,
            # at least ``level_gap`` behind it (see :meth:`_thin`).
            depth = min(n - 2, int(d.exp(10.0)))
            inner, outer = side.nth(depth), side.nth(depth + 1)
            dense = depth + 1 < spec.dense_levels
            step = 1 if dense else spec.level_gap + d.below(spec.level_gap)
            if abs(outer - inner) >= step + (1 if dense else spec.level_gap):
                self._set(sym, is_ask, inner + outward * step, self._qty(sym, is_ask, depth + 1), t)
            elif depth > 0:
                self._set(sym, is_ask, inner, 0, t)

    def _taker(self, sym: SymbolState, t: int, fair: float, forced_sign: int | None) -> None:
        """One taker order: sweep the opposite side (up to :data:`MAX_WALK` levels), one aggTrade a level."""
        d = self._draws
        spec = sym.spec
        bids, asks = sym.bids, sym.asks
        if forced_sign is None:
            mid = (bids.best() + asks.best()) / 2
            p_buy = 0.5 + 0.3 * math.tanh((fair - mid) / max(1, spec.spread_ticks)) + sym.buy_bias
            is_buy = d.u() < p_buy
            quote = spec.mean_trade_quote * sym.size_mult * d.pareto(1.5, 150.0)
            price = asks.best() if is_buy else bids.best()
            qty = max(1, int(quote / (price * sym.unit)))
        else:
            is_buy = forced_sign > 0
            price = asks.best() if is_buy else bids.best()
            quote = LARGE_TRADE_QUOTE * (1.05 + 1.5 * d.u())
            qty = math.ceil(quote / (price * sym.unit))
            side = asks if is_buy else bids
            # A large resting order at the touch absorbs the whole taker order at one price.
            self._set(sym, is_buy, price, side.get(price) + qty + int(sym.base_qty), t)
        side = asks if is_buy else bids
        remaining = qty
        for _ in range(MAX_WALK):
            if remaining <= 0 or len(side) <= 2:
                break
            tick = side.best()
            have = side.get(tick)
            fill = min(remaining, have)
            remaining -= fill
            self._set(sym, is_buy, tick, have - fill, t)
            fills = min(fill, 1 + d.below(3))
            first = sym.trade_id
            sym.trade_id = first + fills
            sym.trades.append((sym.agg_id, tick, fill, first, first + fills - 1, t, not is_buy))
            sym.agg_id += 1
            sym.last_qty = fill
        if d.u() < 0.5:  # makers often refill the touch right after a sweep
            self._requote(sym, t, fair)

    # --- reading ---------------------------------------------------------------------------------------
    @property
    def next_update_id(self) -> int:
        """The id the next book change takes."""
        return self._next_id

    def fair_price(self, index: int) -> float:
        return math.exp(float(self.log_fair[index]))
