"""Would-be outcomes of the candidates that did not become signals (table ``candidate_outcomes``, sql/0012).

:func:`candidates_to_settle` reads the candidates of a span of event time that were turned away (fate not
``signal``), have a trade plan and no stored outcome yet, as the signals they would have been
(:func:`tapewatch.candidate_outcome.would_be_signal`); :func:`save_candidate_outcomes` stores the finished
outcomes the Dagster asset ``candidate_outcomes`` computed for them (a later run replaces a stored one).
Monthly tuning reads them (:func:`tapewatch.adapters.tuning_store.load_samples`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID, insert

from tapewatch.adapters.db import Database
from tapewatch.adapters.signal_store import candidates, outcome_columns
from tapewatch.candidate_outcome import would_be_signal
from tapewatch.outcome import OpenSignal, Outcome
from tapewatch.signal import FATE_SIGNAL

log = logging.getLogger(__name__)

candidate_outcomes = sa.Table(
    "candidate_outcomes",
    sa.MetaData(),
    sa.Column("candidate_id", UUID(as_uuid=False), primary_key=True),
    sa.Column("tier", sa.Text),
    sa.Column("state", sa.Text),
    *(sa.Column(name, sa.BigInteger) for name in ("as_of", "trigger_time", "tp1_time", "exit_time")),
    *(sa.Column(name, sa.Double) for name in ("exit_price", "pnl_r", "pnl_pct", "mfe_r", "mae_r")),
    sa.Column("outcome", JSONB),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)


_COLUMNS = (
    "candidate_id",
    "symbol",
    "direction",
    "tier",
    "event_time",
    "entry_price",
    "stop_loss",
    "take_profit_1",
    "take_profit_2",
    "suggested_position_size",
    "quality_score",
    "created_after_agg_id",
)


def candidates_to_settle(db: Database, start_ms: int, end_ms: int) -> list[OpenSignal]:
    """The candidates created in ``[start_ms, end_ms)`` that did not become signals, have a plan and no stored
    would-be outcome, as the signals they would have been, oldest first. A row whose plan the outcome cannot
    follow is logged and left out."""
    c = candidates.c
    query = (
        sa.select(*(c[name] for name in _COLUMNS))
        .where(
            c.event_time >= start_ms,
            c.event_time < end_ms,
            c.fate != FATE_SIGNAL,
            c.entry_price.is_not(None),
            ~sa.exists().where(candidate_outcomes.c.candidate_id == c.candidate_id),
        )
        .order_by(c.event_time, c.candidate_id)
    )
    with db.begin() as conn:
        rows = conn.execute(query).all()
    out: list[OpenSignal] = []
    for row in rows:
        try:
            out.append(
                would_be_signal(
                    candidate_id=str(row.candidate_id),
                    symbol=row.symbol,
                    direction=row.direction,
                    tier=row.tier,
                    event_time=int(row.event_time),
                    entry=float(row.entry_price),
                    stop=float(row.stop_loss),
                    tp1=float(row.take_profit_1),
                    tp2=float(row.take_profit_2),
                    position_size=float(row.suggested_position_size),
                    quality_score=int(row.quality_score),
                    created_after_agg_id=row.created_after_agg_id,
                )
            )
        except ValueError as exc:
            log.warning("candidate %s: its plan cannot be followed: %s", row.candidate_id, exc)
    return out


def candidate_outcome_row(outcome: Outcome) -> dict[str, Any]:
    """The ``candidate_outcomes`` row of a finished would-be outcome."""
    if not outcome.finished:
        raise ValueError(f"candidate {outcome.signal.signal_id}: only a finished outcome is stored")
    return {"candidate_id": outcome.signal.signal_id, "tier": outcome.signal.tier, **outcome_columns(outcome)}


def save_candidate_outcomes(db: Database, outcomes: Sequence[Outcome]) -> int:
    """Store the finished would-be outcomes (one statement; a stored one is replaced); how many were written."""
    if not outcomes:
        return 0
    stmt = insert(candidate_outcomes)
    stmt = stmt.on_conflict_do_update(
        index_elements=[candidate_outcomes.c.candidate_id],
        set_={
            **{k: stmt.excluded[k] for k in candidate_outcome_row(outcomes[0]) if k != "candidate_id"},
            "updated_at": sa.func.now(),
        },
    )
    returning = stmt.returning(candidate_outcomes.c.candidate_id)
    with db.begin() as conn:
        return len(conn.execute(returning, [candidate_outcome_row(o) for o in outcomes]).all())


def get_candidate_outcome(db: Database, candidate_id: str) -> Outcome | None:
    """The stored would-be outcome of ``candidate_id``; None when there is none."""
    query = sa.select(candidate_outcomes.c.outcome).where(candidate_outcomes.c.candidate_id == candidate_id)
    with db.begin() as conn:
        value = conn.execute(query).scalar_one_or_none()
    return None if value is None else msgspec.convert(value, Outcome)


__all__ = [
    "candidate_outcome_row",
    "candidate_outcomes",
    "candidates_to_settle",
    "get_candidate_outcome",
    "save_candidate_outcomes",
]
