"""The replay's malloc thresholds (realtime.malloc_tuning): set where the C library is glibc, and harmless to
what a replay computes."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

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
