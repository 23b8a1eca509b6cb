"""The ``tapewatch`` command: the one place that wires the processes together, importing them lazily.

The parser is ``cli_parser``; the commands are ``cli_commands`` (they run something) and ``cli_admin``
(they inspect and administer the platform). Here: the entry point and the mapping of errors to exit codes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tapewatch.cli_parser import build_parser
from tapewatch.errors import CaptureError, ConfigError, TapewatchError


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
