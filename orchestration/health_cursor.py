"""What each health sensor keeps in its cursor (JSON, ``tapewatch.health.encode_state``), and the tick
result that carries it: a skip reason and the new cursor (the sensors launch no runs)."""

import dagster as dg
import msgspec
from msgspec.structs import replace

from tapewatch.anomaly import QualityState
from tapewatch.errors import TapewatchError
from tapewatch.health import PendingIncident, Streak, Transition, encode_state

Pending = tuple[PendingIncident, ...]


class ConnectivityState(msgspec.Struct, frozen=True, kw_only=True):
    """``streak``: checks with any problem (the incident); ``feed``: checks the backup feed would answer
    (its switch); ``backup_ours``: the backup feed in force is this sensor's (it switches off only its own);
    ``switched_ms``: when this sensor last switched the feed, either way (wall clock, ms; None: never);
    ``relapses``: switch backs in a row that failed (the dwell doubles with each);
    ``pending``: incident changes not recorded yet."""

    streak: Streak = msgspec.field(default_factory=Streak)
    feed: Streak = msgspec.field(default_factory=Streak)
    backup_ours: bool = False
    switched_ms: int | None = None
    relapses: int = 0
    pending: Pending = ()
    recovered: bool = False


class DataQualityState(QualityState, frozen=True, kw_only=True):
    """The anomaly statistics and streak, ``pause`` (the reason of the pause this sensor set and has not
    lifted, None: none; it resumes only its own; kept past the recovery while the pause is lost with Redis's
    data), ``pending`` incident changes not recorded yet and ``recovered`` (what it did before its cursor was
    lost has been read back from durable state), ``backup_feed`` (the backup feed was on at the previous check:
    the message rates of the interval since are not judged). ``paused_ours`` is only read, from cursors written
    before ``pause``: the pause in force was this sensor's (its prefix then tells its reason)."""

    pause: str | None = None
    paused_ours: bool = False
    pending: Pending = ()
    recovered: bool = False
    backup_feed: bool = False


class PerformanceState(msgspec.Struct, frozen=True, kw_only=True):
    """``cap``: the universe cap this sensor set and holds (None: none; kept past the recovery while it is
    lost with Redis's data); ``previous_cap``: the one to restore on recovery (the operator's); ``pending``:
    incident changes not recorded yet; ``recovered``: what it did before its cursor was lost has been read
    back from durable state; ``restored_ms``: when it last restored the universe (wall clock, ms; None:
    never); ``relapses``: restores in a row that a new shrink followed within the probation (the calm checks
    a restore waits for double with each: ``tapewatch.health.RestoreWait``); ``causes``: the resources whose
    overload made the cut in force (``cpu``, ``memory``), the ones a restore judges against their lower
    restore thresholds (None: not known, a cursor written before they were kept, or no cut)."""

    streak: Streak = msgspec.field(default_factory=Streak)
    cap: int | None = None
    previous_cap: int | None = None
    pending: Pending = ()
    recovered: bool = False
    restored_ms: int | None = None
    relapses: int = 0
    causes: tuple[str, ...] | None = None


def sensor_result(message: str, cursor: msgspec.Struct, warning: str | None) -> dg.SensorResult:
    """The tick's result: ``message`` (and the cursor's decoding ``warning``) as its skip reason, ``cursor``
    encoded."""
    return dg.SensorResult(
        skip_reason=f"{message}{f' ({warning})' if warning else ''}", cursor=encode_state(cursor)
    )


def retry_next_tick(
    kept: msgspec.Struct,
    old: Streak,
    move: Transition,
    thresholds: tuple[int, int],
    exc: TapewatchError,
    warning: str | None,
    field: str = "streak",
) -> dg.SensorResult:
    """The result when the Redis action of ``move`` failed (it did not take effect): the state ``kept``
    with its streak ``field`` one check short of taking it again (``thresholds``: trip after, clear after)."""
    trip_after, clear_after = thresholds
    if move is Transition.RECOVER:
        streak = Streak(passes=clear_after - 1, tripped=True)
    else:
        streak = Streak(failures=trip_after - 1, tripped=old.tripped)
    return sensor_result(
        f"could not {move.value} ({exc}); retrying next tick", replace(kept, **{field: streak}), warning
    )
