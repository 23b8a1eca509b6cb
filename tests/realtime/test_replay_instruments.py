"""Stops and targets on the tick grid, live and in replay: the service captures the tick sizes of each exchangeInfo
fetch (``control:instruments``) and gives them to its engine there; a replay applies the captured line at the
same place, so it rounds as the live run did. A capture without the line (older ones) replays unrounded, counted
and logged once."""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from realtime.capture import capture_files, iter_capture
from realtime.replay import ReplayResult, run_replay
from tapewatch.events import CONTROL_INSTRUMENTS
from tapewatch.settings import Settings
from tests.helpers import signal_capture

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield signal_capture(tmp_path_factory)  # recorded once per run for every module that replays it


@pytest.fixture(scope="module")
def replayed(capture: Path) -> ReplayResult:
    """The capture replayed as recorded, once for the tests that read it."""
    return run_replay([capture], Settings())


def _lines(capture: Path) -> list[bytes]:
    return list(iter_capture(capture_files([capture])))


def _on_grid(price: float, tick: str) -> bool:
    """The price as published (its shortest repr: what JSON carries) is an exact multiple of the tick."""
    return Decimal(repr(price)) % Decimal(tick) == 0


def test_a_sim_capture_replays_to_signals_on_the_tick_grid(capture: Path, replayed: ReplayResult) -> None:
    lines = _lines(capture)
    head = orjson.loads(lines[0])
    assert head["stream"] == CONTROL_INSTRUMENTS
    ticks: dict[str, str] = head["data"]["tick_sizes"]
    result = replayed
    entries = [s for s in result.signals if s.signal_type == "ENTRY"]
    assert len(entries) >= 4
    assert result.engine is not None and result.engine.counters["plans_unrounded"] == 0
    for s in entries:
        tick = ticks[s.symbol]
        prices = (s.entry_price, s.stop_loss, s.take_profit_1, s.take_profit_2)
        assert all(_on_grid(p, tick) for p in prices), (s.symbol, tick, prices)
    # not a trivially coarse grid: the prices carry the tick's decimals
    assert any(not _on_grid(s.stop_loss, str(Decimal(ticks[s.symbol]) * 10)) for s in entries)
    assert result.summary["messages"] == len(lines) - 1  # the line is the service's, not a received message


def test_a_capture_without_the_line_replays_unrounded_counted_and_logged_once(
    capture: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lines = [line for line in _lines(capture) if orjson.loads(line)["stream"] != CONTROL_INSTRUMENTS]
    old = tmp_path / "old" / "00.jsonl.gz"
    old.parent.mkdir()
    old.write_bytes(gzip.compress(b"".join(line + b"\n" for line in lines)))
    caplog.set_level(logging.WARNING, logger="tapewatch.engine")
    result = run_replay([old], Settings())
    entries = [s for s in result.signals if s.signal_type == "ENTRY"]
    assert entries and result.engine is not None
    assert result.engine.counters["plans_unrounded"] == len(entries)
    warned = [r for r in caplog.records if "no tick sizes known" in r.getMessage()]
    assert len(warned) == 1
    ticks = orjson.loads(_lines(capture)[0])["data"]["tick_sizes"]
    # the ATR stop of an unrounded plan is off the grid (the defect: a price Binance rejects)
    assert any(not _on_grid(s.stop_loss, ticks[s.symbol]) for s in entries)


def test_a_symbol_the_line_does_not_list_is_not_rounded_and_is_logged_once(
    capture: Path, replayed: ReplayResult, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lines = _lines(capture)
    first = replayed
    symbol = next(s.symbol for s in first.signals if s.signal_type == "ENTRY")
    head = orjson.loads(lines[0])
    del head["data"]["tick_sizes"][symbol]
    partial = tmp_path / "partial" / "00.jsonl.gz"
    partial.parent.mkdir()
    partial.write_bytes(gzip.compress(b"".join(line + b"\n" for line in [orjson.dumps(head), *lines[1:]])))
    caplog.set_level(logging.WARNING, logger="tapewatch.engine")
    result = run_replay([partial], Settings())
    unlisted = [s for s in result.signals if s.signal_type == "ENTRY" and s.symbol == symbol]
    assert result.engine is not None and result.engine.counters["plans_unrounded"] == len(unlisted) >= 1
    warned = [r for r in caplog.records if f"no tick size known for {symbol}" in r.getMessage()]
    assert len(warned) == 1
