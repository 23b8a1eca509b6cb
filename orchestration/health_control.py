"""Whose a control value a health sensor set is (a pause, a universe cap): its own to lift, lost with Redis's
data, or someone else's now, read from the control events (``tapewatch.health.held`` decides)."""

from tapewatch.adapters.redis_state import RedisState
from tapewatch.adapters.redis_values import ControlEvent
from tapewatch.health import Held, held

#: The source of every control event the health sensors write.
SOURCE = "dagster:health"
#: How the source of the realtime service's restore ends (``realtime (restored)``, ``realtime-IofN (restored)``:
#: ``realtime.control``): it writes back what the service had applied, so a value of this sensor's it wrote
#: back is still this sensor's.
RESTORED_SUFFIX = " (restored)"


def last_event(rs: RedisState, command: str) -> ControlEvent | None:
    """The newest control event of ``command`` (None: none in the stream)."""
    return rs.newest_control_events().get(command)


def whose(rs: RedisState, command: str, mine: str | None, live: str | None) -> Held:
    """Whose the value ``mine`` this sensor set for ``command`` (None: none) is, ``live`` being in force
    (``tapewatch.health.held``); the control events are read only when the values leave it open."""
    if mine is None or live not in (mine, None):
        return Held.GONE
    last = last_event(rs, command)
    if last is None:
        return held(mine=mine, live=live, last_value=None, last_ours=False)
    ours = last.source == SOURCE or last.source.endswith(RESTORED_SUFFIX)
    return held(mine=mine, live=live, last_value=last.value, last_ours=ours)


def control_text(cap: int | None) -> str | None:
    """A universe cap as its control key holds it (None: absent)."""
    return None if cap is None else str(cap)
