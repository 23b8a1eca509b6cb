"""The demo's lock: one ``tapewatch demo`` per var dir (``<var_dir>/demo.lock``, an flock that dies with its
holder), and who holds it."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from tapewatch.errors import FatalError


class PlatformBusy(FatalError):
    """Another ``tapewatch demo`` holds the lock of this var dir."""


def _recorded_holder(handle: IO[str]) -> str:
    """The pid the holder of the demo lock wrote in its file (``unknown`` if it wrote none yet)."""
    handle.seek(0)
    return handle.read().strip() or "unknown"


@contextlib.contextmanager
def demo_lock(var_dir: Path) -> Iterator[Path]:
    """Hold ``<var_dir>/demo.lock`` for the life of the demo; PlatformBusy if another demo holds it.

    An flock dies with its holder, so a killed demo never leaves a lock that blocks the next one; the file
    itself stays (it only records the holder's pid for the message)."""
    var_dir.mkdir(parents=True, exist_ok=True)
    path = var_dir / "demo.lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _recorded_holder(handle)
            raise PlatformBusy(
                f"another tapewatch demo (pid {holder}) is running on {var_dir}: open its terminal and press "
                f"Ctrl-C, or `kill {holder}`; or use another TAPEWATCH_VAR_DIR"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield path
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def demo_lock_holder(var_dir: Path) -> str | None:
    """The pid (as the lock file records it; ``unknown`` if it does not) of the demo running on ``var_dir``,
    or None when no demo holds its lock. Only looks: the lock is released at once and the file unchanged."""
    try:
        with open(var_dir / "demo.lock") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _recorded_holder(handle)
            fcntl.flock(handle, fcntl.LOCK_UN)
    except FileNotFoundError:
        pass
    return None
