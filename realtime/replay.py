"""Replay captures through the same code as live (decode -> market state -> signal engine), as fast as
possible.

Files are read in event order (ordered by their first line's ``recv``, see
:mod:`tapewatch.adapters.capture_order`) and lines in file order, which is the order the live run received
them, so a replay rebuilds
the same books and emits the same signals as the live run. Snapshot, aggTrade fill and kline refill requests are
not acted on: the snapshots, trade pages and klines the live run fetched are in the capture and arrive in their
place.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from realtime.capture import capture_files, iter_capture
from tapewatch.engine import SignalEngine
from tapewatch.market import (
    TRADE_GAP_COUNTERS,
    KlineFillNeeded,
    Market,
    MarketConfig,
    Request,
    SnapshotNeeded,
)
from tapewatch.outcome import Outcome
from tapewatch.parse import MALFORMED_REASONS, Frame, FrameDecoder
from tapewatch.settings import Settings, load_settings
from tapewatch.signal import Candidate, Signal
from tapewatch.streams import Kind

#: The collector's first threshold while a replay runs (Python's default: 700 allocations). A replay keeps much
#: of what it allocates for a while (diffs buffered until their snapshot, trade windows, candles), and with the
#: default the collector walks that heap again and again, most of it in full collections: about 9 % of the CPU
#: of a 3-minute 800-symbol replay, 2-3 % of a 10-minute one. Garbage is collected all the same, in fewer passes.
REPLAY_GC_THRESHOLD = 50_000


@contextmanager
def fewer_collections(threshold: int = REPLAY_GC_THRESHOLD) -> Iterator[None]:
    """Run the block with the collector's first threshold raised to ``threshold`` (never lowered), then put the
    thresholds back as they were. Nothing a replay computes depends on when the collector runs."""
    saved = gc.get_threshold()
    gc.set_threshold(max(threshold, saved[0]), *saved[1:])
    try:
        yield
    finally:
        gc.set_threshold(*saved)


def request_kind(request: Request) -> str:
    """How the summary counts what the market asked for: a snapshot, an aggTrade fill or a kline refill."""
    if isinstance(request, SnapshotNeeded):
        return "snapshot"
    return "kline_fill" if isinstance(request, KlineFillNeeded) else "fill"


class CaptureDecoder(FrameDecoder):
    """The replay's frame decoder: a line that is not even JSON is reported with the file it is in (``source``,
    set as each file begins) rather than the live decoder's ``<capture>``, so a replay of several files names
    the one to look at."""

    source = "<capture>"

    def _reject(self, reason: str, stream: str, detail: object = "") -> None:
        super()._reject(reason, self.source if stream == "<capture>" else stream, detail)


@dataclass
class ReplayResult:
    """The summary object of ``replay --json`` plus every record the engine produced."""

    summary: dict[str, Any]
    candidates: list[Candidate] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)
    finished: list[Outcome] = field(default_factory=list)
    engine: SignalEngine | None = None


def run_replay(
    paths: Iterable[Path], settings: Settings | None = None, *, signals: bool = True
) -> ReplayResult:
    """Replay capture files (or directories of them) through decode, books and (unless ``signals`` is
    false) the signal engine. Without ``settings``, they are loaded as the CLI loads them (environment and
    ``TAPEWATCH_CONFIG_FILE``, unknown ``TAPEWATCH_*`` variables refused): a bare Settings() would skip both."""
    settings = settings or load_settings()
    decoder = CaptureDecoder()
    market = Market(MarketConfig.from_settings(settings))
    engine = SignalEngine(settings, market) if signals else None
    result = ReplayResult(summary={}, engine=engine)
    messages = 0
    requests: Counter[str] = Counter()  # what the market asked for: snapshots, aggTrade fills
    start = time.perf_counter()
    on_frame = market.on_frame
    decode = decoder.decode_capture_line
    take_pending = decoder.take_pending

    def step(frame: Frame) -> None:
        """One frame through the market and the engine (the loop below inlines the same for speed). A
        captured command (pause/resume) goes to the engine only."""
        if frame.kind is Kind.CONTROL:
            if engine is not None:
                engine.on_frame(frame)
            return
        if (request := on_frame(frame)) is not None:
            requests[request_kind(request)] += 1
        if engine is not None and (out := engine.on_frame(frame)) is not None:
            result.candidates.extend(out.candidates)
            result.signals.extend(out.signals)
            result.finished.extend(out.finished)

    with fewer_collections():
        for path in capture_files(paths):  # every path checked before the first line is read
            decoder.source = str(path)
            for line in iter_capture([path]):
                messages += 1
                frame = decode(line)
                if frame is None:
                    for polled in take_pending():  # a backup-feed page (aggTrades, klines): a frame per row
                        step(polled)
                    continue
                if (request := on_frame(frame)) is not None:
                    requests[request_kind(request)] += 1
                if engine is not None and (out := engine.on_frame(frame)) is not None:
                    result.candidates.extend(out.candidates)
                    result.signals.extend(out.signals)
                    result.finished.extend(out.finished)
    seconds = time.perf_counter() - start
    totals = market.totals()
    entries = [s for s in result.signals if s.signal_type == "ENTRY"]
    result.summary = {
        "messages": messages,
        "seconds": round(seconds, 6),
        "messages_per_second": round(messages / seconds, 1) if seconds > 0 else 0.0,
        "malformed": sum(decoder.rejected[r] for r in MALFORMED_REASONS),
        "rejected": dict(sorted(decoder.rejected.items())),
        "gaps": totals["gaps"],
        "resyncs": totals["resyncs"],
        "snapshot_requests": requests["snapshot"],
        "out_of_order": totals["out_of_order"],
        # aggTrade id gaps: trades missing, filled from the captured REST answers, lost (never received),
        # skipped (too many or too long ago to fetch), pending (open gaps when the capture ends)
        **{name: totals[name] for name in TRADE_GAP_COUNTERS},
        "trade_fill_requests": requests["fill"],
        # candle holes (a lost closing kline, lost bars) and their REST refills, answered from the capture
        "kline_gaps": totals["kline_gaps"],
        "kline_fill_requests": requests["kline_fill"],
        "kline_bars_filled": totals["kline_bars_filled"],
        "kline_fill_failed": totals["kline_fill_failed"],
        "book_checks": totals["book_checks"],
        "book_mismatches": totals["book_mismatches"],
        "candidates": len(result.candidates),
        "signals": len(entries),
        "exits": len(result.signals) - len(entries),
        "candidate_fates": dict(sorted(Counter(c.fate for c in result.candidates).items())),
        "not_evaluated": {k: v for k, v in sorted(engine.counters.items()) if k.startswith("not_")}
        if engine
        else {},
        "final": market.final(),
    }
    return result


def replay(
    paths: Iterable[Path], settings: Settings | None = None, *, signals: bool = True
) -> dict[str, Any]:
    """The summary object of ``tapewatch replay --json``."""
    return run_replay(paths, settings, signals=signals).summary
