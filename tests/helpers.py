"""Shared test helpers: paths of the real recordings and small event builders."""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.events import DepthSnapshot, DepthUpdate

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
RECORDINGS = SHARED / "data" / "binance-futures"
FIXTURES = SHARED / "data" / "binance-fixtures" / "nautilus"
USDM_CRYPTOFEED = RECORDINGS / "cryptofeed-usdm-20210722-sushi-ctk.jsonl.gz"
COINM_CRYPTOFEED = RECORDINGS / "cryptofeed-coinm-20210722-7sym.jsonl.gz"
USDM_HFTBACKTEST = RECORDINGS / "hftbacktest-usdm-20240808-btcusdt.jsonl.gz"
ALL_RECORDINGS = (USDM_CRYPTOFEED, COINM_CRYPTOFEED, USDM_HFTBACKTEST)


def recording_lines(path: Path) -> Iterator[bytes]:
    with gzip.open(path, "rb") as fh:
        for line in fh:
            yield line.rstrip(b"\n")


def diff(
    first: int,
    final: int,
    prev: int,
    bids: list[tuple[float, float]] | None = None,
    asks: list[tuple[float, float]] | None = None,
    symbol: str = "BTCUSDT",
    time: int = 1_000,
) -> DepthUpdate:
    return DepthUpdate(symbol, time, time, first, final, prev, bids or [], asks or [])


def snapshot(
    last_update_id: int,
    bids: list[tuple[float, float]] | None = None,
    asks: list[tuple[float, float]] | None = None,
) -> DepthSnapshot:
    return DepthSnapshot(
        last_update_id,
        bids if bids is not None else [(100.0, 1.0), (99.0, 2.0)],
        asks if asks is not None else [(101.0, 1.0), (102.0, 3.0)],
    )


def require_native_sides() -> None:
    """Skip a test of the native book sides where tapewatch._sides could not be built (no C compiler at
    install); fail it under CI, whose machine builds it."""
    from tapewatch import book_sides

    if not book_sides.NATIVE:
        message = "tapewatch._sides is not built (no C compiler at install): only the Python sides are tested"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def shared_sim_capture(
    factory: pytest.TempPathFactory, minutes: float, *, seed: int, symbols: int, episode_rate: float
) -> Path:
    """The directory of a sim recording (``var/capture/`` and ``episodes.json``), recorded once per test run and
    shared by every module, on every xdist worker, that asks for the same one (a 40-minute recording takes a
    minute or more of a loaded machine). The workers of one run share the parent of their base temp dirs;
    a lock file makes the first one record while the others wait, then read."""
    import fcntl

    from realtime.sim.record import record

    base = factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared-sim-captures"
    root.mkdir(parents=True, exist_ok=True)
    out = root / f"sim-{minutes:g}min-seed{seed}-{symbols}sym-episodes{episode_rate:g}"
    with (root / f"{out.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "recorded").exists():
            shutil.rmtree(out, ignore_errors=True)  # a recording a killed worker left half-written
            record(out, int(minutes * 60_000), seed=seed, symbols=symbols, episode_rate_scale=episode_rate)
            (out / "recorded").touch()
    return out


def signal_capture(factory: pytest.TempPathFactory, *, symbols: int = 12) -> Path:
    """The ``var/capture`` directory of the sim recording the signal tests replay (:func:`shared_sim_capture`):
    20 minutes of 12 symbols with episodes planted at 12 times the simulator's rate, so a short tape (a replay
    takes seconds) gives the engine five signals to issue, follow and finish."""
    return shared_sim_capture(factory, 20, seed=3, symbols=symbols, episode_rate=12.0) / "var" / "capture"


def sim_hour_file(
    factory: pytest.TempPathFactory, minutes: float = 3, *, seed: int = 5, symbols: int = 3
) -> Path:
    """The one hour file of a short sim recording (:func:`shared_sim_capture`, no extra episodes), as
    ``sim --record`` writes it: recorded once per test run, read-only for the tests."""
    recording = shared_sim_capture(factory, minutes, seed=seed, symbols=symbols, episode_rate=1.0)
    (path,) = sorted(recording.rglob("*.jsonl.gz"))
    return path


@contextmanager
def restored_logging() -> Iterator[None]:
    """Undo what a CLI command does to the process's logging: it configures it for a process (root handlers on
    stderr, the level), which must not leak into the next test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def write_gz(path: Path, lines: list[bytes], tail: bytes = b"") -> Path:
    path.write_bytes(gzip.compress(b"".join(x + b"\n" for x in lines) + tail, mtime=0))
    return path


def altered_ticker(capture: Path, path: Path) -> Path:
    """``capture`` written to ``path`` with one late bookTicker whose bid quantity disagrees with the book: a
    ticker late in the capture that carries the final update id of a depth diff of its symbol, so the proof
    compares it with the book (a ticker inside a diff's range would not be compared)."""
    lines = list(recording_lines(capture))
    diff_ids: dict[str, set[int]] = {}
    for raw in lines:
        obj = json.loads(raw)
        if obj["stream"].endswith("@depth@100ms"):
            diff_ids.setdefault(obj["data"]["s"], set()).add(obj["data"]["u"])
    at = next(
        i
        for i in range(len(lines) * 3 // 4, len(lines))
        if (obj := json.loads(lines[i]))["stream"].endswith("@bookTicker")
        and obj["data"]["u"] in diff_ids[obj["data"]["s"]]
    )
    ticker = json.loads(lines[at])["data"]
    qty = f'"B":"{ticker["B"]}"'.encode()
    assert lines[at].count(qty) == 1
    wrong = lines[at].replace(qty, f'"B":"{float(ticker["B"]) + 1:.3f}"'.encode())
    return write_gz(path, [*lines[:at], wrong, *lines[at + 1 :]])


def lose_redis_data(client: redis.Redis, keys: Keyspace) -> None:
    """What a Redis restart without persistence does to a test's keys (only them: the Redis is shared)."""
    found = list(client.scan_iter(match=keys.pattern, count=1000))
    assert found, "nothing to lose"
    client.delete(*found)
