"""Read capture files back as raw lines: the one reader of replay (``realtime``) and the archive (Dagster).

It lives in ``tapewatch.adapters`` so both sides import it (they may not import each other);
``realtime.capture_reader`` re-exports it. It is the replay hot path: keep it fast. Files are read in large chunks and inflated directly (not :mod:`gzip`, which gives up on the
files a killed writer leaves), by zlib-ng's drop-in ``zlib`` module: the same gzip format, inflated about
twice as fast as the standard library's zlib (bench: ~1.25 → ~1.0 µs per line of the 800-symbol capture). What a real capture can hold, and what the reader does with it:

- concatenated gzip members (a restart within the hour appends one): read as one stream;
- a member without its trailer (the writer was killed), possibly followed by the member of a restarted
  writer: every complete line is read, the reader resumes at the next member (even when the kill cut
  the member mid-write, since the capture writer's member header is recognised);
- a torn last line (a truncated copy, a write cut short): skipped;
- damaged bytes inside a member: the reader resumes at the writer's next full-flush point after them
  (:mod:`~tapewatch.adapters.capture_resume`), so the lines of that flush interval (about a second) are
  lost and every later line is read. In a file without full flushes (written before they were used) the
  lines before the damage are read and the reader resumes at the next member. Damaged deflate data can
  inflate to garbage without zlib noticing until the member's CRC; such lines (of that interval only,
  with full flushes) are yielded and left to the frame decoder, which counts them as malformed.

A break is benign when the writer was killed (every line it flushed is read) and **damage** when bytes had
to be skipped (lines in them are lost): :class:`ReadStats` counts the two apart, so the archive can refuse to
record, and so to prune, a file it could not read whole. Each file that was cut short or damaged gets ONE
warning naming it, which says whether lines were lost. Missing files and files that are not
gzip (when named ``.gz``) raise :class:`~tapewatch.errors.CaptureError` before any line is read.

Files are read in event order whatever order they are given in: by the ``recv`` of their first line (see
:func:`capture_files`), so one capture split in pieces replays the same however the pieces are listed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

import msgspec
from zlib_ng import zlib_ng

from tapewatch.adapters.capture_order import in_event_order, not_gzip
from tapewatch.adapters.capture_resume import Resume, find_resume
from tapewatch.errors import CaptureError

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b\x08"  # gzip id bytes + deflate method: where a member starts
# The header zlib writes (and so the capture writer): no flags, no mtime. Eight fixed bytes turn up by
# chance in compressed data once in 2**64 positions, so where they appear a new member starts, whatever
# came before (a member cut mid-write would otherwise swallow the next one as garbage).
MEMBER_HEADER = GZIP_MAGIC + b"\x00\x00\x00\x00\x00"
_CHUNK = 1 << 18  # compressed bytes per read (~1 MB of text: its lines are parsed while still in the cache)
_SCAN = 1 << 20  # bytes per read when searching for the next member
_PLAIN_CHUNK = 1 << 23  # bytes per read of a plain .jsonl file
_MAX_OUT = 1 << 23  # decompressed bytes per zlib call: bounds memory on a pathological file
_TRAILER = 8  # gzip member trailer: CRC-32 and length


class _Inflater(Protocol):
    """A zlib decompress object (zlib-ng's stub leaves ``copy`` out)."""

    unused_data: bytes
    unconsumed_tail: bytes
    eof: bool

    def decompress(self, data: bytes, max_length: int = 0, /) -> bytes: ...
    def flush(self) -> bytes: ...
    def copy(self) -> _Inflater: ...


#: zlib-ng's error class (its stub types it as an instance).
_ZlibError = cast(type[Exception], zlib_ng.error)


def _inflater() -> _Inflater:
    return cast(_Inflater, zlib_ng.decompressobj(31))  # wbits 31: a gzip member


def _raw_inflater() -> _Inflater:
    return cast(_Inflater, zlib_ng.decompressobj(-15))  # wbits -15: raw deflate, from a full-flush point


@dataclass
class ReadStats:
    """What a read went through: ``files`` read, ``lines`` yielded, ``torn_files`` (cut short or damaged),
    ``skipped_bytes`` (decompressed bytes of torn or damaged lines that were not yielded), ``torn_lines``
    (partial lines skipped at a break), ``damaged`` (stretches of bytes that did not inflate and were skipped:
    whatever they held is lost), ``torn_at_end`` (files whose last line was torn with no line read after it:
    what a writer cut mid-line at the end of its file leaves; those torn lines are in ``torn_lines`` too)."""

    files: int = 0
    lines: int = 0
    torn_files: int = 0
    skipped_bytes: int = 0
    torn_lines: int = 0
    damaged: int = 0
    torn_at_end: int = 0


def capture_files(paths: Iterable[Path | str]) -> list[Path]:
    """The capture files to read, in event order: files as given, directories expanded to their
    ``*.jsonl.gz`` files (recursively) sorted by path, then all of them ordered by the ``recv`` of their
    first line (a stable sort: only the first line of each file is read). A file whose first line cannot be
    read (empty, damaged) stays right after the file listed before it. Logs one INFO line when this changed
    the order. Raises CaptureError for a missing path, one that is neither a regular file nor a directory
    (``/dev/null``), a directory that holds no capture file, or a ``.gz`` file that is not gzip, before
    anything is read."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*.jsonl.gz") if f.is_file())
            if not found:
                raise CaptureError(f"no capture files (*.jsonl.gz) under directory {p}")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        elif p.exists():  # a device, a FIFO, a socket: reading it would block or yield no capture
            raise CaptureError(
                f"{p} is not a regular file; give capture files (*.jsonl.gz) or directories of them"
            )
        else:
            raise CaptureError(f"capture file not found: {p}")
    return in_event_order(files)


def iter_capture(paths: Iterable[Path | str], stats: ReadStats | None = None) -> Iterator[bytes]:
    """Yield every complete line (bytes, without the newline) of the given capture files, in order.

    Accepts gzip files (``.jsonl.gz``, concatenated members allowed) and plain ``.jsonl`` files. Empty
    lines are skipped. Paths are checked before the first line is yielded (see :func:`capture_files`),
    a ``.gz`` file that is not gzip among them. ``stats``, if given, is updated as the lines are read.
    """
    files = capture_files(paths)
    return _iter_lines(files, stats if stats is not None else ReadStats())


def iter_capture_batches(
    paths: Iterable[Path | str], stats: ReadStats | None = None
) -> Iterator[list[bytes]]:
    """:func:`iter_capture`'s lines in batches (lists of lines in order, none empty; a batch is the lines an
    inflated piece completes), for a reader that takes many lines per call (the native replay path)."""
    files = capture_files(paths)
    return _iter_files(files, stats if stats is not None else ReadStats())


def _iter_lines(files: list[Path], stats: ReadStats) -> Iterator[bytes]:
    for batch in _iter_files(files, stats):
        yield from batch


def _iter_files(files: list[Path], stats: ReadStats) -> Iterator[list[bytes]]:
    for path in files:
        yield from _iter_file(path, stats)


def _iter_file(path: Path, stats: ReadStats) -> Iterator[list[bytes]]:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise CaptureError(f"cannot open capture file {path}: {exc.strerror}") from exc
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, len(GZIP_MAGIC), 0)
        stats.files += 1
        if not head:
            return
        # 0x1f never starts a JSON line: a gzip file, possibly with its first member cut after a byte.
        if head[:1] == GZIP_MAGIC[:1]:
            yield from _split_lines(_inflate(fd, size, stats), path, stats)
        elif path.name.endswith(".gz"):
            raise CaptureError(not_gzip(path, head))
        else:
            yield from _split_lines(_read_plain(fd), path, stats)
    finally:
        os.close(fd)


def _read_plain(fd: int) -> Iterator[bytes]:
    while chunk := os.read(fd, _PLAIN_CHUNK):
        yield chunk


def _split_lines(pieces: Iterable[bytes | None], path: Path, stats: ReadStats) -> Iterator[list[bytes]]:
    """Cut text pieces into lines, yielded in batches (the lines each piece completes); ``None`` marks a break in
    the text (the partial line before it is dropped). Logs one warning for the file if anything was cut short."""
    carry = b""
    breaks = 0
    skipped = 0
    torn_last = False  # a line was torn and no line has been read since
    damaged = stats.damaged  # before this file
    for piece in pieces:
        if piece is None:
            breaks += 1
            if carry:
                if _is_json(carry):  # torn right before its newline: the line itself is whole
                    stats.lines += 1
                    torn_last = False
                    yield [carry]
                else:
                    skipped += len(carry)
                    stats.torn_lines += 1
                    torn_last = True
                carry = b""
            continue
        lines = piece.split(b"\n")
        if carry:  # the line the last piece began: joined here, not by copying the whole piece
            lines[0] = carry + lines[0]
        carry = lines.pop()
        if lines:
            count = len(lines) - lines.count(b"")
            stats.lines += count
            torn_last = torn_last and not count
            if count:
                yield lines if count == len(lines) else [line for line in lines if line]
    if carry:
        # No newline after the last line: yield it if it is whole (a hand-made file), else it is torn.
        if _is_json(carry):
            stats.lines += 1
            torn_last = False
            yield [carry]
        else:
            breaks += 1
            skipped += len(carry)
            stats.torn_lines += 1
            torn_last = True
    if not breaks:
        return
    stats.torn_files += 1
    stats.torn_at_end += int(torn_last)
    stats.skipped_bytes += skipped
    if stats.damaged > damaged:
        log.warning(
            "capture file %s is damaged: %d stretch(es) of bytes did not inflate and were skipped, so the "
            "lines in them were lost (lines inflated from damaged bytes are garbage, counted as malformed); "
            "%d break(s), %d bytes of torn lines skipped",
            path,
            stats.damaged - damaged,
            breaks,
            skipped,
            extra={"path": str(path)},
        )
    else:
        log.warning(
            "capture file %s was cut short (writer killed or truncated copy): "
            "%d break(s), %d bytes of torn lines skipped; every complete line was read",
            path,
            breaks,
            skipped,
            extra={"path": str(path)},
        )


def _is_json(text: bytes) -> bool:
    # A proper prefix of a JSON object is never valid JSON, so this tells a whole line from a torn one.
    try:
        msgspec.json.decode(text)
    except msgspec.DecodeError:
        return False
    return True


def _inflate(fd: int, size: int, stats: ReadStats) -> Iterator[bytes | None]:
    """Decompressed text of every gzip member of the file; None where the text breaks (a member cut
    short, damaged bytes skipped). Counts each damaged stretch in ``stats.damaged``."""
    pos = 0
    while pos < size:
        head = os.pread(fd, len(GZIP_MAGIC), pos)
        if head != GZIP_MAGIC:
            if GZIP_MAGIC.startswith(head):  # the file ends inside a member header
                yield None
                return
            if _all_zero(fd, pos, size):
                return  # zero padding after the last member, which gzip tolerates too
            yield None  # bytes that are not a member: skip to the next one
            stats.damaged += 1
            pos = _find_magic(fd, pos + 1, size)
            continue
        pos = yield from _member(fd, pos, size, stats)


def _member(fd: int, start: int, size: int, stats: ReadStats) -> Generator[bytes | None, None, int]:
    """Inflate the member at ``start``; return the offset where the next member may start."""
    d = _inflater()
    raw = False  # resumed at a full-flush point after damage: a raw inflater, which leaves the trailer
    pos = start
    while pos < size:
        want = min(_CHUNK, size - pos)
        # Read a little further so a member header straddling the end of the piece is seen.
        piece = os.pread(fd, want + len(MEMBER_HEADER) - 1, pos)
        b = piece.find(MEMBER_HEADER, 1 if pos == start else 0)
        # A writer's header starts the next member even if this one never ended: a writer killed
        # mid-write leaves a member cut anywhere, and its restart appends a new member right after.
        piece = piece[:b] if b >= 0 else piece[:want]
        end = pos + len(piece)
        backup = d.copy()
        emitted = 0
        try:
            for out in _decompress(d, piece):
                emitted += len(out)
                yield out
        except _ZlibError:
            resume, in_member = yield from _recover(backup, fd, start, pos, end, size, emitted, b >= 0, stats)
            yield None
            if not in_member:
                return resume
            d, raw, pos = _raw_inflater(), True, resume
            continue
        if d.eof:
            return end - len(d.unused_data) + (_TRAILER if raw else 0)
        pos = end
        if b >= 0:
            break
    try:  # no trailer: the writer was killed or the file was truncated; take what zlib still holds
        rest = d.flush()
    except _ZlibError:
        rest = b""
    if rest:
        yield rest
    yield None
    return pos


def _decompress(d: _Inflater, data: bytes) -> Iterator[bytes]:
    out = d.decompress(data, _MAX_OUT)
    if out:
        yield out
    while d.unconsumed_tail and not d.eof:
        out = d.decompress(d.unconsumed_tail, _MAX_OUT)
        if out:
            yield out


def _inflate_prefix(backup: _Inflater, data: bytes) -> bytes | None:
    """The text ``data`` inflates to from the state ``backup``; None if it does not inflate."""
    d = backup.copy()
    try:
        outs = list(_decompress(d, data))
        outs.append(d.flush())
    except _ZlibError:
        return None
    return b"".join(outs)


def _recover(
    backup: _Inflater,
    fd: int,
    start: int,
    pos: int,
    end: int,
    size: int,
    emitted: int,
    member_ends: bool,
    stats: ReadStats,
) -> Generator[bytes, None, tuple[int, bool]]:
    """The member starting at ``start`` failed to inflate within [pos, end) (``member_ends``: a member
    header follows ``end``). Salvage its text up to the break and return where to go on: ``(offset, True)``
    to resume in this member with a raw inflater, ``(offset, False)`` for the next member (``size`` if
    there is none).

    A member from another gzip writer cut short and followed by a new member: inflating up to the new
    member's id bytes works, one byte more fails, so the last id-bytes position up to which the member
    still inflates is where the next member starts. Otherwise the member is damaged: the damage is found
    by bisection, and reading resumes at the full-flush point after it (see
    :mod:`~tapewatch.adapters.capture_resume`; the lines of that flush interval are lost), or, in a file
    without full flushes, the text is kept up to the damage and reading resumes at the next id bytes.
    """
    window = os.pread(fd, min(end + len(GZIP_MAGIC) - 1, size) - pos, pos)
    candidates: list[int] = []
    i = window.find(GZIP_MAGIC)
    while i >= 0:
        if pos + i > start:
            candidates.append(i)
        i = window.find(GZIP_MAGIC, i + 1)
    for i in reversed(candidates):
        text = _inflate_prefix(backup, window[:i])
        if text is not None:
            if len(text) > emitted:
                yield text[emitted:]
            return pos + i, False
    stats.damaged += 1
    lo, hi = 0, end - pos  # window[:lo] inflates, window[:hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _inflate_prefix(backup, window[:mid]) is None:
            hi = mid
        else:
            lo = mid
    resume = _flush_resume(fd, start, pos, end, size, lo, member_ends, emitted == 0)
    text = _inflate_prefix(backup, window[: lo if resume is None else resume.keep]) or b""
    if len(text) > emitted:
        yield text[emitted:]
    if resume is not None:
        return pos + resume.at, True
    # Every candidate failed, so all lie after the damage: the first is where to look for a member.
    return (pos + candidates[0] if candidates else _find_magic(fd, end, size)), False


def _flush_resume(
    fd: int, start: int, pos: int, end: int, size: int, bad: int, member_ends: bool, look_back: bool
) -> Resume | None:
    """The full-flush point to resume at after damage at ``pos + bad``, searched up to the member's end
    (at most ``_SCAN`` bytes past ``end``); offsets relative to ``pos``."""
    data = os.pread(fd, (end if member_ends else min(size, end + _SCAN)) - pos, pos)
    if not member_ends:  # the member may end in the extra chunk, where another writer's member starts
        h = data.find(MEMBER_HEADER, max(1 if pos == start else 0, end - pos - len(MEMBER_HEADER) + 1))
        data = data if h < 0 else data[:h]
    return find_resume(data, bad, _is_json, look_back=look_back)


def _all_zero(fd: int, pos: int, size: int) -> bool:
    while pos < size:
        block = os.pread(fd, min(_SCAN, size - pos), pos)
        if not block or block.strip(b"\x00"):
            return not block
        pos += len(block)
    return True


def _find_magic(fd: int, pos: int, size: int) -> int:
    """Offset of the next gzip member id bytes at or after ``pos``; ``size`` if there is none."""
    overlap = len(GZIP_MAGIC) - 1
    while pos < size:
        block = os.pread(fd, min(_SCAN, size - pos), pos)
        i = block.find(GZIP_MAGIC)
        if i >= 0:
            return pos + i
        if len(block) <= overlap:
            break
        pos += len(block) - overlap
    return size
