"""A replay runs with fewer collector passes (realtime.replay.fewer_collections) and leaves the collector as it
found it, even when the replay fails."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

import realtime.replay as replay_module
from realtime.capture import ReadStats, iter_capture_batches
from realtime.replay import REPLAY_GC_THRESHOLD, replay
from tapewatch.errors import CaptureError
from tests.helpers import USDM_CRYPTOFEED


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    saved = gc.get_threshold()
    yield saved
    gc.set_threshold(*saved)


def _recording_reader(
    seen: list[tuple[int, int, int]], fail_after: int | None = None
) -> Callable[[Iterable[Path]], Iterator[list[bytes]]]:
    """The real capture reader, noting the collector's thresholds while the replay reads its lines (one batch of
    a line each, so a note per line)."""

    def reader(paths: Iterable[Path], stats: ReadStats | None = None) -> Iterator[list[bytes]]:
        n = 0
        for batch in iter_capture_batches(paths, stats):
            for line in batch:
                seen.append(gc.get_threshold())
                if fail_after is not None and n >= fail_after:
                    raise CaptureError("torn in the middle")
                n += 1
                yield [line]

    return reader


def test_a_replay_raises_the_first_threshold_and_puts_it_back(
    thresholds: tuple[int, int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    gc.set_threshold(700, 11, 12)
    seen: list[tuple[int, int, int]] = []
    monkeypatch.setattr(replay_module, "iter_capture_batches", _recording_reader(seen))
    summary = replay([USDM_CRYPTOFEED], signals=False)
    assert summary["messages"] == len(seen) > 1000 and summary["book_checks"] > 0
    assert set(seen) == {(REPLAY_GC_THRESHOLD, 11, 12)}  # the older generations' thresholds untouched
    assert gc.get_threshold() == (700, 11, 12)


def test_a_higher_threshold_is_never_lowered_and_a_failed_replay_restores_it(
    thresholds: tuple[int, int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    gc.set_threshold(REPLAY_GC_THRESHOLD * 2, 10, 10)
    seen: list[tuple[int, int, int]] = []
    monkeypatch.setattr(replay_module, "iter_capture_batches", _recording_reader(seen, fail_after=5))
    with pytest.raises(CaptureError):
        replay([USDM_CRYPTOFEED], signals=False)
    assert set(seen) == {(REPLAY_GC_THRESHOLD * 2, 10, 10)}
    gc.set_threshold(700, 10, 10)
    with pytest.raises(CaptureError):
        replay([USDM_CRYPTOFEED], signals=False)
    assert gc.get_threshold() == (700, 10, 10)
