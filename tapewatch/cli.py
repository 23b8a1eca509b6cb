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
    logs.configure(settings.log_level if not getattr(args, "verbose", False) else "DEBUG", settings.log_format)
    return settings


def cmd_replay(args: argparse.Namespace) -> int:
    from realtime.replay import replay
    from tapewatch.market import MarketConfig

    settings = _settings(args)
    summary = replay([Path(p) for p in args.files], MarketConfig.from_settings(settings))
    if args.json:
        print(json.dumps(summary, sort_keys=False))
    else:
        print(
            f"{summary['messages']} messages in {summary['seconds']:.3f} s "
            f"({summary['messages_per_second']:.0f}/s); malformed {summary['malformed']}, gaps {summary['gaps']}, "
            f"resyncs {summary['resyncs']}, book checks {summary['book_checks']} "
            f"({summary['book_mismatches']} mismatches)"
        )
        for symbol, feats in summary["final"].items():
            print(f"  {symbol}: " + ", ".join(f"{k}={v}" for k, v in feats.items()))
    return 0 if summary["book_mismatches"] == 0 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tapewatch",
        description="Order-flow signals for Binance USD-M perpetual futures (signals only, never orders).",
    )
    parser.add_argument("--config", type=Path, default=None, help="YAML settings file (or TAPEWATCH_CONFIG_FILE)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("replay", help="replay capture files through the live code, as fast as possible")
    p.add_argument("files", nargs="+", help="capture files (*.jsonl.gz) or directories of them")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line of stdout")
    p.set_defaults(func=cmd_replay)
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
    return code


if __name__ == "__main__":
    sys.exit(main())
