"""Decisions of the health sensors (spec 11.1), pure: what is wrong, and when to act or recover.

The three Dagster sensors (``orchestration/health.py``) measure, call these functions, and act on what they
return; they keep each function's state in their cursor (JSON, :func:`encode_state` / :func:`decode_state`).
Nothing here reads a clock: "now" and every measurement are arguments.

- :class:`Streak` counts consecutive failing and passing checks: ``trip_after`` failures in a row trip it
  (act), ``clear_after`` passes in a row while tripped recover it (undo). While tripped, every further
  ``trip_after`` failures in a row escalate (the performance sensor shrinks the universe again).
- :func:`judge_connectivity`: the REST ping failed, the realtime heartbeat is missing or too old, or the
  websockets deliver nothing; and whether the backup feed is the answer (only to a websocket failure). With
  shards (``tapewatch run --shard I/N``) the worst instance is judged: :func:`realtime_instances` says which
  instances count, :func:`worst_heartbeat` and :func:`worst_silence` pick the worst of them.
- :class:`FeedDwell`: the hysteresis of the switch back from the backup feed. While it is on, the service's
  websockets are unsubscribed and say nothing; only the sensor's own probe can be judged, and the probe may
  receive while the service's websockets would not (another host, network path or subscription). So the
  switch back also waits a minimum dwell, doubled after each switch back that failed (the service's
  websockets silent again soon after it), up to a maximum: a lying probe costs a switch every dwell, not
  every few checks.
- :func:`overload`: CPU or memory above its threshold, of the worst realtime host (:func:`worst_load`, from
  the heartbeats' ``host_cpu``/``host_memory``; :func:`heartbeat_load`); :func:`shrunk_universe` halves the
  universe. The host CPU a heartbeat carries is averaged over :data:`HOST_CPU_SPAN_S` (:class:`CpuAverage`),
  never one short reading: a one-second spike is no overload. A universe cut is restored only after a run of
  checks below the (lower) restore thresholds, as many as :class:`RestoreWait` asks: doubled after each
  restore that the overload followed within its probation.
- :func:`held`: whether a control value a sensor set (a pause, a universe cap) is still its own to lift, lost
  with Redis's data (the realtime service writes it back), or someone else's now.
- Data quality: :mod:`tapewatch.anomaly`.
- :class:`PendingIncident` / :func:`queued`: an incident change whose action already took effect (in Redis)
  but that PostgreSQL could not record yet. The sensor commits the action to its cursor at once and keeps the
  write there, retrying only the write: the action is never taken twice, nor forgotten.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import msgspec

log = logging.getLogger(__name__)

S = TypeVar("S", bound=msgspec.Struct)
B = TypeVar("B")
#: Incident changes a sensor keeps while PostgreSQL is down; the oldest go beyond this (logged).
MAX_PENDING = 50


class Transition(enum.Enum):
    """What a check changed: nothing, a trip (act), an escalation (act again), or a recovery (undo)."""

    NONE = "none"
    TRIP = "trip"
    ESCALATE = "escalate"
    RECOVER = "recover"


class Streak(msgspec.Struct, frozen=True, kw_only=True):
    """Consecutive failing (``failures``) and passing (``passes``) checks, and whether the action is in force.

    ``failures`` counts since the last action while tripped, so escalations come every ``trip_after``."""

    failures: int = 0
    passes: int = 0
    tripped: bool = False

    def step(self, failing: bool, *, trip_after: int, clear_after: int) -> tuple[Streak, Transition]:
        """The streak after one more check, and what it changed.

        Trips when ``trip_after`` checks in a row failed (``>=``: a trip whose action could not be taken is
        retried at the next failing check by keeping the old, untripped streak); recovers when ``clear_after``
        checks in a row passed while tripped."""
        if trip_after < 1 or clear_after < 1:
            raise ValueError(f"trip_after and clear_after must be >= 1; got {trip_after}, {clear_after}")
        if failing:
            failures = self.failures + 1
            if failures >= trip_after:
                move = Transition.ESCALATE if self.tripped else Transition.TRIP
                return Streak(failures=0, passes=0, tripped=True), move
            return Streak(failures=failures, passes=0, tripped=self.tripped), Transition.NONE
        passes = self.passes + 1
        if self.tripped and passes >= clear_after:
            return Streak(), Transition.RECOVER
        # a passing check breaks a run of failures
        return Streak(failures=0, passes=passes if self.tripped else 0, tripped=self.tripped), Transition.NONE

    def between(self) -> tuple[Streak, Transition]:
        """The streak after a check that neither fails nor passes (a load above the restore threshold but
        not above the trip threshold): it breaks both runs, a run of failures and a run of passes."""
        return Streak(tripped=self.tripped), Transition.NONE


@dataclass(frozen=True, slots=True)
class Connectivity:
    """What one connectivity check found.

    ``problems``: everything wrong (empty: the check passes) — the health incident's reason;
    ``backup_failing``: the check fails *for the backup feed's streak*: the websockets deliver nothing while
    the backup feed can do better (the realtime service is alive to run it and REST answers to be polled), or,
    while this sensor's backup feed is in force, the websocket probe still gets nothing (a pass then means
    the websockets deliver again: back to the primary feed, whatever REST does);
    ``report``: what the check does about ``problems`` when the backup feed is not the answer."""

    problems: list[str]
    backup_failing: bool
    report: str


#: The heartbeat key expires when the service stops renewing it (its TTL: 10 s at the default 1 s publish
#: interval, well under ``heartbeat_max_age``), so a stopped or stalled service shows as a missing heartbeat,
#: never as an old one; an old one is seen only with a TTL longer than ``heartbeat_max_age``.
_NO_HEARTBEAT = (
    "no {} heartbeat: its key expired, not renewed for longer than its TTL (the service is down or "
    "stalled), or Redis is unreadable"
)
NO_HEARTBEAT = _NO_HEARTBEAT.format("realtime")
#: The metrics of the websocket silence: the worst route's, and one per route (:func:`ws_silent_key`).
WS_SILENT = "ws_silent_ms"


def ws_silent_key(route: str) -> str:
    """The metric of one route's websocket silence (``ws_silent_market_ms``). It ends in ``_ms``, so shards'
    figures combine by their worst (``tapewatch.adapters.redis_state.combine_metrics``), never summed."""
    return f"ws_silent_{route}_ms"


def realtime_instances(
    beats: Mapping[str, B | None], single: str, shards: Sequence[str]
) -> dict[str, B | None]:
    """The realtime instances to judge, with their heartbeats (None: expired), among every component that ever
    beat (``beats``): the single instance ``single`` when it beats or when no shard ever did, else every shard
    (``shards``: the ``realtime-IofN`` among ``beats``, ``redis_state.realtime_shards``) — a shard down is
    part of the universe not followed. The single instance left over from before the shards is not judged
    while none of it beats (nor the shards while the single instance beats), as the metrics are read."""
    if beats.get(single) is not None or not shards:
        return {single: beats.get(single)}
    return {name: beats.get(name) for name in shards}


def worst_heartbeat(ages: Mapping[str, float | None]) -> tuple[str, float | None]:
    """The worst of the instances' heartbeat ages (seconds; None: none): the ones without a heartbeat (their
    names joined, age None), else the oldest. ValueError without an instance."""
    if not ages:
        raise ValueError("no realtime instance to judge")
    missing = sorted(name for name, age in ages.items() if age is None)
    if missing:
        return ", ".join(missing), None
    name = max(sorted(ages), key=lambda n: ages[n] or 0.0)
    return name, ages[name]


def worst_silence(metrics: Mapping[str, Mapping[str, float]]) -> tuple[float | None, str]:
    """The longest websocket silence (seconds) in the metrics of the instances that beat (by name), and where
    (``/market of realtime-0of2``: the worst route's figure, :func:`ws_silent_key`; the instance's name alone
    when it publishes only ``ws_silent_ms``, as a service from before the per-route figures). (None, "") when
    no instance publishes one. A route without streams publishes 0: it is not silent."""
    head, tail = ws_silent_key("|").split("|")
    worst: tuple[float, str] | None = None
    for name in sorted(metrics):
        values = metrics[name]
        found = [
            (ms, f"/{key[len(head) : -len(tail)]} of {name}")
            for key, ms in sorted(values.items())
            if key.startswith(head) and key.endswith(tail) and key != WS_SILENT
        ]
        if not found and WS_SILENT in values:
            found = [(values[WS_SILENT], name)]
        for ms, where in found:
            if worst is None or ms > worst[0]:
                worst = (ms, where)
    return (None, "") if worst is None else (worst[0] / 1000.0, worst[1])


def judge_connectivity(
    *,
    rest_error: str | None,
    heartbeat_age_s: float | None,
    ws_silent_s: float | None,
    probe_error: str | None,
    backup_on: bool,
    backup_ours: bool,
    max_age_s: float,
    component: str = "realtime",
    running: bool | None = None,
    silent_where: str = "",
) -> Connectivity:
    """Judge the REST API and the websocket feed separately (spec 11.1 ``api_connectivity``).

    ``rest_error``: None when the REST ping answered, else what went wrong; ``heartbeat_age_s``: age of the
    realtime heartbeat (None: none, expired or unreadable) — with shards the worst shard's, ``component``
    naming it (or them); ``ws_silent_s``: how long the service's websockets have delivered no frame while they
    were meant to (None: not published) — the worst route of the worst instance that beats, ``silent_where``
    saying which; ``probe_error``: while the backup feed is on (``backup_on``; the service's websockets are
    then off), None when the sensor's own websocket probe received a frame, else why not; ``backup_ours``:
    that backup feed is this sensor's; ``max_age_s``: the heartbeat's maximum age and the longest websocket
    silence; ``running``: some realtime instance beats within ``max_age_s`` (None: the judged one does) —
    with shards, a silent shard that beats can run the backup feed though another shard is down.

    The backup feed (REST polling, inside the service) is the answer only to a websocket failure: with REST
    down it would poll a dead API and switch off the websockets that still deliver, and with the service
    down nothing runs it. Those are reported, never acted on."""
    problems: list[str] = []
    rest_ok = rest_error is None
    if not rest_ok:
        problems.append(f"Binance REST ping failed: {rest_error}")
    alive = heartbeat_age_s is not None and heartbeat_age_s <= max_age_s
    if heartbeat_age_s is None:
        problems.append(_NO_HEARTBEAT.format(component))
    elif not alive:
        problems.append(f"{component} heartbeat is {heartbeat_age_s:.0f} s old (> {max_age_s:g} s)")
    runs = alive if running is None else running
    if backup_on:
        ws_down = probe_error is not None
        if ws_down:
            problems.append(f"websocket probe got no frame: {probe_error}")
    else:
        ws_down = runs and ws_silent_s is not None and ws_silent_s > max_age_s
        if ws_down and ws_silent_s is not None:
            on = f" on {silent_where}" if silent_where else ""
            problems.append(f"websockets delivered nothing for {ws_silent_s:.0f} s{on} (> {max_age_s:g} s)")
    backup_failing = ws_down and (backup_ours or (rest_ok and runs))
    return Connectivity(
        problems=problems,
        backup_failing=backup_failing,
        report=_report(rest_ok, ws_down, runs, alive, component),
    )


def _report(rest_ok: bool, ws_down: bool, runs: bool, alive: bool, component: str) -> str:
    """What a connectivity check does about its problems when the backup feed is not the answer."""
    if not runs:
        return "reported only: the realtime service is not running, and the backup feed runs inside it"
    if not rest_ok and ws_down:
        return "reported only: REST is down too, and the backup feed polls it"
    if not rest_ok:
        return "reported only: the websockets deliver; snapshots and resyncs cannot be fetched meanwhile"
    if not alive:
        return f"reported only: {component} is not running, and the backup feed runs inside it"
    return "reported only"


@dataclass(frozen=True, slots=True)
class FeedDwell:
    """How long this sensor's backup feed stays on at least before the switch back (``min_s``, doubled for each
    failed switch back in a row, at most ``max_s``; 0: no dwell), and how soon after a switch back a new switch
    to the backup feed counts as that switch back failing (``probation_s``)."""

    min_s: float
    max_s: float
    probation_s: float

    @classmethod
    def of(
        cls, *, min_s: float, max_s: float, max_age_s: float, trip_after: int, interval_s: float
    ) -> FeedDwell:
        """The dwell of the settings. The probation is the minimum dwell, but never shorter than the time a
        silence of the service's websockets takes to trip the switch (``max_age_s`` of silence, then
        ``trip_after`` checks ``interval_s`` apart, plus one check of slack): else no failure could be seen."""
        if min_s < 0 or max_s < 0 or max_age_s <= 0 or trip_after < 1 or interval_s <= 0:
            raise ValueError(
                f"dwell and check figures must be positive; got min_s={min_s}, max_s={max_s}, "
                f"max_age_s={max_age_s}, trip_after={trip_after}, interval_s={interval_s}"
            )
        detect = max_age_s + (trip_after + 1) * interval_s
        return cls(min_s=min_s, max_s=max(max_s, min_s), probation_s=max(min_s, detect))

    def required_s(self, relapses: int) -> float:
        """The dwell after ``relapses`` failed switch backs in a row."""
        return min(self.max_s, self.min_s * 2.0 ** min(max(relapses, 0), 32))

    def wait_s(self, *, switched_ms: int, relapses: int, now_ms: int) -> float:
        """Seconds the backup feed switched on at ``switched_ms`` must still stay on (0: the switch back may
        go)."""
        return max(0.0, self.required_s(relapses) - (now_ms - switched_ms) / 1000)

    def relapsed(self, *, switched_back_ms: int | None, now_ms: int) -> bool:
        """Whether a switch to the backup feed now means the switch back at ``switched_back_ms`` (None: none
        since the last switch on) failed: it came within the probation."""
        return switched_back_ms is not None and now_ms - switched_back_ms < self.probation_s * 1000


def overload(
    *, cpu_percent: float, memory_percent: float, cpu_threshold: float, memory_threshold: float
) -> list[str]:
    """Why the machine is overloaded (empty: it is not): CPU above ``cpu_threshold`` %, memory above
    ``memory_threshold`` % (strictly above, as spec 11.1 states "CPU > 80 %")."""
    for name, value in (("cpu_percent", cpu_percent), ("memory_percent", memory_percent)):
        if not 0.0 <= value <= 100.0:
            raise ValueError(f"{name} must be within [0, 100]; got {value}")
    problems: list[str] = []
    if cpu_percent > cpu_threshold:
        problems.append(f"CPU {_above(cpu_percent, cpu_threshold)} % > {cpu_threshold:g} %")
    if memory_percent > memory_threshold:
        problems.append(f"memory {_above(memory_percent, memory_threshold)} % > {memory_threshold:g} %")
    return problems


def _above(value: float, threshold: float) -> str:
    """``value`` (above ``threshold``) in whole percent, or with the decimals it takes to read as above it
    (80.1 % over 80 % is not "80 % > 80 %")."""
    for decimals in range(4):
        text = f"{value:.{decimals}f}"
        if float(text) > threshold:
            return text
    return f"{value:g}"


@dataclass(frozen=True, slots=True)
class RestoreWait:
    """How many calm checks in a row (below the restore thresholds) the system performance sensor waits for
    before it restores the universe it cut: ``clear_after``, doubled for each failed restore in a row, at
    most ``max_clear``. A restore failed when a new cut came within ``probation_s`` of it: putting the
    symbols back brought the overload back, and restoring as soon again would flap."""

    clear_after: int
    max_clear: int
    probation_s: float

    def __post_init__(self) -> None:
        if self.clear_after < 1 or self.max_clear < self.clear_after or self.probation_s < 0:
            raise ValueError(
                f"need 1 <= clear_after <= max_clear and probation_s >= 0; got clear_after={self.clear_after},"
                f" max_clear={self.max_clear}, probation_s={self.probation_s}"
            )

    def required(self, relapses: int) -> int:
        """The calm checks in a row a restore waits for after ``relapses`` failed restores in a row."""
        return min(self.max_clear, self.clear_after << min(max(relapses, 0), 32))

    def relapsed(self, *, restored_ms: int | None, now_ms: int) -> bool:
        """Whether a cut now means the restore at ``restored_ms`` (None: none) failed: it came within the
        probation."""
        return restored_ms is not None and now_ms - restored_ms < self.probation_s * 1000


#: The heartbeat details of a realtime instance's host load (%, psutil) and its own process's CPU % and
#: resident bytes (``cpu``, ``rss``: the keys the dashboard publishes too). ``host_cpu`` is the host's CPU
#: averaged over the last :data:`HOST_CPU_SPAN_S` seconds (:class:`CpuAverage`); ``host_memory`` the memory
#: in use when the beat was written (a level, not a rate); ``cpu`` this process's CPU since the previous beat.
HOST_CPU, HOST_MEMORY, PROCESS_CPU, PROCESS_RSS = "host_cpu", "host_memory", "cpu", "rss"
#: The span (s) the host CPU of a heartbeat (``host_cpu``) is averaged over.
HOST_CPU_SPAN_S = 60.0


def cpu_busy_total(times: Mapping[str, float]) -> tuple[float, float]:
    """(busy, total) CPU seconds of a ``psutil.cpu_times()`` reading (as a dict), counted as psutil's
    ``cpu_percent`` counts them: idle and iowait are not busy; guest times are already in user and nice."""
    total = sum(times.values()) - times.get("guest", 0.0) - times.get("guest_nice", 0.0)
    return total - times.get("idle", 0.0) - times.get("iowait", 0.0), total


class CpuAverage:
    """A host's CPU % averaged over the last ``span_s`` seconds, from its cumulative busy and total CPU
    seconds (:func:`cpu_busy_total`) sampled now and then — at each heartbeat, each sensor tick. One
    short reading (``cpu_percent`` over a second) swings with every burst: a Dagster run starting, a
    garbage collection, a reconnect; the load that calls for fewer symbols is the one that lasts."""

    def __init__(self, span_s: float = HOST_CPU_SPAN_S) -> None:
        if not span_s > 0:
            raise ValueError(f"span_s must be > 0; got {span_s}")
        self.span_s = span_s
        self._samples: deque[tuple[float, float, float]] = deque()

    def add(self, now_s: float, busy_s: float, total_s: float) -> float | None:
        """Fold in a sample taken at ``now_s`` (a monotonic clock, s) and return the CPU % from the newest
        earlier sample at least ``span_s`` old (the oldest one while the history is shorter) to this one;
        None without an earlier sample or CPU time elapsed since it. A clock or counter that went back (a
        host whose counters restarted) starts the history afresh."""
        last = self._samples[-1] if self._samples else None
        if last is not None and (now_s < last[0] or total_s < last[2]):
            self._samples.clear()
        self._samples.append((now_s, busy_s, total_s))
        while len(self._samples) > 2 and self._samples[1][0] <= now_s - self.span_s:
            self._samples.popleft()
        _, busy0, total0 = self._samples[0]
        if total_s <= total0:
            return None
        return min(100.0, max(0.0, 100.0 * (busy_s - busy0) / (total_s - total0)))


@dataclass(frozen=True, slots=True)
class HostLoad:
    """The load of one machine (%), and whose: ``source`` names the instance and its host."""

    source: str
    cpu_percent: float
    memory_percent: float


def host_load(source: str, info: Mapping[str, object]) -> HostLoad | None:
    """The host load a realtime instance published in its heartbeat details (``host_cpu``, ``host_memory``);
    None when it did not publish both as numbers within [0, 100] (its first beat has no CPU figure yet)."""
    cpu, memory = _percent(info.get(HOST_CPU)), _percent(info.get(HOST_MEMORY))
    if cpu is None or memory is None:
        return None
    return HostLoad(source=source, cpu_percent=cpu, memory_percent=memory)


def _percent(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 100.0:
        return None
    return float(value)


class Beat(Protocol):
    """What :func:`heartbeat_load` reads of a heartbeat (``tapewatch.adapters.redis_state.Heartbeat``)."""

    @property
    def host(self) -> str | None: ...
    @property
    def info(self) -> Mapping[str, object]: ...


def heartbeat_load(beats: Mapping[str, Beat | None], single: str, shards: Sequence[str]) -> HostLoad | None:
    """The worst host load the live realtime instances (:func:`realtime_instances`: the single instance
    ``single`` or the ``shards``) published in their heartbeats (``beats``; None: expired); None when none
    did. What the system performance sensor judges, and the dashboard shows."""
    loads = [
        load
        for name, beat in realtime_instances(beats, single, shards).items()
        if beat is not None and (load := host_load(f"{name} on {beat.host or 'an unnamed host'}", beat.info))
    ]
    return worst_load(loads)


def worst_load(loads: Sequence[HostLoad]) -> HostLoad | None:
    """The worst of several hosts' loads: the highest CPU and the highest memory (each judged against its own
    threshold, so one host over either is an overload), named by the hosts they come from; None for none."""
    if not loads:
        return None
    cpu = max(loads, key=lambda load: load.cpu_percent)
    memory = max(loads, key=lambda load: load.memory_percent)
    source = cpu.source if cpu is memory else f"CPU: {cpu.source}; memory: {memory.source}"
    return HostLoad(source=source, cpu_percent=cpu.cpu_percent, memory_percent=memory.memory_percent)


def shrunk_universe(current: int, floor: int) -> int | None:
    """The cap that halves a universe of ``current`` symbols, never below ``floor``; None when it cannot
    shrink (already at or below the floor)."""
    if current < 0 or floor < 1:
        raise ValueError(f"current must be >= 0 and floor >= 1; got {current}, {floor}")
    target = max(floor, current // 2)
    return target if target < current else None


class Held(enum.Enum):
    """Whose the control value a sensor set is now: still its own (``OURS``: to lift on recovery), lost with
    Redis's data (``LOST``: the realtime service writes back what it applied, so it is still the sensor's to
    lift once back), or someone else's (``GONE``: changed or lifted by an operator; left as it is)."""

    OURS = "ours"
    LOST = "lost"
    GONE = "gone"


def held(*, mine: str, live: str | None, last_value: str | None, last_ours: bool) -> Held:
    """Whose the control value ``mine`` a sensor set is, ``live`` being in force (None: the key is absent).

    ``last_value``: the value of the newest control event of that command (None: no event: a Redis that lost
    its data lost its events too); ``last_ours``: that event was written by the sensor or by the realtime
    service's restore. The value decides, whoever wrote it last of those two; an event of anyone else's
    (the dashboard, the CLI) after the sensor's makes it theirs, even with the same value. An absent key with
    no such event was lost, not lifted: an operator's lift leaves its event."""
    if live == mine:
        return Held.OURS if last_value is None or last_ours else Held.GONE
    if live is None and (last_value is None or (last_ours and last_value == mine)):
        return Held.LOST
    return Held.GONE


def encode_state(state: msgspec.Struct) -> str:
    """A sensor's state as its cursor (compact JSON)."""
    return msgspec.json.encode(state).decode()


def decode_state(cursor: str | None, kind: type[S]) -> tuple[S, str | None]:
    """The state kept in ``cursor``, and a warning when it could not be read (then a fresh state: a cursor
    from an older version, or edited by hand, must not stop the sensor)."""
    if not cursor:
        return kind(), None
    try:
        return msgspec.json.decode(cursor, type=kind), None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.warning("unreadable sensor cursor, starting afresh: %s", exc)
        return kind(), f"unreadable cursor ignored ({exc}); state started afresh"


class PendingIncident(msgspec.Struct, frozen=True, kw_only=True):
    """An incident change to record: ``open`` (``text`` is the reason) or ``close`` (``text`` is the recovery)
    of the health incident ``kind``, at ``at_ms`` (wall clock, ms: when the action took effect)."""

    kind: str
    op: Literal["open", "close"]
    text: str
    action: str = ""
    values: dict[str, Any] = {}
    at_ms: int


def queued(
    pending: tuple[PendingIncident, ...], change: PendingIncident, *, limit: int = MAX_PENDING
) -> tuple[PendingIncident, ...]:
    """``pending`` with ``change`` after it, in order; beyond ``limit`` the oldest are dropped (and logged:
    PostgreSQL has been down for that many actions, and the cursor must stay bounded)."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1; got {limit}")
    out = (*pending, change)
    if len(out) > limit:
        dropped = out[: len(out) - limit]
        log.warning("%d unrecorded health incident change(s) dropped: %s", len(dropped), dropped)
        out = out[len(out) - limit :]
    return out
