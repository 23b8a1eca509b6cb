"""Exactly once under a real kill: ``tapewatch run --exchange sim`` is killed with SIGKILL mid-stream and
started again on the same PostgreSQL and Redis; every signal is one row, one outbox row published once and
one entry of the Redis signal stream, and the signals open at the kill are resumed."""

from __future__ import annotations

import collections
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tapewatch.adapters.redis_keys import Keyspace
from tests.realtime.processes import (
    count,
    free_port,
    processes,
    service_env,
    start_cli,
    start_sim,
    wait_while_running,
)

pytestmark = [pytest.mark.db, pytest.mark.e2e, pytest.mark.slow]


def test_a_killed_service_loses_and_duplicates_nothing(
    tmp_path: Path, migrated_database_url: str, engine: Engine, redis_url: str, redis_keys: Keyspace
) -> None:
    port = free_port()
    # far stops (service_env): triggered signals stay open across the kill, to be resumed
    env = service_env(
        database_url=migrated_database_url,
        redis_url=redis_url,
        keys=redis_keys,
        var_dir=tmp_path / "var",
        sim_port=port,
        universe_size=5,
    )
    with processes(tmp_path, "sim.log", "run1.log", "run2.log") as (procs, logs):
        sim_args = ["--seed", "3", "--symbols", "6", "--speed", "30", "--episode-rate", "30"]
        start_sim(port, env, logs[0], procs, *sim_args)
        entries = "SELECT count(*) FROM signals WHERE signal_type = 'ENTRY'"
        # first run: killed without warning once a signal is stored
        first = start_cli(["run", "--exchange", "sim"], env, logs[1])
        procs.append(first)
        _wait("a first signal", lambda: count(engine, entries) >= 1, 120, procs)
        time.sleep(0.3)  # the relay and the outcome writes are mid-flight now; the signal is still open
        procs.remove(first)
        first.send_signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
        stored_at_kill = count(engine, "SELECT count(*) FROM signals")
        entries_at_kill = count(engine, entries)
        open_at_kill = _open_entries(engine)
        # second run: resumes, then more signals come
        second = start_cli(["run", "--exchange", "sim"], env, logs[2])
        procs.append(second)
        _wait("more signals after the restart", lambda: count(engine, entries) > entries_at_kill, 150, procs)
        _wait(
            "every stored signal published",
            lambda: count(engine, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0,
            30,
            procs,
        )
        procs.remove(second)
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    run2 = (tmp_path / "run2.log").read_text(errors="replace")
    # the engine resumed the signals open at the kill
    restored = re.search(r"engine restored: (\d+) open signals", run2)
    assert restored is not None, run2[-3000:]
    assert open_at_kill and int(restored.group(1)) == len(open_at_kill)
    # each signal exactly once in PostgreSQL; each one's outbox row published exactly once
    with engine.connect() as conn:
        ids = [str(r[0]) for r in conn.execute(sa.text("SELECT signal_id FROM signals"))]
        outbox = conn.execute(sa.text("SELECT signal_id, seq, stream_id, published_at FROM outbox")).all()
    assert len(ids) == len(set(ids)) and len(ids) > stored_at_kill
    assert sorted(str(r.signal_id) for r in outbox) == sorted(ids)  # ENTRY and EXIT, one row each
    assert all(r.published_at is not None and r.stream_id == f"{r.seq}-1" for r in outbox)
    # the Redis stream holds every published signal exactly once, under its outbox id
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        stream = client.xrange(redis_keys.signals_stream)
        open_hash = client.hgetall(redis_keys.open_signals)
    finally:
        client.close()
    published = collections.Counter(fields["signal_id"] for _, fields in stream)
    assert max(published.values()) == 1, [sid for sid, n in published.items() if n > 1]
    assert set(published) == set(ids)
    assert {entry_id for entry_id, _ in stream} == {r.stream_id for r in outbox}
    # the resumed signals were followed on: each has an outcome written by the second run
    with engine.connect() as conn:
        followed = {str(r[0]) for r in conn.execute(sa.text("SELECT signal_id FROM signal_outcomes"))}
    assert open_at_kill <= followed, open_at_kill - followed
    # the signals still open at the end are those of the live view (the rebuild dropped none, added none)
    assert set(open_hash) <= {sid for sid in ids}


def _wait(what: str, check: Callable[[], bool], timeout: float, procs: list[subprocess.Popen[bytes]]) -> None:
    assert wait_while_running(what, check, timeout, procs), f"{what}: not within {timeout:.0f} s"


def _open_entries(engine: Engine) -> set[str]:
    """ENTRY signals without a finished outcome: what a restart must resume."""
    query = """
        SELECT s.signal_id FROM signals s
        LEFT JOIN signal_outcomes o ON o.signal_id = s.signal_id
        WHERE s.signal_type = 'ENTRY' AND (o.signal_id IS NULL OR NOT o.finished)
    """
    with engine.connect() as conn:
        return {str(r[0]) for r in conn.execute(sa.text(query))}
