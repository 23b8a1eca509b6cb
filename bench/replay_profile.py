"""Where replay time goes: the same capture read through growing prefixes of the replay pipeline.

Usage: ``.venv/bin/python bench/replay_profile.py CAPTURE... [--repeat N] [--cprofile]``. Each stage streams
the files once more (nothing is kept between lines, as in replay) and is timed in CPU seconds of this process,
best of ``--repeat``, so other processes on the machine do not distort the split:

- ``read``: inflate + split into lines;
- ``raw``: read + ``orjson.loads`` of every line (the floor bench/run.py compares with);
- ``parse``: read + typed decode into frames (:class:`tapewatch.parse.FrameDecoder`);
- ``parse+books``: parse + depth diffs and snapshots applied to the order books, nothing else (the strict
  "parse + book-update cost" of issue 3);
- ``replay``: parse + the whole market state (books, bookTicker proof, trade windows, candles) =
  ``tapewatch replay`` without the signal engine, on the Python path;
- ``native``: the same replay with depth diffs, bookTickers, aggTrades and klines on the native path (:mod:`tapewatch.native_lines`;
  ``tapewatch replay --books-only``), where it was built.

Every stage runs with the collector set as ``tapewatch replay`` sets it (:func:`realtime.replay.fewer_collections`).
The differences between stages are the costs of decode, book apply and the rest of Market dispatch, per
message of the capture. ``--cprofile`` adds a function profile of the replay stage (its overhead inflates
small functions: read it for call counts and shares, not for timings).
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from realtime.capture import count_and_decode_raw, iter_capture  # noqa: E402
from realtime.malloc_tuning import keep_freed_memory  # noqa: E402
from realtime.replay import fewer_collections, replay  # noqa: E402
from tapewatch import book_sides  # noqa: E402
from tapewatch.book import OrderBook  # noqa: E402
from tapewatch.market import Market  # noqa: E402
from tapewatch.market_depth import snapshot_limit  # noqa: E402
from tapewatch.native_lines import AVAILABLE as NATIVE_LINES  # noqa: E402
from tapewatch.parse import FrameDecoder  # noqa: E402
from tapewatch.settings import Settings  # noqa: E402
from tapewatch.streams import Kind  # noqa: E402

STAGES = ("read", "raw", "parse", "parse+books", "replay", "native")


def _read(paths: list[Path]) -> int:
    n = 0
    for _ in iter_capture(paths):
        n += 1
    return n


def _raw(paths: list[Path]) -> int:
    return count_and_decode_raw(paths).lines


def _parse(paths: list[Path]) -> int:
    decode, n = FrameDecoder().decode_capture_line, 0
    for line in iter_capture(paths):
        n += 1
        decode(line)
    return n


def parse_and_books(paths: list[Path]) -> int:
    """Decode every line, apply depth diffs and snapshots to one :class:`OrderBook` per symbol; nothing else.

    The books are fed as :class:`~tapewatch.market.Market` feeds them (the snapshot's ``limit`` from its
    request), without the bookTicker proof, trade windows or candles. Returns the lines read."""
    decode, n = FrameDecoder().decode_capture_line, 0
    books: dict[str, OrderBook] = {}
    depth, snapshot = Kind.DEPTH, Kind.SNAPSHOT
    for line in iter_capture(paths):
        n += 1
        frame = decode(line)
        if frame is None or (frame.kind is not depth and frame.kind is not snapshot):
            continue
        book = books.get(frame.symbol)
        if book is None:
            book = books[frame.symbol] = OrderBook(frame.symbol)
        if frame.kind is depth:
            book.apply(frame.event)  # type: ignore[arg-type]
        else:
            book.load_snapshot(frame.event, snapshot_limit(frame.stream))  # type: ignore[arg-type]
    return n


def _replay(paths: list[Path]) -> int:
    decode, n = FrameDecoder().decode_capture_line, 0
    on_frame = Market().on_frame
    for line in iter_capture(paths):
        n += 1
        frame = decode(line)
        if frame is not None:
            on_frame(frame)
    return n


def _native(paths: list[Path]) -> int:
    summary = replay(paths, Settings(), signals=False, native=True)
    return int(summary["messages"])


STAGE_FUNCS: dict[str, Callable[[list[Path]], int]] = {
    "read": _read,
    "raw": _raw,
    "parse": _parse,
    "parse+books": parse_and_books,
    "replay": _replay,
    "native": _native,
}


def sides_in_use() -> str:
    """``native`` or ``python``: the book sides new books get (tapewatch.book_sides.new_sides)."""
    return "python" if book_sides.new_sides is book_sides.py_sides else "native"


@contextmanager
def python_sides() -> Iterator[None]:
    """Books made inside get the pure-Python sides, the fallback where tapewatch._sides was not built."""
    saved, book_sides.new_sides = book_sides.new_sides, book_sides.py_sides
    try:
        yield
    finally:
        book_sides.new_sides = saved


def cpu_best_of(repeat: int, fn: Callable[[], int]) -> tuple[float, int]:
    """Best CPU time (seconds of this process) of ``repeat`` calls, and the last call's result."""
    best, result = float("inf"), 0
    for _ in range(repeat):
        start = time.process_time()
        result = fn()
        best = min(best, time.process_time() - start)
    return best, result


def profile_stages(paths: list[Path], repeat: int = 2) -> dict[str, float]:
    """CPU nanoseconds per message of each stage (see the module docstring), measured in this run."""
    out: dict[str, float] = {}
    for stage in STAGES:
        if stage == "native" and not (NATIVE_LINES and sides_in_use() == "native"):
            continue
        with fewer_collections():
            seconds, lines = cpu_best_of(repeat, lambda f=STAGE_FUNCS[stage]: f(paths))  # type: ignore[misc]
        out[stage] = seconds / max(lines, 1) * 1e9
    return out


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paths", nargs="+", type=Path, help="capture files or directories")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--cprofile", action="store_true", help="also print a function profile of replay")
    parser.add_argument(
        "--python-sides",
        action="store_true",
        help="use the pure-Python book sides even where the native ones exist",
    )
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's malloc thresholds as they are (tapewatch replay sets them: realtime.malloc_tuning)",
    )
    args = parser.parse_args()
    kept = False if args.default_malloc else keep_freed_memory()
    print(f"malloc thresholds: {'set for replay' if kept else 'default'}")
    if args.python_sides:  # for the whole run, the profile included
        book_sides.new_sides = book_sides.py_sides
    print(f"book sides: {sides_in_use()}")
    ns = profile_stages(args.paths, args.repeat)
    print(f"CPU ns per message ({', '.join(str(p) for p in args.paths)}):")
    for stage in (s for s in STAGES if s in ns):
        print(
            f"  {stage:12s} {ns[stage]:8.0f}   {ns[stage] / ns['raw']:.2f}x raw   {1e9 / ns[stage]:>9,.0f} msg/s"
        )
    print(
        f"  split: inflate+lines {ns['read']:.0f}, typed decode {ns['parse'] - ns['read']:.0f}"
        f" (orjson {ns['raw'] - ns['read']:.0f}), books {ns['parse+books'] - ns['parse']:.0f},"
        f" rest of market state {ns['replay'] - ns['parse+books']:.0f}"
    )
    if args.cprofile:
        prof = cProfile.Profile()
        with fewer_collections():
            prof.enable()
            _replay(args.paths)
            prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
