"""A damaged byte in a capture costs one flush interval (about a second), not the rest of the hour.

The capture writer ends each periodic flush with Z_FULL_FLUSH, so the reader restarts inflating at the
flush point after the damage. Files written with Z_SYNC_FLUSH (before) keep the old recovery: the lines
before the damage, then the next gzip member. Real files from the real writer, real zlib."""

from __future__ import annotations

import gzip
import itertools
import logging
import zlib
from pathlib import Path
from typing import cast

import msgspec
import pytest
from zlib_ng import zlib_ng

from realtime.capture import CaptureWriter, ReadStats, capture_path, iter_capture
from tapewatch.adapters import capture_reader
from tapewatch.adapters.capture_resume import FLUSH_MARKER, Resume, find_resume, flush_points
from tapewatch.parse import CaptureLine
from tests.helpers import USDM_HFTBACKTEST, recording_lines

GROUPS = 9  # flush intervals in the test files
PER_GROUP = 150  # lines per interval

_line_decoder = msgspec.json.Decoder(CaptureLine)
ZLIB_NG_ERROR = cast(type[Exception], zlib_ng.error)  # its stub types it as an instance


def _groups() -> list[list[bytes]]:
    lines = list(itertools.islice(recording_lines(USDM_HFTBACKTEST), GROUPS * PER_GROUP))
    return [lines[g * PER_GROUP : (g + 1) * PER_GROUP] for g in range(GROUPS)]


def _text(lines: list[bytes]) -> bytes:
    return b"".join(x + b"\n" for x in lines)


def _write_with_flushes(directory: Path, groups: list[list[bytes]], *, flush_last: bool = True) -> Path:
    """An hour file from the capture writer, flushed after each group (one member with a trailer); with
    ``flush_last`` False the last group goes straight into the final block at close."""
    with CaptureWriter(directory, max_queue=GROUPS * PER_GROUP + 1) as writer:
        for g, group in enumerate(groups):
            for line in group:
                cap = _line_decoder.decode(line)
                writer.write(cap.recv, cap.stream, bytes(cap.data))
            if flush_last or g < len(groups) - 1:
                assert writer.flush(30)
    (path,) = {capture_path(directory, _line_decoder.decode(g[0]).recv) for g in groups}
    return path


def _sync_flushed_member(groups: list[list[bytes]]) -> bytes:
    """What the writer wrote before full flushes: Z_SYNC_FLUSH after each group."""
    comp = zlib.compressobj(5, zlib.DEFLATED, 31)
    body = b"".join(comp.compress(_text(g)) + comp.flush(zlib.Z_SYNC_FLUSH) for g in groups)
    return body + comp.flush(zlib.Z_FINISH)


def _inflate_error(data: bytes) -> str | None:
    """zlib's error for ``data`` (the start of one gzip member), None if it inflates."""
    try:
        zlib_ng.decompressobj(31).decompress(data)
    except ZLIB_NG_ERROR as exc:
        return str(exc)
    return None


def _fails_inside(data: bytes, lo: int, hi: int, *, noticed_by: int | None = None) -> tuple[int, bytes]:
    """The first byte in [lo, hi) that, flipped, makes zlib fail inside the deflate data (not only at the
    CRC check, which no reader can place), before ``noticed_by`` if given: its offset and the damaged copy.
    """
    for off in range(lo, hi):
        damaged = bytearray(data)
        damaged[off] ^= 0xFF
        error = _inflate_error(bytes(damaged[:noticed_by]))
        if error is not None and "check" not in error:
            return off, bytes(damaged)
    raise AssertionError(f"no byte in [{lo}, {hi}) breaks the deflate data")


def _bad_block_type(data: bytes, at: int) -> bytes:
    # A flush point is byte aligned, so the next block's 3 header bits start this byte: BTYPE 11 is invalid.
    damaged = bytearray(data)
    damaged[at] |= 0b110
    return bytes(damaged)


def _read(path: Path, caplog: pytest.LogCaptureFixture) -> tuple[list[bytes], ReadStats, list[str]]:
    caplog.clear()
    stats = ReadStats()
    lines = list(iter_capture([path], stats))
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == capture_reader.__name__ and r.levelno == logging.WARNING
    ]
    return lines, stats, warnings


def _assert_damage_reported(stats: ReadStats, warnings: list[str], path: Path) -> None:
    assert (stats.damaged, stats.torn_files) == (1, 1)
    assert len(warnings) == 1 and str(path) in warnings[0]
    assert "lines in them were lost" in warnings[0] and "every complete line was read" not in warnings[0]


# -- writer ----------------------------------------------------------------------------------------


def test_every_writer_flush_point_restarts_inflation(tmp_path: Path) -> None:
    groups = _groups()
    path = _write_with_flushes(tmp_path, groups)
    data = path.read_bytes()
    assert gzip.decompress(data) == _text([x for g in groups for x in g])  # still one standard member
    points = flush_points(data)
    assert len(points) == GROUPS  # one full flush per writer.flush(), then the final block and trailer
    for g, at in enumerate(points):
        # No reference reaches back past a flush point, and a flush point ends a whole line.
        raw = zlib_ng.decompressobj(-15)
        rest = raw.decompress(data[at:])
        assert raw.eof and len(raw.unused_data) == 8  # the gzip trailer
        assert rest == _text([x for group in groups[g + 1 :] for x in group])


# -- reader: files with full flushes ----------------------------------------------------------------


@pytest.mark.parametrize("group", [0, GROUPS // 2, GROUPS - 1])
def test_a_damaged_byte_loses_only_its_flush_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, group: int
) -> None:
    groups = _groups()
    path = _write_with_flushes(tmp_path, groups)
    data = path.read_bytes()
    points = [len(capture_reader.MEMBER_HEADER) + 2, *flush_points(data)]  # where each interval starts
    begin, end = points[group], points[group + 1]
    # zlib may notice the damage only past the interval's end; the reader places it all the same.
    off, damaged = _fails_inside(data, (begin + end) // 2, end - len(FLUSH_MARKER))
    assert begin < off < end
    path.write_bytes(damaged)
    lines, stats, warnings = _read(path, caplog)
    # Exactly the lines of the damaged interval are lost; every line before and after it is read.
    assert lines == [x for g, lines_g in enumerate(groups) if g != group for x in lines_g]
    _assert_damage_reported(stats, warnings, path)

    # Damage right at a flush point (the first bytes of the interval) loses the same lines.
    path.write_bytes(_bad_block_type(data, begin))
    assert _read(path, caplog)[0] == lines


def test_a_damaged_flush_marker_loses_the_next_interval_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    groups = _groups()
    path = _write_with_flushes(tmp_path, groups)
    data = bytearray(path.read_bytes())
    group = GROUPS // 2
    end = flush_points(bytes(data))[group]
    data[end - 2] ^= 0xFF  # NLEN no longer matches LEN: the flush point after the interval is gone
    path.write_bytes(bytes(data))
    lines, stats, warnings = _read(path, caplog)
    assert lines == [x for g, lines_g in enumerate(groups) if g not in (group, group + 1) for x in lines_g]
    _assert_damage_reported(stats, warnings, path)


@pytest.mark.parametrize("chunk", [7, 1000])
def test_small_reads_keep_the_damaged_intervals_lines_already_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    # Reads smaller than an interval: the resume point lies reads ahead of the damaged one, and lines of
    # the damaged interval before the damaged read were handed out already (its own lines, in order).
    # Every line after the interval is read. (Had zlib noticed the damage only past the interval's end,
    # in a later read, lines inflated from damaged bytes would have been handed out too.)
    monkeypatch.setattr(capture_reader, "_CHUNK", chunk)
    groups = _groups()
    path = _write_with_flushes(tmp_path, groups)
    data = path.read_bytes()
    points = flush_points(data)
    group = GROUPS // 2
    begin, end = points[group - 1], points[group]
    path.write_bytes(_fails_inside(data, begin + 1, end - len(FLUSH_MARKER), noticed_by=end)[1])
    lines, stats, warnings = _read(path, caplog)
    before = [x for g in groups[:group] for x in g]
    after = [x for g in groups[group + 1 :] for x in g]
    kept = lines[len(before) : len(lines) - len(after)]
    assert lines[: len(before)] == before and lines[len(lines) - len(after) :] == after
    assert kept == groups[group][: len(kept)] and len(kept) < PER_GROUP
    _assert_damage_reported(stats, warnings, path)


def test_damage_in_the_last_interval_loses_the_rest_of_the_member_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # No flush point follows: the lines before the damage are read, then the next member (a restart).
    groups = _groups()
    path = _write_with_flushes(tmp_path, groups[:-1], flush_last=False)
    data = path.read_bytes()
    last = flush_points(data)[-1]  # the last group went into the final block, after this flush point
    damaged = _fails_inside(data, last + 10, len(data))[1]
    restart = _write_with_flushes(tmp_path / "restart", groups[-1:]).read_bytes()
    path.write_bytes(damaged + restart)
    lines, stats, warnings = _read(path, caplog)
    before = [x for g in groups[:-2] for x in g]
    kept = lines[len(before) : len(lines) - PER_GROUP]
    assert lines[: len(before)] == before and lines[len(lines) - PER_GROUP :] == groups[-1]
    assert kept == groups[-2][: len(kept)] and len(kept) < PER_GROUP
    _assert_damage_reported(stats, warnings, path)


def test_a_bad_crc_loses_nothing_and_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Damage zlib only sees at the trailer cannot be placed: every line is read (as before), the file is
    # reported damaged, and no flush point is taken for a place to resume (no line twice, none lost).
    groups = _groups()
    path = _write_with_flushes(tmp_path, groups)
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # in the CRC-32
    path.write_bytes(bytes(data))
    lines, stats, warnings = _read(path, caplog)
    assert lines == [x for g in groups for x in g]
    _assert_damage_reported(stats, warnings, path)


def test_find_resume_looks_back_past_damage_zlib_noticed_late(tmp_path: Path) -> None:
    # zlib may inflate damaged bytes to garbage through a flush point and fail only further on. Here the
    # damage is at the start of interval 3 while the failure is reported inside interval 5: the reader
    # resumes at the flush point right after the damage, and keeps only the text before interval 3.
    data = _write_with_flushes(tmp_path, _groups()).read_bytes()
    points = flush_points(data)
    damaged = _bad_block_type(data, points[2])
    bad = (points[4] + points[5]) // 2

    def is_line(text: bytes) -> bool:
        return text.startswith(b'{"recv":') and text.endswith(b"}")

    assert find_resume(damaged, bad, is_line) == Resume(keep=points[2], at=points[3])
    # When text past those flush points was handed out already, only what follows the failure is taken.
    assert find_resume(damaged, bad, is_line, look_back=False) == Resume(keep=points[4], at=points[5])


# -- reader: files written with sync flushes (before full flushes) ----------------------------------


def _today(member: bytes) -> list[bytes]:
    """What the reader made of a damaged member before full flushes: the complete lines zlib inflated
    before it failed."""
    d = zlib.decompressobj(31)
    text = b""
    for i in range(len(member)):
        try:
            text += d.decompress(member[i : i + 1])
        except zlib.error:
            break
    *whole, last = text.split(b"\n")
    return [*whole, last] if _is_json(last) else whole  # a line torn right before its newline is whole


def _is_json(text: bytes) -> bool:
    try:
        msgspec.json.decode(text)
    except msgspec.DecodeError:
        return False
    return True


def test_a_sync_flushed_file_falls_back_to_the_next_member(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    groups = _groups()
    first, second = groups[:-1], groups[-1]
    member = _sync_flushed_member(first)
    points = flush_points(member)
    assert len(points) >= len(first)  # the markers are there, but inflation cannot restart at them
    tail = _sync_flushed_member([second])
    path = tmp_path / "old.jsonl.gz"
    group = len(first) // 2

    # Damage at a flush point: every line before it, none after it in the member, then the next member.
    path.write_bytes(_bad_block_type(member, points[group - 1]) + tail)
    lines, stats, warnings = _read(path, caplog)
    assert lines == [x for g in first[:group] for x in g] + second
    _assert_damage_reported(stats, warnings, path)

    # Damage inside an interval: as before, whatever zlib inflated up to the failure, then the next member.
    damaged = _fails_inside(member, (points[group - 1] + points[group]) // 2, points[group])[1]
    path.write_bytes(damaged + tail)
    lines, stats, warnings = _read(path, caplog)
    expected = _today(damaged)
    assert lines == expected + second
    assert len(expected) < (group + 1) * PER_GROUP  # nothing after the damaged interval
    _assert_damage_reported(stats, warnings, path)
