"""The ``tapewatch`` command: the one module that wires the processes together (imports them lazily)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from tapewatch.errors import CaptureError, ConfigError, TapewatchError
from tapewatch.settings import Settings, load_settings


def _settings(args: argparse.Namespace) -> Settings:
    from tapewatch import logs

    settings = load_settings(args.config)
    logs.configure(
        settings.log_level if not getattr(args, "verbose", False) else "DEBUG", settings.log_format
    )
    return settings


def cmd_replay(args: argparse.Namespace) -> int:
    from realtime.replay import replay

    settings = _settings(args)
    summary = replay([Path(p) for p in args.files], settings)
    if args.json:
        print(json.dumps(summary, sort_keys=False))
    else:
        print(
            f"{summary['messages']} messages in {summary['seconds']:.3f} s "
            f"({summary['messages_per_second']:.0f}/s); malformed {summary['malformed']}, gaps {summary['gaps']}, "
            f"resyncs {summary['resyncs']}, book checks {summary['book_checks']} "
            f"({summary['book_mismatches']} mismatches); candidates {summary['candidates']}, "
            f"signals {summary['signals']}"
        )
        for symbol, feats in summary["final"].items():
            print(f"  {symbol}: " + ", ".join(f"{k}={v}" for k, v in feats.items()))
    return 0 if summary["book_mismatches"] == 0 else 1


def cmd_backtest(args: argparse.Namespace) -> int:
    from realtime.backtest import backtest

    result = backtest([Path(p) for p in args.files], _settings(args))
    if args.json:
        print(json.dumps(result))
        return 0
    m = result["metrics"]
    print(
        f"{result['messages']} messages, {result['candidates']} candidates, {result['signals']} signals "
        f"({result['open_at_end']} still open at the end)"
    )
    print("  " + ", ".join(f"{k}={v}" for k, v in m.items()))
    for s in result["signal_list"]:
        o = s["outcome"] or {}
        print(
            f"  {s['timestamp']} {s['symbol']:<12} {s['direction']:<5} {s['priority']:<6} q={s['quality_score']:<3}"
            f" entry {s['entry_price']:g} stop {s['stop_loss']:g} -> {o.get('state')} {o.get('pnl_r')}"
        )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from realtime.main import exchange_settings
    from realtime.main import main as run_main
    from tapewatch.adapters.db import open_database
    from tapewatch.adapters.embedded import ensure_database, ensure_redis

    settings = exchange_settings(_settings(args), args.exchange)
    if args.symbols:
        settings = settings.model_copy(
            update={"symbols": tuple(s.strip().upper() for s in args.symbols.split(","))}
        )
    if args.shard:  # scale-out: this instance follows shard I of N (model_copy does not validate: parse here)
        from tapewatch.sharding import parse_shard

        try:
            settings = settings.model_copy(update={"shard": parse_shard(args.shard).label})
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    db = open_database(settings)  # migrations at start-up
    try:
        from tapewatch.adapters.tuning_store import with_active_parameters

        # the applied tuning (tapewatch tuning apply); values the operator set explicitly still win
        settings = with_active_parameters(db, settings)[0]
    finally:
        db.dispose()
    redis_url = ensure_redis(settings)
    return run_main(
        settings,
        redis_url=redis_url,
        database_url=ensure_database(settings),
        duration=args.duration,
        status_every=args.status_every,
    )


def cmd_sim(args: argparse.Namespace) -> int:
    import asyncio

    from realtime.sim.faults import parse_duration, parse_faults

    settings = _settings(args)
    if args.record:
        from realtime.sim.record import record

        if args.duration is None:
            raise ConfigError("sim --record needs --duration, e.g. --duration 2h")
        result = record(
            Path(args.record), int(parse_duration(args.duration) * 1000), seed=args.seed, symbols=args.symbols
        )
        print(
            f"recorded {result.lines} lines into {len(result.files)} files; {len(result.episodes)} episodes"
        )
        return 0
    from realtime.sim.server import serve

    try:
        faults = parse_faults(args.faults) if args.faults else None
    except ValueError as exc:
        raise ConfigError(f"--faults: {exc}") from exc
    host = args.host or settings.sim_host
    port = args.port if args.port is not None else settings.sim_port
    try:
        if args.episode_rate != 1.0 or args.clock_file is not None:
            from realtime.demo import serve_sim  # the demo's simulator: more episodes, resumable clock

            asyncio.run(
                serve_sim(
                    host,
                    port,
                    seed=args.seed,
                    symbols=args.symbols,
                    speed=args.speed,
                    episode_rate=args.episode_rate,
                    clock_file=args.clock_file,
                    faults=faults,
                )
            )
        else:
            asyncio.run(serve(host, port, args.seed, args.symbols, args.speed, faults))
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror}); set --port or TAPEWATCH_SIM_PORT"
        ) from exc
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tapewatch.adapters.platform import DemoOptions, run_demo

    options = DemoOptions(
        seed=args.seed,
        symbols=args.symbols,
        speed=args.speed,
        episode_rate=args.episode_rate,
        daily_cap_scale=args.daily_cap_scale,
        duration=args.duration,
        status_every=args.status_every,
        dagster=not args.no_dagster,
        dashboard=not args.no_dashboard,
    )
    return run_demo(_settings(args), options, commands=available_commands(), config=args.config)


def available_commands() -> frozenset[str]:
    """The subcommands of this installation (the demo starts Dagster and the dashboard when they exist)."""
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return frozenset(action.choices)
    return frozenset()


def cmd_status(args: argparse.Namespace) -> int:
    from tapewatch.adapters.status import format_status, gather_status

    status = gather_status(_settings(args))
    print(json.dumps(status.to_json()) if args.json else format_status(status))
    return 0 if status.ok else 1


def cmd_settings(args: argparse.Namespace) -> int:
    from tapewatch.settings_doc import readme_section

    if args.markdown:
        print(readme_section())
        return 0
    settings = _settings(args)
    for name, value in settings.model_dump().items():
        print(f"{name} = {value!r}")
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from tapewatch.adapters.db import cli_upgrade

    applied = cli_upgrade(_settings(args))
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from dashboard.app import check_bind, serve
    from tapewatch.adapters.db import open_database
    from tapewatch.adapters.embedded import ensure_database, ensure_redis

    settings = _settings(args)
    host = args.host or settings.dashboard_host
    port = args.port if args.port is not None else settings.dashboard_port
    password = settings.dashboard_password.get_secret_value() if settings.dashboard_password else None
    check_bind(host, password)  # before starting anything
    open_database(settings).dispose()  # migrations at start-up
    serve(
        settings,
        database_url=ensure_database(settings),
        redis_url=ensure_redis(settings),
        host=host,
        port=port,
    )
    return 0


def cmd_dagster(args: argparse.Namespace) -> int:
    from tapewatch.adapters.dagster_home import run_dagster

    return run_dagster(_settings(args), args.port)


def cmd_rescan(args: argparse.Namespace) -> int:
    from tapewatch.adapters.dagster_runs import RESCAN_JOB, launch_and_wait
    from tapewatch.adapters.db import open_database
    from tapewatch.adapters.universe_store import rescan_by_run

    settings = _settings(args)
    host, port = settings.dagster_host, settings.dagster_port
    outcome = launch_and_wait(
        host,
        port,
        RESCAN_JOB,
        timeout=args.timeout,
        on_status=lambda s: print(f"   {s}", flush=True),
    )
    print(f"run {outcome.run_id}: {outcome.status} after {outcome.seconds:.0f} s")
    print(f"   http://{host}:{port}/runs/{outcome.run_id}")
    if not outcome.ok:
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


def cmd_tuning(args: argparse.Namespace) -> int:
    import getpass
    import time

    from tapewatch.adapters import tuning_store as ts
    from tapewatch.adapters.db import open_database

    settings = _settings(args)
    actor = args.actor if getattr(args, "actor", None) else f"{getpass.getuser()} (cli)"
    db = open_database(settings)
    try:
        if args.tuning_command == "list":
            active = ts.history(db, 1)
            in_force = active[0].proposal_id if active and active[0].parameters else None
            rows = ts.list_proposals(db, args.limit)
            if args.json:
                print(json.dumps([p.to_json() for p in rows]))
                return 0
            if not rows:
                print(
                    "no tuning proposals yet (the monthly schedule makes one; or `tapewatch tuning propose`)"
                )
            for p in rows:
                mark = "  <- in force" if p.id == in_force else ""
                print(f"{p.id:>5}  {p.created_at:%Y-%m-%d %H:%M}  {p.status:<18} {p.note}{mark}")
        elif args.tuning_command == "show":
            p = ts.get_proposal(db, args.id)
            print(json.dumps(p.to_json(), indent=None if args.json else 2))
        elif args.tuning_command == "propose":
            p = ts.propose(db, settings, now_ms=int(time.time() * 1000))
            print(f"proposal {p.id}: {p.status}: {p.note}")
        elif args.tuning_command == "apply":
            done = ts.apply_proposal(db, args.id, actor=actor)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tapewatch",
        description="Order-flow signals for Binance USD-M perpetual futures (signals only, never orders).",
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="YAML settings file (or TAPEWATCH_CONFIG_FILE)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("replay", help="replay capture files through the live code, as fast as possible")
    p.add_argument("files", nargs="+", help="capture files (*.jsonl.gz) or directories of them")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line of stdout")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "backtest", help="replay captures, follow every signal to its end and print the metrics"
    )
    p.add_argument("files", nargs="+", help="capture files (*.jsonl.gz) or directories of them")
    p.add_argument("--json", action="store_true", help="print a JSON object as the last line of stdout")
    p.set_defaults(func=cmd_backtest)

    p = sub.add_parser("run", help="the realtime service: books, trade flow, capture, live state in Redis")
    p.add_argument("--exchange", choices=("binance", "sim"), default="binance", help="market data source")
    p.add_argument("--symbols", help="comma-separated symbols (default: TAPEWATCH_SYMBOLS or top by volume)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--status-every", type=float, default=None, help="print the live state every N seconds")
    p.add_argument(
        "--shard", default=None, help="I/N: follow shard I of N of the universe (default TAPEWATCH_SHARD)"
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sim", help="the simulated Binance USD-M exchange (REST + websockets on 127.0.0.1)")
    p.add_argument("--host", default=None, help="listen address (default TAPEWATCH_SIM_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="listen port (default TAPEWATCH_SIM_PORT, 8765)")
    p.add_argument("--seed", type=int, default=1, help="random seed: same seed, same market")
    p.add_argument("--symbols", type=int, default=40, help="number of perpetual symbols (up to 800)")
    p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second")
    p.add_argument(
        "--faults", default=None, help="fault schedule, e.g. gap=30s,drop=5m,malformed=1m,rest5xx=0.02"
    )
    p.add_argument("--record", metavar="DIR", default=None, help="write a capture without any network")
    p.add_argument("--duration", default=None, help="with --record: simulated time to record, e.g. 2h, 10m")
    p.add_argument(
        "--episode-rate", type=float, default=1.0, help="planted order-flow episodes, times the usual rate"
    )
    p.add_argument(
        "--clock-file",
        type=Path,
        default=None,
        help="resume the simulated clock from this file and keep it saved",
    )
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser(
        "demo",
        help="the whole platform on the simulated exchange: realtime, Dagster, dashboard (Ctrl-C stops it)",
    )
    p.add_argument("--seed", type=int, default=1, help="simulated market seed")
    p.add_argument("--symbols", type=int, default=20, help="simulated perpetual symbols")
    p.add_argument("--speed", type=float, default=20.0, help="simulated seconds per wall second")
    p.add_argument("--episode-rate", type=float, default=3.0, help="planted episodes, times the usual rate")
    p.add_argument(
        "--daily-cap-scale", type=int, default=10, help="daily signal caps times this (unless set explicitly)"
    )
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument(
        "--status-every", type=float, default=15.0, help="seconds between status lines/live tables"
    )
    p.add_argument("--no-dagster", action="store_true", help="do not start the Dagster webserver and daemon")
    p.add_argument("--no-dashboard", action="store_true", help="do not start the dashboard")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("settings", help="print the effective settings (or the reference table)")
    p.add_argument("--markdown", action="store_true", help="the README's settings reference")
    p.set_defaults(func=cmd_settings)

    p = sub.add_parser("db", help="database maintenance")
    dbsub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = dbsub.add_parser("upgrade", help="apply pending migrations from sql/")
    up.set_defaults(func=cmd_db)

    p = sub.add_parser(
        "status", help="each component up/down, realtime metrics, open feed incidents (exit 1 if not healthy)"
    )
    p.add_argument("--json", action="store_true", help="print a JSON object as the last line of stdout")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("tuning", help="monthly tuning proposals: list, show, propose, apply, rollback")
    tsub = p.add_subparsers(dest="tuning_command", required=True, metavar="ACTION")
    t = tsub.add_parser("list", help="the newest proposals")
    t.add_argument("--limit", type=int, default=20)
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_tuning)
    t = tsub.add_parser("show", help="one proposal: parameters and results beside the current ones")
    t.add_argument("id", type=int)
    t.add_argument("--json", action="store_true", help="one line of JSON")
    t.set_defaults(func=cmd_tuning)
    t = tsub.add_parser("propose", help="run the tuning now and store a proposal (never applied)")
    t.set_defaults(func=cmd_tuning)
    for action, helptext in (
        ("apply", "put a proposal in force"),
        ("rollback", "return to the previous set"),
    ):
        t = tsub.add_parser(action, help=helptext + " (used by `tapewatch run` at its next start)")
        if action == "apply":
            t.add_argument("id", type=int)
        t.add_argument("--actor", default=None, help="who does it (default: the OS user)")
        t.set_defaults(func=cmd_tuning)

    p = sub.add_parser("dashboard", help="the Dash dashboard: live signals, performance, quality, health")
    p.add_argument(
        "--host", default=None, help="listen address (default TAPEWATCH_DASHBOARD_HOST, 127.0.0.1)"
    )
    p.add_argument(
        "--port", type=int, default=None, help="listen port (default TAPEWATCH_DASHBOARD_PORT, 8050)"
    )
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("dagster", help="the Dagster webserver and daemon (Ctrl-C stops both)")
    p.add_argument(
        "--port", type=int, default=None, help="webserver port (default TAPEWATCH_DAGSTER_PORT, 3000)"
    )
    p.set_defaults(func=cmd_dagster)

    p = sub.add_parser("rescan", help="launch the universe rescan in the running Dagster instance and wait")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the run to finish")
    p.set_defaults(func=cmd_rescan)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"tapewatch: configuration error: {exc}", file=sys.stderr)
        return 2
    except CaptureError as exc:
        print(f"tapewatch: {exc}", file=sys.stderr)
        return 2
    except TapewatchError as exc:
        print(f"tapewatch: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `tapewatch settings --markdown | head`
        sys.stderr.close()
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
