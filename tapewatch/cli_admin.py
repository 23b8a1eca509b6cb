"""The ``tapewatch`` commands that inspect and administer the platform: status, settings, db, rescan, tuning."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from tapewatch.cli_commands import settings_for

if TYPE_CHECKING:
    from tapewatch.settings import Settings


def cmd_status(args: argparse.Namespace) -> int:
    from tapewatch.adapters.status import gather_status
    from tapewatch.adapters.status_format import format_status

    status = gather_status(settings_for(args))
    print(json.dumps(status.to_json()) if args.json else format_status(status))
    return status.exit_code  # 0 all well, 1 something down, 3 degraded (README, `tapewatch status`)


def cmd_settings(args: argparse.Namespace) -> int:
    from tapewatch.settings import shown_value
    from tapewatch.settings_doc import readme_section

    if args.markdown:
        print(readme_section())
        return 0
    settings = settings_for(args, var_dir=False)  # shows a bad var_dir rather than refusing to
    for name, value in settings.model_dump().items():  # secrets and URL passwords masked
        print(f"{name} = {shown_value(name, value)!r}")
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from tapewatch.adapters.db import cli_upgrade

    if args.db_command == "stop":
        return db_stop(settings_for(args))
    applied = cli_upgrade(settings_for(args))
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0


#: ``tapewatch db stop`` refused: something of the platform still uses the embedded servers.
DB_STOP_REFUSED = 1


def db_stop(settings: Settings) -> int:
    """``tapewatch db stop``: stop the embedded PostgreSQL and Redis under the var dir, which every command
    starts when no URL is set and leaves running for the next one. Refused (exit 1, naming who) while a demo
    holds the var dir's lock, a component beats in the embedded Redis, or a session is open on the embedded
    PostgreSQL: stopping them under a running process would cut it off. Servers of a configured URL are never
    touched."""
    from tapewatch.adapters.demo_lock import demo_lock_holder
    from tapewatch.adapters.embedded import stop_embedded

    var_dir = settings.var_dir.resolve()
    for name, url in (
        ("TAPEWATCH_DATABASE_URL", settings.database_url),
        ("TAPEWATCH_REDIS_URL", settings.redis_url),
    ):
        if url is not None:
            print(
                f"{name} is set: that server is not tapewatch's to stop; only the embedded ones under {var_dir}"
            )
    holder = demo_lock_holder(var_dir)
    if holder is not None:
        print(
            f"not stopping: a tapewatch demo (pid {holder}) runs on {var_dir}; press Ctrl-C in its terminal (it "
            f"stops the embedded servers it started), or `kill {holder}`",
            file=sys.stderr,
        )
        return DB_STOP_REFUSED
    users = _embedded_users(settings)
    if users:
        print(
            f"not stopping the embedded servers under {var_dir}: still in use by {'; '.join(users)}. Stop those "
            "first (Ctrl-C in their terminal, or kill the pid), then run this again",
            file=sys.stderr,
        )
        return DB_STOP_REFUSED
    for what, where, stopped in zip(
        ("PostgreSQL", "Redis"), ("pg", "redis"), stop_embedded(var_dir), strict=True
    ):
        if stopped:
            print(f"stopped the embedded {what} in {var_dir / where}")
        else:
            print(f"no embedded {what} was running in {var_dir / where}")
    return 0


def _embedded_users(settings: Settings) -> list[str]:
    """Who uses the embedded servers under the var dir: each component with a live heartbeat in the embedded
    Redis (name, pid, host), and the client sessions open on the embedded PostgreSQL (by application)."""
    from collections import Counter

    import psycopg

    from tapewatch.adapters.embedded import find_database, find_redis
    from tapewatch.adapters.redis_keys import Keyspace
    from tapewatch.adapters.redis_state import RedisState

    embedded = settings.model_copy(update={"database_url": None, "redis_url": None})
    users: list[str] = []
    redis_url = find_redis(embedded)
    if redis_url is not None:
        state = RedisState.from_url(redis_url, keys=Keyspace(prefix=settings.redis_prefix), timeout_s=3.0)
        try:
            beats = state.heartbeats()
        finally:
            state.close()
        users += [
            f"{name} (pid {b.pid} on {b.host or '?'})" for name, b in sorted(beats.items()) if b is not None
        ]
    database_url = find_database(embedded)
    if database_url is not None:
        with psycopg.connect(database_url, connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT coalesce(nullif(application_name, ''), 'unnamed'), datname FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ).fetchall()
        sessions = Counter(f"{app} on {db}" for app, db in rows)
        if sessions:
            listed = ", ".join(f"{what} ×{n}" if n > 1 else what for what, n in sorted(sessions.items()))
            users.append(f"{sum(sessions.values())} PostgreSQL session(s): {listed}")
    return users


#: ``tapewatch rescan`` exit codes (README, CLI section): 0 the rescan succeeded; 1 it failed or was cancelled
#: (or no instance answers); 2 a configuration error; ``RESCAN_TIMED_OUT`` we stopped waiting, the run goes on.
RESCAN_TIMED_OUT = 3


def timeout_advice(run_id: str, status: str, seconds: float, url: str) -> str:
    """What a rescan that did not finish in time means, for stderr: the run goes on, and what its status says."""
    lines = [
        f"timed out after {seconds:.0f} s waiting for run {run_id} (still {status}); the run continues in "
        f"Dagster: follow it at {url}, or wait longer with --timeout"
    ]
    if status == "QUEUED":
        lines.append(
            "QUEUED means it was never started: the Dagster daemon is not running (start `tapewatch dagster`), "
            "or the run queue is full (dagster_max_concurrent_runs) or another rescan is still running (one "
            "at a time)"
        )
    elif status in ("NOT_STARTED", "STARTING"):
        lines.append(f"{status} means its worker has not started yet (loading the code location)")
    return "\n".join(lines)


def cmd_rescan(args: argparse.Namespace) -> int:
    from tapewatch.adapters.dagster_runs import RESCAN_JOB, launch_and_wait
    from tapewatch.adapters.db import open_database
    from tapewatch.adapters.universe_store import rescan_by_run

    settings = settings_for(args)
    host, port = settings.dagster_host, settings.dagster_port
    outcome = launch_and_wait(
        host,
        port,
        RESCAN_JOB,
        timeout=args.timeout,
        on_status=lambda s: print(f"   {s}", flush=True),
    )
    url = f"http://{host}:{port}/runs/{outcome.run_id}"
    print(f"run {outcome.run_id}: {outcome.status} after {outcome.seconds:.0f} s")
    print(f"   {url}", flush=True)
    if not outcome.finished:
        print(timeout_advice(outcome.run_id, outcome.status, outcome.seconds, url), file=sys.stderr)
        return RESCAN_TIMED_OUT
    if not outcome.ok:
        if outcome.status == "FAILURE":
            _print_failures(host, port, outcome.run_id)
        return 1
    db = open_database(settings)
    try:
        rescan = rescan_by_run(db, outcome.run_id)
    finally:
        db.dispose()
    if rescan is None:
        print("the run succeeded but stored no rescan (another database?)", file=sys.stderr)
        return 1
    print(f"universe (rescan {rescan.rescan_id}, {len(rescan.symbols)} symbols): {' '.join(rescan.symbols)}")
    print(f"added: {' '.join(rescan.added) or '-'}")
    print(f"removed: {' '.join(rescan.removed) or '-'}")
    return 0


def _print_failures(host: str, port: int, run_id: str) -> None:
    """Why the run failed, on stderr: each failed step and its error (or why that could not be read)."""
    from tapewatch.adapters.dagster_runs import DagsterRuns, DagsterUnavailable

    try:
        failures = DagsterRuns(host, port, timeout=30.0).failures(run_id)
    except DagsterUnavailable as exc:
        print(f"could not read why the run failed: {exc}", file=sys.stderr)
        return
    if not failures:
        print("the run's events name no failed step; see its page above", file=sys.stderr)
    for failure in failures:
        print("\n".join(failure.lines()), file=sys.stderr)


def _realtime_tuning(settings: Settings) -> dict[str, int | None]:
    """Each live realtime instance's applied tuning row as its heartbeat says (0: none; None: it does not
    say). No Redis running: no instance; Redis not answering: one unknown instance, ``realtime``."""
    from tapewatch.adapters.embedded import find_redis
    from tapewatch.adapters.redis_keys import REALTIME, Keyspace
    from tapewatch.adapters.redis_state import RedisState
    from tapewatch.adapters.tuning_store import started_by_instance
    from tapewatch.errors import TapewatchError

    url = find_redis(settings)
    if url is None:  # `tapewatch run` always has a Redis: none, no realtime running
        return {}
    try:
        state = RedisState.from_url(url, keys=Keyspace(prefix=settings.redis_prefix), timeout_s=3.0)
        try:
            return started_by_instance(state.heartbeats())
        finally:
            state.close()
    except TapewatchError:
        return {REALTIME: None}


def cmd_tuning(args: argparse.Namespace) -> int:
    import getpass
    import time

    from tapewatch.adapters import tuning_store as ts
    from tapewatch.adapters.db import open_database

    settings = settings_for(args)
    actor = args.actor if getattr(args, "actor", None) else f"{getpass.getuser()} (cli)"
    db = open_database(settings)
    try:
        if args.tuning_command == "list":
            rows = ts.list_proposals(db, args.limit)
            if args.json:
                print(json.dumps([p.to_json() for p in rows]))
                return 0
            if not rows:
                print(
                    "no tuning proposals yet (the monthly schedule makes one; or `tapewatch tuning propose`)"
                )
                return 0
            # the row in force against what the running realtime started with: applied is not yet used
            use = ts.tuning_use(db, _realtime_tuning(settings))
            for p in rows:
                print(f"{p.id:>5}  {p.created_at:%Y-%m-%d %H:%M}  {p.status:<18} {p.note}{use.mark(p.id)}")
        elif args.tuning_command == "show":
            p = ts.get_proposal(db, args.id)
            print(json.dumps(p.to_json(), indent=None if args.json else 2))
        elif args.tuning_command == "propose":
            p = ts.propose(db, settings, now_ms=int(time.time() * 1000))
            print(f"proposal {p.id}: {p.status}: {p.note}")
        elif args.tuning_command == "apply":
            done = ts.apply_proposal(db, args.id, actor=actor, settings=settings, force=args.force)
            at = f"{done.applied_at:%Y-%m-%d %H:%M:%S %Z}"
            print(
                f"proposal {args.id} in force (record {done.id}, by {done.actor} at {at}): {done.parameters}; "
                "restart `tapewatch run` to use it"
            )
        else:
            undone = ts.rollback(db, actor=actor)
            if undone is None:
                print("nothing to roll back: the settings' own parameters are in force")
            else:
                now = undone.parameters or "the settings' own values"
                print(
                    f"rolled back (record {undone.id}, by {undone.actor}): now {now}; restart `tapewatch run`"
                )
    finally:
        db.dispose()
    return 0
