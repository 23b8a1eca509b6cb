"""Write every incoming frame to the capture (DESIGN.md §3): gzip JSON Lines, one file per UTC hour.

The event loop calls :meth:`CaptureWriter.write` for every frame; that call only appends to a bounded
queue. A background thread builds the lines, compresses them and writes them to disk, so a slow or full
disk never stalls the websocket reader: when the queue is full the frame is dropped and counted.

Crash safety: compressed output is written to disk only at ``Z_FULL_FLUSH`` points, at least every
``flush_interval`` seconds. A killed process therefore leaves a file that ends on a flush boundary, whose
complete lines are all readable (see :mod:`realtime.capture_reader`); it loses at most the frames of the
last interval. A full flush (not a sync flush) also resets the compressor's history, and every flush
interval holds whole lines, so the reader can restart inflating at the flush point after a damaged byte:
damage costs about one interval's lines, not the rest of the hour. It costs ~3% more bytes at ~100 kB/s
of frames, ~0.1% at ~1.3 MB/s. A clean close (or an hour roll-over) ends the gzip member with its
trailer, so a finished file is a standard gzip file. Restarting within the same hour appends a new gzip
member to the hour's file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from zlib_ng import zlib_ng as zlib

log = logging.getLogger(__name__)

MS_PER_HOUR = 3_600_000
# Receive times outside [0, 10**14) ms (year 5138) cannot be a wall clock; such a frame is rejected.
_MAX_RECV = 10**14
_PREFIX_CACHE_LIMIT = 100_000


def capture_path(directory: Path, recv_ms: int) -> Path:
    """The hour file that holds a frame received at ``recv_ms``: ``directory/YYYY/MM/DD/HH.jsonl.gz`` (UTC)."""
    t = datetime.fromtimestamp(recv_ms // MS_PER_HOUR * 3600, tz=UTC)
    return directory / f"{t.year:04d}" / f"{t.month:02d}" / f"{t.day:02d}" / f"{t.hour:02d}.jsonl.gz"


@dataclass(frozen=True, slots=True)
class ClosedFile:
    """An hour file the writer has finished with.

    ``rolled`` is True when the hour rolled over (no later frame of that hour will come from this writer);
    False when the writer was closed mid-hour (a restart within the hour appends to the same file).
    ``lines`` counts the lines this writer put in it; a reopened file also holds an earlier run's lines.
    """

    path: Path
    hour_ms: int
    lines: int
    rolled: bool


@dataclass(frozen=True, slots=True)
class CaptureStats:
    """Counters of a :class:`CaptureWriter` (totals since it started).

    ``lines``/``bytes``: lines and uncompressed bytes written to disk; ``disk_bytes``: compressed bytes;
    ``files``: hour files opened (created or appended to); ``dropped``: frames refused because the queue was
    full or the writer closed; ``lost``: lines lost to disk errors; ``errors``: disk errors;
    ``rejected``: frames that cannot form a capture line (bad ``recv``, stream or empty payload);
    ``queued``: frames waiting in the queue now.
    """

    lines: int
    bytes: int
    disk_bytes: int
    files: int
    dropped: int
    lost: int
    errors: int
    rejected: int
    queued: int


class _HourFile:
    """The open hour file: its compressor and the compressed output not yet on disk."""

    __slots__ = ("comp", "fd", "hour", "lines", "out", "path", "pending_bytes", "pending_lines")

    def __init__(self, hour: int, path: Path, level: int) -> None:
        self.hour = hour
        self.path = path
        self.fd: int | None = None  # opened at the first write to disk
        self.comp = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 31: gzip header and trailer
        self.out: list[bytes] = []
        self.pending_lines = 0  # lines compressed since the last write to disk
        self.pending_bytes = 0
        self.lines = 0  # lines on disk in this file (from this writer)


Item = tuple[int, str, bytes]


class CaptureWriter:
    """Append frames to hourly capture files without ever blocking the caller.

    ``write`` is for one thread (the event loop); ``flush`` and ``close`` may be called from any thread.
    ``on_file_closed`` runs on the writer thread each time an hour file is finished; it must be quick
    and thread-safe (from asyncio use ``loop.call_soon_threadsafe``); its exceptions are logged.
    ``clock`` (monotonic seconds) paces the flushes; it is a parameter so tests can drive it.
    """

    def __init__(
        self,
        directory: Path,
        flush_interval: float = 1.0,
        *,
        max_queue: int = 100_000,
        compresslevel: int = 5,
        on_file_closed: Callable[[ClosedFile], None] | None = None,
        poll_interval: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if flush_interval <= 0 or poll_interval <= 0:
            raise ValueError("flush_interval and poll_interval must be > 0")
        if max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        if not 0 <= compresslevel <= 9:
            raise ValueError("compresslevel must be in 0..9")
        self.directory = Path(directory)
        self.flush_interval = flush_interval
        self._max_queue = max_queue
        self._level = compresslevel
        self._on_file_closed = on_file_closed
        self._poll = min(poll_interval, flush_interval)
        self._clock = clock
        self._queue: deque[Item] = deque()
        self._accepting = True
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._waiters: list[threading.Event] = []
        self._waiters_lock = threading.Lock()
        self._prefixes: dict[str, bytes] = {}
        self._file: _HourFile | None = None
        self._failing = False
        self._last_error_log = float("-inf")
        self._dropped = 0
        self._lines = 0
        self._bytes = 0
        self._disk_bytes = 0
        self._files = 0
        self._lost = 0
        self._errors = 0
        self._rejected = 0
        self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
        self._thread.start()

    # -- caller side -------------------------------------------------------------------------------

    def write(self, recv_ms: int, stream: str, payload: bytes) -> None:
        """Queue one frame (its payload exactly as received); never blocks, never raises.

        A frame that finds the queue full (the disk is not keeping up) or the writer closed is dropped
        and counted in ``stats().dropped``.
        """
        if self._accepting and len(self._queue) < self._max_queue:
            self._queue.append((recv_ms, stream, payload))
        else:
            self._drop()

    def _drop(self) -> None:
        self._dropped += 1
        n = self._dropped
        if n == 1 or n % 10_000 == 0:
            why = "queue full: the disk is not keeping up" if self._accepting else "writer closed"
            log.error("capture frame dropped (%s); %d dropped so far", why, n, extra={"dropped": n})

    def stats(self) -> CaptureStats:
        """A snapshot of the counters."""
        return CaptureStats(
            lines=self._lines,
            bytes=self._bytes,
            disk_bytes=self._disk_bytes,
            files=self._files,
            dropped=self._dropped,
            lost=self._lost,
            errors=self._errors,
            rejected=self._rejected,
            queued=len(self._queue),
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every frame written before this call is on disk (or lost to a disk error).

        For tests and orderly checkpoints, not for the event loop. False if ``timeout`` passed first.
        """
        if not self._thread.is_alive():
            return False
        done = threading.Event()
        with self._waiters_lock:
            self._waiters.append(done)
        self._wake.set()
        return done.wait(timeout)

    def close(self, timeout: float | None = None) -> CaptureStats:
        """Stop accepting frames, write what is queued, end the gzip member and close the file.

        Idempotent. Returns the final counters. If the writer thread does not finish within ``timeout``
        (a hung disk) the error is logged and the counters so far are returned.
        """
        self._accepting = False
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error(
                "capture writer did not finish within %s s; %d frames still queued", timeout, len(self._queue)
            )
        return self.stats()

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writer thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        next_sync = self._clock() + self.flush_interval
        try:
            while True:
                with self._waiters_lock:
                    waiters, self._waiters = self._waiters, []
                stopping = self._stop.is_set()
                # Waiters are taken before draining: whatever was queued before flush() is drained now.
                self._drain()
                now = self._clock()
                if waiters or now >= next_sync:
                    self._sync(self._file, final=False)
                    next_sync = now + self.flush_interval
                for w in waiters:
                    w.set()
                if stopping and not self._queue:
                    break
                self._wake.wait(max(0.0, min(self._poll, next_sync - self._clock())))
                self._wake.clear()
        except Exception:  # a bug must not silently end capture; the service keeps running
            self._errors += 1
            log.exception("capture writer thread failed; capture stopped")
        finally:
            self._accepting = False
            self._finish(rolled=False)
            with self._waiters_lock:
                for w in self._waiters:
                    w.set()

    def _drain(self) -> None:
        """Encode the frames queued now (not those arriving meanwhile, so flushes stay on time)."""
        q = self._queue
        remaining = len(q)
        while remaining > 0:
            n = min(remaining, 8192)
            batch = [q.popleft() for _ in range(n)]
            remaining -= n
            try:
                self._encode(batch)
            except Exception:
                self._errors += 1
                self._lost += len(batch)
                log.exception("capture batch of %d frames lost to an unexpected error", len(batch))

    def _encode(self, batch: list[Item]) -> None:
        parts: list[bytes] = []
        hf = self._file
        hour = hf.hour if hf is not None else -1
        prefixes = self._prefixes
        for recv, stream, payload in batch:
            if type(recv) is not int or not 0 <= recv < _MAX_RECV:
                self._reject("recv is not an int of epoch ms", stream, recv)
                continue
            h = recv // MS_PER_HOUR
            # A frame of the previous hour (the wall clock stepped back a little, or a REST response
            # stamped at its request) stays in the open file, so file order stays receive order. A bigger
            # jump either way moves to the right file, so one bad clock reading cannot misfile the rest.
            if h != hour and h != hour - 1:
                if hour >= 0 and h < hour:
                    log.warning(
                        "capture: receive time went back %d hours; reopening %s",
                        hour - h,
                        capture_path(self.directory, recv),
                    )
                self._compress(parts)
                parts = []
                self._rotate(h)
                hour = h
            try:
                prefix = prefixes.get(stream)
                if prefix is None:
                    if not isinstance(stream, str):
                        raise TypeError("stream is not a str")
                    prefix = b',"stream":' + msgspec.json.encode(stream) + b',"data":'
                    if len(prefixes) < _PREFIX_CACHE_LIMIT:
                        prefixes[stream] = prefix
                if not payload:
                    self._reject("empty payload", stream, recv)
                    continue
                if b"\n" in payload or b"\r" in payload:
                    # Raw newlines in JSON can only be whitespace, so a space keeps the same JSON and
                    # keeps the line a line (a pretty-printed REST body).
                    payload = payload.replace(b"\n", b" ").replace(b"\r", b" ")
                parts.append(b'{"recv":%d%b%b}\n' % (recv, prefix, payload))
            except TypeError as exc:  # a stream that is not a str, a payload that is not bytes
                self._reject(str(exc), stream, recv)
        self._compress(parts)

    def _reject(self, why: str, stream: object, recv: object) -> None:
        self._rejected += 1
        if self._rejected <= 10 or self._rejected % 1000 == 0:
            log.warning(
                "capture frame rejected (%s): recv=%r stream=%r; %d rejected so far",
                why,
                recv,
                stream,
                self._rejected,
                extra={"stream": str(stream)},
            )

    def _compress(self, parts: list[bytes]) -> None:
        hf = self._file
        if not parts or hf is None:
            return
        data = b"".join(parts)
        out = hf.comp.compress(data)
        if out:
            hf.out.append(out)
        hf.pending_lines += len(parts)
        hf.pending_bytes += len(data)

    def _rotate(self, hour: int) -> None:
        """Finish the open file (its hour rolled over) and start the file of ``hour``."""
        self._finish(rolled=True)
        self._file = _HourFile(hour, capture_path(self.directory, hour * MS_PER_HOUR), self._level)

    def _sync(self, hf: _HourFile | None, final: bool) -> None:
        """Write the compressed output to disk, ending on a flush point (or the gzip trailer if final)."""
        if hf is None or (hf.pending_lines == 0 and (not final or hf.fd is None)):
            return  # nothing new; a member that never reached the disk needs no trailer either
        try:
            # Whole lines only were compressed, so after a full flush the next byte starts a line.
            tail = hf.comp.flush(zlib.Z_FINISH if final else zlib.Z_FULL_FLUSH)
            data = b"".join([*hf.out, tail])
            hf.out.clear()
            if hf.fd is None:
                hf.fd = self._open(hf.path)
            _write_all(hf.fd, data)
        except OSError as exc:
            self._disk_error(hf, exc)
            return
        hf.lines += hf.pending_lines
        self._lines += hf.pending_lines
        self._bytes += hf.pending_bytes
        self._disk_bytes += len(data)
        hf.pending_lines = hf.pending_bytes = 0
        if self._failing:
            self._failing = False
            log.warning("capture writing recovered (%s); %d lines lost in all", hf.path, self._lost)

    def _open(self, path: Path) -> int:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND: a restart within the hour adds a gzip member after what an earlier run wrote.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._files += 1
        log.info("capture file opened: %s", path, extra={"path": str(path)})
        return fd

    def _disk_error(self, hf: _HourFile, exc: OSError) -> None:
        """Count and log a disk error; the member is abandoned and the next flush starts a new one."""
        self._errors += 1
        self._lost += hf.pending_lines
        now = self._clock()
        if not self._failing or now - self._last_error_log >= 60.0:
            self._last_error_log = now
            log.error(
                "capture write failed for %s: %s; %d lines lost so far (%d errors); capture continues",
                hf.path,
                exc,
                self._lost,
                self._errors,
                extra={"path": str(hf.path), "errno": exc.errno},
            )
        self._failing = True
        if hf.fd is not None:
            _close_quietly(hf.fd)
            hf.fd = None
        # The file on disk ends on the last flush point; the reader resumes at the next member.
        hf.comp = zlib.compressobj(self._level, zlib.DEFLATED, 31)
        hf.out.clear()
        hf.pending_lines = hf.pending_bytes = 0

    def _finish(self, rolled: bool) -> None:
        """End the open file's gzip member, close it and report it to ``on_file_closed``."""
        hf = self._file
        if hf is None:
            return
        self._file = None
        self._sync(hf, final=True)
        if hf.fd is None:
            return
        _close_quietly(hf.fd)
        if self._on_file_closed is not None:
            try:
                self._on_file_closed(ClosedFile(hf.path, hf.hour * MS_PER_HOUR, hf.lines, rolled))
            except Exception:
                log.exception("capture on_file_closed callback failed for %s", hf.path)


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``; on failure cut the file back so it still ends on the last flush point."""
    start = os.lseek(fd, 0, os.SEEK_END)
    view = memoryview(data)
    try:
        while view:
            n = os.write(fd, view)
            view = view[n:]
    except OSError:
        # Not a regular file, or the disk refuses even that: the reader copes with a torn tail.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        raise


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError as exc:
        log.error("capture file close failed: %s", exc)
