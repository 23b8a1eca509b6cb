"""A capture replays to the live run's signals on its own: the realtime service captures one
``control:engine_start`` line as its engine starts (the tunable parameters in force, the applied tuning, the
engine state restored from PostgreSQL), and a replay starts its engine there the same way."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa

from realtime.backtest import backtest
from realtime.capture import capture_files, iter_capture
from realtime.signal_desk import open_dispatch, start_engine
from tapewatch.adapters.db import Database
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import AsyncRedisState
from tapewatch.adapters.tuning_store import applied_record, apply_proposal, with_active_parameters
from tapewatch.engine import SignalEngine
from tapewatch.events import CONTROL_ENGINE_START, Instruments
from tapewatch.market import Market, MarketConfig
from tapewatch.outcome import Outcome
from tapewatch.parse import FrameDecoder
from tapewatch.quality import TIERS
from tapewatch.settings import Settings
from tapewatch.signal import Signal
from tapewatch.streams import Kind
from tests.adapters.signal_builders import entry, loss, triggered, win
from tests.helpers import signal_capture

pytestmark = pytest.mark.slow


class Lines:
    """A capture writer that keeps its lines (the capture's line format)."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def write(self, recv_ms: int, stream: str, payload: bytes) -> None:
        self.lines.append(
            b'{"recv":%d,"stream":%s,"data":%s}' % (recv_ms, json.dumps(stream).encode(), payload)
        )


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield signal_capture(tmp_path_factory)


def live_run(engine: SignalEngine, market: Market, capture: Path) -> tuple[list[Signal], dict[str, Outcome]]:
    """The capture's frames through ``market`` and ``engine`` as the live service feeds them: the ENTRY
    signals made and every outcome (finished, or so far for those still open)."""
    decoder = FrameDecoder()
    made: list[Signal] = []
    outcomes: dict[str, Outcome] = {}

    def feed(frame: Any) -> None:
        if isinstance(frame.event, Instruments):  # the service gives its engine the tick sizes it fetched
            engine.set_instruments(frame.event)
            return
        if frame.kind is not Kind.CONTROL or frame.symbol:
            market.on_frame(frame)
        out = engine.on_frame(frame)
        if out is not None:
            made.extend(s for s in out.signals if s.signal_type == "ENTRY")
            outcomes.update({o.signal.signal_id: o for o in out.finished})

    for line in iter_capture(capture_files([capture])):
        frame = decoder.decode_capture_line(line)
        if frame is None:
            for pending in decoder.take_pending():
                feed(pending)
        else:
            feed(frame)
    for sid, held in engine.open.items():
        outcomes[sid] = held.tracker.outcome()
    return made, outcomes


def fates(signals: list[Signal], outcomes: dict[str, Outcome]) -> dict[str, tuple[Any, ...]]:
    out = {}
    for s in signals:
        o = outcomes.get(s.signal_id)
        out[s.signal_id] = (
            s.symbol,
            s.direction,
            s.priority,
            None if o is None else (str(o.state), o.exit_time),
        )
    return out


def listed_fates(result: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    out = {}
    for s in result["signal_list"]:
        o = s["outcome"]
        out[s["signal_id"]] = (
            s["symbol"],
            s["direction"],
            s["priority"],
            None if o is None else (o["state"], o["exit_time"]),
        )
    return out


def test_a_restarted_tuned_run_replays_to_its_live_signals(
    capture: Path, db: Database, redis_url: str, redis_keys: Keyspace, tmp_path: Path
) -> None:
    plain_settings = Settings()
    plain = backtest([capture], plain_settings)
    listed = plain["signal_list"]
    assert len(listed) >= 4
    first = min(s["event_time"] for s in listed)
    symbols = sorted({s["symbol"] for s in listed})
    # what a run before the restart left in PostgreSQL: open signals on the capture's symbols, a tier's daily
    # cap used up, a stop-out (cooldown) on a symbol, and an applied tuning
    t = first - 600_000
    open_signals = [entry(symbols[0], t - 1000), entry(symbols[1], t - 2000)]
    stopped = entry(symbols[2], t - 3000)
    counted = [entry(f"CAP{i}USDT", t - 10_000 - i * 1000) for i in range(25)]
    with db.begin() as conn:  # a proposal, applied as `tapewatch tuning apply` does
        proposal_id = conn.execute(
            sa.text(
                "INSERT INTO tuning_proposals (window_start, split_at, window_end, status, parameters, "
                "current_parameters, in_sample, out_of_sample, current_in_sample, current_out_of_sample, "
                "note, applied_parameters) VALUES (0, 1, 2, 'proposed', '{\"min_large_trades\": 5}', "
                "'{\"min_large_trades\": 3}', '{}', '{}', '{}', '{}', 'better', '{}') RETURNING id"
            )
        ).scalar_one()
    record = apply_proposal(db, proposal_id, actor="alice", settings=plain_settings)
    redis = AsyncRedisState.from_url(redis_url, keys=redis_keys)
    try:
        dispatch = open_dispatch(plain_settings, db, redis)
        dispatch.store.save_signals([*open_signals, stopped, *counted])
        for s in open_signals:
            dispatch.store.save_outcome(triggered(s))
        dispatch.store.save_outcome(loss(stopped, after=1000))
        for s in counted:
            dispatch.store.save_outcome(win(s))
        # the live run: settings with the applied tuning (as `tapewatch run` loads them), a fresh engine,
        # start_engine as realtime/main.py calls it (restore from PostgreSQL, the line captured)
        tuned = with_active_parameters(db, plain_settings)[0]
        assert tuned.min_large_trades == 5 and applied_record(tuned) == record.id
        market = Market(MarketConfig.from_settings(tuned))
        engine = SignalEngine(tuned, market)
        lines = Lines()
        state = start_engine(engine, dispatch, lines, recv_ms=0)
    finally:
        asyncio.run(redis.aclose())
    assert len(state.open) == 2 and any(n > 0 for n in state.cooldowns.values())
    assert max(state.day_counts[max(state.day_counts)].get(tier, 0) for tier in TIERS) >= 20
    made, outcomes = live_run(engine, market, capture)
    live = fates(made, outcomes)
    assert live != listed_fates(plain)  # the restore and the tuning change what the run signals

    (start,) = lines.lines
    line = json.loads(start)
    assert line["stream"] == CONTROL_ENGINE_START and line["data"]["tuning"] == record.id
    assert line["data"]["parameters"]["min_large_trades"] == 5
    # the live run's capture: its engine start line, then what it received
    captured = tmp_path / "run" / "00.jsonl.gz"
    captured.parent.mkdir()
    body = b"".join(line + b"\n" for line in iter_capture(capture_files([capture])))
    captured.write_bytes(gzip.compress(start + b"\n" + body))

    replayed = backtest([captured], plain_settings)  # plain settings: the capture carries the rest
    assert listed_fates(replayed) == live
    assert replayed["engine_starts"] == [
        {"recv": 0, "open_signals": 2, "tuning": record.id, "parameters": {"min_large_trades": 5}}
    ]
    # the restored open signals are followed to their end as live followed them
    for s in open_signals:
        got = [o for o in outcomes.values() if o.signal.signal_id == s.signal_id]
        assert got, s.signal_id
    # ... but they were issued before the capture: the metrics and open_at_end count only the signals the
    # replay issued, the restored ones are counted apart
    views = [s["outcome"] for s in replayed["signal_list"] if s["outcome"] is not None]
    assert replayed["metrics"]["signals_generated"] == sum(1 for o in views if o["finished"])
    assert replayed["metrics"]["total_pnl"] == pytest.approx(
        sum(o["pnl_r"] for o in views if o["finished"] and o["pnl_r"] is not None), abs=0.01
    )
    assert replayed["open_at_end"] == sum(1 for o in views if not o["finished"])
    restored_done = sum(1 for s in open_signals if outcomes[s.signal_id].finished)
    assert restored_done >= 1  # the case that matters: a restored signal finishes during the replay
    assert (replayed["restored_finished"], replayed["restored_open"]) == (
        restored_done,
        len(open_signals) - restored_done,
    )
    # an explicit setting of the replay still wins over the captured parameters ("what if")
    what_if = backtest([captured], Settings(min_large_trades=3))
    assert what_if["engine_starts"][0]["parameters"] == {}


def test_a_capture_without_an_engine_start_replays_as_before(capture: Path) -> None:
    result = backtest([capture], Settings())
    assert result["engine_starts"] == []
    assert result["rejected"].get("unknown_stream", 0) == 0


def test_the_engine_start_state_round_trips() -> None:
    """The state is captured with msgspec and read back to the same value (floats exactly)."""
    from tapewatch.engine_restore import EngineState, OpenEntry

    s = entry("BTCUSDT", 1_760_000_000_000)
    state = EngineState(open=[OpenEntry(signal=s, outcome=triggered(s))], day_counts={20_000: {"HIGH": 3}})
    assert msgspec.json.decode(msgspec.json.encode(state), type=EngineState) == state


def test_a_signal_finished_before_a_restart_and_restored_by_it_counts_once(
    capture: Path, tmp_path: Path
) -> None:
    """A live run finished a signal but was stopped before its outcome reached PostgreSQL: the next run
    restored it open and followed it again. The backtest counts it once, as the last engine left it."""
    from realtime.replay import run_replay
    from tapewatch.engine_restore import EngineState, OpenEntry

    plain = run_replay([capture], Settings())
    done = sorted(plain.finished, key=lambda o: o.exit_time or 0)
    assert done, "the capture must finish a signal"
    first = done[0]
    assert first.exit_time is not None
    body = list(iter_capture(capture_files([capture])))
    cut = next(i for i, line in enumerate(body) if json.loads(line)["recv"] > first.exit_time + 5_000)
    # the second run starts after the first finished the signal, with the signal restored open (triggered)
    signal = next(s for s in plain.signals if s.signal_id == first.signal.signal_id)
    state = EngineState(open=[OpenEntry(signal=signal, outcome=triggered(signal))])
    start = Lines()
    start.write(
        json.loads(body[cut])["recv"],
        CONTROL_ENGINE_START,
        msgspec.json.encode(
            {
                "version": 1,
                "parameters": {},
                "tuning": 0,
                "state": msgspec.json.decode(msgspec.json.encode(state)),
            }
        ),
    )
    captured = tmp_path / "00.jsonl.gz"
    captured.write_bytes(
        gzip.compress(b"".join(line + b"\n" for line in [*body[:cut], *start.lines, *body[cut:]]))
    )

    result = backtest([captured], Settings())
    assert [s["open_signals"] for s in result["engine_starts"]] == [1]
    listed = [s for s in result["signal_list"] if s["signal_id"] == first.signal.signal_id]
    assert len(listed) == 1
    views = [s["outcome"] for s in result["signal_list"] if s["outcome"] is not None]
    finished = [o for o in views if o["finished"]]
    # every finished signal of the list once in the metrics, and the restored one in open_at_end or the
    # metrics, never both
    assert result["metrics"]["signals_generated"] == len(finished)
    assert result["open_at_end"] == len(views) - len(finished)
    assert result["restored_finished"] == 0 and result["restored_open"] == 0
