"""Tuning proposals and their application in PostgreSQL (tables of sql/0005): the dashboard's Apply button,
``tapewatch tuning`` and the realtime service's start-up all go through here.

- :func:`propose` reads the candidates of the tuning window, runs :func:`tapewatch.tuning.tune` and stores
  the proposal (never applying it).
- :func:`apply_proposal` / :func:`rollback` record who did what and when in ``tuning_applications``; the
  newest row holds the parameters in force, and each row remembers which row a rollback returns to, so
  successive rollbacks walk back through earlier sets down to the settings' own values.
- :func:`active_parameters` is what is in force; :func:`with_active_parameters` lays it over a settings
  object (values the operator set explicitly — environment, YAML, command line — win and are reported), which
  remembers the row it was tuned with (:func:`applied_record`, published in the realtime heartbeat);
  :func:`tuning_use` compares the row in force with the rows the running instances started with (a restart
  pending: :mod:`tapewatch.tuning_use`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection

from tapewatch.adapters.db import Database
from tapewatch.adapters.redis_keys import REALTIME
from tapewatch.adapters.redis_state import realtime_shards
from tapewatch.adapters.redis_values import Heartbeat
from tapewatch.health import realtime_instances
from tapewatch.quality import breakpoints
from tapewatch.risk import RiskParams
from tapewatch.settings import Settings
from tapewatch.tuning import (
    TUNABLE,
    Params,
    Sample,
    Tuning,
    TuningError,
    UnknownProposal,
    check_parameters,
    current_parameters,
    tune,
)
from tapewatch.tuning_use import NOTHING_APPLIED, Record, TuningUse, started_with

log = logging.getLogger(__name__)

# Apply and rollback read the row in force and write the next one: they must not interleave.
_LOCK_KEY = 0x7477_7475_6E65_0001  # "twtune" + 1


@dataclass(frozen=True, slots=True)
class Proposal:
    """One row of ``tuning_proposals``; results are ``tapewatch.tuning.Result.to_json`` objects."""

    id: int
    created_at: datetime
    status: str
    window_start: int
    split_at: int
    window_end: int
    parameters: dict[str, Any]
    current_parameters: dict[str, Any]
    in_sample: dict[str, Any]
    out_of_sample: dict[str, Any]
    current_in_sample: dict[str, Any]
    current_out_of_sample: dict[str, Any]
    counts: dict[str, Any]
    note: str
    #: the applied tuning in force when it was scored ({} = none); None: stored before that was recorded
    applied_parameters: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            **{k: getattr(self, k) for k in self.__slots__ if k != "created_at"},
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class AppliedTuning:
    """One row of ``tuning_applications``: after it, ``parameters`` are in force ({} = the settings' own)."""

    id: int
    action: str
    proposal_id: int | None
    parameters: dict[str, float | int]
    undo_to: int | None
    actor: str
    applied_at: datetime


_PROPOSAL_COLUMNS = (
    "id, created_at, status, window_start, split_at, window_end, parameters, current_parameters, in_sample, "
    "out_of_sample, current_in_sample, current_out_of_sample, counts, note, applied_parameters"
)
_APPLIED_COLUMNS = "id, action, proposal_id, parameters, undo_to, actor, applied_at"


def load_samples(
    db: Database, start_ms: int, end_ms: int, large_trade_size: float = 50_000.0
) -> list[Sample]:
    """The candidates with ``start_ms <= event_time < end_ms`` as tuning samples, with the outcome of those
    that became signals and finished, and the would-be outcome (``candidate_outcomes``, sql/0012) of those
    turned away (unknown: no plan, not finished yet, or stored before plans were), their stored quality score
    and large-trade sizes (None for candidates stored before the sizes were), each counted at its own stored
    ``large_trade_size``.

    A candidate stored before that size was recorded (column NULL, sql/0008) is taken as counted at
    ``large_trade_size`` (pass the one in force): right unless the size changed while it was stored."""
    with db.begin() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT c.candidate_id, c.symbol, c.event_time, c.direction, c.features, c.tier, "
                "c.quality_score, c.large_trade_size AS counted_at, c.fate = 'paused' AS paused, "
                # what the risk gate re-run needs: when the signal (or would-be signal) ended, and whether it
                # ended stopped out before TP1 (Outcome.stopped_out)
                "CASE WHEN o.signal_id IS NOT NULL THEN CASE WHEN o.finished THEN COALESCE(o.exit_time, o.as_of) END "
                "ELSE COALESCE(w.exit_time, w.as_of) END AS end_time, "
                "COALESCE(CASE WHEN o.signal_id IS NOT NULL THEN o.finished AND o.state = 'STOPPED' "
                "AND o.tp1_time IS NULL ELSE w.state = 'STOPPED' AND w.tp1_time IS NULL END, false) AS stopped_out, "
                "COALESCE(CASE WHEN o.finished THEN o.pnl_r END, w.pnl_r) AS pnl_r, "
                "CASE WHEN o.signal_id IS NOT NULL THEN o.finished AND o.trigger_time IS NOT NULL "
                "ELSE w.trigger_time IS NOT NULL END AS triggered "
                "FROM candidates c LEFT JOIN signal_outcomes o ON o.signal_id = c.signal_id "
                # a candidate turned away: its would-be outcome (only finished ones are stored)
                "LEFT JOIN candidate_outcomes w ON w.candidate_id = c.candidate_id AND c.signal_id IS NULL "
                "WHERE c.event_time >= :start AND c.event_time < :end ORDER BY c.event_time"
            ),
            {"start": start_ms, "end": end_ms},
        ).all()
    samples = []
    for row in rows:
        f = row.features
        samples.append(
            Sample(
                event_time=int(row.event_time),
                direction=row.direction,
                imbalance=float(f["imbalance_top10"]),
                large_buys=int(f["large_buys"]),
                large_sells=int(f["large_sells"]),
                volume_intensity=None if f.get("volume_intensity") is None else float(f["volume_intensity"]),
                tier=row.tier,
                pnl_r=None if row.pnl_r is None else float(row.pnl_r),
                triggered=bool(row.triggered),
                quality_score=int(row.quality_score),
                large_buy_sizes=_sizes(f.get("large_buy_sizes")),
                large_sell_sizes=_sizes(f.get("large_sell_sizes")),
                large_trade_size=large_trade_size if row.counted_at is None else float(row.counted_at),
                key=str(row.candidate_id),
                symbol=row.symbol,
                end_time=None if row.end_time is None else int(row.end_time),
                stopped_out=bool(row.stopped_out),
                paused=bool(row.paused),
            )
        )
    return samples


def _sizes(value: Any) -> tuple[int, ...] | None:
    return None if value is None else tuple(int(v) for v in value)


def propose(db: Database, settings: Settings, *, now_ms: int) -> Proposal:
    """Run the tuning over the window ending at ``now_ms`` and store its proposal (not applied). It starts
    from the parameters in force, as ``tapewatch run`` gets them: the applied tuning under the values the
    operator set explicitly (in ``settings``). The applied tuning it read is stored with the proposal: what
    :func:`apply_proposal` checks it against."""
    applied = active_parameters(db)
    base = current_parameters(_with_active(settings, applied)[0])
    start = now_ms - settings.tuning_weeks * 7 * 86_400_000
    result = tune(
        load_samples(db, start, now_ms, float(base["large_trade_size"])),
        base,
        now_ms=now_ms,
        weeks=settings.tuning_weeks,
        min_samples=settings.tuning_min_samples,
        risk=RiskParams.from_settings(settings),  # every set's candidates through the risk gate again
    )
    return get_proposal(db, save_proposal(db, result, applied=applied))


def save_proposal(db: Database, t: Tuning, *, applied: Params | None) -> int:
    """Store a tuning result as a proposal, scored under the applied tuning ``applied`` ({} = none; None =
    unknown, then :func:`apply_proposal` falls back to the applying process's settings); its id."""
    params = {
        "status": t.status,
        "window_start": t.window_start,
        "split_at": t.split_at,
        "window_end": t.window_end,
        "parameters": t.parameters,
        "current_parameters": t.current,
        "in_sample": t.in_sample.to_json(),
        "out_of_sample": t.out_of_sample.to_json(),
        "current_in_sample": t.current_in_sample.to_json(),
        "current_out_of_sample": t.current_out_of_sample.to_json(),
        "counts": t.counts,
        "note": t.note,
        "applied_parameters": applied,
    }
    json_keys = [k for k in params if k not in ("status", "window_start", "split_at", "window_end", "note")]
    stmt = sa.text(
        f"INSERT INTO tuning_proposals ({', '.join(params)}) VALUES ({', '.join(':' + k for k in params)}) "
        "RETURNING id"
    ).bindparams(*(sa.bindparam(k, type_=JSONB(none_as_null=k == "applied_parameters")) for k in json_keys))
    with db.begin() as conn:
        return int(conn.execute(stmt, params).scalar_one())


def list_proposals(db: Database, limit: int = 20) -> list[Proposal]:
    """The newest ``limit`` proposals, newest first."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1; got {limit}")
    with db.begin() as conn:
        rows = conn.execute(
            sa.text(f"SELECT {_PROPOSAL_COLUMNS} FROM tuning_proposals ORDER BY id DESC LIMIT :limit"),
            {"limit": limit},
        )
        return [Proposal(*row) for row in rows]


def get_proposal(db: Database, proposal_id: int) -> Proposal:
    """The proposal ``proposal_id``; UnknownProposal when there is none."""
    with db.begin() as conn:
        return _proposal(conn, proposal_id)


def _proposal(conn: Connection, proposal_id: int) -> Proposal:
    row = conn.execute(
        sa.text(f"SELECT {_PROPOSAL_COLUMNS} FROM tuning_proposals WHERE id = :id"), {"id": proposal_id}
    ).first()
    if row is None:
        raise UnknownProposal(f"no tuning proposal {proposal_id}; list them with `tapewatch tuning list`")
    return Proposal(*row)


def _in_force(conn: Connection) -> AppliedTuning | None:
    row = conn.execute(
        sa.text(f"SELECT {_APPLIED_COLUMNS} FROM tuning_applications ORDER BY id DESC LIMIT 1")
    ).first()
    return None if row is None else AppliedTuning(*row)


def _insert(
    conn: Connection, action: str, proposal_id: int | None, params: Params, undo_to: int | None, actor: str
) -> AppliedTuning:
    row = conn.execute(
        sa.text(
            "INSERT INTO tuning_applications (action, proposal_id, parameters, undo_to, actor) "
            f"VALUES (:action, :proposal_id, :parameters, :undo_to, :actor) RETURNING {_APPLIED_COLUMNS}"
        ).bindparams(sa.bindparam("parameters", type_=JSONB)),
        {
            "action": action,
            "proposal_id": proposal_id,
            "parameters": params,
            "undo_to": undo_to,
            "actor": actor,
        },
    ).one()
    return AppliedTuning(*row)


def _actor(actor: str) -> str:
    actor = actor.strip()
    if not actor:
        raise TuningError("say who applies or rolls back a tuning (actor): it is recorded")
    return actor


def apply_proposal(
    db: Database, proposal_id: int, *, actor: str, settings: Settings, force: bool = False
) -> AppliedTuning:
    """Put the parameters of proposal ``proposal_id`` in force, recording ``actor`` and the time.

    Raises UnknownProposal for an unknown id, TuningError when the proposal has nothing to apply (status
    ``no_change`` / ``insufficient_data``), its parameters are out of range, or it is out of date: the
    applied tuning in force now gives another value to some parameter than the one in force when the
    proposal was scored (stored with it) — applying it would silently undo what changed since; ``force``
    applies it anyway. The check reads the database only (see :func:`_tuning_changes`), so the settings of
    the process that applies (CLI, dashboard) neither refuse a valid proposal nor pass a stale one; only a
    proposal stored before sql/0008 is checked against ``settings`` with the applied tuning laid over it.
    Applying the proposal already in force records nothing and returns the row in force (a double click
    applies once). Takes effect when the realtime service next starts."""
    who = _actor(actor)
    with db.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        proposal = _proposal(conn, proposal_id)
        if proposal.status != "proposed":
            raise TuningError(
                f"tuning proposal {proposal_id} is '{proposal.status}' ({proposal.note}): nothing to apply"
            )
        params = check_parameters(proposal.parameters)
        current = _in_force(conn)
        if current is not None and current.action == "apply" and current.proposal_id == proposal_id:
            return current
        applied_now = {} if current is None else current.parameters
        if proposal.applied_parameters is not None:
            changed = _tuning_changes(proposal.applied_parameters, applied_now)
        else:  # stored before sql/0008: only this process's settings can say what the service uses
            in_force = current_parameters(_overlay(settings, applied_now)[0])
            changed = {
                k: (v, in_force[k])
                for k, v in proposal.current_parameters.items()
                if k in in_force and v != in_force[k]
            }
        if changed and not force:
            differences = ", ".join(
                f"{k} scored at {was:g}, in force {now:g}" for k, (was, now) in changed.items()
            )
            raise TuningError(
                f"tuning proposal {proposal_id} is out of date: it was scored against other parameters than "
                f"those in force ({differences}); applying it would undo what changed since. Make a fresh "
                "proposal with `tapewatch tuning propose` (or `tapewatch tuning apply ID --force`)"
            )
        return _insert(conn, "apply", proposal_id, params, None if current is None else current.id, who)


def _tuning_changes(then: dict[str, Any], now: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The tunable parameters whose applied value differs between two applied sets, as (then, now); a name
    missing from a set ({} = the settings' own values) takes its built-in default. Why this reference: a
    value set explicitly where the service runs wins over any applied tuning and cannot be known from another
    process, and every other value is the applied one or, failing that, the same built-in default in every
    process of this version. So comparing applied sets, defaults filled in, is what the service sees change
    — whatever the settings of the process that proposes or applies."""
    changed: dict[str, tuple[Any, Any]] = {}
    for name in TUNABLE:
        default = Settings.model_fields[name].default
        was, is_now = then.get(name, default), now.get(name, default)
        if was != is_now:
            changed[name] = (was, is_now)
    return changed


def rollback(db: Database, *, actor: str) -> AppliedTuning | None:
    """Return to the parameter set in force before the current one (the settings' own values after the
    first apply), recording ``actor``; None when nothing is applied (nothing to roll back)."""
    who = _actor(actor)
    with db.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        current = _in_force(conn)
        if current is None or (not current.parameters and current.undo_to is None):
            return None
        target = None
        if current.undo_to is not None:
            row = conn.execute(
                sa.text(f"SELECT {_APPLIED_COLUMNS} FROM tuning_applications WHERE id = :id"),
                {"id": current.undo_to},
            ).one()
            target = AppliedTuning(*row)
        return _insert(
            conn,
            "rollback",
            None if target is None else target.proposal_id,
            {} if target is None else target.parameters,
            None if target is None else target.undo_to,
            who,
        )


def history(db: Database, limit: int = 20) -> list[AppliedTuning]:
    """The newest applies and rollbacks, newest first."""
    with db.begin() as conn:
        rows = conn.execute(
            sa.text(f"SELECT {_APPLIED_COLUMNS} FROM tuning_applications ORDER BY id DESC LIMIT :limit"),
            {"limit": limit},
        )
        return [AppliedTuning(*row) for row in rows]


def active_parameters(db: Database) -> dict[str, float | int]:
    """The tuned parameters in force ({} when none: the settings' own values apply)."""
    with db.begin() as conn:
        current = _in_force(conn)
    return {} if current is None else dict(current.parameters)


def with_active_parameters(db: Database, settings: Settings) -> tuple[Settings, Params, Params]:
    """``settings`` with the tuned parameters in force laid over it; also what was applied and what was
    skipped because the operator set that value explicitly (environment, YAML, command line win). The
    returned settings remember the ``tuning_applications`` row they were tuned with (:func:`applied_record`),
    read with its parameters: what the realtime service publishes in its heartbeat."""
    with db.begin() as conn:
        current = _in_force(conn)
    tuned, applied, skipped = _with_active(settings, {} if current is None else dict(current.parameters))
    # An attribute of this settings object, not a setting: copies keep it, a Settings built anew has none.
    setattr(tuned, _RECORD_ATTR, 0 if current is None else current.id)
    return tuned, applied, skipped


_RECORD_ATTR = "_tuning_record"


def applied_record(settings: Settings) -> int | None:
    """The id of the ``tuning_applications`` row :func:`with_active_parameters` laid over ``settings`` (0:
    none was in force); None for settings that did not come from it."""
    value = getattr(settings, _RECORD_ATTR, None)
    return value if isinstance(value, int) else None


def tuning_use(db: Database, started: Mapping[str, int | None]) -> TuningUse:
    """The row in force against the row each live realtime instance says it started with (``started``: its
    id, 0 for none, None when it does not say; :func:`tapewatch.tuning_use.started_with`)."""
    ids = sorted({i for i in started.values() if i})
    with db.begin() as conn:
        current = _in_force(conn)
        query = f"SELECT {_APPLIED_COLUMNS} FROM tuning_applications WHERE id = ANY(:ids)"
        rows = conn.execute(sa.text(query), {"ids": ids}).all() if ids else []
    found = {row.id: _record(AppliedTuning(*row)) for row in rows}
    found[0] = NOTHING_APPLIED
    return TuningUse(
        NOTHING_APPLIED if current is None else _record(current),
        {name: None if i is None else found.get(i) for name, i in started.items()},
    )


def started_by_instance(beats: Mapping[str, Heartbeat | None]) -> dict[str, int | None]:
    """Each live realtime instance among ``beats`` (every component's heartbeat, None: expired; the instances
    as status judges them) with the applied tuning row it says it started with (0: none; None: it does not
    say)."""
    live = realtime_instances(beats, REALTIME, realtime_shards(beats))
    return {name: started_with(beat.info) for name, beat in live.items() if beat is not None}


def _record(row: AppliedTuning) -> Record:
    return Record(row.id, row.action, row.proposal_id, dict(row.parameters))


def _with_active(settings: Settings, active: dict[str, Any]) -> tuple[Settings, Params, Params]:
    """:func:`with_active_parameters` with the applied parameters ``active`` already read."""
    tuned, applied, skipped = _overlay(settings, active)
    if applied:
        log.info("tuned parameters in force: %s", applied)
    if skipped:
        log.warning("tuned parameters not applied because they are set explicitly: %s", skipped)
    return tuned, applied, skipped


def _overlay(settings: Settings, active: dict[str, Any]) -> tuple[Settings, Params, Params]:
    """``settings`` with the applied parameters ``active`` laid over it, but for those set explicitly."""
    checked = check_parameters(active)
    explicit = settings.model_fields_set
    applied = {k: v for k, v in checked.items() if k not in explicit}
    skipped = {k: v for k, v in checked.items() if k in explicit}
    tuned = settings.model_copy(
        update=applied
    )  # model_copy does not validate: the tier order is checked here
    try:
        breakpoints(tuned)
    except ValueError as exc:
        raise TuningError(
            f"the applied tuning and the explicit settings together give bad quality tiers ({exc}); "
            "change the explicit quality_*_min settings or `tapewatch tuning rollback`"
        ) from exc
    return tuned, applied, skipped
