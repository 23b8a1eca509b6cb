"""The realtime service writes book checkpoints into its capture; a replay checks its books against them, and
a replay of the capture's later part alone (the earlier hour files pruned) takes its books from them."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import pytest

from realtime.capture import iter_capture
from realtime.replay import run_replay
from realtime.service import FeedService
from realtime.sim.server import SimExchange
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.cli import main
from tapewatch.events import CONTROL_BOOK_CHECKPOINT
from tapewatch.settings import load_settings
from tests.realtime.test_service_sim import run_with, settings_for

pytestmark = [pytest.mark.db, pytest.mark.e2e, pytest.mark.slow]

BOOK_FIELDS = ("update_id", "best_bid", "best_ask", "imbalance_top10")


def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    return path


def _books(final: dict[str, dict[str, object]]) -> dict[str, tuple[object, ...]]:
    return {symbol: tuple(f[k] for k in BOOK_FIELDS) for symbol, f in final.items()}


def test_checkpoints_check_a_whole_replay_and_start_a_replay_of_a_later_part(
    tmp_path: Path, redis_url: str, redis_keys: Keyspace, capsys: pytest.CaptureFixture[str]
) -> None:
    async def scenario() -> FeedService:
        async with SimExchange(port=0, seed=11, symbols=12, speed=1.0) as sim:
            settings = settings_for(sim, tmp_path, redis_keys.prefix, capture_checkpoint_seconds=2)
            return await run_with(sim, settings, redis_url, 9.0)

    service = asyncio.run(scenario())
    live_books = _books(service.market.final())
    assert len(live_books) >= 5
    lines = list(iter_capture([tmp_path / "capture"]))
    marks = [i for i, raw in enumerate(lines) if f'"{CONTROL_BOOK_CHECKPOINT}"'.encode() in raw[:80]]
    written = service.checkpoints
    assert written.written >= 2 and written.books == len(marks)

    # the whole capture: every checkpoint is the replay's own book, none is needed
    whole = run_replay([tmp_path / "capture"], load_settings(), signals=False).summary
    assert (whole["checkpoint_checks"], whole["checkpoint_mismatches"], whole["checkpoint_loads"]) == (
        len(marks),
        0,
        0,
    )
    assert whole["messages"] == service.market.messages and whole["final"] == service.market.final()

    # the capture from the last checkpoint on (its earlier lines pruned): the books come from it, and end
    # where the live ones ended
    last = [i for i in marks if json.loads(lines[i])["recv"] == json.loads(lines[marks[-1]])["recv"]]
    later = lines[last[0] :]
    part = run_replay([_write(tmp_path / "later.jsonl.gz", later)], load_settings(), signals=False).summary
    assert part["checkpoint_loads"] == len(last) and part["checkpoint_mismatches"] == 0
    assert part["snapshot_requests"] == 0 and part["gaps"] == 0 and part["book_mismatches"] == 0
    assert {s: b for s, b in _books(part["final"]).items() if s in live_books} == live_books
    # without the checkpoints, the same lines leave the books waiting for a snapshot that never comes
    bare = [raw for raw in later if f'"{CONTROL_BOOK_CHECKPOINT}"'.encode() not in raw[:80]]
    none = run_replay([_write(tmp_path / "bare.jsonl.gz", bare)], load_settings(), signals=False).summary
    assert all(f["best_bid"] is None for f in none["final"].values())

    # a checkpoint that is not what the replay's book is: counted, and taken (here it is the wrong one: when a
    # bookTicker of that level comes before a diff moves it, the proof finds the book wrong and restarts it, and
    # the next checkpoint, where the live book was synced and this one is not, counts a second mismatch)
    tampered = list(lines)
    first = json.loads(tampered[marks[0]])
    first["data"]["bids"][0][1] += 1.0
    tampered[marks[0]] = json.dumps(first).encode()
    odd = run_replay([_write(tmp_path / "odd.jsonl.gz", tampered)], load_settings(), signals=False).summary
    assert odd["checkpoint_mismatches"] in (1, 2)
    assert odd["checkpoint_checks"] == len(marks) and odd["checkpoint_loads"] == 0
    assert _books(odd["final"]) == live_books
    # the command says so, and exits 1 as for a book check that mismatched
    assert main(["replay", str(tmp_path / "odd.jsonl.gz")]) == 1
    said = capsys.readouterr().out
    differing = odd["checkpoint_mismatches"]
    assert (
        f"book checkpoints of the live run: {odd['checkpoint_checks']} checked ({differing} differing)"
        in said
    )
    assert main(["replay", str(tmp_path / "later.jsonl.gz")]) == 0
    assert f"0 checked (0 differing), {len(last)} taken by a book not synced here" in capsys.readouterr().out
