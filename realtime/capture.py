"""The capture: every incoming frame, in gzip JSON Lines, one file per UTC hour (DESIGN.md §3).

Writing lives in :mod:`realtime.capture_writer`, reading in :mod:`realtime.capture_reader`; this module
is the one place the rest of the service imports them from.
"""

from __future__ import annotations

from realtime.capture_reader import (
    RawDecodeResult,
    ReadStats,
    capture_files,
    count_and_decode_raw,
    iter_capture,
    iter_capture_batches,
)
from realtime.capture_writer import MS_PER_HOUR, CaptureStats, CaptureWriter, ClosedFile, capture_path

__all__ = [
    "MS_PER_HOUR",
    "CaptureStats",
    "CaptureWriter",
    "ClosedFile",
    "RawDecodeResult",
    "ReadStats",
    "capture_files",
    "capture_path",
    "count_and_decode_raw",
    "iter_capture",
    "iter_capture_batches",
]
