"""Replay gives the same summary on the native book sides (tapewatch/_sides.c) as on the pure-Python ones:
the real recordings (books, bookTicker proof, final features) and a sim capture with planted episodes (the
signal engine's candidates and signals too). Only the timings may differ."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from realtime.replay import replay
from realtime.sim.record import record
from tapewatch import book_sides
from tests.helpers import ALL_RECORDINGS, require_native_sides

TIMINGS = {"seconds", "messages_per_second"}


@pytest.fixture(autouse=True)
def native() -> None:
    require_native_sides()


def _replay_with(sides: str, paths: list[Path], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    factory = book_sides.native_sides if sides == "native" else book_sides.py_sides
    with monkeypatch.context() as m:
        m.setattr(book_sides, "new_sides", factory)
        summary = replay(paths)
    return {k: v for k, v in summary.items() if k not in TIMINGS}


@pytest.mark.parametrize("recording", ALL_RECORDINGS, ids=lambda p: p.name)
def test_recordings_replay_the_same_on_both_book_sides(
    recording: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    native = _replay_with("native", [recording], monkeypatch)
    python = _replay_with("python", [recording], monkeypatch)
    assert native == python
    assert native["book_checks"] > 0 and native["book_mismatches"] == 0 and native["final"]


def test_a_sim_capture_gives_the_same_signals_on_both_book_sides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record(tmp_path, 15 * 60_000, seed=5, symbols=10, episode_rate_scale=4.0)
    paths = [tmp_path / "var" / "capture"]
    native = _replay_with("native", paths, monkeypatch)
    python = _replay_with("python", paths, monkeypatch)
    assert native == python
    assert native["candidates"] > 0 and native["book_checks"] > 0 and native["book_mismatches"] == 0
