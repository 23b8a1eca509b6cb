"""The engine's shared gate (scale-out, ``--shard I/N``): candidates the local gate passes are reserved in the
global ledger, its rejections become their fate, an unreachable ledger fails closed, finished signals are
released, other shards' symbols are correlated through their published closes, and a restart leaves other
shards' signals alone.

The engine runs over a recorded simulator capture with planted episodes (the same frames a live run gets)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from realtime.capture import iter_capture
from tapewatch.adapters.db import Database
from tapewatch.adapters.risk_ledger import RiskLedger
from tapewatch.engine import EngineOutput, SignalEngine
from tapewatch.errors import StorageUnavailable
from tapewatch.events import Candle
from tapewatch.market import Market, MarketConfig
from tapewatch.outcome import OutcomeParams
from tapewatch.parse import FrameDecoder
from tapewatch.risk import FATE_SHARED_GATE_UNAVAILABLE, Candidate, Correlation, Decision, RiskParams
from tapewatch.settings import Settings, load_settings
from tapewatch.sharding import WHOLE, Shard, shard_of
from tests.adapters.signal_builders import entry
from tests.helpers import signal_capture

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return signal_capture(tmp_path_factory)  # recorded once per run for every module that replays it


@dataclass
class Run:
    engines: list[SignalEngine]
    outputs: list[EngineOutput] = field(default_factory=list)

    @property
    def entries(self) -> list[str]:
        return [s.signal_id for o in self.outputs for s in o.signals if s.signal_type == "ENTRY"]

    def fates(self) -> dict[str, str]:
        return {c.candidate_id: c.fate for o in self.outputs for c in o.candidates}

    def details(self, fate: str) -> list[str]:
        return [c.fate_detail for o in self.outputs for c in o.candidates if c.fate == fate]


def replay(capture: Path, settings: Settings, engines: list[SignalEngine]) -> Run:
    """Feed the capture in file order; each engine gets the frames of the symbols its shard owns (one engine
    with the whole shard: a plain replay)."""
    decoder = FrameDecoder()
    run = Run(engines)
    for line in iter_capture([capture]):
        frame = decoder.decode_capture_line(line)
        if frame is None:
            continue
        for engine in engines:
            if engine.shard.owns(frame.symbol):
                engine.market.on_frame(frame)
                out = engine.on_frame(frame)
                if out is not None:
                    run.outputs.append(out)
    return run


def engine(settings: Settings, shard: Shard = WHOLE, **kwargs: object) -> SignalEngine:
    return SignalEngine(settings, Market(MarketConfig.from_settings(settings)), shard=shard, **kwargs)  # type: ignore[arg-type]


class Recorder:
    """A SharedGate that passes everything and remembers what it was asked (the engine's side of the contract);
    ``release_error`` makes every release fail as an unreachable ledger does."""

    def __init__(self, release_error: bool = False) -> None:
        self.reserved: list[tuple[Candidate, int]] = []
        self.released: list[tuple[str, int]] = []
        self.release_error = release_error

    def reserve(self, candidate: Candidate, expires_at: int, correlation: Correlation) -> Decision:
        self.reserved.append((candidate, expires_at))
        return Decision(candidate=candidate)

    def release(self, signal_id: str, at: int) -> bool:
        if self.release_error:
            raise StorageUnavailable("PostgreSQL is unavailable (test)")
        self.released.append((signal_id, at))
        return True


def test_a_passing_gate_sees_every_signal_with_its_expiry_and_its_release(capture: Path) -> None:
    settings = load_settings()
    baseline = replay(capture, settings, [engine(settings)])
    assert len(baseline.entries) >= 3
    gate = Recorder()
    run = replay(capture, settings, [engine(settings, shared_gate=gate)])
    assert run.entries == baseline.entries  # passing everything changes nothing
    assert [c.signal_id for c, _ in gate.reserved] == baseline.entries
    params = OutcomeParams.from_settings(settings)
    for candidate, expires_at in gate.reserved:
        tier = candidate.tier
        assert expires_at == candidate.event_time + params.response_ms[tier] + params.hold_ms[tier]
    finished = {o.signal.signal_id: o for out in run.outputs for o in out.finished}
    assert finished and dict(gate.released) == {
        sid: o.exit_time if o.exit_time is not None else o.as_of for sid, o in finished.items()
    }


def test_an_unreachable_ledger_fails_closed_and_is_counted(capture: Path) -> None:
    settings = load_settings()
    baseline = replay(capture, settings, [engine(settings)])
    with socket.socket() as sock:  # a port nobody listens on: connections are refused at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    db = Database(f"postgresql://tapewatch@127.0.0.1:{port}/tapewatch", connect_timeout=2)
    try:
        shard = engine(settings, shared_gate=RiskLedger(db, RiskParams.from_settings(settings)))
        run = replay(capture, settings, [shard])
    finally:
        db.dispose()
    assert run.entries == []  # not one signal issued unchecked
    fates = run.fates()
    assert [fates[sid] for sid in baseline.entries] == [FATE_SHARED_GATE_UNAVAILABLE] * len(baseline.entries)
    # every candidate the local gate let through (with no signal, no stop-out: no cooldown either) is counted
    unchecked = run.details(FATE_SHARED_GATE_UNAVAILABLE)
    assert shard.counters[FATE_SHARED_GATE_UNAVAILABLE] == len(unchecked) >= len(baseline.entries)
    assert all("unreachable" in d for d in unchecked)


def test_release_errors_are_counted_and_the_engine_goes_on(capture: Path) -> None:
    settings = load_settings()
    gate = Recorder(release_error=True)
    shard = engine(settings, shared_gate=gate)
    run = replay(capture, settings, [shard])
    finished = sum(len(o.finished) for o in run.outputs)
    assert finished >= 1 and gate.released == []
    assert shard.counters["shared_gate_release_errors"] == finished
    assert run.entries == [c.signal_id for c, _ in gate.reserved]


def max_open(run: Run) -> int:
    """The most signals open at once (at any signal's start), over every engine of the run."""
    intervals: list[tuple[int, float]] = []
    for out in run.outputs:
        for outcome in out.finished:
            end = outcome.exit_time if outcome.exit_time is not None else outcome.as_of
            intervals.append((outcome.signal.created, end))
    intervals += [(h.signal.event_time, float("inf")) for e in run.engines for h in e.open.values()]
    assert len(intervals) == len(run.entries)
    return max((sum(1 for s, e in intervals if s <= start < e) for start, _ in intervals), default=0)


@pytest.mark.db
def test_two_shards_share_the_concurrency_cap_through_the_ledger(
    capture: Path, migrated_database_url: str
) -> None:
    # stops and targets far away: signals stay open for their whole hold, so they overlap
    settings = load_settings(
        max_concurrent_signals=1, stop_atr_multiple=10, min_stop_atr_multiple=10, tp1_r=5, tp2_r=10
    )
    alone = replay(capture, settings, [engine(settings, Shard(i, 2)) for i in range(2)])
    assert max_open(alone) == 2  # each shard keeps its own cap: together they exceed it
    db = Database(migrated_database_url)
    try:
        ledgers = [RiskLedger(db, RiskParams.from_settings(settings), shard=f"{i}/2") for i in range(2)]
        shards = [engine(settings, Shard(i, 2), shared_gate=ledgers[i]) for i in range(2)]
        run = replay(capture, settings, shards)
        with db.begin() as conn:
            rows = conn.execute(
                sa.text("SELECT signal_id::text, shard, released_at, symbol FROM risk_reservations")
            ).all()
    finally:
        db.dispose()
    assert max_open(run) == 1
    assert run.entries and set(run.entries) <= set(alone.entries)
    global_rejections = [d for d in run.details("concurrency") if d.endswith("(all shards)")]
    assert global_rejections and all("(1/1)" in d for d in global_rejections)
    assert sum(s.counters["shared_gate_rejected"] for s in shards) == len(global_rejections)
    # one reservation per signal, by the shard that issued it; released when it finished, held while open
    assert sorted(r[0] for r in rows) == sorted(run.entries)
    assert all(r[1] == f"{shard_of(r[3], 2)}/2" for r in rows)
    assert {r[0] for r in rows if r[2] is None} == {sid for e in shards for sid in e.open}


def _candles(closes: list[float], start: int = 1_700_000_000_000 // 60_000 * 60_000) -> list[Candle]:
    return [
        Candle(
            open_time=start + i * 60_000,
            close_time=start + i * 60_000 + 59_999,
            interval="1m",
            open=c,
            close=c,
            high=c,
            low=c,
            volume=1.0,
            trades=1,
            closed=True,
            quote_volume=c,
        )
        for i, c in enumerate(closes)
    ]


def test_other_shards_symbols_are_correlated_through_their_published_closes() -> None:
    settings = load_settings()
    closes = [100 * (1.001 ** (i % 7)) * (1 + 0.0005 * i) for i in range(241)]
    bars = _candles(closes)
    published = {"BUSDT": [(c.open_time, c.close) for c in bars], "EMPTYUSDT": []}
    shard = engine(settings, Shard(0, 2), remote_closes=published.get)
    market = shard.market
    market.series(market.state("AUSDT"), "1m").extend_history(bars)
    now = bars[-1].open_time
    assert shard.correlation("AUSDT", "BUSDT", now) == pytest.approx(1.0)
    assert shard.correlation("AUSDT", "NOPEUSDT", now) is None  # never published: unknown, never rejects
    assert shard.correlation("AUSDT", "EMPTYUSDT", now) is None
    # without the reader, as a single instance: only local symbols
    assert engine(settings).correlation("AUSDT", "BUSDT", now) is None


def test_a_restarted_shard_resumes_only_its_own_signals() -> None:
    settings = load_settings()
    symbols = [f"S{i}USDT" for i in range(12)]
    mine = Shard(1, 3)
    shard = engine(settings, mine)
    signals = [entry(s, 1_700_000_000_000 + i) for i, s in enumerate(symbols)]
    shard.resume([(s, None) for s in signals])
    assert {held.signal.symbol for held in shard.open.values()} == set(mine.select(symbols))
    assert 0 < len(shard.open) < len(symbols)
    assert {c.symbol for c in shard.risk.open_signals} == set(mine.select(symbols))
