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
import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from realtime.capture import ReadStats, capture_files, iter_capture_batches
from tapewatch.engine import SignalEngine
from tapewatch.engine_restore import EngineState
from tapewatch.errors import ConfigError
from tapewatch.events import ENGINE_START_VERSION, EngineStart, Instruments
from tapewatch.market import TRADE_GAP_COUNTERS, Market, MarketConfig, Request
from tapewatch.market_depth import SnapshotNeeded
from tapewatch.market_klines import KlineFillNeeded
from tapewatch.native_lines import AVAILABLE as NATIVE_AVAILABLE
from tapewatch.native_lines import NativeLines
from tapewatch.outcome import Outcome
from tapewatch.parse import MALFORMED_REASONS, Frame, FrameDecoder
from tapewatch.quality import breakpoints
from tapewatch.settings import Settings, load_settings
from tapewatch.signal import Candidate, Signal
from tapewatch.streams import Kind
from tapewatch.tuning_params import TUNABLE, check_parameters
from tapewatch.tuning_score import Params

log = logging.getLogger(__name__)

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
    #: the market state as the replay left it (the last engine start's)
    market: Market | None = None


def started_settings(base: Settings, parameters: dict[str, float | int]) -> tuple[Settings, Params, Params]:
    """The settings a captured engine start (:class:`~tapewatch.events.EngineStart`) runs the replay's engine
    with: ``base`` with the live run's tunable parameter values laid over it, but for those the replay's own
    settings set explicitly (they win, as they do over an applied tuning live: a replay can ask "what if");
    also what was laid over and what was kept back because it is set explicitly (values equal to the base's
    are in neither). A name this release does not treat as tunable (a capture from another release) is dropped
    with one warning naming it: the known ones are still validated and laid over."""
    unknown = [k for k in parameters if k not in TUNABLE]
    if unknown:
        log.warning(
            "the capture's engine start names parameter(s) this tapewatch does not tune: %s; ignored, the "
            "replay runs with its own settings for them",
            ", ".join(unknown),
            extra={"unknown_parameters": unknown},
        )
    checked = check_parameters({k: v for k, v in parameters.items() if k in TUNABLE})
    explicit = base.model_fields_set
    changed = {k: v for k, v in checked.items() if getattr(base, k) != v}
    applied = {k: v for k, v in changed.items() if k not in explicit}
    skipped = {k: v for k, v in changed.items() if k in explicit}
    tuned = base.model_copy(update=applied) if applied else base  # model_copy does not validate: tiers below
    try:
        breakpoints(tuned)
    except ValueError as exc:
        raise ConfigError(
            f"the capture's engine start parameters and the explicit settings together give bad quality tiers "
            f"({exc}); change the explicit quality_*_min settings"
        ) from exc
    return tuned, applied, skipped


def run_replay(
    paths: Iterable[Path],
    settings: Settings | None = None,
    *,
    signals: bool = True,
    native: bool | None = None,
) -> ReplayResult:
    """Replay capture files (or directories of them) through decode, books and (unless ``signals`` is
    false) the signal engine. Without ``settings``, they are loaded as the CLI loads them (environment and
    ``TAPEWATCH_CONFIG_FILE``, unknown ``TAPEWATCH_*`` variables refused): a bare Settings() would skip both.

    Without the engine, depth diffs, bookTickers, aggTrades and klines take the native path (:mod:`tapewatch.native_lines`) where
    it was built, unless ``native`` is False; ``native=True`` asks for it (an error where it is not built). The
    results are the same either way; the summary's ``native_lines`` says how many lines it took."""
    settings = settings or load_settings()
    if native and signals:
        raise ValueError("the native replay path serves a replay without the signal engine (signals=False)")
    if native and not NATIVE_AVAILABLE:
        raise ConfigError(
            "the native replay path is not built here (tapewatch._sides): reinstall with a C compiler"
        )
    use_native = not signals and native is not False and NATIVE_AVAILABLE
    decoder = CaptureDecoder()
    market = Market(MarketConfig.from_settings(settings))
    engine = SignalEngine(settings, market) if signals else None
    fast = NativeLines(market, decoder) if use_native else None
    native_counts: Counter[str] = Counter()  # the lines the native path took, over every market of the replay
    result = ReplayResult(summary={}, engine=engine)
    messages = 0
    requests: Counter[str] = Counter()  # what the market asked for: snapshots, aggTrade fills
    start = time.perf_counter()
    on_frame = market.on_frame
    decode = decoder.decode_capture_line
    take_pending = decoder.take_pending

    base = settings
    retired: Counter[str] = Counter()  # the totals of the markets of engine starts before the last
    starts: list[dict[str, Any]] = []  # the captured engine starts, as the summary says them
    start_lines = Counter[
        str
    ]()  # control:engine_start and control:instruments lines read: the service wrote them, not received
    instruments: Instruments | None = (
        None  # the last control:instruments line: the tick sizes stops are put on
    )

    def start_engine(recv: int, line: EngineStart) -> None:
        """A captured engine start: a fresh market and engine, as the live service's start had, with the live
        run's tunable parameters and the engine state it restored from PostgreSQL (the same restore)."""
        nonlocal market, engine, on_frame, fast
        start_lines["read"] += 1
        if line.version != ENGINE_START_VERSION:
            log.warning(
                "capture line control:engine_start of version %d is not known (this tapewatch reads %d): "
                "ignored, the replay goes on with the engine it has",
                line.version,
                ENGINE_START_VERSION,
            )
            return
        try:
            state = msgspec.json.decode(line.state, type=EngineState)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            decoder.rejected["bad_engine_start"] += 1
            log.warning("capture line control:engine_start has an unreadable state (%s): ignored", exc)
            return
        tuned, applied, skipped = started_settings(base, line.parameters)
        retired.update(market.totals())
        market = Market(MarketConfig.from_settings(tuned))
        on_frame = market.on_frame
        if fast is not None:
            native_counts.update(fast.finish())
            take_requests(fast)
            fast = NativeLines(market, decoder)
        if signals:
            engine = SignalEngine(tuned, market)
            engine.restore(state)
            if instruments is not None:  # the tick sizes stand until the next exchangeInfo fetch's line
                engine.set_instruments(instruments)
            result.engine = engine
        starts.append(
            {"recv": recv, "open_signals": len(state.open), "tuning": line.tuning, "parameters": applied}
        )
        log.info(
            "engine state restored from the capture: %d open signals, %s%s",
            len(state.open),
            f"tuning #{line.tuning}" if line.tuning else "no tuning applied",
            f", parameters {applied}" if applied else "",
        )
        if skipped:
            log.warning("captured parameters not laid over because they are set explicitly: %s", skipped)

    def step(frame: Frame) -> None:
        """One frame through the market and the engine (the loop below inlines the same for speed). A
        captured command (pause/resume) goes to the engine only; a captured engine start (re)starts both; the
        captured tick sizes (``control:instruments``) go to the engine, as the live service gave them to its."""
        nonlocal instruments
        if frame.kind is Kind.CONTROL:
            if type(frame.event) is EngineStart:
                start_engine(frame.recv, frame.event)
            elif type(frame.event) is Instruments:
                start_lines["instruments"] += 1
                instruments = frame.event
                if engine is not None:
                    engine.set_instruments(instruments)
            elif engine is not None:
                engine.on_frame(frame)
            return
        if (request := on_frame(frame)) is not None:
            requests[request_kind(request)] += 1
        if engine is not None and (out := engine.on_frame(frame)) is not None:
            result.candidates.extend(out.candidates)
            result.signals.extend(out.signals)
            result.finished.extend(out.finished)

    def take_requests(fast: NativeLines) -> None:
        """Count what the market asked for on lines the native path finished (a resync after a mismatch)."""
        for request in fast.requests:
            requests[request_kind(request)] += 1
        fast.requests.clear()

    stats = ReadStats()  # what the reader skipped: torn lines, damaged stretches
    with fewer_collections():
        files = capture_files(paths)  # every path checked before the first line is read
        for path in files:
            decoder.source = str(path)
            for batch in iter_capture_batches([path], stats):
                messages += len(batch)
                i, n = 0, len(batch)
                while i < n:
                    if fast is not None:
                        i = fast.feed(batch, i)  # the index of the first line it did not take
                        if fast.requests:
                            take_requests(fast)
                        if i == n:
                            break
                    line = batch[i]
                    i += 1
                    frame = decode(line)
                    if frame is None:
                        # a backup-feed page (aggTrades, klines): a frame per row
                        for polled in take_pending():
                            step(polled)
                        continue
                    if (request := on_frame(frame)) is not None:
                        requests[request_kind(request)] += 1
                    if engine is not None and (out := engine.on_frame(frame)) is not None:
                        result.candidates.extend(out.candidates)
                        result.signals.extend(out.signals)
                        result.finished.extend(out.finished)
    if fast is not None:
        native_counts.update(fast.finish())
        take_requests(fast)
    seconds = time.perf_counter() - start
    if not start_lines["read"] and signals:
        log.info(
            "the capture holds no engine start line (control:engine_start): the engine started empty (no "
            "open signals, cooldowns or daily counts) with the settings given; a run's later hour files carry "
            "none, give the run's first file to start from its restored state"
        )
    result.market = market
    totals = market.totals()
    for name, n in retired.items():
        totals[name] += n
    # the live market counted no such line: the service wrote them, it did not receive them
    messages -= start_lines["read"] + start_lines["instruments"]
    messages -= totals["checkpoint_checks"] + totals["checkpoint_loads"]
    entries = [s for s in result.signals if s.signal_type == "ENTRY"]
    result.summary = {
        "messages": messages,
        "seconds": round(seconds, 6),
        "messages_per_second": round(messages / seconds, 1) if seconds > 0 else 0.0,
        "malformed": sum(decoder.rejected[r] for r in MALFORMED_REASONS),
        "rejected": dict(sorted(decoder.rejected.items())),
        # what the reader met (see tapewatch.adapters.capture_reader.ReadStats): files cut short or damaged,
        # torn lines skipped, bytes of them, stretches that did not inflate (their lines are lost; garbage
        # inflated from damaged bytes is counted in ``malformed``); ``capture_damaged``: bytes did not inflate,
        # so lines were lost and the replay is not what the live run saw. A torn line is not damage: it is
        # what a writer killed mid-line leaves (the reader's warning says every complete line was read),
        # wherever it is, also when a restarted writer appended to the same file
        "files_read": stats.files,
        "torn_files": stats.torn_files,
        "torn_lines": stats.torn_lines,
        "skipped_bytes": stats.skipped_bytes,
        "damaged_stretches": stats.damaged,
        "capture_damaged": stats.damaged > 0,
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
        # the live run's book checkpoints (control:book_checkpoint): checked against the replay's synced book,
        # differing from it (the live book is taken), taken by a book not synced here (a later hour file alone)
        "checkpoint_checks": totals["checkpoint_checks"],
        "checkpoint_mismatches": totals["checkpoint_mismatches"],
        "checkpoint_loads": totals["checkpoint_loads"],
        "candidates": len(result.candidates),
        "signals": len(entries),
        "exits": len(result.signals) - len(entries),
        "candidate_fates": dict(sorted(Counter(c.fate for c in result.candidates).items())),
        "not_evaluated": {k: v for k, v in sorted(engine.counters.items()) if k.startswith("not_")}
        if engine
        else {},
        "final": market.final(),
        # each control:engine_start line the capture holds: the engine state and parameters the live run
        # started with, which the replay started with at the same place (none in captures made before them)
        "engine_starts": starts,
        # lines of depth diffs, bookTickers, aggTrades and klines the native path applied (0 with the engine, or where not built)
        "native_lines": native_counts["taken"] + native_counts["callbacks"],
    }
    return result


def replay(
    paths: Iterable[Path],
    settings: Settings | None = None,
    *,
    signals: bool = True,
    native: bool | None = None,
) -> dict[str, Any]:
    """The summary object of ``tapewatch replay --json``."""
    return run_replay(paths, settings, signals=signals, native=native).summary
