"""The universe's history in PostgreSQL (tables of ``sql/0003_universe.sql``).

Every change of the universe is a new *version* (a ``universe_rescans`` row with one ``universe_members``
row per symbol it evaluated): a full rescan writes every candidate with its statistics, score and reason;
a quick check or an emergency exclusion copies the current universe, marks the excluded symbols out with
their reason, and records each exclusion in ``universe_exclusions``. The newest version is the current
universe. Versions are written under one advisory lock, so two writers never fork the history, and
:func:`publish_current` hands the newest one to Redis under the same lock, so publishes keep that order;
:func:`publish_pending` does so only when Redis does not record it as published yet (what a writer with
nothing new to store calls, so that a retry finishes a publish that failed).

Read side (the dashboard's): :func:`current_universe`, :func:`recent_rescans` (with the symbols added and
removed against the version before), :func:`members`, :func:`exclusions`, :func:`rescan_by_run`. Every
function raises :class:`~tapewatch.errors.StorageUnavailable` when PostgreSQL cannot be reached.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.engine import Connection

from tapewatch.adapters.db import Database
from tapewatch.adapters.redis_state import RedisState
from tapewatch.adapters.redis_values import SymbolFeed
from tapewatch.errors import FatalError
from tapewatch.universe import STAT_NAMES, Decision, Reason, ScoreComponents, SymbolStats
from tapewatch.universe_checks import Exclusion, LiveLiquidity, fresh_spreads

log = logging.getLogger(__name__)

RescanKind = Literal["full", "quick", "emergency"]
ExclusionSource = Literal["quick_check", "emergency"]
_KIND_OF_SOURCE: dict[ExclusionSource, RescanKind] = {"quick_check": "quick", "emergency": "emergency"}
_LOCK_KEY = 0x7477_756E_6976_6572  # "twuniver": one writer of universe versions at a time
_COMPONENTS = ("volume_score", "liquidity_score", "volatility_score", "activity_score")

_meta = sa.MetaData()
rescans = sa.Table(
    "universe_rescans",
    _meta,
    sa.Column("rescan_id", sa.BigInteger, primary_key=True),
    sa.Column("kind", sa.Text),
    sa.Column("run_id", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("symbols", ARRAY(sa.Text)),
    sa.Column("params", JSONB),
    sa.Column("candidates", sa.Integer),
    sa.Column("reason_counts", JSONB),
)
members_table = sa.Table(
    "universe_members",
    _meta,
    sa.Column("rescan_id", sa.BigInteger),
    sa.Column("symbol", sa.Text),
    sa.Column("selected", sa.Boolean),
    sa.Column("reason", sa.Text),
    sa.Column("detail", sa.Text),
    sa.Column("rank", sa.Integer),
    sa.Column("score", sa.Double),
    *(sa.Column(name, sa.Double) for name in (*_COMPONENTS, *STAT_NAMES)),
    sa.Column("errors", JSONB),
)
exclusions_table = sa.Table(
    "universe_exclusions",
    _meta,
    sa.Column("exclusion_id", sa.BigInteger, primary_key=True),
    sa.Column("symbol", sa.Text),
    sa.Column("reason", sa.Text),
    sa.Column("detail", sa.Text),
    sa.Column("values", JSONB),
    sa.Column("source", sa.Text),
    sa.Column("rescan_id", sa.BigInteger),
    sa.Column("run_id", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True)),
)


@dataclass(frozen=True, slots=True)
class Rescan:
    """One version of the universe. ``added``/``removed`` compare it with the version before it (the
    first version ever adds all its symbols)."""

    rescan_id: int
    kind: RescanKind
    run_id: str | None
    created_at: datetime
    symbols: tuple[str, ...]
    candidates: int
    reason_counts: dict[str, int]
    params: dict[str, Any]
    added: tuple[str, ...]
    removed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Member:
    """One symbol of one version: in or out, why, rank, score (0..100) with its four components (0..1)."""

    symbol: str
    selected: bool
    reason: Reason
    detail: str
    rank: int | None
    score: float | None
    volume_score: float | None
    liquidity_score: float | None
    volatility_score: float | None
    activity_score: float | None
    stats: SymbolStats


@dataclass(frozen=True, slots=True)
class ExclusionRecord:
    """A symbol excluded between full rescans, by whom (``source``), why, with the values that broke it."""

    exclusion_id: int
    symbol: str
    reason: Reason
    detail: str
    values: dict[str, Any]
    source: ExclusionSource
    rescan_id: int | None
    run_id: str | None
    created_at: datetime


def _member_row(rescan_id: int, d: Decision) -> dict[str, Any]:
    c = d.components
    comps = (None,) * 4 if c is None else (c.volume, c.liquidity, c.volatility, c.activity)
    return {
        "rescan_id": rescan_id,
        "symbol": d.symbol,
        "selected": d.selected,
        "reason": d.reason.value,
        "detail": d.detail,
        "rank": d.rank,
        "score": d.score,
        **dict(zip(_COMPONENTS, comps, strict=True)),
        **d.stats.as_dict(),
        "errors": list(d.stats.errors),
    }


def _insert_version(
    conn: Connection,
    kind: RescanKind,
    symbols: Sequence[str],
    rows: Sequence[Decision],
    run_id: str | None,
    params: Mapping[str, Any],
) -> int:
    counts: dict[str, int] = {}
    for d in rows:
        counts[d.reason.value] = counts.get(d.reason.value, 0) + 1
    rescan_id = int(
        conn.execute(
            rescans.insert()
            .values(
                kind=kind,
                run_id=run_id,
                symbols=list(symbols),
                params=dict(params),
                candidates=len(rows),
                reason_counts=counts,
            )
            .returning(rescans.c.rescan_id)
        ).scalar_one()
    )
    if rows:
        conn.execute(members_table.insert(), [_member_row(rescan_id, d) for d in rows])
    return rescan_id


def _lock(conn: Connection) -> None:
    """Become the one writer of universe versions until ``conn``'s transaction ends."""
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})


def _lock_and_latest(conn: Connection) -> int | None:
    """:func:`_lock`, then the newest version's id (None before the first)."""
    _lock(conn)
    return _latest_id(conn)


def save_rescan(
    db: Database,
    decisions: Sequence[Decision],
    *,
    run_id: str | None = None,
    params: Mapping[str, Any] | None = None,
) -> Rescan:
    """Store a full rescan (every candidate's decision) as the new current universe; return it."""
    selected = [d.symbol for d in sorted((d for d in decisions if d.selected), key=lambda d: d.rank or 0)]
    with db.begin() as conn:
        _lock(conn)
        rescan_id = _insert_version(conn, "full", selected, decisions, run_id, params or {})
        return _rescan(conn, rescan_id)


class EmptyUniverseRefused(FatalError):
    """An exclusion would have removed every symbol left in the universe; nothing was stored. Watching
    nothing is never the answer: the next full rescan measures everything again."""


def exclude(
    db: Database,
    excluded: Sequence[Exclusion],
    *,
    source: ExclusionSource,
    run_id: str | None = None,
) -> Rescan | None:
    """Remove ``excluded`` from the current universe at once: a new version (kind ``quick`` or
    ``emergency``) and one ``universe_exclusions`` row per symbol actually removed.

    Symbols not in the current universe are skipped (already gone: a repeated sensor run changes
    nothing). Returns the new version, or None when nothing was removed (or no universe exists yet).
    Raises :class:`EmptyUniverseRefused`, storing nothing, when no symbol would be left."""
    with db.begin() as conn:
        current = _lock_and_latest(conn)
        if current is None:
            return None
        previous = _members(conn, current)
        inside = {m.symbol for m in previous if m.selected}
        by_symbol = {e.symbol: e for e in excluded if e.symbol in inside}
        if not by_symbol:
            return None
        rows: list[Decision] = []
        kept: list[str] = []
        for m in sorted((m for m in previous if m.selected), key=lambda m: m.rank or 0):
            gone = by_symbol.get(m.symbol)
            if gone is None:
                kept.append(m.symbol)
                detail = f"kept by the {source.replace('_', ' ')} (rank {m.rank} at the rescan)"
                rows.append(_as_decision(m, True, Reason.SELECTED, detail, len(kept)))
            else:
                rows.append(_as_decision(m, False, gone.reason, gone.detail, None))
        if not kept:
            names = ", ".join(sorted(by_symbol))
            log.error(
                "universe: refused to exclude %s (%s): no symbol would be left",
                names,
                source,
                extra={"symbol": names},
            )
            raise EmptyUniverseRefused(
                f"excluding {names} ({source}) would leave the universe empty; it is left as it is"
            )
        rescan_id = _insert_version(conn, _KIND_OF_SOURCE[source], kept, rows, run_id, {"source": source})
        conn.execute(
            exclusions_table.insert(),
            [
                {
                    "symbol": e.symbol,
                    "reason": e.reason.value,
                    "detail": e.detail,
                    "values": e.values,
                    "source": source,
                    "rescan_id": rescan_id,
                    "run_id": run_id,
                }
                for e in by_symbol.values()
            ],
        )
        return _rescan(conn, rescan_id)


def _as_decision(m: Member, selected: bool, reason: Reason, detail: str, rank: int | None) -> Decision:
    parts = (m.volume_score, m.liquidity_score, m.volatility_score, m.activity_score)
    comps = None if any(p is None for p in parts) else ScoreComponents(*(float(p or 0.0) for p in parts))
    return Decision(m.symbol, selected, reason, detail, rank, m.score, comps, m.stats)


# --- reading ---------------------------------------------------------------------------------------------


def _latest_id(conn: Connection) -> int | None:
    row = conn.execute(
        sa.select(rescans.c.rescan_id).order_by(rescans.c.rescan_id.desc()).limit(1)
    ).scalar_one_or_none()
    return None if row is None else int(row)


def _previous_symbols(conn: Connection, rescan_id: int) -> tuple[str, ...] | None:
    row = conn.execute(
        sa.select(rescans.c.symbols)
        .where(rescans.c.rescan_id < rescan_id)
        .order_by(rescans.c.rescan_id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return None if row is None else tuple(row)


def _to_rescan(row: sa.Row[Any], before: tuple[str, ...] | None) -> Rescan:
    symbols = tuple(row.symbols)
    prior = set(before or ())
    return Rescan(
        rescan_id=int(row.rescan_id),
        kind=row.kind,
        run_id=row.run_id,
        created_at=row.created_at,
        symbols=symbols,
        candidates=int(row.candidates),
        reason_counts=dict(row.reason_counts),
        params=dict(row.params),
        added=tuple(s for s in symbols if s not in prior),
        removed=tuple(s for s in (before or ()) if s not in set(symbols)),
    )


def _rescan(conn: Connection, rescan_id: int) -> Rescan:
    row = conn.execute(sa.select(rescans).where(rescans.c.rescan_id == rescan_id)).one()
    return _to_rescan(row, _previous_symbols(conn, rescan_id))


def current_universe(db: Database) -> Rescan | None:
    """The newest version of the universe, or None before the first rescan."""
    with db.begin() as conn:
        latest = _latest_id(conn)
        return None if latest is None else _rescan(conn, latest)


def rescan_by_run(db: Database, run_id: str) -> Rescan | None:
    """The version written by Dagster run ``run_id`` (the newest, if it wrote several), or None."""
    with db.begin() as conn:
        found = conn.execute(
            sa.select(rescans.c.rescan_id)
            .where(rescans.c.run_id == run_id)
            .order_by(rescans.c.rescan_id.desc())
            .limit(1)
        ).scalar_one_or_none()
        return None if found is None else _rescan(conn, int(found))


def recent_rescans(db: Database, limit: int = 20, kind: RescanKind | None = None) -> list[Rescan]:
    """The newest ``limit`` versions (of ``kind``, or all), newest first, each with its diff against the
    version just before it (whatever that version's kind)."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1; got {limit}")
    query = sa.select(rescans).order_by(rescans.c.rescan_id.desc()).limit(limit)
    if kind is not None:
        query = query.where(rescans.c.kind == kind)
    with db.begin() as conn:
        return [_to_rescan(row, _previous_symbols(conn, int(row.rescan_id))) for row in conn.execute(query)]


def _members(conn: Connection, rescan_id: int) -> list[Member]:
    rows = conn.execute(
        sa.select(members_table)
        .where(members_table.c.rescan_id == rescan_id)
        .order_by(members_table.c.rank.asc().nulls_last(), members_table.c.symbol)
    )
    return [
        Member(
            symbol=r.symbol,
            selected=r.selected,
            reason=Reason(r.reason),
            detail=r.detail,
            rank=r.rank,
            score=r.score,
            volume_score=r.volume_score,
            liquidity_score=r.liquidity_score,
            volatility_score=r.volatility_score,
            activity_score=r.activity_score,
            stats=SymbolStats(
                r.symbol, **{name: getattr(r, name) for name in STAT_NAMES}, errors=tuple(r.errors)
            ),
        )
        for r in rows
    ]


def members(db: Database, rescan_id: int) -> list[Member]:
    """Every symbol version ``rescan_id`` evaluated: ranked ones first (best first), then the others by
    name. Empty for an unknown id."""
    with db.begin() as conn:
        return _members(conn, rescan_id)


def exclusions(db: Database, limit: int = 100, symbol: str | None = None) -> list[ExclusionRecord]:
    """The newest ``limit`` exclusions (of ``symbol``, or all), newest first."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1; got {limit}")
    query = sa.select(exclusions_table).order_by(exclusions_table.c.exclusion_id.desc()).limit(limit)
    if symbol is not None:
        query = query.where(exclusions_table.c.symbol == symbol.upper())
    with db.begin() as conn:
        return [
            ExclusionRecord(
                exclusion_id=int(r.exclusion_id),
                symbol=r.symbol,
                reason=Reason(r.reason),
                detail=r.detail,
                values=dict(r.values),
                source=r.source,
                rescan_id=r.rescan_id,
                run_id=r.run_id,
                created_at=r.created_at,
            )
            for r in conn.execute(query)
        ]


def publish_current(db: Database, state: RedisState, *, source: str) -> Rescan | None:
    """Hand the *newest* version to the realtime service (control key ``universe``) and record it as the last
    rescan (``tapewatch status``, the dashboard); return it, or None before the first version.

    Writers call this after committing their version, but it publishes whatever is newest, read and written
    under the writers' advisory lock: a slow run that publishes late publishes the newer version another run
    stored meanwhile, never its own older one. Raises StorageUnavailable when PostgreSQL or Redis is down."""
    return _publish(db, state, source, always=True)


def publish_pending(db: Database, state: RedisState, *, source: str) -> Rescan | None:
    """:func:`publish_current`, but only when the newest version is not the one Redis records as the last
    published (``last_rescan``'s ``rescan_id``, written after the universe itself): a version whose publish
    failed (Redis down after the version was committed) is published by the next writer or retry, even one
    that has nothing new to store. Returns the version published, or None when there was nothing to publish.
    Raises StorageUnavailable when PostgreSQL or Redis is down (whether a publish is pending is then unknown)."""
    return _publish(db, state, source, always=False)


def published_rescan_id(state: RedisState) -> int | None:
    """The id of the version Redis records as the last published (``last_rescan``), None when unknown."""
    last = state.last_rescan()
    value = None if last is None else last.info.get("rescan_id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _publish(db: Database, state: RedisState, source: str, *, always: bool) -> Rescan | None:
    with db.begin() as conn:
        latest = _lock_and_latest(conn)
        if latest is None or (not always and published_rescan_id(state) == latest):
            return None
        rescan = _rescan(conn, latest)
        # still under the lock: no newer version can commit (and publish) between this read and this write;
        # the universe first, the record of it last: a record never names a version Redis does not follow
        state.set_universe(list(rescan.symbols), source=source)
        state.set_last_rescan(
            {
                "rescan_id": rescan.rescan_id,
                "kind": rescan.kind,
                "run_id": rescan.run_id,
                "symbols": len(rescan.symbols),
                "added": ",".join(rescan.added),
                "removed": ",".join(rescan.removed),
            }
        )
        return rescan


# --- the realtime service's live values ------------------------------------------------------------------


def live_liquidity(feeds: Mapping[str, SymbolFeed]) -> dict[str, LiveLiquidity]:
    """The liquidity figures of the feed stats the realtime service published."""
    return {
        s: LiveLiquidity(
            s,
            f.spread,
            f.depth_1pct_usd,
            f.quote_volume_window,
            f.last_event_ms,
            f.updated_ms,
            f.quiet_s,
            f.window_covered_s,
            f.shard or None,
        )
        for s, f in feeds.items()
    }


def live_spreads(state: RedisState, now_ms: int, stale_after_s: float) -> dict[str, float]:
    """The fresh live spreads in Redis (published at most ``stale_after_s`` before ``now_ms``), by symbol: what
    confirms or overrules a REST snapshot's spread. Raises StorageUnavailable when Redis is down."""
    return fresh_spreads(live_liquidity(state.feeds()), now_ms, stale_after_s)
