"""The simulator's report of falling behind its clock: a machine too slow for ``--speed`` and ``--symbols``
makes the clock drop simulated time every second it lags, and the log says so once, then once a minute, not
every second."""

from __future__ import annotations

#: At most one report per this many wall seconds after the first.
REPORT_EVERY_S = 60.0


class LagReport:
    """Counts the times the clock fell behind and gave up simulated time; :meth:`behind` returns the message to
    log (WARNING) for the first time and then for the first time in each next :data:`REPORT_EVERY_S` seconds,
    summing what the times in between gave up."""

    def __init__(self, every_s: float = REPORT_EVERY_S) -> None:
        self.every_s = every_s
        self.times = 0  # since the start
        self._since = 0  # since the last report
        self._lost_ms = 0.0
        self._reported_s: float | None = None

    def behind(self, lag_ms: float, now_s: float) -> str | None:
        """The clock was ``lag_ms`` of simulated time behind at wall second ``now_s`` and dropped it."""
        self.times += 1
        self._since += 1
        self._lost_ms += lag_ms
        if self._reported_s is not None and now_s - self._reported_s < self.every_s:
            return None
        if self._reported_s is None:
            message = f"simulation is {lag_ms / 1000:.1f} s behind its clock; slowing the clock"
        else:
            message = (
                f"simulation fell behind its clock {self._since} times in the last {now_s - self._reported_s:.0f} s "
                f"({self._lost_ms / 1000:.1f} s of simulated time skipped)"
            )
        self._reported_s, self._since, self._lost_ms = now_s, 0, 0.0
        return message + ": this machine is too slow for the simulator's --speed and --symbols; lower either"
