"""The ``tapewatch`` commands that run something: replay, backtest, the realtime service, the simulator, the
demo, the dashboard, Dagster. Each imports the process it starts lazily (see ``tapewatch.cli``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tapewatch.errors import ConfigError
from tapewatch.settings import Settings, load_settings


def settings_for(args: argparse.Namespace) -> Settings:
    """The settings of this invocation (``--config``, the environment), with logging configured."""
    from tapewatch import logs

    settings = load_settings(args.config)
    logs.configure(
        settings.log_level if not getattr(args, "verbose", False) else "DEBUG", settings.log_format
    )
    return settings


def cmd_replay(args: argparse.Namespace) -> int:
    from realtime.replay import replay

    settings = settings_for(args)
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

    result = backtest([Path(p) for p in args.files], settings_for(args))
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

    settings = exchange_settings(settings_for(args), args.exchange)
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

    settings = settings_for(args)
    if args.record:
        from realtime.sim.record import parse_gap, record

        if args.duration is None:
            raise ConfigError("sim --record needs --duration, e.g. --duration 2h")
        if args.faults:
            raise ConfigError(
                "sim --record writes a capture without any network, so --faults (connection, REST and stream "
                "faults) do not apply; plant sequence gaps with --gap SYMBOL@OFFSET, or record a faulty session "
                "with `tapewatch run --exchange sim` against `tapewatch sim --faults ...`"
            )
        try:
            gaps = [parse_gap(g) for g in args.gap]
            duration_ms = int(parse_duration(args.duration) * 1000)
        except ValueError as exc:
            raise ConfigError(f"sim --record: {exc}") from exc
        result = record(
            Path(args.record),
            duration_ms,
            seed=args.seed,
            symbols=args.symbols,
            gaps=gaps,
            episode_rate_scale=args.episode_rate,
        )
        print(
            f"recorded {result.lines} lines into {len(result.files)} files; {len(result.episodes)} episodes"
        )
        return 0
    if args.gap:
        raise ConfigError("--gap plants a gap in a recording: use it with --record DIR --duration D")
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
    from tapewatch.cli_parser import available_commands  # lazily: the parser imports this module

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
    return run_demo(settings_for(args), options, commands=available_commands(), config=args.config)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from dashboard.app import check_bind, serve
    from tapewatch.adapters.db import open_database
    from tapewatch.adapters.embedded import ensure_database, ensure_redis

    settings = settings_for(args)
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

    return run_dagster(settings_for(args), args.port)
