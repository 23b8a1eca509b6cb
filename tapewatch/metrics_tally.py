"""Counts and sums over finished signals, pure: the :class:`Tally` a :class:`Summary` derives from, whether the
rows are outcomes (:func:`finished_view`) or rows aggregated by the database. :mod:`tapewatch.metrics` defines
the fields and re-exports these names."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from tapewatch.metrics_types import Summary
from tapewatch.outcome import Outcome


class Finished(Protocol):
    """A finished signal as the metrics see it (an :class:`Outcome` through :func:`finished_view`, or a row
    read by the dashboard): times in ms of event time, P&L after fees."""

    @property
    def created_ms(self) -> int: ...
    @property
    def trigger_ms(self) -> int | None: ...
    @property
    def exit_ms(self) -> int | None: ...
    @property
    def pnl_r(self) -> float: ...
    @property
    def pnl_pct(self) -> float: ...
    @property
    def quality_score(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Tally:
    """Counts and sums over a group of finished signals: everything a :class:`Summary` derives from except
    the Sharpe ratio and the drawdown (which need the daily series and the order the signals ended).

    ``triggered``: signals with a trigger time; ``wins``: triggered with ``pnl_r > 0``; ``holds`` /
    ``hold_ms_total``: triggered signals with an exit time and the sum of their trigger→exit times."""

    signals: int = 0
    triggered: int = 0
    wins: int = 0
    holds: int = 0
    hold_ms_total: float = 0.0
    total_r: float = 0.0
    total_pct: float = 0.0
    quality_total: float = 0.0

    def __add__(self, other: Tally) -> Tally:
        """The tally of both groups together (they must not share signals)."""
        return Tally(
            signals=self.signals + other.signals,
            triggered=self.triggered + other.triggered,
            wins=self.wins + other.wins,
            holds=self.holds + other.holds,
            hold_ms_total=self.hold_ms_total + other.hold_ms_total,
            total_r=self.total_r + other.total_r,
            total_pct=self.total_pct + other.total_pct,
            quality_total=self.quality_total + other.quality_total,
        )

    @property
    def win_rate(self) -> float | None:
        """``wins / triggered``; None when none triggered."""
        return self.wins / self.triggered if self.triggered else None

    @property
    def average_r(self) -> float | None:
        """Total R per signal (None without signals)."""
        return self.total_r / self.signals if self.signals else None

    @property
    def average_hold_minutes(self) -> float | None:
        return self.hold_ms_total / self.holds / 60_000 if self.holds else None

    @property
    def mean_quality(self) -> float | None:
        return self.quality_total / self.signals if self.signals else None


class _OutcomeView:
    """An :class:`Outcome` seen as a :class:`Finished`."""

    __slots__ = ("_o",)

    def __init__(self, outcome: Outcome) -> None:
        self._o = outcome

    @property
    def created_ms(self) -> int:
        return self._o.signal.created

    @property
    def trigger_ms(self) -> int | None:
        return self._o.trigger_time

    @property
    def exit_ms(self) -> int | None:
        return self._o.exit_time

    @property
    def pnl_r(self) -> float:
        return self._o.pnl_r

    @property
    def pnl_pct(self) -> float:
        return self._o.pnl_pct

    @property
    def quality_score(self) -> float:
        return self._o.signal.quality_score


def finished_view(outcome: Outcome) -> Finished:
    """``outcome`` as a :class:`Finished` (no copy)."""
    return _OutcomeView(outcome)


def tally(rows: Iterable[Finished]) -> Tally:
    """The :class:`Tally` of ``rows`` (each counted once; the caller decides which rows belong)."""
    signals = triggered = wins = holds = 0
    hold_total = 0.0
    r: list[float] = []
    pct: list[float] = []
    quality = 0.0
    for row in rows:
        signals += 1
        r.append(row.pnl_r)
        pct.append(row.pnl_pct)
        quality += row.quality_score
        if row.trigger_ms is not None:
            triggered += 1
            wins += row.pnl_r > 0
            if row.exit_ms is not None:
                holds += 1
                hold_total += row.exit_ms - row.trigger_ms
    return Tally(
        signals=signals,
        triggered=triggered,
        wins=wins,
        holds=holds,
        hold_ms_total=hold_total,
        total_r=math.fsum(r),
        total_pct=math.fsum(pct),
        quality_total=quality,
    )


def summary_of(t: Tally, *, sharpe: float | None, max_drawdown_r: float) -> Summary:
    """The :class:`Summary` of a tallied group, with its Sharpe ratio and drawdown computed by the caller."""
    return Summary(
        signals_generated=t.signals,
        signals_triggered=t.triggered,
        wins=t.wins,
        win_rate=t.win_rate,
        average_hold_minutes=t.average_hold_minutes,
        total_pnl_r=t.total_r,
        total_pnl_pct=t.total_pct,
        sharpe_ratio=sharpe,
        max_drawdown_r=max_drawdown_r,
        mean_quality=t.mean_quality,
    )
