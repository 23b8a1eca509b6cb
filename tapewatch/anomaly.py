"""Data-quality anomalies (spec 11.1 ``data_quality``): values beyond k standard deviations of their
rolling mean, on the live feed stats of every symbol and on the service's totals. Pure: the sensor passes
the samples and "now", and keeps the returned :class:`QualityState` in its cursor.

Series checked at every call (one per minute):

- per symbol: ``price_jump`` = ``|ln(price / previous price)|`` between two checks, ``spread`` (relative,
  as published), ``message_rate`` = new messages per second since the previous check;
- overall: ``relative_message_rate`` (:func:`relative_rate`: the symbols' message rates summed, over the sum of
  their own usual rates) and ``resync_rate`` (book resyncs per second, from the realtime metrics hash).

Rolling mean and variance are exponentially weighted over ``window`` checks (``alpha = 2 / (window + 1)``),
so the cursor holds a few numbers per series, not a window of values. A value is anomalous when the series
has ``min_samples`` checks behind it and ``|value - mean| > k * std``, in the direction a data fault takes:
upwards for jumps, spreads and resyncs (a calmer market is no anomaly), downwards for message rates (a silent
or slowed feed is a fault; a busier market is not, and a market-wide burst of activity, every symbol's rate up
at once, paused signalling exactly when order flow matters most; a duplicated feed is the books' and the trade
ids' to catch). ``std`` has a floor (:data:`STD_FLOOR`, or 5 % of the mean; half the mean for spreads,
:data:`REL_STD_FLOOR`): a series that never moved has zero variance, and without a floor the first tick of any
size would be "infinitely many sigmas"; a spread moves in whole ticks, so one tick more than usual must not
count as many sigmas.

A check is *dirty* (signalling should pause) when an overall series is anomalous at two checks in a row
(:data:`LASTING`) or beyond ``2k`` (:data:`EXTREME`), or when enough symbols have an anomalous series at once
(:func:`symbols_needed`: at least ``min_symbols``, more in a larger universe; with ~100 series tested a minute,
lone 3-sigma values are expected from heavy-tailed markets alone). In a universe of at most ``min_symbols``
symbols, all of them are needed, and a symbol's anomaly counts only once it lasted two checks.

What the statistics learn (:meth:`Stat.after`): a normal value is folded in with the full weight ``alpha``; an
anomalous one with :data:`ANOMALY_WEIGHT` of it, clipped to ``mean ± 2k sd`` (:data:`FOLD_CLIP`). Folded in
whole, a fault became the statistics' normal within 2-6 checks (a feed silent for 20 minutes resumed
signalling at its 6th) and one 40-sd print widened the sd until the next fault passed unseen; never folded in,
a change that lasts would keep signalling paused for good. At a twentieth of the weight a fault stays anomalous
for half an hour or more, the statistics are barely moved by it (its end is clean at once), and a lasting
change of level is learnt within about an hour.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec

from tapewatch.health import Streak

#: Smallest standard deviation assumed per series kind (units of the series).
STD_FLOOR: dict[str, float] = {
    "price_jump": 1e-4,  # 1 bp of log return
    "spread": 1e-5,  # 0.1 bp
    "message_rate": 0.5,  # messages per second
    "relative_message_rate": 0.02,  # 2 % of the symbols' usual rate
    "resync_rate": 0.02,  # resyncs per second (about one a minute)
}
#: Relative floor: std is at least this share of |mean| (:data:`REL_STD_FLOOR_DEFAULT` for kinds not listed).
#: A spread is counted in ticks: on a liquid symbol it sits at one tick and now and then shows two, a
#: change of +100 % of its mean that no amount of history makes rare in sd terms (after a run of identical
#: one-tick spreads the variance is ~0, so 5 % of the mean made one two-tick reading 10-20 sd and paused
#: signalling for nothing). Half the mean is about half a tick there: one tick of change stays ~2 sd, a
#: spread must exceed ``1 + k/2`` times its mean (2.5x at k = 3) to count, which a real blow-out does.
REL_STD_FLOOR: dict[str, float] = {"spread": 0.5}
REL_STD_FLOOR_DEFAULT = 0.05
#: Series judged downwards (a silent or slowed feed); the others upwards.
_DOWNWARDS = frozenset({"message_rate", "relative_message_rate"})
#: A change of the symbols measured (symbols in one check's set and not the other's, as a share of the larger
#: set) beyond which the overall message rate is not judged at that check.
UNIVERSE_CHANGE = 0.1
OVERALL = "*"
#: An overall series' anomaly (or a symbol's, in a universe of at most ``min_symbols``) makes a check dirty
#: once it lasted this many checks in a row: a lone value beyond k sd is expected now and then (heavy tails,
#: and a rolling variance over ``window`` checks is often a fifth too low), and with no other series to
#: confirm it, it paused signalling for nothing (a calm day of 5 heavy-tailed symbols: 10-20 pauses).
LASTING = 2
#: ... except an overall value beyond this many times ``k``: a sum over the symbols or the service's resync
#: count is not heavy-tailed as one symbol's price is (a 10-sd minute is an ordinary news candle), and a burst
#: of resyncs across the books pauses at once.
EXTREME = 2.0
#: The share of the weight ``alpha`` an anomalous value is folded in with, and the bound (times ``k`` sd from
#: the mean) it is clipped to first: see the module docstring (a silent feed is learnt in ~45 checks, a feed
#: at a fifth of its rate in ~30, a market at a third of its activity in ~20; a 40-sd print widens the sd 6 %).
ANOMALY_WEIGHT = 0.05
FOLD_CLIP = 2.0
#: The overall series; any other kind an older cursor holds under :data:`OVERALL` is dropped.
OVERALL_SERIES = frozenset({"relative_message_rate", "resync_rate"})


class Stat(msgspec.Struct, frozen=True, array_like=True):
    """Exponentially weighted count, mean and variance of one series."""

    n: int = 0
    mean: float = 0.0
    var: float = 0.0
    run: int = 0  # checks in a row this series was anomalous (0 in a cursor written before it)

    def add(self, x: float, alpha: float) -> Stat:
        """The statistics with ``x`` folded in (the first value sets the mean); the run of anomalies ends."""
        if self.n == 0:
            return Stat(1, x, 0.0)
        diff = x - self.mean
        incr = alpha * diff
        return Stat(self.n + 1, self.mean + incr, (1 - alpha) * (self.var + diff * incr))

    def std(self, kind: str) -> float:
        """The standard deviation with the floors of ``kind`` applied."""
        rel = REL_STD_FLOOR.get(kind, REL_STD_FLOOR_DEFAULT)
        return max(math.sqrt(max(self.var, 0.0)), STD_FLOOR[kind], rel * abs(self.mean))

    def deviation(self, x: float, kind: str) -> float:
        """``(x - mean) / std`` with the floors of ``kind`` applied."""
        return (x - self.mean) / self.std(kind)

    def after(self, x: float, sigmas: float | None, kind: str, config: QualityConfig) -> Stat:
        """The statistics after the value ``x`` of one check; ``sigmas``: its deviation when it was anomalous
        (None: it was not, or it was not judged). See the module docstring: a normal value is folded in
        whole, an anomalous one clipped and at :data:`ANOMALY_WEIGHT` of the weight."""
        if sigmas is None:
            return self.add(x, config.alpha)
        bound = FOLD_CLIP * config.k * self.std(kind)
        folded = self.add(min(max(x, self.mean - bound), self.mean + bound), config.alpha * ANOMALY_WEIGHT)
        return Stat(folded.n, folded.mean, folded.var, self.run + 1)


class Prev(msgspec.Struct, frozen=True, kw_only=True):
    """What a symbol (or the totals) looked like at the previous check, for jumps and rates.

    ``members`` (overall only): the symbols whose message rate was measured at the last check that measured
    any (a cursor written before it has none: the next check is compared with nothing)."""

    ts_ms: int = 0
    price: float | None = None
    messages: int | None = None
    resyncs: int | None = None
    members: tuple[str, ...] = ()


class SeriesState(msgspec.Struct, frozen=True, kw_only=True):
    """The previous sample and the rolling statistics of one symbol (or of the totals, ``OVERALL``)."""

    prev: Prev = msgspec.field(default_factory=Prev)
    stats: dict[str, Stat] = {}


class QualityState(msgspec.Struct, frozen=True, kw_only=True):
    """The data-quality sensor's memory: per symbol and overall, and its streak of dirty checks."""

    series: dict[str, SeriesState] = {}
    streak: Streak = msgspec.field(default_factory=Streak)


@dataclass(frozen=True, slots=True)
class FeedSample:
    """One symbol's live stats (``SymbolFeed``): None = unknown (the service has not published it)."""

    symbol: str
    updated_ms: int
    last_price: float | None
    spread: float | None
    messages: int


@dataclass(frozen=True, slots=True)
class TotalsSample:
    """The realtime service's totals (its metrics hash): book resyncs since it started."""

    updated_ms: int
    resyncs: int | None


@dataclass(frozen=True, slots=True)
class Anomaly:
    """A value ``sigmas`` standard deviations from the rolling mean of ``symbol``'s ``series``."""

    symbol: str
    series: str
    value: float
    mean: float
    sigmas: float
    run: int = 1  # checks in a row, this one included, the series was anomalous

    def describe(self) -> str:
        who = "overall" if self.symbol == OVERALL else self.symbol
        text = f"{who} {self.series} {self.value:.6g} is {self.sigmas:+.1f} sd from its mean {self.mean:.6g}"
        return text + (f" ({self.run} checks in a row)" if self.run > 1 else "")

    @property
    def lasting(self) -> bool:
        """Anomalous at :data:`LASTING` checks in a row."""
        return self.run >= LASTING


@dataclass(frozen=True, slots=True)
class QualityConfig:
    """``k`` (anomaly_threshold), ``window``, ``min_samples``, ``min_symbols`` — see the module docstring."""

    k: float = 3.0
    window: int = 30
    min_samples: int = 10
    min_symbols: int = 3
    calm_rate: float = 0.05
    false_alarm: float = 1e-4

    def __post_init__(self) -> None:
        if not (
            self.k > 0
            and self.window >= 2
            and self.min_samples >= 2
            and self.min_symbols >= 1
            and 0 < self.calm_rate < 1
            and 0 < self.false_alarm < 1
        ):
            raise ValueError(f"bad data-quality config: {self}")

    @property
    def alpha(self) -> float:
        return 2.0 / (self.window + 1)


@dataclass(frozen=True, slots=True)
class Assessment:
    """What one check found: the anomalies, whether the check is dirty, how many values were judged,
    how many were unknown (None in the feed), and counter resets seen (a restarted service); ``note``: why
    the overall message rate was not judged, when a change of the symbols measured stopped it ("" else)."""

    anomalies: list[Anomaly]
    dirty: bool
    judged: int
    unknown: int
    resets: int
    symbols: int
    details: dict[str, int] = field(default_factory=dict)
    note: str = ""


def assess(
    state: QualityState,
    feeds: Mapping[str, FeedSample],
    totals: TotalsSample | None,
    config: QualityConfig,
    *,
    rates_apart: bool = False,
) -> tuple[QualityState, Assessment]:
    """Judge one check's samples against the rolling statistics, then fold them in.

    Symbols whose stats were not republished since the previous check (same ``updated_ms``) are left as
    they are; symbols that left the feed are forgotten (the cursor stays bounded). ``rates_apart``: this
    check's message rates do not compare with the statistics (the backup feed polls REST instead of the
    streams, or the interval straddles a switch of feed): neither judged nor folded in, so the statistics
    stay those of the streams."""
    found: list[Anomaly] = []
    counts = {"judged": 0, "unknown": 0, "resets": 0}
    series: dict[str, SeriesState] = {}
    rates: dict[str, tuple[float, Stat]] = {}  # symbol -> its message rate now, its statistics before it
    for symbol, feed in sorted(feeds.items()):
        old = state.series.get(symbol, SeriesState())
        values = _feed_values(old.prev, feed, counts)
        if rates_apart and values is not None:
            values.pop("message_rate", None)
        if values is not None and "message_rate" in values:
            rates[symbol] = (values["message_rate"], old.stats.get("message_rate", Stat()))
        prev = Prev(ts_ms=feed.updated_ms, price=feed.last_price, messages=feed.messages)
        series[symbol] = _judge(symbol, old, values, prev, config, found, counts)
    old = state.series.get(OVERALL, SeriesState())
    # statistics of a kind no longer judged (an older cursor's total or per-symbol message rate) are dropped
    old = SeriesState(prev=old.prev, stats={k: v for k, v in old.stats.items() if k in OVERALL_SERIES})
    overall: dict[str, float] = {}
    members, note = old.prev.members, ""
    if rates:
        members = tuple(sorted(rates))
        relative, note = relative_rate(rates, old.prev.members, config.min_samples)
        if relative is not None:
            overall["relative_message_rate"] = relative
    ts_ms, resyncs = old.prev.ts_ms, old.prev.resyncs
    if totals is not None:
        overall |= _total_values(old.prev, totals, counts) or {}
        ts_ms, resyncs = max(ts_ms, totals.updated_ms), totals.resyncs
    if rates_apart:
        note = "message rates not judged: the backup feed is on or was at the previous check"
    if rates or totals is not None:
        prev = Prev(ts_ms=ts_ms, resyncs=resyncs, members=members)
        series[OVERALL] = _judge(OVERALL, old, overall, prev, config, found, counts)
    elif OVERALL in state.series:
        series[OVERALL] = old
    anomalous_symbols = {a.symbol for a in found if a.symbol != OVERALL}
    needed = symbols_needed(len(feeds), config)
    # with all of a small universe needed, one lone value would do: as for the overall series, ask it to last
    counted = {
        a.symbol for a in found if a.symbol != OVERALL and (len(feeds) > config.min_symbols or a.lasting)
    }
    dirty = (
        any(a.symbol == OVERALL and (a.lasting or abs(a.sigmas) > EXTREME * config.k) for a in found)
        or len(counted) >= needed
    )
    assessment = Assessment(
        anomalies=sorted(found, key=lambda a: -abs(a.sigmas)),
        dirty=dirty,
        judged=counts["judged"],
        unknown=counts["unknown"],
        resets=counts["resets"],
        symbols=len(feeds),
        details={"anomalous_symbols": len(anomalous_symbols), "symbols_needed": needed},
        note=note,
    )
    return QualityState(series=series, streak=state.streak), assessment


def _feed_values(prev: Prev, feed: FeedSample, counts: dict[str, int]) -> dict[str, float] | None:
    if feed.updated_ms <= prev.ts_ms:
        return None  # nothing new since the previous check
    values: dict[str, float] = {}
    if feed.spread is None:
        counts["unknown"] += 1
    elif math.isfinite(feed.spread) and feed.spread >= 0:
        values["spread"] = feed.spread
    if feed.last_price is None or not (math.isfinite(feed.last_price) and feed.last_price > 0):
        counts["unknown"] += 1
    elif prev.price is not None and prev.price > 0:
        values["price_jump"] = abs(math.log(feed.last_price / prev.price))
    rate = _rate(prev.messages, feed.messages, prev.ts_ms, feed.updated_ms, counts)
    if rate is not None:
        values["message_rate"] = rate
    return values


def symbols_needed(symbols: int, config: QualityConfig) -> int:
    """How many of ``symbols`` must show an anomalous series at once for a check to be dirty: the fewest
    (at least ``min_symbols``) that a calm market, each symbol anomalous at rate ``calm_rate`` independently,
    reaches with probability at most ``false_alarm``; all of them when fewer follow."""
    if symbols <= config.min_symbols:
        return max(1, symbols)
    log_p, log_q = math.log(config.calm_rate), math.log1p(-config.calm_rate)
    below = 0.0  # P(fewer than k anomalous symbols); terms in logs: comb(n, k) * p**k overflows from n ~ 3000
    for k in range(symbols + 1):
        if k >= config.min_symbols and 1.0 - below <= config.false_alarm:
            return k
        log_term = (
            math.lgamma(symbols + 1)
            - math.lgamma(k + 1)
            - math.lgamma(symbols - k + 1)
            + k * log_p
            + (symbols - k) * log_q
        )
        below += math.exp(log_term)
    return symbols


def relative_rate(
    rates: Mapping[str, tuple[float, Stat]], before: tuple[str, ...], min_samples: int
) -> tuple[float | None, str]:
    """The overall message rate of one check, like with like: the message rates of the symbols measured now
    (``rates``: each symbol's rate and its own statistics before it), summed, over the sum of the same
    symbols' own usual rates (their rolling means) — about 1 on a calm feed, whichever symbols are followed.
    Only symbols past their own warm-up (``min_samples``) count. A total divided by the number of symbols was
    no such thing: a universe cut keeps the busiest symbols (its rate per symbol rises), and the feed stats
    of the symbols cut linger in Redis until they expire (their count stays, the rate per symbol halves).

    None (with a note saying why) when nothing can be judged: no warm symbol, their usual rates too low to
    divide by, or the symbols measured changed by more than :data:`UNIVERSE_CHANGE` since the previous check
    that measured any (``before``: those symbols; a rescan, the load sensor's cut or its restore) — that
    check is skipped, not alarmed on: its intervals may straddle the change."""
    if before:
        changed = len(set(rates) ^ set(before))
        if changed > UNIVERSE_CHANGE * max(len(rates), len(before)):
            return None, (
                f"overall message rate not judged: the symbols measured changed ({len(before)} -> "
                f"{len(rates)}, {changed} in or out)"
            )
    warm = [(rate, stat.mean) for rate, stat in rates.values() if stat.n >= min_samples]
    usual = sum(mean for _, mean in warm)
    if not warm or usual < STD_FLOOR["message_rate"]:
        return None, ""
    return sum(rate for rate, _ in warm) / usual, ""


def _total_values(prev: Prev, totals: TotalsSample, counts: dict[str, int]) -> dict[str, float] | None:
    if totals.updated_ms <= prev.ts_ms:
        return None
    if totals.resyncs is None:
        counts["unknown"] += 1
        return None
    rate = _rate(prev.resyncs, totals.resyncs, prev.ts_ms, totals.updated_ms, counts)
    return None if rate is None else {"resync_rate": rate}


def _rate(old: int | None, new: int, old_ms: int, new_ms: int, counts: dict[str, int]) -> float | None:
    if old is None or old_ms <= 0 or new_ms <= old_ms:
        return None
    if new < old:
        counts["resets"] += 1  # the service restarted: its counters began again
        return None
    return (new - old) * 1000.0 / (new_ms - old_ms)


def _judge(
    symbol: str,
    old: SeriesState,
    values: dict[str, float] | None,
    prev: Prev,
    config: QualityConfig,
    found: list[Anomaly],
    counts: dict[str, int],
) -> SeriesState:
    if values is None:
        return old
    stats = dict(old.stats)
    for name, value in values.items():
        stat = stats.get(name, Stat())
        sigmas = None
        if stat.n >= config.min_samples:
            counts["judged"] += 1
            deviation = stat.deviation(value, name)
            if _beyond(deviation, config.k, name):
                found.append(Anomaly(symbol, name, value, stat.mean, deviation, stat.run + 1))
                sigmas = deviation
        stats[name] = stat.after(value, sigmas, name, config)
    return SeriesState(prev=prev, stats=stats)


def _beyond(sigmas: float, k: float, kind: str) -> bool:
    return -sigmas > k if kind in _DOWNWARDS else sigmas > k
