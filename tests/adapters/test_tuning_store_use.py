"""An applied tuning takes effect when the realtime service restarts: the service publishes the tuning row it
started with in its heartbeat, and ``tapewatch tuning list`` (and status, and the dashboard) say when the row in
force is not the one it runs with. Real PostgreSQL and Redis."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from realtime.service_publish import _heartbeat_info
from tapewatch.adapters.db import Database
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import RedisState
from tapewatch.adapters.tuning_store import (
    applied_record,
    apply_proposal,
    propose,
    rollback,
    started_by_instance,
    tuning_use,
    with_active_parameters,
)
from tapewatch.cli import main
from tapewatch.settings import load_settings
from tapewatch.sharding import parse_shard
from tapewatch.tuning_use import HEARTBEAT_FIELD
from tests.adapters.test_tuning_store import (  # _restore_logging: autouse, `tapewatch` configures logging
    NOW,
    _restore_logging,  # noqa: F401
    cli_env,
    settings,
    store_history,
)

pytestmark = pytest.mark.db


class _Load:
    def sample(self) -> dict[str, float]:
        return {}


def heartbeat_info(tuned: Any) -> dict[str, Any]:
    """What the realtime service's heartbeat says, run with ``tuned`` settings."""
    service = SimpleNamespace(
        settings=tuned,
        control=None,
        shard=parse_shard(tuned.shard),
        retained=[],
        market=SimpleNamespace(now_ms=0),
    )
    return _heartbeat_info(service, 4242, _Load())  # type: ignore[arg-type]


def started(redis_state: RedisState, tuned: Any, component: str = "realtime") -> None:
    """A realtime instance started with ``tuned`` settings beats."""
    redis_state.beat(component, ttl_s=30, info=heartbeat_info(tuned))


def test_the_service_heartbeat_says_which_applied_tuning_it_started_with(db: Database) -> None:
    fresh = with_active_parameters(db, load_settings())[0]
    assert applied_record(fresh) == 0 and heartbeat_info(fresh)[HEARTBEAT_FIELD] == 0  # none applied
    store_history(db)
    proposal = propose(db, settings(), now_ms=NOW)  # type: ignore[arg-type]
    row = apply_proposal(db, proposal.id, actor="alice", settings=load_settings())
    tuned = with_active_parameters(db, load_settings())[0]
    assert applied_record(tuned) == row.id and heartbeat_info(tuned)[HEARTBEAT_FIELD] == row.id
    assert applied_record(tuned.model_copy(update={"symbols": ["BTCUSDT"]})) == row.id  # copies keep it
    # settings that never went through the overlay (a replay, a test) say nothing rather than something wrong
    assert applied_record(load_settings()) is None and HEARTBEAT_FIELD not in heartbeat_info(load_settings())


def test_an_apply_is_pending_until_the_service_restarts(db: Database, redis_state: RedisState) -> None:
    store_history(db)
    before = with_active_parameters(db, load_settings())[0]
    started(redis_state, before)  # running with the settings' own values
    proposal = propose(db, settings(), now_ms=NOW)  # type: ignore[arg-type]
    row = apply_proposal(db, proposal.id, actor="alice", settings=load_settings())

    use = tuning_use(db, started_by_instance(redis_state.heartbeats()))
    assert use.pending == ["realtime"] and use.in_force.id == row.id
    assert use.line() == (
        f"applied #{proposal.id} (record {row.id}), restart pending: realtime started with nothing applied"
    )
    assert use.mark(proposal.id) == "  <- in force from the next start (realtime runs another set)"
    assert use.to_json()["restart_pending"] == ["realtime"]

    started(redis_state, with_active_parameters(db, load_settings())[0])  # restarted
    use = tuning_use(db, started_by_instance(redis_state.heartbeats()))
    assert use.pending == [] and use.line() == f"applied #{proposal.id} (record {row.id}), in use"
    assert use.mark(proposal.id) == "  <- in force"

    back = rollback(db, actor="bob")
    assert back is not None
    use = tuning_use(db, started_by_instance(redis_state.heartbeats()))
    assert use.pending == ["realtime"]
    assert use.line().startswith(f"the settings' own values (record {back.id}), restart pending")
    assert use.mark(proposal.id) == "  <- still used by the running realtime until its next start"


def test_a_rollback_to_what_the_service_runs_needs_no_restart(db: Database, redis_state: RedisState) -> None:
    store_history(db)
    started(redis_state, with_active_parameters(db, load_settings())[0])  # nothing applied
    proposal = propose(db, settings(), now_ms=NOW)  # type: ignore[arg-type]
    apply_proposal(db, proposal.id, actor="alice", settings=load_settings())
    rollback(db, actor="alice")  # the same parameters as the service's: another row, nothing to restart for
    use = tuning_use(db, started_by_instance(redis_state.heartbeats()))
    assert use.pending == [] and use.line().endswith(", in use")


def test_unknown_and_absent_services_are_said_as_such(db: Database, redis_state: RedisState) -> None:
    store_history(db)
    proposal = propose(db, settings(), now_ms=NOW)  # type: ignore[arg-type]
    row = apply_proposal(db, proposal.id, actor="alice", settings=load_settings())
    nobody = tuning_use(db, started_by_instance(redis_state.heartbeats()))
    assert nobody.line().endswith("(no realtime running: used from its next start)")
    assert nobody.mark(proposal.id) == "  <- in force from the next start (no realtime running)"
    redis_state.beat("realtime", ttl_s=30, info={"pid": 1})  # an older service: says nothing
    old = tuning_use(db, started_by_instance(redis_state.heartbeats()))
    assert old.pending == [] and old.unknown == ["realtime"]
    assert old.mark(proposal.id) == "  <- in force (whether the running realtime uses it is unknown)"
    # shards: each says its own; one restarted, one not
    redis_state.forget_component("realtime")
    tuned = with_active_parameters(db, load_settings())[0]
    started(redis_state, tuned, "realtime-0of2")
    redis_state.beat("realtime-1of2", ttl_s=30, info={"pid": 2, HEARTBEAT_FIELD: 0})
    shards = tuning_use(db, started_by_instance(redis_state.heartbeats()))
    assert shards.pending == ["realtime-1of2"] and shards.running["realtime-0of2"].id == row.id  # type: ignore[union-attr]


def test_tuning_list_says_an_apply_waits_for_the_next_start(
    db: Database,
    migrated_database_url: str,
    redis_url: str,
    redis_keys: Keyspace,
    redis_state: RedisState,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli_env(monkeypatch, migrated_database_url, tmp_path)
    monkeypatch.setenv("TAPEWATCH_REDIS_URL", redis_url)
    monkeypatch.setenv("TAPEWATCH_REDIS_PREFIX", redis_keys.prefix)
    store_history(db)
    started(redis_state, with_active_parameters(db, load_settings())[0])
    proposal = propose(db, settings(), now_ms=NOW)  # type: ignore[arg-type]
    assert main(["tuning", "apply", str(proposal.id), "--actor", "ops"]) == 0
    capsys.readouterr()
    assert main(["tuning", "list"]) == 0
    out = capsys.readouterr().out
    assert "<- in force from the next start (realtime runs another set)" in out
    started(redis_state, with_active_parameters(db, load_settings())[0])  # `tapewatch run` restarted
    assert main(["tuning", "list"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("<- in force") and "next start" not in out
