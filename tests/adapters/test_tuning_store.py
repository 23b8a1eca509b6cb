"""Tuning proposals against real PostgreSQL: stored candidates and outcomes re-scored, proposal, apply,
rollback (who/when), the overlay ``tapewatch run`` uses, the ``tapewatch tuning`` command and the asset."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import msgspec
import pytest
import sqlalchemy as sa

from assets.tuning import tuning_proposal
from orchestration.resources import DatabaseResource, TapewatchSettings
from tapewatch.adapters.db import Database
from tapewatch.adapters.signal_store import SignalStore
from tapewatch.adapters.tuning_store import (
    active_parameters,
    apply_proposal,
    get_proposal,
    history,
    list_proposals,
    load_samples,
    propose,
    rollback,
    with_active_parameters,
)
from tapewatch.cli import main
from tapewatch.settings import load_settings
from tapewatch.tuning import WEEK_MS, TuningError, UnknownProposal, current_parameters, score
from tests.adapters.signal_builders import candidate, entry, loss, win

HOUR = 3_600_000
# 2024-02-05: five weeks after the builders' T0 (2024-01-01)
NOW = 1_704_067_200_123 + 5 * WEEK_MS


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def store_history(db: Database, *, per_week: int = 4) -> None:
    """Every week: setups with imbalance 0.30 are stopped out, those with 0.45 reach TP2; plus a rejected
    candidate (outcome unknown)."""
    store = SignalStore(db)
    for week in range(5):
        start = NOW - (5 - week) * WEEK_MS
        for i in range(per_week):
            for n, (imbalance, won) in enumerate(((0.30, False), (0.45, True))):
                t = start + i * HOUR + n * 60_000
                symbol = f"S{week}{i}{n}USDT"
                signal = entry(symbol, t, imbalance_top10=imbalance)
                cand = candidate(symbol, t, imbalance_top10=imbalance)
                assert cand.signal_id == signal.signal_id
                store.save_signal(signal)
                store.save_candidates([cand])
                store.save_outcome(win(signal) if won else loss(signal), source="batch")
        store.save_candidates([candidate("REJUSDT", start + 30 * HOUR, "correlation", imbalance_top10=0.5)])


def settings(**extra: object) -> object:
    return load_settings(tuning_min_samples=8, **extra)


def test_samples_join_candidates_with_finished_outcomes(db: Database) -> None:
    store_history(db, per_week=1)
    samples = load_samples(db, NOW - 5 * WEEK_MS, NOW)
    assert len(samples) == 15
    known = [s for s in samples if s.pnl_r is not None]
    assert len(known) == 10
    assert {round(s.imbalance, 2) for s in known} == {0.30, 0.45}
    assert all(s.pnl_r > 0 for s in known if s.imbalance > 0.4)
    assert all(s.pnl_r < 0 for s in known if s.imbalance < 0.4)
    # the builders' wins and losses traded through their entry; an unknown outcome never counts as triggered
    assert all(s.triggered for s in known) and not any(s.triggered for s in samples if s.pnl_r is None)


def test_propose_apply_and_rollback_record_who_and_when(db: Database) -> None:
    store_history(db)
    proposal = propose(db, settings(), now_ms=NOW)  # type: ignore[arg-type]
    assert proposal.status == "proposed", proposal.note
    assert proposal.parameters["orderbook_imbalance_threshold"] > 0.30
    assert proposal.current_parameters["orderbook_imbalance_threshold"] == 0.28
    assert proposal.in_sample["signals"] == 16 and proposal.in_sample["win_rate"] == 1.0
    assert proposal.current_in_sample["signals"] == 32 and proposal.current_in_sample["win_rate"] == 0.5
    assert proposal.out_of_sample["signals"] == 4 and proposal.current_out_of_sample["signals"] == 8
    assert proposal.counts["unknown_outcome"] == 5
    assert active_parameters(db) == {}  # never applied by itself
    assert [p.id for p in list_proposals(db)] == [proposal.id]

    applied = apply_proposal(db, proposal.id, actor="alice", settings=load_settings())
    assert (applied.action, applied.actor, applied.proposal_id) == ("apply", "alice", proposal.id)
    assert active_parameters(db) == proposal.parameters
    assert (
        apply_proposal(db, proposal.id, actor="alice", settings=load_settings()).id == applied.id
    )  # a double click applies once

    undone = rollback(db, actor="bob")
    assert undone is not None and (undone.action, undone.actor, undone.parameters) == ("rollback", "bob", {})
    assert active_parameters(db) == {}
    assert rollback(db, actor="bob") is None  # the settings' own values: nothing left to undo
    assert [(h.action, h.actor) for h in history(db)] == [("rollback", "bob"), ("apply", "alice")]
    assert history(db)[0].applied_at >= history(db)[1].applied_at


def test_successive_rollbacks_walk_back_through_earlier_sets(db: Database) -> None:
    store_history(db)
    first = propose(db, settings(), now_ms=NOW)  # type: ignore[arg-type]
    apply_proposal(db, first.id, actor="alice", settings=load_settings())
    # next month, with the first set in force, the tuning starts from it
    second = propose(db, settings(), now_ms=NOW)  # type: ignore[arg-type]
    assert second.current_parameters == first.parameters
    assert second.status == "no_change"
    with pytest.raises(TuningError, match=r"'no_change'.*nothing to apply"):
        apply_proposal(db, second.id, actor="alice", settings=load_settings())
    third = get_proposal(db, first.id)
    apply_proposal(db, third.id, actor="carol", settings=load_settings())  # already in force: recorded once
    assert len(history(db)) == 1
    rollback(db, actor="dave")
    assert active_parameters(db) == {}


def test_unknown_ids_and_missing_actors_are_clear_errors(db: Database) -> None:
    with pytest.raises(
        UnknownProposal, match="no tuning proposal 999; list them with `tapewatch tuning list`"
    ):
        get_proposal(db, 999)
    with pytest.raises(UnknownProposal):
        apply_proposal(db, 999, actor="alice", settings=load_settings())
    with pytest.raises(TuningError, match="actor"):
        rollback(db, actor="  ")
    empty = propose(db, settings(), now_ms=NOW)  # type: ignore[arg-type]
    assert empty.status == "insufficient_data"
    with pytest.raises(TuningError, match="insufficient_data"):
        apply_proposal(db, empty.id, actor="alice", settings=load_settings())


def test_a_proposal_starts_from_what_the_service_uses_explicit_settings_included(db: Database) -> None:
    store_history(db)
    first = propose(db, settings(), now_ms=NOW)  # type: ignore[arg-type]
    apply_proposal(db, first.id, actor="alice", settings=load_settings())
    pinned = settings(orderbook_imbalance_threshold=0.35)  # the operator's value wins in `tapewatch run`
    in_run = with_active_parameters(db, pinned)[0]  # type: ignore[arg-type]
    proposal = propose(db, pinned, now_ms=NOW)  # type: ignore[arg-type]
    assert proposal.current_parameters["orderbook_imbalance_threshold"] == 0.35
    assert proposal.current_parameters == current_parameters(in_run)


def test_an_out_of_date_proposal_is_refused_unless_forced(db: Database) -> None:
    store_history(db)
    stale = propose(db, settings(), now_ms=NOW)  # type: ignore[arg-type]
    # another set is put in force after the proposal was scored against the settings' own values
    other = propose(db, settings(), now_ms=NOW)  # type: ignore[arg-type]
    raised = json.dumps({**stale.current_parameters, "min_large_trades": 5})
    with db.begin() as conn:
        conn.execute(
            sa.text("UPDATE tuning_proposals SET parameters = CAST(:p AS jsonb) WHERE id = :id"),
            {"p": raised, "id": other.id},
        )
    apply_proposal(db, other.id, actor="alice", settings=load_settings())
    with pytest.raises(TuningError, match=r"out of date.*min_large_trades scored at 3, in force 5.*propose"):
        apply_proposal(db, stale.id, actor="bob", settings=load_settings())
    assert active_parameters(db)["min_large_trades"] == 5 and len(history(db)) == 1
    forced = apply_proposal(db, stale.id, actor="bob", settings=load_settings(), force=True)
    assert active_parameters(db) == stale.parameters and forced.undo_to == history(db)[1].id
    # an explicit value in the applying process alone says nothing of the service: still out of date
    rollback(db, actor="bob")
    pinned = load_settings(min_large_trades=3)
    with pytest.raises(TuningError, match=r"out of date.*min_large_trades scored at 3, in force 5"):
        apply_proposal(db, stale.id, actor="bob", settings=pinned)
    assert active_parameters(db)["min_large_trades"] == 5


def test_the_service_overlay_uses_applied_values_unless_set_explicitly(db: Database) -> None:
    store_history(db)
    proposal = propose(db, settings(), now_ms=NOW)  # type: ignore[arg-type]
    apply_proposal(db, proposal.id, actor="alice", settings=load_settings())
    tuned, applied, skipped = with_active_parameters(db, load_settings())
    assert tuned.orderbook_imbalance_threshold == proposal.parameters["orderbook_imbalance_threshold"]
    assert skipped == {} and applied == proposal.parameters
    pinned, _, skipped = with_active_parameters(db, load_settings(orderbook_imbalance_threshold=0.3))
    assert pinned.orderbook_imbalance_threshold == 0.3
    assert set(skipped) == {"orderbook_imbalance_threshold"}


def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str, var_dir: Path) -> None:
    """The ``tapewatch`` commands the test runs (``main([...])``) read ``database_url`` and ``var_dir``, and no
    config file."""
    monkeypatch.delenv("TAPEWATCH_CONFIG_FILE", raising=False)
    monkeypatch.setenv("TAPEWATCH_DATABASE_URL", database_url)
    monkeypatch.setenv("TAPEWATCH_VAR_DIR", str(var_dir))


def test_the_tuning_command(
    db: Database,
    migrated_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli_env(monkeypatch, migrated_database_url, tmp_path)
    assert main(["tuning", "list"]) == 0
    assert "no tuning proposals yet" in capsys.readouterr().out
    store_history(db)
    proposal = propose(db, settings(), now_ms=NOW)  # type: ignore[arg-type]

    assert main(["tuning", "show", str(proposal.id), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "proposed" and shown["parameters"] == proposal.parameters
    assert main(["tuning", "apply", str(proposal.id), "--actor", "ops-team"]) == 0
    assert f"proposal {proposal.id} in force" in capsys.readouterr().out
    assert main(["tuning", "list"]) == 0
    assert "<- in force" in capsys.readouterr().out
    assert history(db)[0].actor == "ops-team"
    assert main(["tuning", "rollback"]) == 0
    out = capsys.readouterr().out
    assert "rolled back" in out and "the settings' own values" in out
    assert history(db)[0].actor.endswith("(cli)")
    assert main(["tuning", "rollback"]) == 0
    assert "nothing to roll back" in capsys.readouterr().out
    stale = propose(db, settings(), now_ms=NOW)  # type: ignore[arg-type]
    assert main(["tuning", "apply", str(proposal.id)]) == 0  # now the first proposal is in force
    capsys.readouterr()
    assert main(["tuning", "apply", str(stale.id)]) == 1
    assert "out of date" in capsys.readouterr().err and active_parameters(db) == proposal.parameters
    assert main(["tuning", "apply", str(stale.id), "--force"]) == 0
    assert history(db)[0].proposal_id == stale.id
    assert main(["tuning", "apply", "4242"]) == 1
    assert "no tuning proposal 4242" in capsys.readouterr().err


def test_the_monthly_asset_stores_a_proposal_and_applies_nothing(
    db: Database, migrated_database_url: str
) -> None:
    result = dg.materialize(
        [tuning_proposal],
        resources={
            "settings": TapewatchSettings(overrides={"tuning_min_samples": "1"}),
            "database": DatabaseResource(url=migrated_database_url),
        },
    )
    assert result.success
    metadata = result.asset_materializations_for_node("tuning_proposal")[0].metadata
    [proposal] = list_proposals(db)
    assert metadata["proposal_id"].value == proposal.id
    assert metadata["status"].value == "insufficient_data"  # no candidates in the last five weeks
    assert "| current |" in metadata["comparison"].value
    assert metadata["scored_under"].value == {} == proposal.applied_parameters  # nothing applied yet
    assert active_parameters(db) == {}


def test_samples_carry_the_stored_quality_score_and_large_trade_sizes(db: Database) -> None:
    store = SignalStore(db)
    t = NOW - 2 * WEEK_MS
    sized = candidate(
        "NEWUSDT", t, large_buys=3, large_buy_sizes=(90_000, 60_000, 50_000), large_sell_sizes=()
    )
    old = candidate("OLDUSDT", t + 1)  # stored before the sizes were recorded
    store.save_candidates([sized, old])
    by_time = {s.event_time: s for s in load_samples(db, t, t + 2, 55_000.0)}
    new, before = by_time[t], by_time[t + 1]
    assert new.quality_score == sized.quality.score and new.tier == sized.quality.tier
    assert (new.large_buy_sizes, new.large_sell_sizes, new.large_trade_size) == (
        (90_000, 60_000, 50_000),
        (),
        55_000.0,
    )
    assert before.large_buy_sizes is None and before.quality_score == old.quality.score


def test_the_service_overlay_applies_tuned_breakpoints_and_refuses_a_disordered_mix(db: Database) -> None:
    store_history(db)
    proposal_id = propose(db, settings(), now_ms=NOW).id  # type: ignore[arg-type]
    with db.begin() as conn:  # a proposal that raises the tiers, as the tier search would
        conn.exec_driver_sql(
            "UPDATE tuning_proposals SET status = 'proposed', parameters = parameters || "
            '\'{"quality_low_min": 55, "quality_medium_min": 70, "quality_high_min": 85}\'::jsonb '
            f"WHERE id = {proposal_id}"
        )
    apply_proposal(db, proposal_id, actor="alice", settings=load_settings())
    tuned, applied, _ = with_active_parameters(db, load_settings())
    assert (tuned.quality_low_min, tuned.quality_medium_min, tuned.quality_high_min) == (55, 70, 85)
    assert applied["quality_high_min"] == 85
    # an explicit MEDIUM below the tuned LOW would disorder the tiers: a clear error, not a silent mix
    with pytest.raises(
        TuningError, match=r"bad quality tiers .*low=55, medium=52.*`tapewatch tuning rollback`"
    ):
        with_active_parameters(db, load_settings(quality_medium_min=52, quality_high_min=60))
    rollback(db, actor="alice")
    assert with_active_parameters(db, load_settings())[0].quality_low_min == 50


# --- what each candidate was counted at, and the out-of-date check from another process ------------------


def test_each_candidate_is_recounted_from_the_large_trade_size_it_was_counted_at(db: Database) -> None:
    store = SignalStore(db)
    t = NOW - 2 * WEEK_MS
    # 3 large buys counted at 50 000; large_trade_size was raised to 60 000 (an apply) before the tuning ran
    sizes: dict[str, Any] = {
        "large_buys": 3,
        "large_buy_sizes": (90_000, 60_000, 50_000),
        "large_sell_sizes": (),
    }
    at_50k = msgspec.structs.replace(candidate("OLDUSDT", t, **sizes), large_trade_size=50_000.0)
    at_60k = msgspec.structs.replace(candidate("NEWUSDT", t + 1, **sizes), large_trade_size=60_000.0)
    unknown = candidate("NULUSDT", t + 2, **sizes)  # stored before the size was recorded
    assert unknown.large_trade_size is None
    store.save_candidates([at_50k, at_60k, unknown])
    with db.begin() as conn:
        stored: dict[str, float | None] = dict(
            conn.execute(sa.text("SELECT symbol, large_trade_size FROM candidates")).all()
        )
    assert stored == {"OLDUSDT": 50_000.0, "NEWUSDT": 60_000.0, "NULUSDT": None}

    by_time = {s.event_time: s for s in load_samples(db, t, t + 3, 60_000.0)}
    old, new, null = by_time[t], by_time[t + 1], by_time[t + 2]
    assert (old.large_trade_size, new.large_trade_size, null.large_trade_size) == (
        50_000.0,
        60_000.0,
        60_000.0,
    )
    at_60k_params = {**current_parameters(load_settings()), "large_trade_size": 60_000, "min_large_trades": 3}
    # counted at 50 000, only 2 of its trades reach 60 000: no longer 3 large trades
    assert old.passes(at_60k_params) is False
    # counted at 60 000 already: its 3 are exact; NULL takes the size in force (the documented fallback)
    assert new.passes(at_60k_params) is True and null.passes(at_60k_params) is True
    # a size below the one it was counted at cannot be re-counted: undecided, never guessed
    assert new.passes({**at_60k_params, "large_trade_size": 50_000}) is None


def test_a_proposal_counts_candidates_stored_at_another_size(db: Database) -> None:
    store_history(db, per_week=1)
    with db.begin() as conn:  # the first two weeks were recorded before large_trade_size went to 60 000
        conn.execute(
            sa.text("UPDATE candidates SET large_trade_size = 50000 WHERE event_time < :t"),
            {"t": NOW - 3 * WEEK_MS},
        )
    proposal = propose(db, settings(large_trade_size=60_000), now_ms=NOW)  # type: ignore[arg-type]
    assert proposal.counts["other_size"] == 2 * 2  # two scored signals a week
    assert "4 scored candidates were counted at another large_trade_size than 60000" in proposal.note
    samples = load_samples(db, NOW - 5 * WEEK_MS, NOW, 60_000.0)
    assert {s.large_trade_size for s in samples if s.event_time < NOW - 3 * WEEK_MS} == {50_000.0}
    # the builders store no sizes: counted at 50 000, they cannot be re-counted at 60 000 and are left out of
    # the current set (the old code took them as counted at 60 000 and kept them)
    current = score(samples, proposal.current_parameters)
    assert current.undecided == 4 and current.signals == 6
    assert proposal.current_in_sample["undecided"] == 4


def test_an_apply_from_a_process_with_other_explicit_settings_does_not_refuse_a_valid_proposal(
    db: Database,
) -> None:
    store_history(db)
    # proposed where the imbalance threshold is pinned (e.g. the Dagster daemon's env), applied from a
    # shell without it, and the other way round: the applied tuning did not change, so both are up to date
    pinned = propose(db, settings(orderbook_imbalance_threshold=0.29), now_ms=NOW)  # type: ignore[arg-type]
    plain = propose(db, settings(), now_ms=NOW)  # type: ignore[arg-type]
    assert pinned.status == plain.status == "proposed" and pinned.applied_parameters == {}
    assert apply_proposal(db, pinned.id, actor="alice", settings=load_settings()).proposal_id == pinned.id
    rollback(db, actor="alice")  # back to the settings' own values: what both were scored under
    elsewhere = load_settings(orderbook_imbalance_threshold=0.35)  # the dashboard's own env
    assert apply_proposal(db, plain.id, actor="bob", settings=elsewhere).proposal_id == plain.id
    # the next proposal is scored under the applied set, and stores it
    after = propose(db, settings(), now_ms=NOW)  # type: ignore[arg-type]
    assert after.applied_parameters == plain.parameters


def test_a_rollback_to_the_set_a_proposal_was_scored_under_keeps_it_up_to_date(db: Database) -> None:
    store_history(db)
    first = propose(db, settings(), now_ms=NOW)  # type: ignore[arg-type]
    apply_proposal(db, first.id, actor="alice", settings=load_settings())
    scored = propose(db, settings(), now_ms=NOW)  # type: ignore[arg-type]
    raised = json.dumps({**first.parameters, "quality_low_min": 55, "quality_medium_min": 70})
    with db.begin() as conn:  # make it something to apply: tighter LOW and MEDIUM than the set in force
        conn.execute(
            sa.text(
                "UPDATE tuning_proposals SET status = 'proposed', parameters = CAST(:p AS jsonb) WHERE id = :id"
            ),
            {"p": raised, "id": scored.id},
        )
    other = propose(db, settings(), now_ms=NOW)  # type: ignore[arg-type]
    bumped = json.dumps({**first.parameters, "min_large_trades": 6})
    with db.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE tuning_proposals SET status = 'proposed', parameters = CAST(:p AS jsonb) WHERE id = :id"
            ),
            {"p": bumped, "id": other.id},
        )
    apply_proposal(db, other.id, actor="alice", settings=load_settings())
    with pytest.raises(TuningError, match=r"min_large_trades scored at 3, in force 6"):
        apply_proposal(db, scored.id, actor="bob", settings=load_settings())
    rollback(db, actor="alice")  # the first set is in force again (a new row, the same values)
    dashboard = load_settings(orderbook_imbalance_threshold=0.35)  # an env var of the dashboard alone
    assert apply_proposal(db, scored.id, actor="bob", settings=dashboard).proposal_id == scored.id


def test_a_proposal_stored_before_the_applied_set_was_recorded_uses_the_old_check(db: Database) -> None:
    store_history(db)
    proposal = propose(db, settings(), now_ms=NOW)  # type: ignore[arg-type]
    with db.begin() as conn:  # as sql/0008 leaves a proposal stored before it
        conn.execute(
            sa.text("UPDATE tuning_proposals SET applied_parameters = NULL WHERE id = :id"),
            {"id": proposal.id},
        )
    assert get_proposal(db, proposal.id).applied_parameters is None
    # only the applying process's settings can say what is in force then: its explicit value counts
    with pytest.raises(TuningError, match=r"orderbook_imbalance_threshold scored at 0.28, in force 0.35"):
        apply_proposal(
            db, proposal.id, actor="bob", settings=load_settings(orderbook_imbalance_threshold=0.35)
        )
    assert apply_proposal(db, proposal.id, actor="bob", settings=load_settings()).proposal_id == proposal.id
