"""The ``tapewatch replay`` command line, in-process (``tapewatch.cli.main``) and once as the installed console
script: exit codes and messages for bad input, the ``--json`` summary, determinism, the bookTicker proof
failing the run, and files given out of event order."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tapewatch.cli import main
from tapewatch.events import CONTROL_ENGINE_START, ENGINE_START_VERSION
from tests.helpers import (
    altered_ticker,
    recording_lines,
    require_native_sides,
    restored_logging,
    sim_hour_file,
    write_gz,
)

SUMMARY_KEYS = {"messages", "seconds", "messages_per_second", "malformed", "gaps", "resyncs", "book_checks",
                "book_mismatches", "candidates", "signals", "final"}  # fmt: skip
FINAL_KEYS = {"update_id", "best_bid", "best_ask", "imbalance_top10", "large_buys_300s", "large_sells_300s",
              "quote_volume_300s", "vwap_1h"}  # fmt: skip
TIMINGS = ("seconds", "messages_per_second")
# what the reader met (files, torn lines): the same market whichever pieces it came in
#: The recording's first line is the service's control:instruments (the tick sizes of its exchangeInfo fetch):
#: written by the service, not received, so no message.
SERVICE_LINES = 1
READ = ("files_read", "torn_files", "torn_lines", "skipped_bytes", "damaged_stretches", "capture_damaged")


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three minutes of three simulated symbols: one hour file, books synced by snapshot + diffs."""
    return sim_hour_file(tmp_path_factory)


@pytest.fixture(autouse=True)
def _settings_and_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The command reads the environment for its settings and configures logging for a process (root handler on
    # stderr, which capsys captures); undo the latter after each test.
    monkeypatch.delenv("TAPEWATCH_CONFIG_FILE", raising=False)
    monkeypatch.setenv("TAPEWATCH_LOG_LEVEL", "INFO")
    monkeypatch.setenv("TAPEWATCH_LOG_FORMAT", "text")
    with restored_logging():
        yield


def replay(capsys: pytest.CaptureFixture[str], *args: Path | str) -> tuple[int, str, str]:
    code = main(["replay", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def replay_json(capsys: pytest.CaptureFixture[str], *files: Path) -> tuple[int, dict[str, Any], str]:
    code, out, err = replay(capsys, "--json", *files)
    return code, json.loads(out.strip().splitlines()[-1]), err


def untimed(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k not in TIMINGS and k not in READ}


def test_a_missing_file_exits_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere" / "00.jsonl.gz"
    code, out, err = replay(capsys, missing)
    assert code == 2 and out == ""
    assert str(missing) in err and "not found" in err


def test_a_gz_file_that_is_not_gzip_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_bytes(b'{"recv":1,"stream":"btcusdt@aggTrade","data":{}}\n')
    code, out, err = replay(capsys, "--json", fake)
    assert code == 2 and out == ""
    assert f"{fake} is not a gzip file" in err


def test_the_json_summary_has_every_documented_key_and_two_runs_agree(
    capture: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, first, _ = replay_json(capsys, capture)
    assert code == 0
    assert first.keys() >= SUMMARY_KEYS
    assert first["messages"] == sum(1 for _ in recording_lines(capture)) - SERVICE_LINES
    assert (first["malformed"], first["gaps"], first["resyncs"], first["book_mismatches"]) == (0, 0, 0, 0)
    assert first["book_checks"] > 1000  # the proof ran: the books were compared with bookTicker
    assert set(first["final"]) == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    for symbol, features in first["final"].items():
        assert features.keys() >= FINAL_KEYS, symbol
        assert features["best_bid"] < features["best_ask"]
    _, second, _ = replay_json(capsys, capture)
    assert untimed(second) == untimed(first)


def test_a_torn_last_line_is_skipped_with_a_warning(
    capture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = list(recording_lines(capture))
    whole = write_gz(tmp_path / "whole.jsonl.gz", lines)
    torn = write_gz(tmp_path / "torn.jsonl.gz", lines[:-1], tail=lines[-1][: len(lines[-1]) // 2])
    _, expected, _ = replay_json(capsys, write_gz(tmp_path / "head.jsonl.gz", lines[:-1]))
    code, summary, err = replay_json(capsys, torn)
    assert code == 0
    assert untimed(summary) == untimed(expected) and summary["malformed"] == 0
    assert summary["messages"] == len(lines) - 1 - SERVICE_LINES
    assert (summary["torn_lines"], summary["capture_damaged"]) == (1, False)  # the newest file's last line
    (warning,) = [x for x in err.splitlines() if "WARNING" in x]
    assert str(torn) in warning and "every complete line was read" in warning
    _, out, err = replay(capsys, whole)
    assert "WARNING" not in err and out.startswith(f"{len(lines) - SERVICE_LINES} messages")


def test_a_book_ticker_that_disagrees_with_the_book_fails_the_replay(
    capture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, good, _ = replay_json(capsys, capture)
    code, bad, _ = replay_json(capsys, altered_ticker(capture, tmp_path / "altered.jsonl.gz"))
    assert code == 1
    assert bad["book_mismatches"] == 1
    # the book it proved wrong is restarted: a resync, one more snapshot asked for (none in this capture, so the
    # book stays out of sync and its later diffs are not compared)
    assert (bad["resyncs"], bad["snapshot_requests"]) == (1, good["snapshot_requests"] + 1)
    assert bad["book_checks"] < good["book_checks"]
    code, out, _ = replay(capsys, tmp_path / "altered.jsonl.gz")
    assert code == 1 and "(1 mismatches)" in out


def test_files_given_out_of_event_order_replay_as_in_order(
    capture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = list(recording_lines(capture))
    p1 = write_gz(tmp_path / "p1.jsonl.gz", lines[: len(lines) // 2])
    p2 = write_gz(tmp_path / "p2.jsonl.gz", lines[len(lines) // 2 :])
    _, whole, _ = replay_json(capsys, capture)
    code, forward, err = replay_json(capsys, p1, p2)
    assert code == 0 and "not given in event order" not in err
    code, backward, err = replay_json(capsys, p2, p1)
    assert code == 0
    assert untimed(backward) == untimed(forward) == untimed(whole)
    assert backward["out_of_order"] == 0 and backward["book_checks"] > 1000
    (note,) = [x for x in err.splitlines() if "not given in event order" in x]
    assert "INFO" in note and note.index(str(p1)) < note.index(str(p2))


def test_the_console_script_prints_the_same_summary(
    capture: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = Path(sys.executable).with_name("tapewatch")
    done = subprocess.run(
        [str(script), "replay", "--json", str(capture)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    _, in_process, _ = replay_json(capsys, capture)
    assert untimed(json.loads(done.stdout.strip().splitlines()[-1])) == untimed(in_process)


@pytest.mark.parametrize("command", ["replay", "backtest"])
def test_lines_of_which_none_decode_exit_2_with_a_warning(
    command: str, capture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A text file that is no capture (/etc/shadow, say) is read line by line and none decodes: the summary is
    printed, but the run proves nothing and exits 2 as for any bad file, saying why. One bad line among good
    ones is an ordinary replay (counted ``malformed``)."""
    text = tmp_path / "shadow"
    text.write_text("root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n")
    code = main([command, "--json", str(text)])
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["messages"], summary["malformed"]) == (2, 2)
    assert code == 2
    (warning,) = [x for x in err.splitlines() if "none of the" in x]
    assert "WARNING" in warning and f"none of the 2 lines in {text} decoded (malformed 2)" in warning
    mixed = write_gz(tmp_path / "mixed.jsonl.gz", [b"not json", *list(recording_lines(capture))[:50]])
    code = main([command, "--json", str(mixed)])
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and (summary["messages"], summary["malformed"]) == (51 - SERVICE_LINES, 1)
    assert "none of the" not in err and "input is empty" not in err


@pytest.mark.parametrize("command", ["replay", "backtest"])
@pytest.mark.parametrize("content", [b"", gzip.compress(b"", mtime=0)], ids=["zero-byte", "empty-gzip"])
def test_an_empty_capture_is_replayed_with_a_warning(
    command: str, content: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "00.jsonl.gz"
    empty.write_bytes(content)
    code = main([command, str(empty)])
    out, err = capsys.readouterr()
    assert code == 0 and out.startswith("0 messages")
    (warning,) = [x for x in err.splitlines() if "WARNING" in x]
    assert f"no lines to replay in {empty}: the input is empty" in warning


def test_a_path_that_is_not_a_regular_file_exits_2_saying_so(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = replay(capsys, "/dev/null")
    assert code == 2 and out == ""
    assert "/dev/null is not a regular file" in err and "not found" not in err  # it exists


def test_a_line_that_is_not_json_is_reported_with_its_file(
    capture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = list(recording_lines(capture))
    first = write_gz(tmp_path / "p1.jsonl.gz", lines[:100])
    second = write_gz(tmp_path / "p2.jsonl.gz", [*lines[100:150], b"not json", *lines[150:200]])
    code, summary, err = replay_json(capsys, first, second)
    assert code == 0 and (summary["messages"], summary["malformed"]) == (201 - SERVICE_LINES, 1)
    (warning,) = [x for x in err.splitlines() if "frame rejected (malformed_json)" in x]
    assert f"on {second}:" in warning and "<capture>" not in warning and str(first) not in warning


def engine_start_line(recv: int, parameters: dict[str, Any]) -> bytes:
    """A ``control:engine_start`` line as `tapewatch run` captures it, with an empty engine state."""
    data = {"version": ENGINE_START_VERSION, "parameters": parameters, "tuning": 0, "state": {}}
    return json.dumps({"recv": recv, "stream": CONTROL_ENGINE_START, "data": data}).encode()


@pytest.mark.parametrize("command", ["replay", "backtest"])
def test_an_engine_start_naming_a_parameter_this_release_does_not_tune_is_replayed(
    command: str, capture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A capture from another release may carry a tunable parameter this one does not know: it is dropped
    with one warning naming it, and the known ones are still validated and laid over."""
    lines = list(recording_lines(capture))
    recv = json.loads(lines[0])["recv"]
    parameters = {"min_large_trades": 7, "spoof_ratio_min": 2.0}
    started = write_gz(tmp_path / "00.jsonl.gz", [engine_start_line(recv, parameters), *lines])
    code = main([command, "--json", str(started)])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["engine_starts"] == [
        {"recv": recv, "open_signals": 0, "tuning": 0, "parameters": {"min_large_trades": 7}}
    ]
    (warning,) = [x for x in err.splitlines() if "does not tune" in x]
    assert "WARNING" in warning and "spoof_ratio_min" in warning and "min_large_trades" not in warning
    assert "no engine start line" not in err
    # a known name with a bad value is still refused
    bad = write_gz(tmp_path / "bad.jsonl.gz", [engine_start_line(recv, {"min_large_trades": -1}), *lines])
    assert main([command, "--json", str(bad)]) != 0
    capsys.readouterr()


def test_a_capture_without_an_engine_start_says_the_engine_starts_empty(
    capture: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = replay(capsys, "--json", capture)
    assert code == 0
    (note,) = [x for x in err.splitlines() if "no engine start line" in x]
    assert "INFO" in note and "started empty" in note and "settings given" in note


def test_books_only_gives_the_same_market_state_and_says_what_the_native_path_took(
    capture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--books-only`` replays without the signal engine: the same books, proof and features as the full
    replay (no candidates), depth diffs and bookTickers on the native path where it was built; a mismatch still
    fails it."""
    require_native_sides()
    _, full, _ = replay_json(capsys, capture)
    code, out, _ = replay(capsys, "--books-only", "--json", capture)
    books = json.loads(out.strip().splitlines()[-1])
    assert code == 0
    assert books["native_lines"] > books["messages"] // 2 and full["native_lines"] == 0
    engine_only = ("candidates", "signals", "exits", "candidate_fates", "not_evaluated", "native_lines")
    assert {k: v for k, v in untimed(books).items() if k not in engine_only} == {
        k: v for k, v in untimed(full).items() if k not in engine_only
    }
    assert books["candidates"] == 0
    code, out, _ = replay(capsys, "--books-only", capture)
    assert code == 0 and f"books only (no signal engine): {books['native_lines']} depth/bookTicker" in out
    code, bad, _ = replay(capsys, "--books-only", altered_ticker(capture, tmp_path / "altered.jsonl.gz"))
    assert code == 1 and "(1 mismatches)" in bad
