"""The ``tapewatch`` command line: every subcommand, its options, and the function that runs it."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tapewatch.cli_admin import cmd_db, cmd_rescan, cmd_settings, cmd_status, cmd_tuning
from tapewatch.cli_commands import (
    cmd_backtest,
    cmd_dagster,
    cmd_dashboard,
    cmd_demo,
    cmd_replay,
    cmd_run,
    cmd_sim,
    duration_seconds,
)
from tapewatch.settings_types import check_host
from tapewatch.sharding import Shard, parse_shard
from tapewatch.streams import WHOLE_MARKET_SYMBOLS as MAX_SYMBOLS


def _number(text: str, kind: type[int] | type[float]) -> float:
    """``text`` as an int or a finite float, or the argparse error that names what was expected."""
    try:
        value = kind(text)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {expected}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``low..high`` (no upper bound when ``high`` is None).

    Checked here so a bad value is one usage line with exit code 2, not a traceback from deep inside the
    command (an OverflowError from the socket, a ValueError from the simulator, an AssertionError from Dash)."""

    def parse(text: str) -> int:
        value = int(_number(text, int))
        if value < low or (high is not None and value > high):
            allowed = f"{low}..{high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"{value} is out of range; use an integer {allowed}")
        return value

    parse.__name__ = "integer"  # argparse names the type in "invalid <name> value" messages
    return parse


def float_above(low: float, *, inclusive: bool = False, high: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite number above ``low`` (or at least ``low`` when ``inclusive``), and at most
    ``high`` when given."""
    allowed = f"{'>=' if inclusive else '>'} {low:g}" + (f" and <= {high:g}" if high is not None else "")

    def parse(text: str) -> float:
        value = _number(text, float)
        if value < low or (value == low and not inclusive) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value:g} is out of range; use a number {allowed}")
        return value

    parse.__name__ = "number"
    return parse


def symbol_list(text: str) -> tuple[str, ...]:
    """An argparse type: comma-separated symbol names (upper-cased; empty items dropped), at least one."""
    names = tuple(s.strip().upper() for s in text.split(",") if s.strip())
    bad = [s for s in names if not s.isalnum()]
    if bad or not names:
        what = f"{bad[0]!r} is not a symbol name" if bad else f"{text!r} names no symbol"
        raise argparse.ArgumentTypeError(
            f"{what}; use letters and digits, comma-separated, like BTCUSDT,ETHUSDT"
        )
    return names


def shard(text: str) -> Shard:
    """An argparse type: ``I/N``, shard I of N (:func:`tapewatch.sharding.parse_shard`)."""
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def host(text: str) -> str:
    """An argparse type: a host name or address to listen on, without spaces
    (:func:`tapewatch.settings_types.check_host`; ``--host "  "`` failed only at the socket)."""
    try:
        return check_host(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Parser(argparse.ArgumentParser):
    """argparse's parser, except that a value starting with ``-`` and a digit is an option's value, not an
    unknown option: ``--shard -1/2`` and ``--duration -5m`` then get the option's own range error, not
    "expected one argument" (argparse takes only plain negative numbers such as ``-5`` as values). No option
    of ``tapewatch`` looks like ``-1``. Subparsers are built with the parser's class, so they get it too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\.?\d")


#: a TCP port to listen on (0, "any free port", is refused: the other processes must know where to connect)
PORT = int_range(1, 65535)
#: how many perpetuals the simulated exchange lists (``realtime.sim.symbols.build_universe``)
SIM_SYMBOLS = int_range(1, MAX_SYMBOLS)
#: the simulator's seed (split into 32-bit words for numpy's SeedSequence, which refuses negative ones)
SEED = int_range(0)
#: seconds to wait: 0 is one look
NON_NEGATIVE = float_above(0.0, inclusive=True)
#: simulated seconds per wall second. The simulator slows its clock (with a warning) when it cannot keep up,
#: which a few hundred symbols reach long before this bound; beyond it the clock arithmetic itself goes wrong
#: (``--speed 1e308`` was "inf s behind").
MAX_SPEED = 10_000.0
SPEED = float_above(0.0, high=MAX_SPEED)
#: the rate of planted episodes, times the usual: 0 plants none. A symbol's episodes are at least ~10
#: simulated minutes apart (the first one 5 minutes in), so the simulator saturates near 100 already.
MAX_EPISODE_RATE = 1_000.0
EPISODE_RATE = float_above(0.0, inclusive=True, high=MAX_EPISODE_RATE)
#: seconds between status lines: each one formats the whole live state, so not more than twice a second
#: (``--status-every 1e-9`` printed 229,504 tables in 5 s and starved the service)
MIN_STATUS_EVERY = 0.5
STATUS_EVERY = float_above(MIN_STATUS_EVERY, inclusive=True)
#: ``tuning list --limit``: the newest this many proposals (an unbounded one overflowed PostgreSQL's bigint)
MAX_LIST_LIMIT = 10_000


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    p.add_argument(
        "--books-only",
        action="store_true",
        help="the market state only (books, bookTicker proof, trade windows, candles), without the signal "
        "engine: faster (depth diffs, bookTickers, aggTrades and klines take the native path where it was built)",
    )
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "backtest", help="replay captures, follow every signal to its end and print the metrics"
    )
    p.add_argument("files", nargs="+", help="capture files (*.jsonl.gz) or directories of them")
    p.add_argument("--json", action="store_true", help="print a JSON object as the last line of stdout")
    p.set_defaults(func=cmd_backtest)

    p = sub.add_parser("run", help="the realtime service: books, trade flow, capture, live state in Redis")
    p.add_argument("--exchange", choices=("binance", "sim"), default="binance", help="market data source")
    p.add_argument(
        "--symbols",
        type=symbol_list,
        help="comma-separated symbols (default: TAPEWATCH_SYMBOLS or top by volume)",
    )
    p.add_argument(
        "--duration",
        type=duration_seconds,
        default=None,
        help="stop after this long: seconds, or e.g. 90s, 10m, 2h",
    )
    p.add_argument(
        "--status-every",
        type=STATUS_EVERY,
        default=None,
        help=f"print the live state every N seconds (>= {MIN_STATUS_EVERY:g})",
    )
    p.add_argument(
        "--shard",
        type=shard,
        default=None,
        help="I/N: follow shard I of N of the universe (default TAPEWATCH_SHARD)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sim", help="the simulated Binance USD-M exchange (REST + websockets on 127.0.0.1)")
    p.add_argument(
        "--host", type=host, default=None, help="listen address (default TAPEWATCH_SIM_HOST, 127.0.0.1)"
    )
    p.add_argument("--port", type=PORT, default=None, help="listen port (default TAPEWATCH_SIM_PORT, 8765)")
    p.add_argument("--seed", type=SEED, default=1, help="random seed (>= 0): same seed, same market")
    p.add_argument(
        "--symbols", type=SIM_SYMBOLS, default=40, help=f"number of perpetual symbols (1..{MAX_SYMBOLS})"
    )
    p.add_argument(
        "--speed",
        type=SPEED,
        default=1.0,
        help=f"simulated seconds per wall second (> 0, at most {MAX_SPEED:g})",
    )
    p.add_argument(
        "--faults", default=None, help="fault schedule, e.g. gap=30s,drop=5m,malformed=1m,rest5xx=0.02"
    )
    p.add_argument("--record", metavar="DIR", default=None, help="write a capture without any network")
    p.add_argument("--duration", default=None, help="with --record: simulated time to record, e.g. 2h, 10m")
    p.add_argument(
        "--gap",
        action="append",
        default=[],
        metavar="SYMBOL@OFFSET",
        help="with --record: drop one depth diff of SYMBOL at OFFSET (e.g. ETHUSDT@30m), a resync follows",
    )
    p.add_argument(
        "--episode-rate",
        type=EPISODE_RATE,
        default=1.0,
        help=f"planted order-flow episodes, times the usual rate (0..{MAX_EPISODE_RATE:g})",
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
    p.add_argument("--seed", type=SEED, default=1, help="simulated market seed (>= 0)")
    p.add_argument(
        "--symbols", type=SIM_SYMBOLS, default=20, help=f"simulated perpetual symbols (1..{MAX_SYMBOLS})"
    )
    p.add_argument(
        "--speed",
        type=SPEED,
        default=20.0,
        help=f"simulated seconds per wall second (> 0, at most {MAX_SPEED:g})",
    )
    p.add_argument(
        "--episode-rate",
        type=EPISODE_RATE,
        default=3.0,
        help=f"planted episodes, times the usual rate (0..{MAX_EPISODE_RATE:g})",
    )
    p.add_argument(
        "--daily-cap-scale",
        type=int_range(1),
        default=10,
        help="daily signal caps times this (unless set explicitly)",
    )
    p.add_argument(
        "--duration",
        type=duration_seconds,
        default=None,
        help="stop after this long: seconds, or e.g. 90s, 10m, 2h",
    )
    p.add_argument(
        "--status-every",
        type=STATUS_EVERY,
        default=15.0,
        help=f"seconds between status lines/live tables (>= {MIN_STATUS_EVERY:g})",
    )
    p.add_argument("--no-dagster", action="store_true", help="do not start the Dagster webserver and daemon")
    p.add_argument("--no-dashboard", action="store_true", help="do not start the dashboard")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("settings", help="print the effective settings (or the reference table)")
    p.add_argument("--markdown", action="store_true", help="the README's settings reference")
    p.set_defaults(func=cmd_settings)

    p = sub.add_parser("db", help="database maintenance; stop the embedded servers")
    dbsub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = dbsub.add_parser("upgrade", help="apply pending migrations from sql/")
    up.set_defaults(func=cmd_db)
    stop = dbsub.add_parser(
        "stop",
        help="stop the embedded PostgreSQL and Redis under the var dir (refused while the platform uses them)",
    )
    stop.set_defaults(func=cmd_db)

    p = sub.add_parser(
        "status",
        help="each component up/down, realtime metrics, open feed incidents (exit 1: something down, 3: up but degraded)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON object as the last line of stdout")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("tuning", help="monthly tuning proposals: list, show, propose, apply, rollback")
    tsub = p.add_subparsers(dest="tuning_command", required=True, metavar="ACTION")
    t = tsub.add_parser("list", help="the newest proposals")
    t.add_argument(
        "--limit",
        type=int_range(1, MAX_LIST_LIMIT),
        default=20,
        help=f"at most this many (1..{MAX_LIST_LIMIT})",
    )
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
            t.add_argument(
                "--force",
                action="store_true",
                help="apply even a proposal scored against other parameters than those in force",
            )
        t.add_argument("--actor", default=None, help="who does it (default: the OS user)")
        t.set_defaults(func=cmd_tuning)

    p = sub.add_parser("dashboard", help="the Dash dashboard: live signals, performance, quality, health")
    p.add_argument(
        "--host",
        type=host,
        default=None,
        help="listen address (default TAPEWATCH_DASHBOARD_HOST, 127.0.0.1)",
    )
    p.add_argument(
        "--port", type=PORT, default=None, help="listen port (default TAPEWATCH_DASHBOARD_PORT, 8050)"
    )
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("dagster", help="the Dagster webserver and daemon (Ctrl-C stops both)")
    p.add_argument(
        "--port", type=PORT, default=None, help="webserver port (default TAPEWATCH_DAGSTER_PORT, 3000)"
    )
    p.set_defaults(func=cmd_dagster)

    p = sub.add_parser("rescan", help="launch the universe rescan in the running Dagster instance and wait")
    p.add_argument(
        "--timeout",
        type=NON_NEGATIVE,
        default=900.0,
        help="seconds to wait for the run to finish (0: one look)",
    )
    p.set_defaults(func=cmd_rescan)
    return parser


def available_commands() -> frozenset[str]:
    """The subcommands of this installation (the demo starts Dagster and the dashboard when they exist)."""
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return frozenset(action.choices)
    return frozenset()
