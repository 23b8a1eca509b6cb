"""Put capture files in event order: by the ``recv`` of each file's first line.

Replay runs lines in the order it reads them, so files given out of order (one capture split in pieces and
listed backwards, an hour file named before the one it follows) would run the market backwards: books
refused as out of order, an older final state, no error. Only the first line of each file is read (the
first compressed chunk, inflated up to its newline), so ordering costs nothing next to the read itself.
That read also finds a ``.gz`` file that is not gzip, which is refused here, before any file is replayed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

import msgspec
from zlib_ng import zlib_ng

from tapewatch.errors import CaptureError

log = logging.getLogger(__name__)

_HEAD = 1 << 16  # compressed bytes per read when looking for the first line
_FIRST_LINE_MAX = 1 << 24  # give up on a first line longer than this (no capture line is)
_NAMES_LOGGED = 10  # file names the "order changed" line lists
_ZlibError = cast(type[Exception], zlib_ng.error)


class _Head(msgspec.Struct):
    recv: int


_head_decoder = msgspec.json.Decoder(_Head)


def in_event_order(files: list[Path]) -> list[Path]:
    """``files`` stably sorted by the ``recv`` of their first line. A file whose first line cannot be read
    (empty, plain text that is not a capture line, damaged at its start) keeps the place right after the
    file listed before it. Logs one INFO line when the order changed. Raises CaptureError for a ``.gz``
    file that is not gzip (wherever it is in the list: nothing has been read yet)."""
    if len(files) < 2:
        for path in files:
            first_recv(path)  # the same check: one file is refused with the same message
        return files
    keys: list[int] = []
    key = -1  # an unreadable first file keeps its place at the front
    for path in files:
        recv = first_recv(path)
        key = key if recv is None else recv
        keys.append(key)
    order = sorted(range(len(files)), key=keys.__getitem__)
    if order == sorted(order):
        return files
    ordered = [files[i] for i in order]
    more = ", ..." if len(ordered) > _NAMES_LOGGED else ""
    log.info(
        "capture files were not given in event order; reading them by the receive time of their first "
        "line: %s%s",
        ", ".join(map(str, ordered[:_NAMES_LOGGED])),
        more,
        extra={"files": len(ordered)},
    )
    return ordered


def first_recv(path: Path) -> int | None:
    """The ``recv`` of the file's first line (gzip or plain); None when it cannot be read. Raises
    CaptureError when the file is named ``.gz`` but is not gzip, with the message the reader gives."""
    text = b""
    try:
        with path.open("rb") as fh:
            chunk = fh.read(_HEAD)
            gz = chunk[:1] == b"\x1f"  # 0x1f never starts a JSON line
            if chunk and not gz and path.name.endswith(".gz"):
                raise CaptureError(not_gzip(path, chunk[:3]))
            if not chunk:
                return None
            d = zlib_ng.decompressobj(31) if gz else None  # wbits 31: a gzip member
            while chunk and b"\n" not in text and len(text) < _FIRST_LINE_MAX:
                text += chunk if d is None else d.decompress(chunk, _FIRST_LINE_MAX - len(text))
                if d is not None and (d.eof or d.unconsumed_tail):
                    break  # the member ended, or the output bound was reached
                chunk = fh.read(_HEAD)
    except (OSError, _ZlibError):
        pass  # a first line that was inflated before the damage still counts
    try:
        return _head_decoder.decode(text.split(b"\n", 1)[0].strip()).recv
    except msgspec.DecodeError:
        return None


def not_gzip(path: Path, head: bytes) -> str:
    """The error for a ``.gz`` file that is not gzip (``head``: its first three bytes)."""
    return f"{path} is not a gzip file (starts with {head!r}); capture files are gzip"
