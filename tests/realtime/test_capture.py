"""The capture writer and reader, on real files: byte-exact round trip of the real recordings, hourly
rotation, appending after a restart, a writer killed with SIGKILL, torn and damaged files, a full queue,
disk errors and bad frames."""

from __future__ import annotations

import dataclasses
import gzip
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import msgspec
import orjson
import pytest

from realtime.capture import (
    MS_PER_HOUR,
    CaptureWriter,
    ClosedFile,
    ReadStats,
    capture_files,
    capture_path,
    count_and_decode_raw,
    iter_capture,
)
from tapewatch.adapters import capture_reader
from tapewatch.errors import CaptureError
from tapewatch.parse import CaptureLine
from tests.helpers import ALL_RECORDINGS, ROOT, USDM_CRYPTOFEED, recording_lines

H = 1_723_158_000_000  # 2024-08-08 23:00:00 UTC, the start of an hour
STREAM = "btcusdt@aggTrade"

_line_decoder = msgspec.json.Decoder(CaptureLine)


def cap_line(recv: int, data: bytes, stream: str = STREAM) -> bytes:
    return b'{"recv":%d,"stream":"%s","data":%s}' % (recv, stream.encode(), data)


def payload(i: int) -> bytes:
    return b'{"e":"aggTrade","i":%d,"p":"58000.10","q":"0.250"}' % i


def cut_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == capture_reader.__name__ and r.levelno == logging.WARNING]


# -- writer: round trip, rotation, reopen -----------------------------------------------------------


def test_real_recordings_round_trip_byte_exact(tmp_path: Path) -> None:
    # The recordings are from three different hours: written one after the other they also roll files.
    recordings = sorted(ALL_RECORDINGS, key=lambda p: _line_decoder.decode(next(recording_lines(p))).recv)
    expected = {p: list(recording_lines(p)) for p in recordings}
    total = sum(len(v) for v in expected.values())
    closed: list[ClosedFile] = []
    with CaptureWriter(tmp_path, max_queue=total + 1, on_file_closed=closed.append) as writer:
        for path in recordings:
            for line in expected[path]:
                cap = _line_decoder.decode(line)
                writer.write(cap.recv, cap.stream, bytes(cap.data))
    stats = writer.stats()
    assert (stats.lines, stats.files, stats.dropped, stats.rejected, stats.errors) == (total, 3, 0, 0, 0)

    outputs = capture_files([tmp_path])
    assert len(outputs) == 3
    for path, out in zip(recordings, outputs, strict=True):
        first = _line_decoder.decode(expected[path][0]).recv
        assert out == capture_path(tmp_path, first)
        written = list(iter_capture([out]))
        # Whole lines are equal, so each line's data text is byte-for-byte the recorded one.
        assert written == expected[path]
        assert [bytes(_line_decoder.decode(x).data) for x in written[:50]] == [
            bytes(_line_decoder.decode(x).data) for x in expected[path][:50]
        ]
        # A cleanly closed file is a standard gzip file.
        assert gzip.decompress(out.read_bytes()) == b"".join(x + b"\n" for x in expected[path])
    assert [(c.path, c.lines, c.rolled) for c in closed] == [
        (out, len(expected[p]), i < 2) for i, (p, out) in enumerate(zip(recordings, outputs, strict=True))
    ]


def test_capture_path_is_utc_hour() -> None:
    assert capture_path(Path("cap"), H) == Path("cap/2024/08/08/23.jsonl.gz")
    assert capture_path(Path("cap"), H + MS_PER_HOUR - 1) == Path("cap/2024/08/08/23.jsonl.gz")
    assert capture_path(Path("cap"), H + MS_PER_HOUR) == Path("cap/2024/08/09/00.jsonl.gz")


def test_hourly_rotation_and_day_change(tmp_path: Path) -> None:
    closed: list[ClosedFile] = []
    frames = [
        (H - 1, payload(0)),  # 22:59:59.999
        (H, payload(1)),  # 23:00
        (H + 1_800_000, payload(2)),  # 23:30
        (H + MS_PER_HOUR, payload(3)),  # next day 00:00
        (H + MS_PER_HOUR - 60_000, payload(4)),  # 23:59: the clock stepped back; stays in the open file
        (H + MS_PER_HOUR + 5, payload(5)),
        (H - 5 * MS_PER_HOUR, payload(6)),  # a big step back: its own hour's file
        (H + MS_PER_HOUR + 7, payload(7)),  # and back to the current hour, appended to its file
    ]
    with CaptureWriter(tmp_path, on_file_closed=closed.append) as writer:
        for recv, data in frames:
            writer.write(recv, STREAM, data)
    f22, f23, f00 = (
        tmp_path / p for p in ("2024/08/08/22.jsonl.gz", "2024/08/08/23.jsonl.gz", "2024/08/09/00.jsonl.gz")
    )
    lines = [cap_line(r, d) for r, d in frames]
    assert list(iter_capture([f22])) == lines[:1]
    assert list(iter_capture([f23])) == lines[1:3]
    assert list(iter_capture([f00])) == [*lines[3:6], lines[7]]
    f18 = tmp_path / "2024/08/08/18.jsonl.gz"
    assert capture_files([tmp_path]) == [f18, f22, f23, f00]
    assert list(iter_capture([f18])) == [lines[6]]
    assert closed == [
        ClosedFile(f22, H - MS_PER_HOUR, 1, True),
        ClosedFile(f23, H, 2, True),
        ClosedFile(f00, H + MS_PER_HOUR, 3, True),
        ClosedFile(f18, H - 5 * MS_PER_HOUR, 1, True),
        ClosedFile(f00, H + MS_PER_HOUR, 1, False),
    ]
    assert writer.stats().files == 5


def test_reopen_within_the_hour_appends_a_gzip_member(tmp_path: Path) -> None:
    with CaptureWriter(tmp_path) as first:
        first.write(H + 1, STREAM, payload(1))
        first.write(H + 2, STREAM, payload(2))
    path = capture_path(tmp_path, H)
    before = path.read_bytes()
    with CaptureWriter(tmp_path) as second:
        second.write(H + 3, STREAM, payload(3))
    after = path.read_bytes()
    assert after.startswith(before) and len(after) > len(before)
    expected = [cap_line(H + i, payload(i)) for i in (1, 2, 3)]
    assert list(iter_capture([path])) == expected
    assert gzip.decompress(after).splitlines() == expected  # two complete members
    assert second.stats().files == 1


def test_periodic_flush_puts_lines_on_disk_while_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    writer = CaptureWriter(tmp_path, flush_interval=1.0, poll_interval=0.005, clock=lambda: now[0])
    try:
        writer.write(H, STREAM, payload(0))
        now[0] = 1.0  # the flush interval has passed
        deadline = time.monotonic() + 5
        while writer.stats().lines == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert writer.stats().lines == 1
        # The open file has no gzip trailer yet; its complete line is readable all the same.
        assert list(iter_capture([capture_path(tmp_path, H)])) == [cap_line(H, payload(0))]
        assert len(cut_warnings(caplog)) == 1
    finally:
        writer.close()


# -- writer: overload, disk errors, bad frames ------------------------------------------------------


def test_full_queue_counts_drops_without_blocking(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    entered, release, left = threading.Event(), threading.Event(), threading.Event()

    def stall(_: ClosedFile) -> None:  # the writer thread hangs here, as on a stalled disk
        entered.set()
        release.wait(60)
        left.set()

    writer = CaptureWriter(tmp_path, max_queue=4, on_file_closed=stall)
    try:
        writer.write(H, STREAM, payload(0))
        writer.write(H + MS_PER_HOUR + 1, STREAM, payload(1))  # rolls the hour: the thread enters stall()
        assert entered.wait(30)
        for i in range(2, 12):
            writer.write(H + MS_PER_HOUR + i, STREAM, payload(i))
        # All ten calls returned while the writer thread was still stuck: none of them waited for it (a
        # write that waited for room would return only after stall() gave up, and ``left`` would be set).
        assert not left.is_set()
        assert writer.stats().dropped == 6
        assert writer.stats().queued == 4
        assert any("queue full" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    finally:
        release.set()
        stats = writer.close(timeout=10)
    assert (stats.lines, stats.dropped) == (6, 6)
    expected = [cap_line(H + MS_PER_HOUR + i, payload(i)) for i in (1, 2, 3, 4, 5)]
    assert list(iter_capture([capture_path(tmp_path, H + MS_PER_HOUR)])) == expected


def test_no_space_left_is_counted_and_capture_continues(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full to produce a real ENOSPC")
    path = capture_path(tmp_path, H)
    path.parent.mkdir(parents=True)
    path.symlink_to("/dev/full")  # every write to the hour file fails with ENOSPC
    with CaptureWriter(tmp_path) as writer:
        writer.write(H, STREAM, payload(0))
        writer.write(H + 1, STREAM, payload(1))
        assert writer.flush(5)
        stats = writer.stats()
        assert (stats.errors, stats.lost, stats.lines) == (1, 2, 0)
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any(str(path) in m and "No space left" in m for m in errors)
        path.unlink()  # space is back
        writer.write(H + 2, STREAM, payload(2))
        assert writer.flush(5)
    assert (writer.stats().lines, writer.stats().errors) == (1, 1)
    assert list(iter_capture([path])) == [cap_line(H + 2, payload(2))]


def test_unwritable_directory_is_counted_and_capture_continues(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "cap"
    target.write_text("a file where the capture directory should be")
    with CaptureWriter(target) as writer:
        writer.write(H, STREAM, payload(0))
        assert writer.flush(5)
        assert (writer.stats().errors, writer.stats().lost) == (1, 1)
        assert any(r.levelno == logging.ERROR and str(target) in r.getMessage() for r in caplog.records)
        target.unlink()
        writer.write(H + 1, STREAM, payload(1))
        assert writer.flush(5)
    assert list(iter_capture([target])) == [cap_line(H + 1, payload(1))]


def test_bad_frames_are_rejected_and_counted(tmp_path: Path) -> None:
    with CaptureWriter(tmp_path) as writer:
        writer.write(H, STREAM, payload(0))
        writer.write(1.5e12, STREAM, payload(1))  # type: ignore[arg-type]
        writer.write(-1, STREAM, payload(2))
        writer.write(H + 3, None, payload(3))  # type: ignore[arg-type]
        writer.write(H + 4, STREAM, b"")
        writer.write(H + 5, STREAM, "not bytes")  # type: ignore[arg-type]
        writer.write(H + 6, ["unhashable"], payload(6))  # type: ignore[arg-type]
        writer.write(H + 7, "rest:/fapi/v1/depth?symbol=BTCUSDT&limit=5", b'{\n  "lastUpdateId": 7\r\n}')
        writer.write(H + 8, STREAM, payload(8))
    assert writer.stats().rejected == 6
    lines = list(iter_capture([tmp_path]))
    assert lines[0] == cap_line(H, payload(0))
    # A pretty-printed body stays one line and the same JSON.
    assert orjson.loads(lines[1]) == {
        "recv": H + 7,
        "stream": "rest:/fapi/v1/depth?symbol=BTCUSDT&limit=5",
        "data": {"lastUpdateId": 7},
    }
    assert lines[2:] == [cap_line(H + 8, payload(8))]


def test_write_after_close_is_dropped(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path)
    writer.write(H, STREAM, payload(0))
    first = writer.close()
    writer.write(H + 1, STREAM, payload(1))
    assert writer.close() == dataclasses.replace(first, dropped=1)
    assert (writer.stats().lines, writer.stats().dropped) == (1, 1)
    assert list(iter_capture([tmp_path])) == [cap_line(H, payload(0))]


# -- a writer killed with SIGKILL -------------------------------------------------------------------

_CHILD = """
import sys, time
from pathlib import Path
from realtime.capture import CaptureWriter
w = CaptureWriter(Path(sys.argv[1]), flush_interval=float(sys.argv[2]), poll_interval=0.01)
i = 0
while True:
    w.write({h} + i, "btcusdt@aggTrade", b'{{"e":"aggTrade","i":%d,"p":"58000.10","q":"0.250"}}' % i)
    print(i, flush=True)
    i += 1
    time.sleep(0.002)
"""


@pytest.mark.slow
def test_killed_writer_leaves_every_flushed_line_readable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flush_interval = 0.2
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD.format(h=H), str(tmp_path), str(flush_interval)],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    written: list[tuple[int, float]] = []  # (i, when the parent learnt it was written)
    try:
        while True:
            row = child.stdout.readline()
            assert row, "writer process ended early"
            written.append((int(row), time.monotonic()))
            if written[-1][1] - written[0][1] > 1.2:
                break
    finally:
        killed_at = time.monotonic()
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert child.returncode == -signal.SIGKILL

    path = capture_path(tmp_path, H)
    stats = ReadStats()
    lines = list(iter_capture([path], stats))
    n = len(lines)
    # What is on disk is a gap-free prefix of what was written, with every line written more than a
    # flush interval (plus a little scheduling slack) before the kill.
    assert lines == [cap_line(H + i, payload(i)) for i in range(n)]
    must_have = max(i for i, at in written if at < killed_at - flush_interval - 0.2)
    assert must_have > 100
    assert n > must_have
    warnings = cut_warnings(caplog)
    assert len(warnings) == 1 and str(path) in warnings[0].getMessage()
    assert stats.torn_files == 1
    with pytest.raises(EOFError):  # the stdlib gives up on such a file; our reader does not
        gzip.decompress(path.read_bytes())

    # A restart within the hour appends a new member after the cut one; both runs' lines are read.
    caplog.clear()
    with CaptureWriter(tmp_path) as restarted:
        restarted.write(H + 500_000, STREAM, payload(500_000))
    assert list(iter_capture([path])) == [*lines, cap_line(H + 500_000, payload(500_000))]
    assert len(cut_warnings(caplog)) == 1


# -- reader ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [1, 5, 10, 0.3, 0.5, 0.9, -9, -8, -1])
def test_reader_on_truncated_gzip_file(tmp_path: Path, caplog: pytest.LogCaptureFixture, keep: float) -> None:
    data = USDM_CRYPTOFEED.read_bytes()
    full = list(recording_lines(USDM_CRYPTOFEED))
    size = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data[:size])
    stats = ReadStats()
    lines = list(iter_capture([cut], stats))
    assert lines == full[: len(lines)]
    if isinstance(keep, float):
        assert 0 < len(lines) < len(full)
        assert stats.skipped_bytes > 0  # the cut fell inside a line, which was skipped
    if keep in (-8, -1):
        assert len(lines) == len(full)  # only the trailer is missing
    warnings = cut_warnings(caplog)
    assert len(warnings) == 1 and str(cut) in warnings[0].getMessage()
    assert (stats.files, stats.lines, stats.torn_files) == (1, len(lines), 1)


def _member(lines: list[bytes], finish: bool) -> bytes:
    comp = zlib.compressobj(6, zlib.DEFLATED, 31)
    body = comp.compress(b"".join(x + b"\n" for x in lines))
    return body + comp.flush(zlib.Z_FINISH if finish else zlib.Z_SYNC_FLUSH)


@pytest.mark.parametrize(("chunk", "max_out"), [(1, 7), (2, 1 << 23), (3, 5), (61, 64), (1 << 20, 1 << 23)])
def test_reader_resumes_after_members_cut_by_kills(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    chunk: int,
    max_out: int,
) -> None:
    # Small read and output sizes put member boundaries everywhere relative to the reads.
    monkeypatch.setattr(capture_reader, "_CHUNK", chunk)
    monkeypatch.setattr(capture_reader, "_MAX_OUT", max_out)
    runs = [[cap_line(H + 100 * r + i, payload(i)) for i in range(30)] for r in range(4)]
    path = tmp_path / "x.jsonl.gz"
    # killed run, clean run, killed run, killed run still being written
    path.write_bytes(b"".join(_member(run, finish=r == 1) for r, run in enumerate(runs)))
    assert list(iter_capture([path])) == [x for run in runs for x in run]
    assert len(cut_warnings(caplog)) == 1


def test_reader_resumes_after_a_member_cut_mid_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A writer killed inside a write() leaves its member cut at any byte, not on a flush point; the
    # restarted writer's member follows. Its header is recognised, so its lines are all read.
    a = [cap_line(H + i, payload(i)) for i in range(300)]
    b = [cap_line(H + 1000 + i, payload(i)) for i in range(20)]
    torn = _member(a, finish=False)
    for n, cut in enumerate([1, 2, 9, *range(10, len(torn), len(torn) // 40)]):
        path = capture_path(tmp_path / str(n), H)
        path.parent.mkdir(parents=True)
        path.write_bytes(torn[:cut])
        with CaptureWriter(tmp_path / str(n)) as writer:
            for i in range(20):
                writer.write(H + 1000 + i, STREAM, payload(i))
        caplog.clear()
        lines = list(iter_capture([path]))
        head = lines[: len(lines) - len(b)]
        assert head == a[: len(head)], cut
        assert lines[len(head) :] == b, cut
        assert len(cut_warnings(caplog)) == 1


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_reader_skips_damaged_bytes_and_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(capture_reader, "_CHUNK", chunk)
    a, b, c = ([cap_line(H + 1000 * k + i, payload(i)) for i in range(200)] for k in range(3))
    damaged = bytearray(_member(b, finish=True))
    for off in range(len(damaged) // 2, len(damaged) // 2 + 40):
        damaged[off] ^= 0x5A
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(_member(a, True) + bytes(damaged) + _member(c, True) + b"\x00" * 16)
    stats = ReadStats()
    lines = list(iter_capture([path], stats))
    assert lines[: len(a)] == a
    # The lines of b before the damage are kept (the damage is half way through its compressed bytes).
    assert lines[len(a) : len(a) + 20] == b[:20]
    assert lines[-len(c) :] == c
    warnings = cut_warnings(caplog)
    assert len(warnings) == 1 and stats.torn_files == 1 and stats.damaged >= 1
    assert "lines in them were lost" in warnings[0].getMessage()
    assert "every complete line was read" not in warnings[0].getMessage()


def test_the_warning_says_lines_were_lost_only_when_bytes_were_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Two runs of the writer (a restart within the hour): two members, each flushed a line at a time.
    path = capture_path(tmp_path, H)
    runs = [[cap_line(H + 1000 * r + i, payload(i)) for i in range(300)] for r in range(2)]
    for run in runs:
        with CaptureWriter(tmp_path) as writer:
            for line in run:
                cap = _line_decoder.decode(line)
                writer.write(cap.recv, cap.stream, bytes(cap.data))
    whole = path.read_bytes()
    second = whole.index(capture_reader.MEMBER_HEADER, 1)

    def read(data: bytes) -> tuple[list[bytes], ReadStats, str]:
        path.write_bytes(data)
        caplog.clear()
        stats = ReadStats()
        lines = list(iter_capture([path], stats))
        (warning,) = cut_warnings(caplog)
        return lines, stats, warning.getMessage()

    # Damaged in the middle of the first member: lines are lost, and the warning says so.
    damaged = bytearray(whole)
    for off in range(second // 2, second // 2 + 8):
        damaged[off] ^= 0x5A
    lines, stats, message = read(bytes(damaged))
    assert lines[-300:] == runs[1] and len([x for x in lines if x in runs[0]]) < 300
    assert stats.damaged == 1
    assert str(path) in message and "is damaged" in message and "lines in them were lost" in message
    assert "every complete line was read" not in message

    # A truncated copy (torn last line) and a writer killed before its trailer: nothing was skipped.
    for cut in (len(whole) - 40, second - 8):
        lines, stats, message = read(whole[:cut])
        assert lines == [*runs[0], *runs[1]][: len(lines)] and stats.damaged == 0
        assert "cut short" in message and "every complete line was read" in message and "lost" not in message


def test_reader_garbage_between_members(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a, c = [cap_line(H, payload(0))], [cap_line(H + 1, payload(1))]
    path = tmp_path / "g.jsonl.gz"
    path.write_bytes(_member(a, True) + b"not gzip at all" + _member(c, True))
    assert list(iter_capture([path])) == a + c
    warnings = cut_warnings(caplog)
    assert len(warnings) == 1 and "lines in them were lost" in warnings[0].getMessage()


def test_reader_plain_jsonl(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = [cap_line(H + i, payload(i)) for i in range(3)]
    whole = tmp_path / "whole.jsonl"
    whole.write_bytes(good[0] + b"\n\n" + good[1] + b"\n" + good[2])  # blank line, no final newline
    assert list(iter_capture([whole])) == good
    assert cut_warnings(caplog) == []
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(b"".join(x + b"\n" for x in good) + good[0][:25])
    assert list(iter_capture([torn])) == good
    warnings = cut_warnings(caplog)
    assert len(warnings) == 1 and "torn.jsonl" in warnings[0].getMessage()


def test_reader_errors(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match=r"not found: .*missing\.jsonl\.gz"):
        iter_capture([tmp_path / "missing.jsonl.gz"])  # checked before anything is read
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_bytes(b'{"recv":1,"stream":"x","data":{}}\n')
    with pytest.raises(CaptureError, match=r"fake\.jsonl\.gz is not a gzip file"):
        list(iter_capture([fake]))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CaptureError, match="no capture files"):
        iter_capture([empty])
    assert list(iter_capture([])) == []
    blank = tmp_path / "blank.jsonl.gz"
    blank.write_bytes(b"")  # created by a writer that was killed before its first flush
    assert list(iter_capture([blank])) == []


def test_directory_expands_recursively_sorted_by_path(tmp_path: Path) -> None:
    for n, recv in enumerate([H + MS_PER_HOUR, H - 20 * MS_PER_HOUR, H]):
        with CaptureWriter(tmp_path) as writer:
            writer.write(recv, STREAM, payload(n))
    (tmp_path / "README.md").write_text("not a capture")
    files = capture_files([tmp_path])
    assert files == sorted(files) and len(files) == 3
    assert [orjson.loads(x)["recv"] for x in iter_capture([tmp_path])] == [
        H - 20 * MS_PER_HOUR,
        H,
        H + MS_PER_HOUR,
    ]


def test_files_are_read_in_event_order_whatever_order_they_are_given_in(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for n, recv in enumerate([H + MS_PER_HOUR, H - 20 * MS_PER_HOUR, H]):
        with CaptureWriter(tmp_path) as writer:
            writer.write(recv, STREAM, payload(n))
            writer.write(recv + 1, STREAM, payload(n))
    early, mid, late = capture_files([tmp_path])
    plain = tmp_path / "plain.jsonl"  # a hand-made plain file, between the first two
    plain.write_bytes(cap_line(H - MS_PER_HOUR, payload(9)) + b"\n")

    def reordered() -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if r.levelno == logging.INFO and "not given in event order" in r.getMessage()
        ]

    assert capture_files([early, mid, late]) == [early, mid, late] and reordered() == []
    assert capture_files([late, tmp_path / "2024", plain]) == [early, plain, mid, late, late]
    (note,) = reordered()  # one line for the whole list
    assert str(early) in note.getMessage()
    recvs = [orjson.loads(x)["recv"] for x in iter_capture([mid, late, early])]
    assert recvs == sorted(recvs) and len(recvs) == 6

    # A file whose first line cannot be read stays right after the file given before it, and a .gz file that
    # is not gzip is refused while the files are ordered, before any line is read.
    empty = tmp_path / "empty.jsonl.gz"
    empty.write_bytes(b"")
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_bytes(cap_line(H - 30 * MS_PER_HOUR, payload(0)) + b"\n")
    assert capture_files([late, empty, early]) == [early, late, empty]
    assert capture_files([empty, late, early]) == [empty, early, late]
    read: list[bytes] = []
    with pytest.raises(CaptureError, match="is not a gzip file"):
        read.extend(iter_capture([late, fake, early]))
    assert read == []


def test_count_and_decode_raw_on_a_real_recording(tmp_path: Path) -> None:
    expected = list(recording_lines(USDM_CRYPTOFEED))
    result = count_and_decode_raw([USDM_CRYPTOFEED])
    assert result == (len(expected), sum(map(len, expected)), 0)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(expected[0] + b"\n{not json\n")
    assert count_and_decode_raw([bad]).malformed == 1
