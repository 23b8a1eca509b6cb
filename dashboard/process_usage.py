"""CPU % and resident memory of the tapewatch processes, for the System page and the dashboard's heartbeat.

psutil measures a process's CPU % between two calls on the *same* ``Process`` object (the first call has
nothing to compare with and returns 0.0), so the sampler keeps one object per process, keyed by pid and
creation time (a pid reused by a new process starts afresh) and says "unknown" (None) on first sight rather
than a false 0 %. A process that publishes its own ``cpu`` (%) and ``rss`` (bytes) in its heartbeat info is
read from there instead: that also works for processes on other hosts. The dashboard and the realtime service
(each shard too) publish them (the realtime service also its host's ``host_cpu`` and ``host_memory`` %, what
the system performance sensor judges: ``tapewatch.health.host_load``).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping

import psutil

MB = 1_048_576


class ProcessSampler:
    """CPU % since the previous sample and resident MB of local processes, thread-safe (Dash serves callbacks
    from several threads)."""

    def __init__(self) -> None:
        self._procs: dict[tuple[int, float], psutil.Process] = {}
        self._lock = threading.Lock()

    def sample(self, pid: int) -> tuple[float | None, float | None]:
        """(CPU % since the last sample of this process — None on its first —, resident MB); (None, None)
        when the process is gone or not readable."""
        try:
            probe = psutil.Process(pid)
            key = (pid, probe.create_time())
            with self._lock:
                proc = self._procs.get(key)
                first = proc is None
                if proc is None:
                    proc = self._procs[key] = probe
                with proc.oneshot():
                    cpu = proc.cpu_percent(interval=None)
                    rss = proc.memory_info().rss / MB
        except (psutil.Error, OSError):
            return None, None
        return (None if first else cpu), rss

    def forget_dead(self) -> None:
        """Drop the processes that have exited (called now and then, so the map does not grow)."""
        with self._lock:
            for key, proc in list(self._procs.items()):
                if not proc.is_running():
                    del self._procs[key]


def usage_from_info(info: Mapping[str, object]) -> tuple[float | None, float | None]:
    """(CPU %, resident MB) a process published in its heartbeat info (``cpu``, ``rss`` in bytes); None for
    what it did not publish or published as something other than a number."""

    def number(key: str) -> float | None:
        value = info.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    rss = number("rss")
    return number("cpu"), (None if rss is None else rss / MB)


def this_host() -> str:
    return socket.gethostname()


__all__ = ["MB", "ProcessSampler", "this_host", "usage_from_info"]
