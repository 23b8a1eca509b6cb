"""``tapewatch backtest``: replay captures, follow every signal to its end and score them (spec 9.1).

Signals still open when the capture ends are listed with their state so far and left out of the metrics
(an unfinished signal has no P&L yet). The metrics and ``open_at_end`` count only the signals the replay itself
issued: signals restored from a captured engine start (``control:engine_start``) are followed as live followed
them, but were issued before the capture, so they are counted apart (``restored_finished``, ``restored_open``).
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
    issued = {s.signal_id for s in result.signals if s.signal_type == "ENTRY"}
    # A signal's latest view stands, as PostgreSQL keeps one row per signal: a signal an engine finished can
    # be restored open by a later engine start (the live run was stopped before its outcome was written) and
    # followed again; it is counted once, as the last engine left it.
    outcomes: dict[str, Outcome] = {o.signal.signal_id: o for o in result.finished}
    still_open = list(result.engine.open) if result.engine is not None else []
    if result.engine is not None:
        for sid, held in result.engine.open.items():
            outcomes[sid] = held.tracker.outcome()
    done = [o for o in outcomes.values() if o.finished]
    signal_list = []
    for signal in result.signals:
        if signal.signal_type != "ENTRY":
            continue
        entry = published_fields(signal)
        outcome = outcomes.get(signal.signal_id)
        entry["outcome"] = _outcome_view(outcome) if outcome is not None else None
        signal_list.append(entry)
    finished = [o for o in done if o.signal.signal_id in issued]
    return {
        **result.summary,
        "signal_list": signal_list,
        "metrics": summarize(finished).to_spec(),
        "open_at_end": sum(1 for sid in still_open if sid in issued),
        # signals a captured engine start restored (issued before the capture): not in the metrics
        "restored_finished": sum(1 for o in done if o.signal.signal_id not in issued),
        "restored_open": sum(1 for sid in still_open if sid not in issued),
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
