"""The result records of the performance metrics (spec 9.1): a period's :class:`Summary`, the daily and weekly
blocks. :mod:`tapewatch.metrics` computes them (its docstring defines each field) and re-exports these names."""

from __future__ import annotations

from datetime import date

import msgspec

from tapewatch.quality import Tier


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    """Spec 9.1 daily block for a set of signals (:mod:`tapewatch.metrics` defines each field)."""

    signals_generated: int = 0
    signals_triggered: int = 0
    wins: int = 0
    win_rate: float | None = None
    average_hold_minutes: float | None = None
    total_pnl_r: float = 0.0
    total_pnl_pct: float = 0.0
    sharpe_ratio: float | None = None
    max_drawdown_r: float = 0.0
    mean_quality: float | None = None

    @property
    def average_r(self) -> float | None:
        """Total R per signal generated (None without signals)."""
        return self.total_pnl_r / self.signals_generated if self.signals_generated else None

    def to_spec(self) -> dict[str, float | int | None]:
        """The keys of spec 9.1 ``PERFORMANCE_METRICS['daily']`` (hold in minutes, P&L and drawdown in R),
        plus ``total_pnl_pct``."""
        return {
            "signals_generated": self.signals_generated,
            "signals_triggered": self.signals_triggered,
            "win_rate": self.win_rate,
            "average_hold_time": self.average_hold_minutes,
            "total_pnl": self.total_pnl_r,
            "total_pnl_pct": self.total_pnl_pct,
            "sharpe_ratio": self.sharpe_ratio,
            "max_drawdown": self.max_drawdown_r,
        }


class DailyMetrics(msgspec.Struct, frozen=True, kw_only=True):
    day: date
    overall: Summary
    by_tier: dict[Tier, Summary]


class SymbolTotal(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    signals: int
    total_r: float


class WeeklyMetrics(msgspec.Struct, frozen=True, kw_only=True):
    week_start: date
    overall: Summary
    by_tier: dict[Tier, Summary]
    best_symbols: tuple[SymbolTotal, ...]
    worst_symbols: tuple[SymbolTotal, ...]
    strategy_efficiency: float | None
    win_rate_trend: float | None
    quality_trend: float | None
