"""Read capture files back as raw lines: the replay hot path.

The reader itself is :mod:`tapewatch.adapters.capture_reader`, shared with the Dagster archive (which may
not import ``realtime``): one reader, so replay and the archive see the same lines of a damaged or
killed-writer file. This module keeps the service's names for it, and the raw decode floor of bench/.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import orjson

from tapewatch.adapters.capture_reader import ReadStats, capture_files, iter_capture, iter_capture_batches

__all__ = [
    "RawDecodeResult",
    "ReadStats",
    "capture_files",
    "count_and_decode_raw",
    "iter_capture",
    "iter_capture_batches",
]


class RawDecodeResult(NamedTuple):
    """Lines read, bytes of those lines, and lines that were not valid JSON."""

    lines: int
    bytes: int
    malformed: int


def count_and_decode_raw(paths: Iterable[Path | str]) -> RawDecodeResult:
    """Read the captures and decode every line with ``orjson.loads``, nothing else.

    The floor a replay is compared with in bench/: the cost of inflating and parsing the same bytes,
    without typing, routing or any market state.
    """
    loads = orjson.loads
    lines = size = malformed = 0
    for line in iter_capture(paths):
        lines += 1
        size += len(line)
        try:
            loads(line)
        except orjson.JSONDecodeError:
            malformed += 1
    return RawDecodeResult(lines, size, malformed)
