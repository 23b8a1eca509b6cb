"""Keep the memory a replay frees for its next piece, rather than handing it back to the kernel.

A replay inflates its capture a piece at a time (~1 MB of text, :mod:`tapewatch.adapters.capture_reader`) and frees
each piece once its lines are applied. glibc's malloc serves such large blocks from fresh mappings (or trims them
off its heap when freed), so every piece's pages were faulted in anew: ~8 % of a books-only replay's time went to
page faults on the 800-symbol capture. :func:`keep_freed_memory` tells malloc to serve blocks up to 32 MB from its
heap and to keep up to 256 MB freed at its top; the replay's own size is unchanged (the same pieces, reused). It is
a setting of the process, so the programs that replay set it (``tapewatch replay`` / ``backtest``, the benches),
not the library function :func:`realtime.replay.run_replay`, which long-running processes call too.
"""

from __future__ import annotations

import ctypes
import logging
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the heap (glibc's largest mmap threshold on 64-bit: HEAP_MAX_SIZE / 2).
MMAP_THRESHOLD = 32 << 20
#: Freed memory kept at the heap's top before it is trimmed.
TRIM_THRESHOLD = 256 << 20


def keep_freed_memory() -> bool:
    """Set glibc's malloc thresholds for a replay (see the module); True when set, False where the C library is
    not glibc (nothing is changed there)."""
    try:
        # libc_ver reads the interpreter's binary where it cannot ask the C library: an OSError there
        if platform.libc_ver()[0] != "glibc":
            return False
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    refused = [
        name
        for name, param, value in (
            ("M_MMAP_THRESHOLD", M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            ("M_TRIM_THRESHOLD", M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        )
        if mallopt(param, value) != 1
    ]
    if refused:
        log.warning(
            "glibc refused the replay's malloc setting %s: the replay runs, with more page faults", refused
        )
    return not refused
