"""The ``tapewatch`` commands that run something: replay, backtest, the realtime service, the simulator, the
demo, the dashboard, Dagster. Each imports the process it starts lazily (see ``tapewatch.cli``)."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import math
import os
import socket
from pathlib import Path
from typing import Any

from tapewatch.errors import ConfigError
from tapewatch.settings import Settings, load_settings

log = logging.getLogger(__name__)


def settings_for(args: argparse.Namespace, *, var_dir: bool = True) -> Settings:
    """The settings of this invocation (``--config``, the environment), with logging configured.

    ``var_dir``: the command keeps its embedded servers, captures or reports under ``settings.var_dir``, so a
    ``var_dir`` that can never be a directory is refused here, naming the setting, not deep in a mkdir."""
    from tapewatch import logs

    settings = load_settings(args.config)
    logs.configure(
        settings.log_level if not getattr(args, "verbose", False) else "DEBUG", settings.log_format
    )
    if var_dir:
        check_var_dir(settings.var_dir)
    return settings


def duration_seconds(text: str) -> float:
    """An argparse type: a time span in seconds, in the forms ``sim --duration`` reads (``90``, ``90s``, ``10m``,
    ``2h``, ``1d``: :func:`realtime.sim.faults.parse_duration`; a bare number, ``1.5`` or ``1e3`` too, is
    seconds as before), finite and above 0. Here, not in ``cli_parser``, because only the command modules may
    import ``realtime`` (lazily)."""
    from realtime.sim.faults import parse_duration

    advice = "use a time above 0, like 90 (seconds), 90s, 10m or 2h"
    if text.strip().startswith("-"):
        raise argparse.ArgumentTypeError(f"{text} is negative; {advice}")
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        try:
            seconds = float(text)  # what the option took before: 1e3, .5
        except ValueError:
            raise argparse.ArgumentTypeError(str(exc)) from None
    if not math.isfinite(seconds):
        raise argparse.ArgumentTypeError(f"{text} is not a finite time; {advice}")
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text} is no time at all; {advice}")
    return seconds


def check_var_dir(path: Path) -> None:
    """ConfigError unless ``path`` is a directory, or could be created as one (its nearest existing ancestor
    is a directory this user can write into). Nothing is created: a command that never reaches its first
    write leaves no empty ``var/`` behind."""
    advice = "set TAPEWATCH_VAR_DIR (setting var_dir) to a directory this user can write into"
    existing = next((p for p in (path, *path.parents) if p.exists() or p.is_symlink()), Path("."))
    if not existing.is_dir():
        what = (
            "is not a directory" if existing == path else f"cannot be created: {existing} is not a directory"
        )
        raise ConfigError(f"var_dir (TAPEWATCH_VAR_DIR) = {path} {what}; {advice}")
    if existing != path and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"var_dir (TAPEWATCH_VAR_DIR) = {path} cannot be created: {existing} is not writable; {advice}"
        )


def writable_dir(path: Path, what: str) -> Path:
    """``path`` created if missing (as the command would do next), or ConfigError naming ``what`` (the option
    that gave the path) and the OS's reason, instead of a NotADirectoryError/PermissionError traceback."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = "it is a file" if isinstance(exc, FileExistsError) else exc.strerror
        raise ConfigError(f"{what} {path}: cannot use it as a directory ({reason}); {_GIVE_A_DIR}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path}: the directory is not writable; {_GIVE_A_DIR}")
    return path


_GIVE_A_DIR = "give a directory this user can write into (it is created if missing)"


def cmd_replay(args: argparse.Namespace) -> int:
    from realtime.malloc_tuning import keep_freed_memory
    from realtime.replay import replay

    keep_freed_memory()
    settings = settings_for(args, var_dir=False)
    summary = replay([Path(p) for p in args.files], settings, signals=not args.books_only)
    if args.json:
        print(json.dumps(summary, sort_keys=False))
    else:
        print(
            f"{summary['messages']} messages in {summary['seconds']:.3f} s "
            f"({summary['messages_per_second']:.0f}/s); malformed {summary['malformed']}, gaps {summary['gaps']}, "
            f"resyncs {summary['resyncs']}, book checks {summary['book_checks']} "
            f"({summary['book_mismatches']} mismatches); candidates {summary['candidates']}, "
            f"signals {summary['signals']}; {read_damage(summary)}"
        )
        if args.books_only:
            print(
                f"  books only (no signal engine): {summary['native_lines']} depth/bookTicker/aggTrade/kline lines "
                "on the native path"
            )
        for said in engine_starts_said(summary):
            print(f"  {said}")
        if said := checkpoints_said(summary):
            print(f"  {said}")
        for symbol, feats in summary["final"].items():
            print(f"  {symbol}: " + ", ".join(f"{k}={v}" for k, v in feats.items()))
    return replay_exit_code(summary, args.files)


def engine_starts_said(summary: dict[str, Any]) -> list[str]:
    """A line per engine start the capture holds (``control:engine_start``), for the text summary of ``replay``
    and ``backtest``: the engine state and tuning the live run started with, which the replay started with."""
    out = []
    for s in summary.get("engine_starts", []):
        tuning = f"tuning #{s['tuning']}" if s["tuning"] else "no tuning applied"
        params = ", ".join(f"{k}={v}" for k, v in s["parameters"].items())
        out.append(
            f"engine state restored from the capture: {s['open_signals']} open signals, {tuning}"
            + (f" ({params})" if params else "")
        )
    return out


def checkpoints_said(summary: dict[str, Any]) -> str:
    """The live run's book checkpoints the replay met (``control:book_checkpoint``), or "" when none."""
    checks, loads = summary.get("checkpoint_checks", 0), summary.get("checkpoint_loads", 0)
    if not checks and not loads:
        return ""
    return (
        f"book checkpoints of the live run: {checks} checked ({summary['checkpoint_mismatches']} differing), "
        f"{loads} taken by a book not synced here"
    )


def read_damage(summary: dict[str, Any]) -> str:
    """What the reader skipped, for the text summary of ``replay`` and ``backtest``."""
    return f"torn lines {summary['torn_lines']}, damaged stretches {summary['damaged_stretches']}"


def replay_exit_code(summary: dict[str, Any], files: list[str]) -> int:
    """The exit code of ``replay`` and ``backtest``, once their summary is printed: 2 when nothing decoded
    (:func:`decoded_anything`), 1 when a book check or a book checkpoint mismatched or the capture was damaged (bytes that did not
    inflate: lines lost; a torn line, which a writer killed mid-line leaves, stays the reader's warning), each
    said in one ERROR line, else 0."""
    if not decoded_anything(summary, files):
        return 2
    code = 0
    if summary["book_mismatches"]:
        log.error(
            "%d of %d book checks mismatched: a book rebuilt from the capture disagreed with the captured "
            "bookTicker",
            summary["book_mismatches"],
            summary["book_checks"],
            extra={"book_mismatches": summary["book_mismatches"]},
        )
        code = 1
    if summary.get("checkpoint_mismatches"):
        log.error(
            "%d of %d book checkpoints differed from the replay's book: the replay went its own way (the "
            "live books were taken); the warnings name the symbols and levels",
            summary["checkpoint_mismatches"],
            summary["checkpoint_checks"],
            extra={"checkpoint_mismatches": summary["checkpoint_mismatches"]},
        )
        code = 1
    if summary["capture_damaged"]:
        log.error(
            "the capture is damaged (%d damaged stretch(es), %d torn line(s), %d malformed line(s)): lines "
            "were lost, so this replay is not what the live run saw; the reader's warnings name the files",
            summary["damaged_stretches"],
            summary["torn_lines"],
            summary["malformed"],
            extra={"damaged_stretches": summary["damaged_stretches"], "torn_lines": summary["torn_lines"]},
        )
        code = 1
    return code


def decoded_anything(summary: dict[str, Any], files: list[str]) -> bool:
    """False, with a warning, when lines were read but none decoded (not a capture: e.g. a text file), so
    ``replay``/``backtest`` exit 2 as for any bad file; a warning only when there was nothing to read at all
    (an empty or zero-byte file proves nothing, but it is not wrong either)."""
    names = ", ".join(files)
    if summary["messages"] == 0:
        log.warning("no lines to replay in %s: the input is empty", names, extra={"files": names})
    elif summary["malformed"] >= summary["messages"]:
        log.warning(
            "none of the %d lines in %s decoded (malformed %d): is it a capture (*.jsonl.gz written by "
            "`tapewatch run` or `tapewatch sim --record`)?",
            summary["messages"],
            names,
            summary["malformed"],
            extra={"files": names},
        )
        return False
    return True


def cmd_backtest(args: argparse.Namespace) -> int:
    from realtime.backtest import backtest
    from realtime.malloc_tuning import keep_freed_memory

    keep_freed_memory()
    result = backtest([Path(p) for p in args.files], settings_for(args, var_dir=False))
    if args.json:
        print(json.dumps(result))
        return replay_exit_code(result, args.files)
    print("\n".join(backtest_text(result)))
    return replay_exit_code(result, args.files)


def backtest_text(result: dict[str, Any]) -> list[str]:
    """The lines ``backtest`` prints without ``--json``: the counts (entries and exits apart, and how many
    entries finished: the metrics are theirs), what the reader and the engine starts said, the metrics, and a
    line per entry with its outcome."""
    lines: list[str] = []
    m = result["metrics"]
    entries = len(result["signal_list"])
    finished = sum(1 for s in result["signal_list"] if (s["outcome"] or {}).get("finished"))
    lines.append(
        f"{result['messages']} messages, {result['candidates']} candidates, {result['signals']} signals "
        f"({entries} entries and {result['signals'] - entries} exits; of the entries {finished} finished, "
        f"{result['open_at_end']} still open at the end)"
    )
    if result["restored_finished"] or result["restored_open"]:
        lines.append(
            f"  restored from the capture's engine start, not in the metrics: {result['restored_finished']} "
            f"finished, {result['restored_open']} still open"
        )
    lines.append(
        f"  malformed {result['malformed']}, book checks {result['book_checks']} "
        f"({result['book_mismatches']} mismatches); {read_damage(result)}"
    )
    for said in engine_starts_said(result):
        lines.append(f"  {said}")
    if said := checkpoints_said(result):
        lines.append(f"  {said}")
    lines.append(
        f"  metrics of the {finished} finished entries: " + ", ".join(f"{k}={v}" for k, v in m.items())
    )
    for s in result["signal_list"]:
        o = s["outcome"] or {}
        lines.append(
            f"  {s['timestamp']} {s['symbol']:<12} {s['direction']:<5} {s['priority']:<6} q={s['quality_score']:<3}"
            f" entry {s['entry_price']:g} stop {s['stop_loss']:g} -> {o.get('state')} {o.get('pnl_r')}"
        )
    return lines


def cmd_run(args: argparse.Namespace) -> int:
    from realtime.main import exchange_settings
    from realtime.main import main as run_main
    from tapewatch.adapters.db import open_database
    from tapewatch.adapters.embedded import ensure_database, ensure_redis

    settings = exchange_settings(settings_for(args), args.exchange)
    # model_copy does not validate: the parser has checked both (``cli_parser.symbol_list`` and ``shard``)
    if args.symbols:
        settings = settings.model_copy(update={"symbols": args.symbols})
    if args.shard is not None:  # scale-out: this instance follows shard I of N
        settings = settings.model_copy(update={"shard": args.shard.label})
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

    settings = settings_for(args, var_dir=False)
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
        if args.duration.strip().startswith("-"):
            raise ConfigError(f"sim --record: --duration {args.duration} is negative; use e.g. 10m")
        try:
            gaps = [parse_gap(g) for g in args.gap]
            duration_ms = int(parse_duration(args.duration) * 1000)
        except ValueError as exc:
            raise ConfigError(f"sim --record: {exc}") from exc
        if duration_ms <= 0:
            raise ConfigError(f"sim --record: --duration {args.duration} is no time at all; use e.g. 10m")
        check_gaps(args.gap, gaps, duration_ms, args.duration, args.symbols)  # before the directory is made
        result = record(
            writable_dir(Path(args.record), "sim --record"),
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
    if args.duration is not None:
        raise ConfigError(
            f"--duration {args.duration} is the length of a recording: use it with --record DIR (the server "
            "runs until Ctrl-C)"
        )
    from realtime.sim.server import serve

    try:
        faults = parse_faults(args.faults) if args.faults else None
    except ValueError as exc:
        raise ConfigError(f"--faults: {exc}") from exc
    host = args.host or settings.sim_host
    port = args.port if args.port is not None else settings.sim_port
    if args.clock_file is not None:  # saved while serving: a bad path must not surface as "cannot listen"
        check_clock_file(args.clock_file)
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
        if exc.filename is not None:  # a file, not the socket: e.g. the clock file could not be saved
            raise ConfigError(f"sim: {exc.filename}: {exc.strerror}; check --clock-file") from exc
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); {listen_advice(exc)}") from exc
    return 0


def listen_advice(exc: OSError) -> str:
    """Which setting to change when the simulator cannot listen: the address when it is not one of this
    machine's (or not an address at all), the port otherwise (in use, or privileged)."""
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return "set --host or TAPEWATCH_SIM_HOST to an address of this machine, e.g. 127.0.0.1 or 0.0.0.0"
    return "set --port or TAPEWATCH_SIM_PORT"


def check_gaps(
    specs: list[str], gaps: list[tuple[str, int]], duration_ms: int, duration: str, symbols: int
) -> None:
    """ConfigError unless every ``--gap`` names a simulated symbol (of the first ``symbols``) at an offset
    within the recording: checked before ``sim --record`` creates its directory."""
    from realtime.sim.symbols import build_universe

    names = [spec.symbol for spec in build_universe(symbols)]
    for spec, (symbol, offset_ms) in zip(specs, gaps, strict=True):
        if symbol not in names:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            raise ConfigError(
                f"sim --record: --gap {spec}: {symbol} is not one of the {len(names)} simulated symbols "
                f"(--symbols {symbols}: {shown})"
            )
        if not 0 <= offset_ms < duration_ms:
            raise ConfigError(
                f"sim --record: --gap {spec}: the offset is not within the recording (--duration {duration}); "
                "use an offset below the duration"
            )


def check_clock_file(path: Path) -> None:
    """ConfigError unless ``--clock-file`` names a file (not a directory) in a directory that exists or can be
    created and is writable: the simulator saves its clock there while it serves."""
    if path.is_dir():
        raise ConfigError(
            f"sim --clock-file {path} is a directory; give a file path, e.g. var/demo/clock.json"
        )
    writable_dir(path.parent, "sim --clock-file's directory")


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
    from dashboard.app import check_bind, check_port, serve
    from tapewatch.adapters.db import open_database
    from tapewatch.adapters.embedded import ensure_database, ensure_redis

    settings = settings_for(args)
    host = args.host or settings.dashboard_host
    port = args.port if args.port is not None else settings.dashboard_port
    password = settings.dashboard_password.get_secret_value() if settings.dashboard_password else None
    check_bind(host, password)  # before starting anything
    check_port(host, port)
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
