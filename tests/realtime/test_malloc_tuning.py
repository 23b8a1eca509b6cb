"""The replay's malloc thresholds (realtime.malloc_tuning): set where the C library is glibc, and harmless to
what a replay computes."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from types import SimpleNamespace

import pytest

from realtime import malloc_tuning
from tests.helpers import ROOT, USDM_CRYPTOFEED

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")

_CHILD = """
import json, sys
from realtime.malloc_tuning import keep_freed_memory
from realtime.replay import replay
from tapewatch.settings import Settings
kept = keep_freed_memory() if sys.argv[1] == "set" else False
summary = replay([sys.argv[2]], Settings(), signals=False)
print(json.dumps({"kept": kept, "summary": {k: v for k, v in summary.items() if "second" not in k}}))
"""


def _replay(mode: str) -> dict[str, object]:
    """A replay in a process of its own (the thresholds are the process's), with or without them set."""
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(USDM_CRYPTOFEED)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@glibc
def test_the_thresholds_are_set_under_glibc_and_the_replay_is_the_same() -> None:
    tuned, default = _replay("set"), _replay("default")
    assert tuned["kept"] is True and default["kept"] is False
    assert tuned["summary"] == default["summary"]


def test_another_c_library_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """musl and the others: False, and mallopt is not called."""
    monkeypatch.setattr(malloc_tuning.platform, "libc_ver", lambda: ("", ""))
    monkeypatch.setattr(malloc_tuning.ctypes, "CDLL", lambda *a: pytest.fail("mallopt called"))
    assert malloc_tuning.keep_freed_memory() is False


def test_a_c_library_that_cannot_be_asked_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """platform.libc_ver reads the interpreter's binary where it cannot ask: an error there is no crash."""

    def unreadable() -> tuple[str, str]:
        raise OSError("cannot read the interpreter")

    monkeypatch.setattr(malloc_tuning.platform, "libc_ver", unreadable)
    assert malloc_tuning.keep_freed_memory() is False


@glibc
def test_a_refused_threshold_is_said_and_the_other_still_set(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """mallopt answering 0 for one setting (glibc answers 1 to every call this makes; another version might
    not): that setting is logged by name, the other still set, and the call returns False."""
    calls: list[tuple[int, int]] = []

    def mallopt(param: int, value: int) -> int:
        calls.append((param, value))
        return 0 if param == malloc_tuning.M_MMAP_THRESHOLD else 1

    monkeypatch.setattr(malloc_tuning.ctypes, "CDLL", lambda *a: SimpleNamespace(mallopt=mallopt))
    assert malloc_tuning.keep_freed_memory() is False
    assert [p for p, _ in calls] == [malloc_tuning.M_MMAP_THRESHOLD, malloc_tuning.M_TRIM_THRESHOLD]
    assert "M_MMAP_THRESHOLD" in caplog.text and "M_TRIM_THRESHOLD" not in caplog.text
