"""What the backup feed (:mod:`realtime.backup_feed`) polls, how fast, and which symbols: its
:class:`BackupConfig` (each poller's share of the REST weight budget, and from it how many symbols stay fresh:
:meth:`BackupConfig.max_symbols`) and the :func:`follow_plan` that picks them (open signals first, then by
score)."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from tapewatch.adapters import binance_weights as weights
from tapewatch.settings import SNAPSHOT_WEIGHTS, Settings

__all__ = ["BackupConfig", "FollowPlan", "Poll", "follow_plan"]

#: Seconds per unit of a kline interval (``1m``, ``15m``, ``1h``, ...).
_INTERVAL_UNIT_S = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


class Poll(StrEnum):
    DEPTH = "depth"
    TRADES = "trades"
    KLINES = "klines"


class FollowPlan(NamedTuple):
    """The symbols the backup feed polls (``followed``, in polling order) and those beyond what its budget
    keeps fresh (``not_followed``, not polled at all)."""

    followed: tuple[str, ...]
    not_followed: tuple[str, ...]


def follow_plan(symbols: Sequence[str], first: Collection[str], capacity: int) -> FollowPlan:
    """The first ``capacity`` of ``symbols``, those in ``first`` (with open signals) ahead of the others, each
    group in the order given (the universe's, best score first); the rest are not followed."""
    ordered = [s for s in symbols if s in first] + [s for s in symbols if s not in first]
    cut = max(0, capacity)
    return FollowPlan(tuple(ordered[:cut]), tuple(ordered[cut:]))


def _interval_seconds(interval: str) -> int:
    """Length of a kline interval such as ``1m`` or ``15m``; ValueError for one this feed cannot poll."""
    unit = _INTERVAL_UNIT_S.get(interval[-1:])
    if unit is None or not interval[:-1].isdigit() or int(interval[:-1]) < 1:
        raise ValueError(f"backup feed kline interval must look like 1m, 15m, 1h, 1d or 1w; got {interval!r}")
    return int(interval[:-1]) * unit


@dataclass(frozen=True, slots=True)
class BackupConfig:
    """What the backup feed polls and how fast.

    ``weight_per_minute`` is the process's usable REST weight (``Settings.usable_weight_per_minute``); each
    poller gets its ``*_share`` of it (together at most 1, the rest stays for other callers) and never polls
    one symbol more often than its ``*_every`` seconds. ``trade_stale_after`` is the engine's
    (``Settings.trade_stale_after``): a trades round may take ``trades_round_share`` of it, the rest is slack
    for a busy symbol's further pages and slow answers (see :meth:`max_symbols`).
    """

    weight_per_minute: int = 1920
    depth_share: float = 0.4
    trades_share: float = 0.5
    klines_share: float = 0.05
    depth_limit: int = 50
    depth_every: float = 1.0
    trades_limit: int = weights.MAX_AGG_TRADES_LIMIT
    trades_every: float = 1.0
    trades_max_pages: int = 3
    klines_every: float = 60.0
    klines_limit: int = 3
    intervals: tuple[str, ...] = ("1m", "15m")
    catch_up_timeout: float = 10.0
    refused_pause: float = 300.0
    trade_stale_after: float = 60.0
    trades_round_share: float = 0.75

    def __post_init__(self) -> None:
        if self.weight_per_minute < 1:
            raise ValueError(f"backup feed weight_per_minute must be >= 1; got {self.weight_per_minute}")
        shares = (self.depth_share, self.trades_share, self.klines_share)
        if any(not 0 < s <= 1 for s in shares) or sum(shares) > 1 + 1e-9:
            raise ValueError(f"backup feed shares must be in (0, 1] and sum to at most 1; got {shares}")
        if self.depth_limit not in SNAPSHOT_WEIGHTS:
            raise ValueError(f"depth_limit must be one of {sorted(SNAPSHOT_WEIGHTS)}; got {self.depth_limit}")
        weights.klines_weight(self.klines_limit)  # ValueError outside 1..1500
        if not 1 <= self.trades_limit <= weights.MAX_AGG_TRADES_LIMIT or self.trades_max_pages < 1:
            raise ValueError("trades_limit must be within 1..1000 and trades_max_pages >= 1")
        if min(self.depth_every, self.trades_every, self.klines_every, self.catch_up_timeout) <= 0:
            raise ValueError("backup feed intervals and catch_up_timeout must be > 0 s")
        if self.trade_stale_after <= 0 or not 0 < self.trades_round_share <= 1:
            raise ValueError("trade_stale_after must be > 0 s and trades_round_share within (0, 1]")
        if not self.intervals:
            raise ValueError("backup feed intervals must name at least one kline interval")
        for interval in self.intervals:
            _interval_seconds(interval)

    @classmethod
    def from_settings(cls, settings: Settings) -> BackupConfig:
        return cls(
            weight_per_minute=settings.usable_weight_per_minute,
            trade_stale_after=settings.trade_stale_after,
        )

    def weight(self, poll: Poll) -> int:
        """Request weight of one poll of ``poll``."""
        if poll is Poll.DEPTH:
            return weights.depth_weight(self.depth_limit)
        if poll is Poll.TRADES:
            return weights.AGG_TRADES_WEIGHT
        return weights.klines_weight(self.klines_limit)

    def spacing(self, poll: Poll) -> float:
        """Seconds between two requests of ``poll`` so that it stays within its share of the budget."""
        share = {Poll.DEPTH: self.depth_share, Poll.TRADES: self.trades_share, Poll.KLINES: self.klines_share}
        return self.weight(poll) * 60.0 / (share[poll] * self.weight_per_minute)

    def round_seconds(self, poll: Poll, symbols: int) -> float:
        """How long one round of ``poll`` over ``symbols`` symbols takes: how stale its data gets."""
        requests = symbols * (len(self.intervals) if poll is Poll.KLINES else 1)
        every = {Poll.DEPTH: self.depth_every, Poll.TRADES: self.trades_every, Poll.KLINES: self.klines_every}
        return max(every[poll], requests * self.spacing(poll))

    def max_symbols(self) -> int:
        """The most symbols the budget keeps fresh (at least 1): one aggTrades page each within
        ``trades_round_share`` of ``trade_stale_after``, and every kline polled before it leaves the last
        ``klines_limit`` bars of the shortest interval (so each bar is seen closed). Depth needs no bound: a
        polled book is judged against the interval its poll states."""
        trades = self.trades_round_share * self.trade_stale_after / self.spacing(Poll.TRADES)
        bars = max(1, self.klines_limit - 1) * min(_interval_seconds(i) for i in self.intervals)
        klines = bars / (len(self.intervals) * self.spacing(Poll.KLINES))
        return max(1, math.floor(min(trades, klines) + 1e-9))
