"""``tapewatch backtest``: replay captures, follow every signal to its end and score them (spec 9.1).

Signals still open when the capture ends are listed with their state so far and left out of the metrics
(an unfinished signal has no P&L yet).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from realtime.replay import run_replay
from tapewatch.metrics import summarize
from tapewatch.outcome import Outcome
from tapewatch.settings import Settings
from tapewatch.signal import published_fields


def backtest(paths: Iterable[Path], settings: Settings | None = None) -> dict[str, Any]:
    """The ``backtest --json`` object: the replay summary plus ``signal_list`` and ``metrics``."""
    result = run_replay(paths, settings)
    outcomes: dict[str, Outcome] = {o.signal.signal_id: o for o in result.finished}
    if result.engine is not None:
        for sid, held in result.engine.open.items():
            outcomes[sid] = held.tracker.outcome()
    signal_list = []
    for signal in result.signals:
        if signal.signal_type != "ENTRY":
            continue
        entry = published_fields(signal)
        outcome = outcomes.get(signal.signal_id)
        entry["outcome"] = _outcome_view(outcome) if outcome is not None else None
        signal_list.append(entry)
    finished = result.finished
    return {
        **result.summary,
        "signal_list": signal_list,
        "metrics": summarize(finished).to_spec(),
        "open_at_end": len(outcomes) - len(finished),
    }


def _outcome_view(o: Outcome) -> dict[str, Any]:
    return {
        "state": str(o.state),
        "finished": o.finished,
        "trigger_time": o.trigger_time,
        "tp1_time": o.tp1_time,
        "exit_time": o.exit_time,
        "exit_price": o.exit_price,
        "pnl_r": o.pnl_r,
        "pnl_pct": o.pnl_pct,
        "mfe_r": o.mfe_r,
        "mae_r": o.mae_r,
    }
