"""``tapewatch sim --record`` writes the book checkpoints a live run writes, equal to the books a replay builds."""

from __future__ import annotations

import gzip
from pathlib import Path

from realtime.capture import iter_capture
from realtime.replay import run_replay
from realtime.sim.record import record
from tapewatch.events import CONTROL_BOOK_CHECKPOINT
from tapewatch.settings import load_settings

MARK = f'"stream":"{CONTROL_BOOK_CHECKPOINT}"'.encode()
BOOK_FIELDS = ("update_id", "best_bid", "best_ask", "imbalance_top10")


def test_recorded_checkpoints_are_the_replayed_books_and_start_a_replay_of_a_later_part(
    tmp_path: Path,
) -> None:
    result = record(tmp_path, 4 * 60_000, seed=4, symbols=4, checkpoint_s=60)
    lines = list(iter_capture(result.files))
    marks = [i for i, line in enumerate(lines) if MARK in line[:80]]
    assert len(marks) >= 4 * 3  # 4 synced books at each of the minutes after the first
    whole = run_replay(result.files, load_settings(), signals=False).summary
    assert (whole["checkpoint_checks"], whole["checkpoint_mismatches"], whole["checkpoint_loads"]) == (
        len(marks),
        0,
        0,
    )
    # from the last checkpoint on, alone: the same books at the end
    later = tmp_path / "later.jsonl.gz"
    later.write_bytes(gzip.compress(b"\n".join(lines[marks[-4] :]) + b"\n"))
    part = run_replay([later], load_settings(), signals=False).summary
    assert part["checkpoint_loads"] == 4 and part["snapshot_requests"] == 0
    books = {s: tuple(f[k] for k in BOOK_FIELDS) for s, f in whole["final"].items()}
    assert {s: tuple(f[k] for k in BOOK_FIELDS) for s, f in part["final"].items()} == books
    # the same arguments give the same bytes, checkpoints included
    again = record(tmp_path / "again", 4 * 60_000, seed=4, symbols=4, checkpoint_s=60)
    assert [p.read_bytes() for p in again.files] == [p.read_bytes() for p in result.files]
