"""The dashboard's statistics over finished signals (pure)."""

from __future__ import annotations

from datetime import date

import pytest

from tapewatch.adapters import dashboard_stats as stats
from tapewatch.adapters.dashboard_queries import FinishedSignal
from tapewatch.metrics import DAY_MS

D0 = 19_723 * DAY_MS  # 2024-01-01


def row(
    symbol: str,
    tier: str,
    day: int,
    pnl_r: float,
    *,
    q: int = 70,
    conf: float = 0.5,
    tp1: bool = False,
    triggered: bool = True,
) -> FinishedSignal:
    t = D0 + day * DAY_MS
    return FinishedSignal(
        symbol=symbol,
        tier=tier,
        created_ms=t,
        quality_score=q,
        confidence=conf,
        trigger_ms=t + 1000 if triggered else None,
        tp1_ms=t + 60_000 if tp1 else None,
        exit_ms=t + 601_000,
        pnl_r=pnl_r,
        pnl_pct=pnl_r * 0.5,
    )


def test_group_stats_use_the_spec_definitions() -> None:
    rows = [
        row("BTC", "HIGH", 0, 2.0),
        row("BTC", "HIGH", 1, -1.0),
        row("ETH", "LOW", 1, 0.0, triggered=False),
    ]
    first, last = stats.period_days(rows, 0, D0 + 10 * DAY_MS)
    assert (first, last) == (date(2024, 1, 1), date(2024, 1, 2))
    overall = stats.summarize_group("all", rows, first, last)
    assert (overall.signals, overall.triggered, overall.wins) == (3, 2, 1)
    assert overall.win_rate == 0.5
    assert overall.total_r == pytest.approx(1.0)
    assert overall.avg_r == pytest.approx(1 / 3)
    assert overall.max_drawdown_r == pytest.approx(1.0)
    assert overall.avg_hold_min == pytest.approx(10.0)
    assert overall.sharpe is not None and overall.sharpe > 0
    by_symbol = stats.group_by(rows, lambda r: r.symbol, first, last)
    assert [(g.key, g.signals) for g in by_symbol] == [("BTC", 2), ("ETH", 1)]
    assert by_symbol[1].win_rate is None  # none triggered


def test_equity_curve_thins_but_keeps_the_end() -> None:
    rows = [row("BTC", "HIGH", 0, 1.0) for _ in range(5000)]
    curve = stats.equity_curve(rows, max_points=100)
    assert len(curve) == 100
    assert curve[-1][1] == pytest.approx(5000.0)
    assert [r for _, r in curve] == sorted(r for _, r in curve)
    with pytest.raises(ValueError):
        stats.equity_curve(rows, max_points=1)


def test_quality_bands_and_calibration() -> None:
    rows = [
        row("A", "HIGH", 0, 1.0, q=92, conf=0.81, tp1=True),
        row("A", "HIGH", 0, -1.0, q=85, conf=0.79),
        row("B", "LOW", 0, -1.0, q=55, conf=0.42),
    ]
    bands = {b.label: b for b in stats.quality_bands(rows)}
    assert list(bands) == ["50–59", "60–69", "70–79", "80–89", "90–100"]
    assert (bands["90–100"].win_rate, bands["80–89"].win_rate, bands["50–59"].win_rate) == (1.0, 0.0, 0.0)
    assert bands["60–69"].signals == 0 and bands["60–69"].win_rate is None
    cal = stats.calibration(rows)
    assert [(b.label, b.signals) for b in cal] == [("0.4–0.5", 1), ("0.7–0.8", 1), ("0.8–0.9", 1)]
    assert cal[-1].tp1_rate == 1.0 and cal[0].tp1_rate == 0.0
