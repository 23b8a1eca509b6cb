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
    open_database(settings).dispose()  # migrations at start-up
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
        asyncio.run(serve(host, port, args.seed, args.symbols, args.speed, faults))
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror}); set --port or TAPEWATCH_SIM_PORT"
        ) from exc
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from realtime.demo import run_demo
    from tapewatch.adapters.db import open_database
    from tapewatch.adapters.embedded import ensure_database, ensure_redis

    settings = _settings(args)
    print(">> starting PostgreSQL and Redis (embedded unless TAPEWATCH_DATABASE_URL / TAPEWATCH_REDIS_URL)")
    open_database(settings).dispose()
    redis_url = ensure_redis(settings)
    return run_demo(
        settings,
        redis_url=redis_url,
        database_url=ensure_database(settings),
        seed=args.seed,
        symbols=args.symbols,
        speed=args.speed,
        duration=args.duration,
        status_every=args.status_every,
    )


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
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("demo", help="the simulated exchange and the realtime service, with a live table")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--symbols", type=int, default=40)
    p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--status-every", type=float, default=5.0, help="seconds between live tables")
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
