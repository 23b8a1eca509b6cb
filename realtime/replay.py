"""Replay captures through the same code as live (decode -> market state), as fast as possible.

Lines are processed in file order, which is the order the live run received them, so a replay rebuilds
the same books the live run had. Snapshot requests are not acted on: the snapshots the live run fetched
are in the capture and arrive in their place.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from realtime.capture import iter_capture
from tapewatch.market import Market, MarketConfig
from tapewatch.parse import MALFORMED_REASONS, FrameDecoder


def replay(paths: Iterable[Path], config: MarketConfig | None = None) -> dict[str, Any]:
    """Replay capture files (or directories of them) and return the summary object of ``replay --json``."""
    decoder = FrameDecoder()
    market = Market(config)
    messages = 0
    snapshot_requests = 0
    start = time.perf_counter()
    on_frame = market.on_frame
    decode = decoder.decode_capture_line
    for line in iter_capture(paths):
        messages += 1
        frame = decode(line)
        if frame is not None and on_frame(frame) is not None:
            snapshot_requests += 1
    seconds = time.perf_counter() - start
    totals = market.totals()
    return {
        "messages": messages,
        "seconds": round(seconds, 6),
        "messages_per_second": round(messages / seconds, 1) if seconds > 0 else 0.0,
        "malformed": sum(decoder.rejected[r] for r in MALFORMED_REASONS),
        "rejected": dict(sorted(decoder.rejected.items())),
        "gaps": totals["gaps"],
        "resyncs": totals["resyncs"],
        "snapshot_requests": snapshot_requests,
        "out_of_order": totals["out_of_order"],
        "book_checks": totals["book_checks"],
        "book_mismatches": totals["book_mismatches"],
        "candidates": 0,
        "signals": 0,
        "final": market.final(),
    }
