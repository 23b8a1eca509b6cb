"""Where to resume inflating a damaged capture member: the next full-flush point after the damage.

The capture writer ends every periodic flush with ``Z_FULL_FLUSH``: an empty stored block, whose length
bytes are ``00 00 ff ff``, after which the compressor refers to nothing before it. A raw inflater
(``wbits=-15``) started at the byte after that marker inflates the rest of the member, so damage costs the
lines of one flush interval (about a second), not the rest of the hour. Each interval holds whole lines.

A candidate is checked before it is trusted: it must inflate past the damage up to the next flush point
(or the end of the data) without error, into text that starts with a JSON line and, if it reached the
next flush point, ends with a newline. Files written with ``Z_SYNC_FLUSH`` have the same markers, but the
text after them refers back to text before them, which a raw inflater does not have: zlib refuses, so
such a file falls back to resuming at the next member.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from zlib_ng import zlib_ng

FLUSH_MARKER = b"\x00\x00\xff\xff"  # LEN and NLEN of the empty stored block that ends a flush
_TRIES_AFTER = 3  # flush points tried after the damage before giving up (a marker may itself be damaged)
_MAX_OUT = 1 << 23  # decompressed bytes per zlib call while checking a candidate
_ZlibError = cast(type[Exception], zlib_ng.error)


@dataclass(frozen=True, slots=True)
class Resume:
    """Offsets into the checked data: the text inflated from ``data[:keep]`` is kept (``keep`` is where the
    damaged interval starts); a raw inflater resumes at ``at`` (the flush point that ends it)."""

    keep: int
    at: int


def find_resume(
    data: bytes, bad: int, is_line: Callable[[bytes], bool], *, look_back: bool = True
) -> Resume | None:
    """Where to resume after damage in ``data``: compressed bytes of one gzip member, from a point where the
    inflater's state was good (``data`` ends where the member ends or earlier). ``data[:bad]`` inflates from
    that state and one more byte does not. None when no flush point after the damage checks out.

    zlib can inflate damaged bytes to garbage for a while and only fail further on, past flush points. A
    raw inflater started before the damage reads the same bits and fails where the main one did; one
    started after it inflates through ``bad``. So, unless ``look_back`` is False (text past the flush
    points before ``bad`` was already handed out), the flush points before ``bad`` are tried backwards
    and the earliest that inflates through ``bad`` is where to resume.
    """
    points = flush_points(data)
    before = [f for f in points if f <= bad]
    after = [f for f in points if f > bad]
    first_good: int | None = None
    if look_back:
        for i in range(len(before) - 1, -1, -1):
            if not _inflates_from(data, before[i], bad, after, is_line):
                break
            first_good = i
    if first_good is not None:
        return Resume(keep=before[first_good - 1] if first_good else 0, at=before[first_good])
    for f in after[:_TRIES_AFTER]:
        if _inflates_from(data, f, bad, after, is_line):
            return Resume(keep=before[-1] if before else 0, at=f)
    return None


def flush_points(data: bytes) -> list[int]:
    """Offsets right after each ``00 00 ff ff`` marker in ``data`` (candidate flush points)."""
    points: list[int] = []
    i = data.find(FLUSH_MARKER)
    while i >= 0:
        points.append(i + len(FLUSH_MARKER))
        i = data.find(FLUSH_MARKER, i + 1)
    return points


def _inflates_from(
    data: bytes, at: int, bad: int, after: list[int], is_line: Callable[[bytes], bool]
) -> bool:
    """Whether a raw inflater started at ``at`` inflates past ``bad`` up to the next flush point into text
    that starts with a JSON line (and ends with a newline when it reaches that flush point), or into the
    empty final block of the member."""
    stop = next((f for f in after if f > at), len(data))
    d = zlib_ng.decompressobj(-15)  # raw deflate: no header, no trailer
    head = b""
    last = b""
    chunk = data[at:stop]
    try:
        while chunk and not d.eof:
            out = d.decompress(chunk, _MAX_OUT)
            if out:
                if b"\n" not in head:
                    head += out
                last = out[-1:]
            chunk = d.unconsumed_tail
    except _ZlibError:
        return False
    if d.eof and stop - len(d.unused_data) <= bad:
        return False  # the deflate data ended before the damage: it is in the trailer (a bad CRC)
    if not head:
        return d.eof  # the member's final block, empty: the writer closed right after a flush
    if not is_line(head.split(b"\n", 1)[0]):
        return False
    return d.eof or stop == len(data) or last == b"\n"
