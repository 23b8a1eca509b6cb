"""What ``replay`` and ``backtest`` say about a capture they could not read whole, or whose books disagree
with the captured bookTicker: the reader's counts in the summary, exit 1 for bytes that did not inflate (lines
lost; a torn line, which a writer killed mid-line leaves, is only a warning); a ``.gz`` file that is not gzip refused
before any file is replayed; the sim recorder's full-flush points, which bound what damage costs."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from realtime.capture import ReadStats, capture_files, iter_capture
from tapewatch.cli import main
from tapewatch.errors import CaptureError
from tests.helpers import altered_ticker, recording_lines, restored_logging, sim_hour_file, write_gz


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three minutes of three simulated symbols in one hour file, as `sim --record` writes it."""
    return sim_hour_file(tmp_path_factory)


@pytest.fixture(autouse=True)
def _settings_and_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("TAPEWATCH_CONFIG_FILE", raising=False)
    monkeypatch.setenv("TAPEWATCH_LOG_LEVEL", "INFO")
    monkeypatch.setenv("TAPEWATCH_LOG_FORMAT", "text")
    with restored_logging():
        yield


def run(capsys: pytest.CaptureFixture[str], command: str, *args: Path | str) -> tuple[int, str, str]:
    code = main([command, *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(
    capsys: pytest.CaptureFixture[str], command: str, *files: Path
) -> tuple[int, dict[str, Any], str]:
    code, out, err = run(capsys, command, "--json", *files)
    return code, json.loads(out.strip().splitlines()[-1]), err


def damaged_copy(capture: Path, path: Path) -> Path:
    """``capture`` with 64 zero bytes in the middle of its compressed data."""
    data = bytearray(capture.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(64)
    path.write_bytes(bytes(data))
    return path


def test_sim_record_writes_flush_points_so_damage_costs_about_a_second(capture: Path, tmp_path: Path) -> None:
    """A live capture has a full-flush point every second; a recording must too, or 64 damaged bytes cost the
    rest of the hour (or inflate to garbage lines up to its end)."""
    total = sum(1 for _ in recording_lines(capture))
    stats = ReadStats()
    lines = list(iter_capture([damaged_copy(capture, tmp_path / "damaged.jsonl.gz")], stats))
    assert stats.damaged >= 1
    garbage = 0
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            garbage += 1
    # about one second of three symbols is lost (a few hundred lines of ~180 s), and little garbage is read
    assert total - len(lines) < total // 50, (total, len(lines))
    assert garbage < 200, garbage


@pytest.mark.parametrize("command", ["replay", "backtest"])
def test_a_damaged_capture_is_reported_and_exits_1(
    command: str, capture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, good, err = run_json(capsys, command, capture)
    assert code == 0 and "ERROR" not in err
    assert (good["files_read"], good["torn_lines"], good["damaged_stretches"]) == (1, 0, 0)
    assert good["capture_damaged"] is False
    damaged = damaged_copy(capture, tmp_path / "damaged.jsonl.gz")
    code, bad, err = run_json(capsys, command, damaged)
    assert code == 1
    assert bad["damaged_stretches"] >= 1 and bad["torn_files"] == 1 and bad["capture_damaged"] is True
    (error,) = [x for x in err.splitlines() if "ERROR" in x]
    assert "the capture is damaged" in error and "lines were lost" in error
    code, out, _ = run(capsys, command, damaged)
    assert code == 1 and "damaged stretches " in out and "damaged stretches 0" not in out


@pytest.mark.parametrize("command", ["replay", "backtest"])
def test_a_torn_line_is_a_warning_wherever_it_is(
    command: str, capture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = list(recording_lines(capture))
    half = len(lines) // 2
    torn = lines[half - 1][: len(lines[half - 1]) // 2]
    older, newer = lines[: half - 1], lines[half:]
    # the newest file ends on a torn line (a writer killed mid-line): every line before it was read
    p1 = write_gz(tmp_path / "p1.jsonl.gz", older)
    p2 = write_gz(tmp_path / "p2.jsonl.gz", newer[:-1], tail=newer[-1][:40])
    code, summary, err = run_json(capsys, command, p1, p2)
    assert code == 0 and "ERROR" not in err
    assert (summary["torn_lines"], summary["capture_damaged"]) == (1, False)
    # the older file ends on a torn line and the capture goes on (a writer killed mid-line, then restarted in
    # the next hour): the torn line is counted and warned about, every complete line was read, no damage
    q1 = write_gz(tmp_path / "q1.jsonl.gz", older, tail=torn)
    q2 = write_gz(tmp_path / "q2.jsonl.gz", newer)
    code, summary, err = run_json(capsys, command, q2, q1)  # listed out of order: the newest is q2
    assert code == 0 and "ERROR" not in err and "the capture is damaged" not in err
    assert (summary["torn_lines"], summary["damaged_stretches"], summary["capture_damaged"]) == (1, 0, False)
    (warning,) = [x for x in err.splitlines() if "WARNING" in x and "capture file" in x]
    assert str(q1) in warning and "every complete line was read" in warning


@pytest.mark.parametrize("command", ["replay", "backtest"])
def test_a_writer_killed_mid_block_then_restarted_in_the_same_hour_is_not_damage(
    command: str, capture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A writer killed inside a flush interval leaves its gzip member cut short mid-block; the restarted
    writer appends a new member to the same hour file (O_APPEND). The reader reads every complete line of
    both and warns that the file was cut short: not damage, exit 0, the torn line still counted."""
    data = capture.read_bytes()
    lines = list(recording_lines(capture))
    member = zlib.compressobj(5, zlib.DEFLATED, 31)
    appended = member.compress(b"".join(x + b"\n" for x in lines[-2000:])) + member.flush()
    killed = tmp_path / "2026" / "01" / "05" / "00.jsonl.gz"
    killed.parent.mkdir(parents=True)
    killed.write_bytes(data[: len(data) * 6 // 10] + appended)
    code, summary, err = run_json(capsys, command, killed)
    assert code == 0 and "ERROR" not in err, err
    assert summary["torn_files"] == 1 and summary["torn_lines"] >= 1
    assert (summary["damaged_stretches"], summary["capture_damaged"]) == (0, False)
    (warning,) = [x for x in err.splitlines() if "WARNING" in x and "capture file" in x]
    assert "cut short" in warning and "every complete line was read" in warning


def test_backtest_fails_on_a_book_mismatch_as_replay_does(
    capture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    altered = altered_ticker(capture, tmp_path / "altered.jsonl.gz")
    for command in ("backtest", "replay"):
        code, summary, err = run_json(capsys, command, altered)
        assert code == 1, command
        assert summary["book_mismatches"] == 1 and summary["capture_damaged"] is False
        (error,) = [x for x in err.splitlines() if "ERROR" in x]
        assert f"1 of {summary['book_checks']} book checks mismatched" in error
        code, out, _ = run(capsys, command, altered)
        assert code == 1 and "(1 mismatches)" in out, command


def test_a_gz_file_that_is_not_gzip_later_in_the_list_is_refused_before_reading(
    capture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_bytes(b'{"recv":1,"stream":"btcusdt@aggTrade","data":{}}\n')
    message = f"{fake} is not a gzip file (starts with b'{{\"r'); capture files are gzip"
    with pytest.raises(CaptureError) as refused:
        capture_files([capture, fake])  # ordering the files reads their first lines: refused there
    assert str(refused.value) == message
    with pytest.raises(CaptureError):
        iter_capture([capture, fake])  # before the first line of the good file is yielded
    for command in ("replay", "backtest"):
        code, out, err = run(capsys, command, "--json", capture, fake)
        assert code == 2 and out == "" and message in err, command
