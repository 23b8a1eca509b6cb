"""``system_performance_sensor`` (30 s): CPU or memory overload of the realtime service's host halves the
universe, again while it lasts; calm checks restore the operator's cap. The load is the one the realtime
instances publish in their heartbeats (``host_cpu``: the host's CPU averaged over the last 60 s;
``host_memory``; the worst host of the shards), or, when no live heartbeat carries it, the machine running the
sensor's (psutil, averaged the same way over its ticks); the tick and the incident say which.

An overload must last (``performance_trip_checks`` checks in a row, 3 min by default) to cut; a restore waits
for ``performance_clear_checks`` checks in a row with the resource(s) that caused the cut at or below their
lower restore thresholds (``cpu_restore_threshold``, ``memory_restore_threshold``) and the other at or below its
trip threshold (a host whose memory sits at 80 % gets back the symbols a CPU overload cut once the CPU calms
down), twice as many after each restore a new cut followed within ``performance_relapse_within``
(``tapewatch.health.RestoreWait``), so the universe does not flap. The causes are kept in the cursor and the
incident's values (``causes``); a cursor without them reads them back from the cut's incident.
See ``orchestration.health`` for what the health sensors share."""

import time
from collections.abc import Callable
from typing import Any

import dagster as dg
import psutil
from msgspec.structs import replace

from orchestration.health_control import SOURCE, control_text, whose
from orchestration.health_cursor import PerformanceState, retry_next_tick, sensor_result
from orchestration.health_incidents import (
    incident_change,
    open_incident_of,
    record_incidents,
    taken_back,
    unrecovered,
)
from orchestration.resources import DatabaseResource, RedisResource, TapewatchSettings
from orchestration.sensor_ticks import recorded_sensor
from tapewatch.adapters.redis_keys import REALTIME
from tapewatch.adapters.redis_state import RedisState, realtime_shards
from tapewatch.errors import TapewatchError
from tapewatch.health import (
    CpuAverage,
    Held,
    HostLoad,
    PendingIncident,
    RestoreWait,
    Streak,
    Transition,
    cpu_busy_total,
    decode_state,
    heartbeat_load,
    overload,
    queued,
    shrunk_universe,
)

_RUNNING = dg.DefaultSensorStatus.RUNNING
KIND = "system_performance"
#: The resources an overload names, with the first word of their problem (``tapewatch.health.overload``).
_RESOURCES = (("cpu", "CPU "), ("memory", "memory "))
BOTH = tuple(name for name, _ in _RESOURCES)


def overloaded(problems: list[str]) -> tuple[str, ...]:
    """The resources ``problems`` (:func:`tapewatch.health.overload`) name, in :data:`BOTH`'s order."""
    return tuple(name for name, word in _RESOURCES if any(p.startswith(word) for p in problems))


def causes_of(values: dict[str, Any]) -> tuple[str, ...]:
    """The causes of a cut from its incident's values: ``causes``, else (an incident from before they were
    recorded) the resources its ``problems`` name; both when neither says."""
    kept = values.get("causes")
    if isinstance(kept, list) and kept:
        return tuple(name for name in BOTH if name in kept)
    problems = values.get("problems")
    found = overloaded([str(p) for p in problems]) if isinstance(problems, list) else ()
    return found or BOTH


def _known_causes(state: PerformanceState, database: DatabaseResource) -> tuple[PerformanceState, str]:
    """``state`` with the causes of its cut known: a cursor written before they were kept (or one whose cut
    was read back after it was lost) reads them from the cut's incident — the one queued in the cursor, else
    the one open in PostgreSQL. PostgreSQL down: left unknown (both resources judged this tick), and a note."""
    if state.causes is not None or not state.streak.tripped:
        return state, ""
    queued_opens = [c for c in state.pending if c.kind == KIND and c.op == "open"]
    if queued_opens:
        return replace(state, causes=causes_of(queued_opens[-1].values)), ""
    try:
        incident = open_incident_of(database, KIND, ())
    except TapewatchError as exc:
        return state, f"; the cut's causes not read ({exc}): both resources judged, read again next tick"
    return replace(state, causes=causes_of(incident.values if incident is not None else {})), ""


def _recover_cap(
    state: PerformanceState, rs: RedisState, database: DatabaseResource
) -> tuple[PerformanceState, str]:
    """``state`` with the universe cap of this sensor's open incident (its ``cap`` and ``previous_cap``) taken
    back when that cap is still this sensor's (in force, or lost with Redis's data), and the alarm in force
    while the incident is open; and a note. Done once per cursor (``recovered``)."""
    state, incident, note = taken_back(state, KIND, database)
    if incident is None:
        return state, note
    cap, previous = incident.values.get("cap"), incident.values.get("previous_cap")
    live = control_text(rs.read_control().max_universe)
    if isinstance(cap, int) and whose(rs, "max_universe", str(cap), live) is not Held.GONE:
        previous = previous if isinstance(previous, int) else None
        state = replace(state, cap=cap, previous_cap=previous)
        return state, f"; universe cap {cap} taken back as this sensor's (to restore: {previous})"
    return state, f"; open incident {incident.id} taken back"


class LocalLoad:
    """This machine's CPU use, averaged like a heartbeat's (:class:`tapewatch.health.CpuAverage`, sampled at
    each tick; over one second at the first, which has nothing to compare with), and its memory use, in %."""

    def __init__(self) -> None:
        self._cpu = CpuAverage()

    def _sample(self) -> float | None:
        busy, total = cpu_busy_total(psutil.cpu_times()._asdict())
        return self._cpu.add(time.monotonic(), busy, total)

    def __call__(self) -> tuple[float, float]:
        cpu = self._sample()
        if cpu is None:
            time.sleep(1.0)
            cpu = self._sample()
        return (cpu if cpu is not None else 0.0), psutil.virtual_memory().percent


#: Where the load comes from when no realtime heartbeat carries it.
LOCAL = "this machine, running the sensor"


def realtime_load(rs: RedisState) -> HostLoad | None:
    """The worst host load the live realtime instances (the service, or its shards) published in their
    heartbeats; None when none did (none beats, or a service from before it published its load)."""
    beats = rs.heartbeats()
    return heartbeat_load(beats, REALTIME, realtime_shards(beats))


def _load(redis: RedisResource, measure: Callable[[], tuple[float, float]]) -> HostLoad:
    """The load to judge: the realtime hosts' worst, else this machine's (``measure``), saying why."""
    try:
        with redis.open() as rs:
            found = realtime_load(rs)
        why = "no live realtime heartbeat carries its host's load"
    except TapewatchError as exc:
        found, why = None, f"realtime heartbeats unreadable: {exc}"
    if found is not None:
        return found
    cpu, memory = measure()
    return HostLoad(source=f"{LOCAL} ({why})", cpu_percent=cpu, memory_percent=memory)


def _universe_size(rs: RedisState, fallback: int) -> int:
    control = rs.read_control()
    if control.max_universe is not None:
        return control.max_universe
    feeds = len(rs.feeds())
    if feeds:
        return feeds
    return len(control.universe) if control.universe else fallback


def _shrink(
    rs: RedisState,
    state: PerformanceState,
    streak: Streak,
    move: Transition,
    values: dict[str, Any],
    fallback: int,
    floor: int,
    relapse: str = "",
) -> tuple[PerformanceState, str]:
    """Halve the universe (a trip, or an escalation while the overload lasts); the new state and a note.
    ``relapse``: what the incident's reason adds when this trip follows a restore too soon."""
    live = rs.read_control().max_universe
    ours = whose(rs, "max_universe", control_text(state.cap), control_text(live)) is not Held.GONE
    if state.cap is not None and ours:
        # this sensor's cap, in force or lost with Redis's data (the service still applies it): the one to
        # restore stays the operator's
        previous, current = state.previous_cap, state.cap
    else:
        # the cap to restore: the one in force at the trip, or one the operator set while we held ours
        previous = live
        current = live if live is not None else _universe_size(rs, fallback)
    target = shrunk_universe(current, floor)
    if target is not None:
        rs.set_max_universe(target, source=SOURCE)
        note = f" -> universe capped at {target} (was {current})"
    else:
        note = f" -> universe of {current} is at the floor, not shrunk"
    cap = target if target is not None else (state.cap if ours else None)
    change = incident_change(
        KIND,
        "open",
        f"{'; '.join(values['problems'])} ({values['source']}){relapse}",
        {**values, "cap": cap, "previous_cap": previous},
        note.removeprefix(" -> "),
    )
    return _acted(state, streak, cap, previous, change), note


def _restore(
    rs: RedisState, state: PerformanceState, streak: Streak, values: dict[str, Any]
) -> tuple[PerformanceState, str]:
    """Put back the cap the universe had before the overload, unless someone changed ours since. A cap of
    this sensor's lost with Redis's data is claimed on (the realtime service writes it back) when there is no
    operator's cap to put back at once."""
    live = rs.read_control().max_universe
    holder = whose(rs, "max_universe", control_text(state.cap), control_text(live))
    kept: tuple[int | None, int | None] = (None, None)  # the claim kept: cap, previous cap
    if state.cap is None:
        recovery = "universe cap unchanged (it was never shrunk)"
    elif holder is Held.OURS or (holder is Held.LOST and state.previous_cap is not None):
        rs.set_max_universe(state.previous_cap, source=SOURCE)
        recovery = "universe cap " + (
            "lifted" if state.previous_cap is None else f"back to {state.previous_cap}"
        )
        if holder is Held.LOST:
            recovery += f" (this sensor's cap {state.cap} was lost with Redis's data)"
    elif holder is Held.LOST:
        recovery = (
            f"universe cap {state.cap} lost with Redis's data (the realtime service keeps it): lifted once"
            " written back"
        )
        kept = (state.cap, None)
    else:
        recovery = f"universe cap {live} set by someone else since the shrink, left as is"
    change = incident_change(KIND, "close", recovery, values)
    return _acted(state, streak, *kept, change), f" -> {recovery}"


def _acted(
    state: PerformanceState, streak: Streak, cap: int | None, previous: int | None, change: PendingIncident
) -> PerformanceState:
    """``state`` after a shrink or a restore: its streak, the cap it holds and the one to restore, and the
    incident change queued (what else it keeps, its restores' record included, stays)."""
    return replace(
        state,
        streak=streak,
        cap=cap,
        previous_cap=previous,
        pending=queued(state.pending, change),
        recovered=True,
    )


def _lift_lost_cap(rs: RedisState, state: PerformanceState) -> tuple[PerformanceState, str]:
    """After a recovery that found this sensor's cap lost with Redis's data: lift it once the realtime
    service wrote it back; forget it once it is someone else's. The state and a note."""
    try:
        holder = whose(
            rs, "max_universe", control_text(state.cap), control_text(rs.read_control().max_universe)
        )
        if holder is Held.LOST:
            return state, f" (its cap {state.cap} lost with Redis's data is lifted once written back)"
        if holder is Held.OURS:
            rs.set_max_universe(state.previous_cap, source=SOURCE)
    except TapewatchError as exc:
        return state, f" (its universe cap lost with Redis's data not checked: {exc}; retried next tick)"
    forgotten = replace(state, cap=None, previous_cap=None)
    if holder is Held.OURS:
        back = "lifted" if state.previous_cap is None else f"back to {state.previous_cap}"
        return forgotten, f" -> universe cap {back} (its cap {state.cap} was lost with Redis's data)"
    return forgotten, ""


def _relapses(state: PerformanceState, move: Transition, wait: RestoreWait, now_ms: int) -> tuple[int, str]:
    """The failed restores in a row after this check's ``move`` (a new cut within the probation of the last
    restore is one more; any other cut starts again from none), and what a failed one adds to the reason."""
    if move is not Transition.TRIP:
        return state.relapses, ""
    if not wait.relapsed(restored_ms=state.restored_ms, now_ms=now_ms) or state.restored_ms is None:
        return 0, ""
    relapses = state.relapses + 1
    ago = (now_ms - state.restored_ms) / 1000
    return relapses, (
        f"; restore failed: overloaded again {ago:.0f} s after it, the next restore waits for"
        f" {wait.required(relapses)} calm checks (failed restores in a row: {relapses})"
    )


def performance_sensor(measure: Callable[[], tuple[float, float]]) -> dg.SensorDefinition:
    """The system performance sensor with its local load measurement, used when no realtime heartbeat
    carries its host's load (tests pass their own)."""

    @recorded_sensor(
        name="system_performance_sensor",
        default_status=_RUNNING,
        description="CPU/memory overload shrinks the universe.",
    )
    def system_performance_sensor(
        context: dg.SensorEvaluationContext,
        settings: TapewatchSettings,
        redis: RedisResource,
        database: DatabaseResource,
    ) -> dg.SensorResult:
        s = settings.settings()
        state, warning = decode_state(context.cursor, PerformanceState)
        recovered = ""
        if not state.recovered:
            try:
                with redis.open() as rs:
                    state, recovered = _recover_cap(state, rs, database)
            except TapewatchError as exc:  # Redis down: read back at the next tick
                recovered = unrecovered(exc)
        state, unknown = _known_causes(state, database)
        recovered += unknown
        # the resources whose overload made the cut in force: only they must calm down to their restore
        # thresholds; the other must only be no overload (before any cut: none, so `high` is `problems`)
        causes = (state.causes if state.causes is not None else BOTH) if state.streak.tripped else ()
        load = _load(redis, measure)
        cpu, memory = load.cpu_percent, load.memory_percent
        problems = overload(
            cpu_percent=cpu,
            memory_percent=memory,
            cpu_threshold=s.cpu_threshold,
            memory_threshold=s.memory_threshold,
        )
        # a cause above its restore threshold: not an overload, nor calm enough to put the symbols cut back
        high = overload(
            cpu_percent=cpu,
            memory_percent=memory,
            cpu_threshold=s.cpu_restore_threshold if "cpu" in causes else s.cpu_threshold,
            memory_threshold=s.memory_restore_threshold if "memory" in causes else s.memory_threshold,
        )
        wait = RestoreWait(
            clear_after=s.performance_clear_checks,
            max_clear=s.performance_max_clear_checks,
            probation_s=s.performance_relapse_within,
        )
        clear_after = wait.required(state.relapses)
        streak, move = (
            state.streak.between()
            if high and not problems
            else state.streak.step(
                bool(problems), trip_after=s.performance_trip_checks, clear_after=clear_after
            )
        )
        now_ms = int(time.time() * 1000)
        relapses, relapse = _relapses(state, move, wait, now_ms)
        new = replace(state, streak=streak)
        values = {"cpu_percent": cpu, "memory_percent": memory, "problems": problems, "source": load.source}
        note = ""
        try:
            with redis.open() as rs:
                if move in (Transition.TRIP, Transition.ESCALATE):
                    # an escalation by the other resource adds it: both must then calm down
                    cut_by = tuple(name for name in BOTH if name in {*causes, *overloaded(problems)})
                    new, note = _shrink(
                        rs,
                        state,
                        streak,
                        move,
                        {**values, "causes": list(cut_by)},
                        s.universe_size,
                        s.min_universe_under_load,
                        relapse,
                    )
                    new = replace(new, relapses=relapses, causes=cut_by)
                elif move is Transition.RECOVER:
                    new, note = _restore(rs, state, streak, values)
                    new = replace(new, restored_ms=now_ms, causes=None)
                elif state.cap is not None and not streak.tripped:
                    new, note = _lift_lost_cap(rs, new)
        except TapewatchError as exc:  # Redis: the action did not take effect
            thresholds = (s.performance_trip_checks, clear_after)
            return retry_next_tick(state, state.streak, move, thresholds, exc, warning)
        pending, unrecorded = record_incidents(database, new.pending)
        if problems:
            head = "; ".join(problems)
        elif high and streak.tripped:
            head = f"{'; '.join(high)} (restore threshold): not calm enough to restore the universe"
        else:
            head = f"CPU {cpu:.0f} %, memory {memory:.0f} %: fine"
        head = f"{head} ({load.source})"
        if streak.tripped and not problems and not high:
            note += f" (calm checks {streak.passes} of {wait.required(new.relapses)} before the restore)"
        if move is Transition.TRIP and relapse:
            note += relapse
        return sensor_result(f"{head}{note}{recovered}{unrecorded}", replace(new, pending=pending), warning)

    return system_performance_sensor


system_performance_sensor = performance_sensor(LocalLoad())
