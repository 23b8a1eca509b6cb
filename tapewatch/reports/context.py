"""What happened around a report's signals: the system incidents (feed and health) and the operators' changes
(pauses, tuning), as summary notes and tables. Pure. A pause, a switch to the backup feed or a new tuning
explains a quiet or a different period, so each is said in the summary, not only listed.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time

from tapewatch.reports.content import Incident, ReportContent

Table = tuple[tuple[str, ...], list[tuple[str, ...]]]
#: Most incidents, and most operator changes, listed one by one.
MAX_INCIDENTS = 30
MAX_OPERATOR_EVENTS = 30


def _bounds(c: ReportContent) -> tuple[datetime, datetime]:
    """The period's days as wall-clock bounds (UTC), the end no later than when the report was generated."""
    start = datetime.combine(c.first_day, dt_time(), UTC)
    end = min(datetime.combine(c.last_day + timedelta(days=1), dt_time(), UTC), _utc(c.generated_at))
    return start, end


#: What a health sensor's incident did, for the report's summary (``health_incidents.kind``).
HEALTH_ACTIONS = {
    "data_quality": "Signalling paused by the data-quality check (feed anomalies)",
    "api_connectivity": "Connectivity incidents (the backup feed switched on when the websockets failed)",
    "system_performance": "Universe cut under load",
}


def health_notes(c: ReportContent) -> list[str]:
    """One line per kind of health incident overlapping the period: how many, and how long they lasted within
    the period's days (wall clock, UTC; an incident still open counts until the report was generated). A
    pause of signalling explains a quiet period, so it is said in the summary, not only in the incident list."""
    start, end = _bounds(c)
    found: dict[str, list[Incident]] = defaultdict(list)
    for incident in c.incidents:
        if incident.source == "health":
            found[incident.kind].append(incident)
    notes = []
    for kind, those in sorted(found.items()):
        seconds = sum(
            max(
                0.0,
                (min(_utc(i.ended) if i.ended else end, end) - max(_utc(i.started), start)).total_seconds(),
            )
            for i in those
        )
        still = sum(1 for i in those if i.ended is None)
        notes.append(
            f"{HEALTH_ACTIONS.get(kind, kind)}: {len(those)} time(s), {fmt_duration(seconds)} within the period"
            + (f" ({still} still in force when the report was made)" if still else "")
            + "."
        )
    return notes


def fmt_duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def incident_listing(c: ReportContent) -> tuple[list[str], Table | None]:
    """The system incidents: every health incident (a pause, a switch to the backup feed, a universe cut) and
    as many feed incidents as fit in :data:`MAX_INCIDENTS`, oldest first, and the count of each kind (a busy day
    has hundreds of resyncs: listed first by time, they pushed a data-quality pause out of the list)."""
    if not c.incidents:
        return ["No system incidents in this period."], None
    health = [i for i in c.incidents if i.source == "health"]
    feed = [i for i in c.incidents if i.source != "health"]
    listed = sorted(health + feed[: max(0, MAX_INCIDENTS - len(health))], key=lambda i: i.started)
    notes = [
        "Incidents that overlap the period's days by wall-clock time (UTC): started and ended are when "
        "the service saw them, not the exchange event time the signals are dated by; a feed incident "
        "shows the event time of the frame that revealed it, when there was one.",
        "By kind: " + ", ".join(f"{kind} {n}" for kind, n in c.incident_counts) + ".",
    ]
    if len(listed) < len(c.incidents):
        notes.append(
            f"Listed: every health incident ({len(health)}) and the first {len(listed) - len(health)} of "
            f"{len(feed)} feed incidents."
        )
    header: tuple[str, ...] = (
        "started (wall clock, UTC)",
        "ended",
        "event time (UTC)",
        "source",
        "kind",
        "symbol",
        "detail",
    )
    rows: list[tuple[str, ...]] = [
        (
            i.started.strftime("%Y-%m-%d %H:%M:%S"),
            i.ended.strftime("%Y-%m-%d %H:%M:%S") if i.ended else "open",
            i.event_time.strftime("%Y-%m-%d %H:%M:%S") if i.event_time else "",
            i.source,
            i.kind,
            i.symbol or "",
            i.detail[:120],
        )
        for i in listed
    ]
    return notes, (header, rows)


def operator_notes(c: ReportContent) -> list[str]:
    """How often and how long an operator paused signalling within the period (a pause in force when the period
    began counts from its start; one not lifted, until the report was generated), and the tuning changes."""
    start, end = _bounds(c)
    pauses, seconds, since = int(c.paused_at_start), 0.0, start if c.paused_at_start else None
    for event in c.operator_events:
        if not event.ok:
            continue
        at = min(max(_utc(event.at), start), end)
        if event.action == "pause" and since is None:
            pauses, since = pauses + 1, at
        elif event.action == "resume" and since is not None:
            seconds, since = seconds + (at - since).total_seconds(), None
    notes = []
    if pauses or c.paused_at_start:
        still = since is not None
        if since is not None:
            seconds += max(0.0, (end - since).total_seconds())
        carried = " (one already in force when the period began)" if c.paused_at_start else ""
        notes.append(
            f"Signalling paused by an operator: {pauses} time(s){carried}, {fmt_duration(seconds)} within the "
            "period" + (" (still paused at the period's end)" if still else "") + "."
        )
    tunings = [e for e in c.operator_events if e.action.startswith("tuning ")]
    if tunings:
        notes.append(
            f"Tuning changed {len(tunings)} time(s) during the period: "
            + "; ".join(
                f"{e.action.removeprefix('tuning ')} {e.detail} at {_utc(e.at):%Y-%m-%d %H:%M}"
                for e in tunings
            )
            + " (a tuning takes effect when `tapewatch run` next starts its engine: signals before and after "
            "that were made with different parameters)."
        )
    return notes


def operator_listing(c: ReportContent) -> tuple[list[str], Table | None]:
    """The operators' changes during the period (the dashboard's actions, failed ones included, and the
    tuning applied or rolled back), oldest first, at most :data:`MAX_OPERATOR_EVENTS`."""
    if not c.operator_events:
        return ["No operator action or tuning change in this period."], None
    notes = ["Changes made by operators (wall clock, UTC): the dashboard's actions and the tuning applied."]
    if len(c.operator_events) > MAX_OPERATOR_EVENTS:
        notes.append(f"The first {MAX_OPERATOR_EVENTS} of {len(c.operator_events)} are listed.")
    header: tuple[str, ...] = ("at (wall clock, UTC)", "action", "detail", "by", "result")
    rows: list[tuple[str, ...]] = [
        (
            _utc(e.at).strftime("%Y-%m-%d %H:%M:%S"),
            e.action,
            e.detail[:120],
            e.actor,
            "ok" if e.ok else "failed",
        )
        for e in c.operator_events[:MAX_OPERATOR_EVENTS]
    ]
    return notes, (header, rows)
