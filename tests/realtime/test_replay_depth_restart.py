"""``tapewatch replay`` restarts a book at a captured ``control:depth_restart`` line, as the live run did."""

from __future__ import annotations

import gzip
from pathlib import Path

from realtime.replay import run_replay
from tests.tapewatch.test_depth_restart import SYMBOL, live_market, restart_capture


def test_replay_applies_the_captured_depth_restart(tmp_path: Path) -> None:
    for name, with_marker in (("with.jsonl.gz", True), ("without.jsonl.gz", False)):
        (tmp_path / name).write_bytes(gzip.compress(b"\n".join(restart_capture(with_marker)) + b"\n"))
    live = live_market().final()
    summary = run_replay([tmp_path / "with.jsonl.gz"]).summary
    assert summary["final"] == live and summary["final"][SYMBOL]["best_bid"] == 100.0
    assert summary["malformed"] == 0 and summary["rejected"] == {}
    assert (
        summary["snapshot_requests"] == 1
    )  # the restart's (live fetched it; replay reads it from the capture)
    # a capture without the marker: the restart's snapshot comes on a synced book and is dropped as late
    old = run_replay([tmp_path / "without.jsonl.gz"]).summary
    assert old["final"] == live and old["snapshot_requests"] == 0 and old["resyncs"] == 0
