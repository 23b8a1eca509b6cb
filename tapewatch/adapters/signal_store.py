"""Signals, candidates and outcomes in PostgreSQL (tables of ``sql/0002_signals.sql``). Synchronous
SQLAlchemy Core: the realtime service calls it through ``asyncio.to_thread`` (or :class:`PendingWrites`).

Writes are idempotent because ids are deterministic (DESIGN §3): saving a signal that is already stored (a
replay, a restart, a retried flush) writes nothing and returns False. A signal and its outbox row are
written in one transaction, so a stored signal is always published eventually (see
:mod:`tapewatch.adapters.outbox`) and a published one is always stored. The outbox row holds the published
JSON (:func:`tapewatch.signal.encode_published`); the ``signals`` row keeps every field, the stored-only
``created_after_agg_id`` too (its column, and its ``payload``, which signals are read back from).

Every method raises :class:`~tapewatch.errors.StorageUnavailable` when PostgreSQL cannot be reached;
statement errors (a row the schema refuses) pass through as SQLAlchemy errors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID, insert
from sqlalchemy.engine import Connection
from sqlalchemy.sql.dml import ReturningInsert

from tapewatch.adapters.db import Database
from tapewatch.outcome import Outcome, OutcomeState
from tapewatch.quality import TIERS, Tier
from tapewatch.risk import DAY_MS
from tapewatch.signal import TIER_HISTORY_LIMIT, Candidate, Signal, TierHistory, encode_published

log = logging.getLogger(__name__)

OutcomeSource = Literal["live", "batch"]
# A constant every writer shares: outbox rows must be committed in seq order (the relay publishes them as
# stream ids '<seq>-1', and a row committed after a higher seq was published could never be published).
_OUTBOX_LOCK_KEY = 0x7477_6F75_7462_6F78  # "twoutbox"

_meta = sa.MetaData()

signals = sa.Table(
    "signals",
    _meta,
    sa.Column("signal_id", UUID(as_uuid=False), primary_key=True),
    sa.Column("symbol", sa.Text),
    sa.Column("direction", sa.Text),
    sa.Column("signal_type", sa.Text),
    sa.Column("priority", sa.Text),
    sa.Column("timestamp", sa.DateTime(timezone=True)),
    *(
        sa.Column(name, sa.Double)
        for name in (
            "entry_price",
            "stop_loss",
            "take_profit_1",
            "take_profit_2",
            "orderbook_imbalance",
            "volume_intensity",
            "confidence",
            "suggested_position_size",
            "risk_reward_ratio",
            "exit_price",
        )
    ),
    sa.Column("quality_score", sa.SmallInteger),
    sa.Column("large_trades_count", sa.Integer),
    sa.Column("expected_hold_time", sa.Text),
    sa.Column("event_time", sa.BigInteger),
    sa.Column("reasons", JSONB),
    sa.Column("data_quality", JSONB),
    sa.Column("exit_reason", sa.Text),
    sa.Column("parent_signal_id", UUID(as_uuid=False)),
    sa.Column("payload", JSONB),
    sa.Column("created_after_agg_id", sa.BigInteger),
)

outbox = sa.Table(
    "outbox",
    _meta,
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("signal_id", UUID(as_uuid=False)),
    sa.Column("payload", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("published_at", sa.DateTime(timezone=True)),
    sa.Column("stream_id", sa.Text),
    sa.Column("attempts", sa.Integer),
    sa.Column("last_error", sa.Text),
)

candidates = sa.Table(
    "candidates",
    _meta,
    sa.Column("candidate_id", UUID(as_uuid=False), primary_key=True),
    sa.Column("symbol", sa.Text),
    sa.Column("direction", sa.Text),
    sa.Column("event_time", sa.BigInteger),
    sa.Column("features", JSONB),
    sa.Column("conditions", JSONB),
    sa.Column("quality", JSONB),
    sa.Column("quality_score", sa.SmallInteger),
    sa.Column("tier", sa.Text),
    sa.Column("fate", sa.Text),
    sa.Column("fate_detail", sa.Text),
    sa.Column("signal_id", UUID(as_uuid=False)),
    sa.Column("large_trade_size", sa.Double),
    *(
        sa.Column(name, sa.Double)
        for name in ("entry_price", "stop_loss", "take_profit_1", "take_profit_2", "suggested_position_size")
    ),
    sa.Column("created_after_agg_id", sa.BigInteger),
)

signal_outcomes = sa.Table(
    "signal_outcomes",
    _meta,
    sa.Column("signal_id", UUID(as_uuid=False), primary_key=True),
    sa.Column("state", sa.Text),
    sa.Column("finished", sa.Boolean),
    *(sa.Column(name, sa.BigInteger) for name in ("as_of", "trigger_time", "tp1_time", "exit_time")),
    *(sa.Column(name, sa.Double) for name in ("exit_price", "pnl_r", "pnl_pct", "mfe_r", "mae_r")),
    sa.Column("source", sa.Text),
    sa.Column("outcome", JSONB),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)


class OpenEntry(msgspec.Struct, frozen=True, kw_only=True):
    """An ENTRY signal whose outcome is not final, with the outcome stored so far (None: none yet): what
    the live tracker resumes after a restart (``OutcomeTracker.resume(outcome)``)."""

    signal: Signal
    outcome: Outcome | None


def event_datetime(event_time_ms: int) -> datetime:
    """Event time (epoch ms) as an exact UTC datetime (no float rounding of the milliseconds)."""
    return datetime.fromtimestamp(event_time_ms // 1000, tz=UTC) + timedelta(
        milliseconds=event_time_ms % 1000
    )


def signal_row(signal: Signal) -> dict[str, Any]:
    """The ``signals`` row of ``signal``: every spec 8.2 field, its evidence, the stored-only
    ``created_after_agg_id``, and the full JSON (all of them)."""
    return {
        "signal_id": signal.signal_id,
        "symbol": signal.symbol,
        "direction": signal.direction,
        "signal_type": signal.signal_type,
        "priority": signal.priority,
        "timestamp": event_datetime(signal.event_time),
        "entry_price": signal.entry_price,
        "stop_loss": signal.stop_loss,
        "take_profit_1": signal.take_profit_1,
        "take_profit_2": signal.take_profit_2,
        "quality_score": signal.quality_score,
        "orderbook_imbalance": signal.orderbook_imbalance,
        "large_trades_count": signal.large_trades_count,
        "volume_intensity": signal.volume_intensity,
        "confidence": signal.confidence,
        "suggested_position_size": signal.suggested_position_size,
        "risk_reward_ratio": signal.risk_reward_ratio,
        "expected_hold_time": signal.expected_hold_time,
        "event_time": signal.event_time,
        "reasons": list(signal.reasons),
        "data_quality": msgspec.to_builtins(signal.data_quality),
        "exit_reason": signal.exit_reason,
        "parent_signal_id": signal.parent_signal_id,
        "exit_price": signal.exit_price,
        "payload": msgspec.to_builtins(signal),
        "created_after_agg_id": signal.created_after_agg_id,
    }


def candidate_row(candidate: Candidate) -> dict[str, Any]:
    """The ``candidates`` row of ``candidate``, its trade plan (sql/0012: NULL without one) included."""
    plan = candidate.plan
    return {
        "candidate_id": candidate.candidate_id,
        "symbol": candidate.symbol,
        "direction": candidate.direction,
        "event_time": candidate.event_time,
        "features": msgspec.to_builtins(candidate.features),
        "conditions": msgspec.to_builtins(candidate.conditions),
        "quality": msgspec.to_builtins(candidate.quality),
        "quality_score": candidate.quality.score,
        "tier": candidate.quality.tier,
        "fate": candidate.fate,
        "fate_detail": candidate.fate_detail,
        "signal_id": candidate.signal_id,
        "large_trade_size": candidate.large_trade_size,
        "entry_price": None if plan is None else plan.entry,
        "stop_loss": None if plan is None else plan.stop,
        "take_profit_1": None if plan is None else plan.take_profit_1,
        "take_profit_2": None if plan is None else plan.take_profit_2,
        "suggested_position_size": None if plan is None else plan.suggested_position_size,
        "created_after_agg_id": candidate.created_after_agg_id,
    }


def outcome_columns(outcome: Outcome) -> dict[str, Any]:
    """The columns an outcome row has in ``signal_outcomes`` and ``candidate_outcomes`` alike: state, times,
    exit, P&L, excursions and the whole outcome."""
    return {
        "state": outcome.state.value,
        "as_of": outcome.as_of,
        "trigger_time": outcome.trigger_time,
        "tp1_time": outcome.tp1_time,
        "exit_time": outcome.exit_time,
        "exit_price": outcome.exit_price,
        "pnl_r": outcome.pnl_r,
        "pnl_pct": outcome.pnl_pct,
        "mfe_r": outcome.mfe_r,
        "mae_r": outcome.mae_r,
        "outcome": msgspec.to_builtins(outcome),
    }


def outcome_row(outcome: Outcome, source: OutcomeSource) -> dict[str, Any]:
    """The ``signal_outcomes`` row of ``outcome`` written by ``source``."""
    if source not in ("live", "batch"):
        raise ValueError(f"outcome source must be 'live' or 'batch'; got {source!r}")
    return {
        "signal_id": outcome.signal.signal_id,
        "finished": outcome.finished,
        "source": source,
        **outcome_columns(outcome),
    }


def entries_with_outcomes(
    db: Database, *where: sa.ColumnElement[bool]
) -> list[tuple[Signal, Outcome | None]]:
    """The ENTRY signals matching ``where``, each with its stored outcome (None: none yet), oldest first.
    ``where`` may name columns of ``signals`` and of ``signal_outcomes`` (outer-joined: NULL without one)."""
    o = signal_outcomes.c
    query = (
        sa.select(signals.c.payload, o.outcome)
        .select_from(signals.outerjoin(signal_outcomes, o.signal_id == signals.c.signal_id))
        .where(signals.c.signal_type == "ENTRY", *where)
        .order_by(signals.c.event_time, signals.c.signal_id)
    )
    with db.begin() as conn:
        rows = conn.execute(query).all()
    return [
        (
            msgspec.convert(row.payload, Signal),
            None if row.outcome is None else msgspec.convert(row.outcome, Outcome),
        )
        for row in rows
    ]


def _insert_new(table: sa.Table, key: sa.Column[Any]) -> ReturningInsert[Any]:
    """An INSERT into ``table`` that skips a row already stored and returns the ``key`` of each new one."""
    return insert(table).on_conflict_do_nothing().returning(key)


class SignalStore:
    """Reads and writes signals, candidates and outcomes; safe to share between threads."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def __repr__(self) -> str:
        return f"SignalStore({self.db!r})"

    # --- writes ------------------------------------------------------------------------------------------
    def save_signal(self, signal: Signal) -> bool:
        """Store ``signal`` and its outbox row in one transaction; False (nothing written) when it is stored
        already."""
        return self.save_signals([signal])[0]

    def save_signals(self, batch: Sequence[Signal]) -> list[bool]:
        """Store each signal with its outbox row, all in one transaction, in order (an EXIT after its ENTRY);
        per signal, whether it was new. A repeated id writes nothing (its outbox row is left as it is)."""
        if not batch:
            return []
        with self.db.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _OUTBOX_LOCK_KEY})
            return [self._insert_signal(conn, signal) for signal in batch]

    @staticmethod
    def _insert_signal(conn: Connection, signal: Signal) -> bool:
        if conn.execute(_insert_new(signals, signals.c.signal_id), signal_row(signal)).first() is None:
            return False
        published = encode_published(signal).decode()
        conn.execute(outbox.insert().values(signal_id=signal.signal_id, payload=published))
        return True

    def save_candidates(self, batch: Sequence[Candidate]) -> int:
        """Store the candidates (one transaction); return how many were new (a stored setup is skipped)."""
        if not batch:
            return 0
        stmt = _insert_new(candidates, candidates.c.candidate_id)
        with self.db.begin() as conn:
            return len(conn.execute(stmt, [candidate_row(c) for c in batch]).all())

    def save_outcome(self, outcome: Outcome, *, source: OutcomeSource = "live") -> bool:
        """Insert or update the outcome of an ENTRY signal; True when written.

        A batch outcome (Dagster, from candles) is authoritative: a live one never replaces it. A live
        outcome replaces a live one only when it is as recent (``as_of``) or more."""
        row = outcome_row(outcome, source)
        upsert = insert(signal_outcomes).values(row)
        current, new = signal_outcomes.c, upsert.excluded
        stmt = upsert.on_conflict_do_update(
            index_elements=[current.signal_id],
            set_={**{k: new[k] for k in row if k != "signal_id"}, "updated_at": sa.func.now()},
            where=sa.or_(
                new.source == "batch",
                sa.and_(current.source == "live", new.as_of >= current.as_of),
            ),
        ).returning(current.signal_id)
        with self.db.begin() as conn:
            return conn.execute(stmt).first() is not None

    # --- reads -------------------------------------------------------------------------------------------
    def get_signal(self, signal_id: str) -> Signal | None:
        """The stored signal of ``signal_id``; None when there is none."""
        with self.db.begin() as conn:
            payload = conn.execute(
                sa.select(signals.c.payload).where(signals.c.signal_id == signal_id)
            ).scalar_one_or_none()
        return None if payload is None else msgspec.convert(payload, Signal)

    def get_outcome(self, signal_id: str) -> tuple[Outcome, OutcomeSource] | None:
        """The stored outcome of ``signal_id`` and who wrote it; None when there is none."""
        with self.db.begin() as conn:
            row = conn.execute(
                sa.select(signal_outcomes.c.outcome, signal_outcomes.c.source).where(
                    signal_outcomes.c.signal_id == signal_id
                )
            ).first()
        if row is None:
            return None
        source: OutcomeSource = "batch" if row.source == "batch" else "live"
        return msgspec.convert(row.outcome, Outcome), source

    def open_signals(self) -> list[OpenEntry]:
        """ENTRY signals whose outcome is not final (no outcome yet, or a provisional one), oldest first."""
        o = signal_outcomes.c
        not_final = sa.or_(o.signal_id.is_(None), sa.not_(o.finished))
        return [OpenEntry(signal=s, outcome=out) for s, out in entries_with_outcomes(self.db, not_final)]

    def tier_history(
        self, limit: int = TIER_HISTORY_LIMIT, owns: Callable[[str], bool] | None = None
    ) -> dict[Tier, TierHistory]:
        """Per tier, the last ``limit`` finished and triggered signals (by exit time, then id): how many reached
        TP1 before the stop, how many there were, and their hold times (ms, oldest first) — what ``confidence``
        and ``expected_hold_time`` are computed from. Tiers without history are absent. ``owns``: only the
        signals of the symbols it owns (a shard's, :meth:`tapewatch.sharding.Shard.owns`), as the shard's running
        engine learns only from its own; every finished row is then read once, at start, and picked here."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1; got {limit}")
        o = signal_outcomes.c
        finished = (
            sa.select(
                signals.c.priority, signals.c.symbol, o.signal_id, o.tp1_time, o.trigger_time, o.exit_time
            )
            .join(signal_outcomes, o.signal_id == signals.c.signal_id)
            .where(o.finished, o.trigger_time.is_not(None), o.exit_time.is_not(None))
        )
        if owns is None:
            ranked = finished.add_columns(
                sa.func.row_number()
                .over(partition_by=signals.c.priority, order_by=(o.exit_time.desc(), o.signal_id.desc()))
                .label("rank")
            ).subquery()
            query = (
                sa.select(ranked)
                .where(ranked.c.rank <= limit)
                .order_by(ranked.c.exit_time, ranked.c.signal_id)
            )
        else:
            query = finished.order_by(o.exit_time, o.signal_id)
        with self.db.begin() as conn:
            rows = conn.execute(query).all()
        if owns is not None:
            rows = [row for row in rows if owns(row.symbol)]
        history: dict[Tier, TierHistory] = {}
        for tier in TIERS:
            mine = [row for row in rows if row.priority == tier][-limit:]
            if mine:
                flags = [row.tp1_time is not None for row in mine]
                history[tier] = TierHistory(
                    tp1_hits=sum(flags),
                    signals=len(flags),
                    hold_ms=[row.exit_time - row.trigger_time for row in mine],
                    tp1=flags,
                )
        return history

    def signal_counts(self, day: int) -> dict[Tier, int]:
        """ENTRY signals per tier on UTC day ``day`` of event time (``tapewatch.risk.utc_day``): what the
        daily caps of the risk state are rebuilt from. Every tier is present."""
        start = day * DAY_MS
        query = (
            sa.select(signals.c.priority, sa.func.count())
            .where(
                signals.c.signal_type == "ENTRY",
                signals.c.event_time >= start,
                signals.c.event_time < start + DAY_MS,
            )
            .group_by(signals.c.priority)
        )
        with self.db.begin() as conn:
            found = {str(row[0]): int(row[1]) for row in conn.execute(query)}
        return {tier: found.get(tier, 0) for tier in TIERS}

    def stop_outs(self, since_ms: int) -> dict[str, tuple[int, int]]:
        """Per symbol, its last stop-out (stopped before TP1) exiting at or after ``since_ms``: (exit time,
        candidates on the symbol rejected by the cooldown since) — what rebuilds the cooldowns."""
        o = signal_outcomes.c
        last = (
            sa.select(signals.c.symbol, sa.func.max(o.exit_time).label("exit_time"))
            .join(signal_outcomes, o.signal_id == signals.c.signal_id)
            .where(o.state == OutcomeState.STOPPED.value, o.tp1_time.is_(None), o.exit_time >= since_ms)
            .group_by(signals.c.symbol)
            .subquery()
        )
        suppressed = (
            sa.select(sa.func.count())
            .where(
                candidates.c.symbol == last.c.symbol,
                candidates.c.fate == "cooldown",
                candidates.c.event_time > last.c.exit_time,
            )
            .scalar_subquery()
        )
        with self.db.begin() as conn:
            rows = conn.execute(sa.select(last.c.symbol, last.c.exit_time, suppressed)).all()
        return {str(row[0]): (int(row[1]), int(row[2])) for row in rows}

    def recent_signals(self, limit: int = 100, symbol: str | None = None) -> list[Signal]:
        """The newest signals (by event time, newest first), of one symbol or all."""
        query = sa.select(signals.c.payload).order_by(signals.c.event_time.desc()).limit(limit)
        if symbol is not None:
            query = query.where(signals.c.symbol == symbol)
        with self.db.begin() as conn:
            return [msgspec.convert(p, Signal) for p in conn.execute(query).scalars()]


__all__ = [
    "TIER_HISTORY_LIMIT",
    "OpenEntry",
    "OutcomeSource",
    "SignalStore",
    "candidate_row",
    "outcome_row",
    "signal_row",
]
